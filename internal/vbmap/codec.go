package vbmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The version bytes of AppendMap's layouts: 1 for a map without moves,
// 2 when some vBucket has pending copies or a freeze.
const (
	mapVersion      = 1
	mapVersionMoves = 2
)

// ErrCorrupt is wrapped by DecodeMap's errors.
var ErrCorrupt = errors.New("vbmap: corrupt map encoding")

// CheckEncodable returns an error if AppendMap cannot encode m: m must
// pass Validate(nil), its node ids must be at most MaxIDLen bytes and
// there must be at most 65535 of them.
func CheckEncodable(m *Map) error {
	_, err := encodable(m)
	return err
}

// encodable is CheckEncodable, returning m's nodes, sorted.
func encodable(m *Map) ([]string, error) {
	if err := m.Validate(nil); err != nil {
		return nil, err
	}
	nodes := m.Nodes()
	if len(nodes) > 65535 {
		return nil, fmt.Errorf("%w: %d nodes, at most 65535 can be encoded", ErrInvalid, len(nodes))
	}
	for _, id := range nodes {
		if len(id) > MaxIDLen {
			return nil, fmt.Errorf("%w: node id %.20q… longer than %d bytes", ErrInvalid, id, MaxIDLen)
		}
	}
	return nodes, nil
}

// AppendMap appends the binary encoding of m to b and returns the
// extended slice. The layout is fixed (raft snapshots hold it, and it is
// the body of the protocol's GetClusterMap answer, which clients in any
// language decode); all integers are little-endian, and a str8 is a u8
// length (1..255) followed by that many bytes:
//
//	u8   version = 1
//	u64  revision
//	u8   replicas (0..3)
//	u16  vbucket count V (1..65535)
//	u16  node count N (0..V*(1+replicas), at most 65535)
//	N ×  str8 node id
//	V ×  { u64 epoch; u8 chain length L (0..1+replicas); L × u16 node index (< N) }
//
// While a rebalance moves vBuckets (some vBucket has pending copies or a
// freeze) the version is 2, N is at most V*2*(1+replicas), and each
// vBucket's entry is
//
//	{ u64 epoch; u8 flags (bit 0: frozen; the others 0); u8 chain length L;
//	  L × u16 node index; u8 pending count P (0..1+replicas); P × u16 node index }
//
// A version-2 map is never sent to a reader that does not know it: a map
// has moves only during a rebalance, which every node of a cluster runs
// the same version for.
//
// The node table holds exactly the nodes that appear in some chain or
// pending list,
// sorted by their bytes, each once; a chain names its nodes by their
// index in that table, active first, each at most once (in the chain and
// the pending list together); an epoch is 0 only for an empty chain. So a map has one encoding, which DecodeMap
// reads back.
//
// m must be encodable (CheckEncodable); AppendMap panics otherwise.
func AppendMap(b []byte, m *Map) []byte {
	nodes, err := encodable(m)
	if err != nil {
		panic(fmt.Sprintf("vbmap.AppendMap: %v", err))
	}
	index := make(map[string]uint16, len(nodes))
	for i, id := range nodes {
		index[id] = uint16(i)
	}
	moves := m.Moving() > 0
	if moves {
		b = append(b, mapVersionMoves)
	} else {
		b = append(b, mapVersion)
	}
	b = binary.LittleEndian.AppendUint64(b, m.Revision)
	b = append(b, uint8(m.Replicas))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.VBuckets)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(nodes)))
	for _, id := range nodes {
		b = append(b, uint8(len(id)))
		b = append(b, id...)
	}
	for _, v := range m.VBuckets {
		b = binary.LittleEndian.AppendUint64(b, v.Epoch)
		if moves {
			var flags uint8
			if v.Frozen {
				flags |= flagFrozen
			}
			b = append(b, flags)
		}
		b = append(b, uint8(len(v.Chain)))
		for _, id := range v.Chain {
			b = binary.LittleEndian.AppendUint16(b, index[id])
		}
		if moves {
			b = append(b, uint8(len(v.Pending)))
			for _, id := range v.Pending {
				b = binary.LittleEndian.AppendUint16(b, index[id])
			}
		}
	}
	return b
}

// flagFrozen is bit 0 of a version-2 vBucket entry's flags.
const flagFrozen = 1

// DecodeMap decodes a map encoded by AppendMap at the start of b and
// returns it with the number of bytes it took; the bytes after it are
// not looked at. It accepts only the canonical encoding of a valid map
// and fails (wrapping ErrCorrupt) on anything else: a truncation, an
// unknown version, a count out of range, an empty, unsorted or repeated
// node id, an unused table entry, a node index out of range, a node
// twice in a chain, a chain longer than 1+replicas, epoch 0 for a
// non-empty chain. Every count is checked against the bytes left before
// anything is allocated for it, so whatever the input, DecodeMap
// allocates at most a small multiple of its size.
func DecodeMap(b []byte) (*Map, int, error) {
	d := decoder{b: b}
	version := d.u8("version")
	if d.err == nil && version != mapVersion && version != mapVersionMoves {
		return nil, 0, fmt.Errorf("%w: version %d (want %d or %d)", ErrCorrupt, version, mapVersion, mapVersionMoves)
	}
	moves := version == mapVersionMoves
	lists, entry := 1, 9 // the node lists per vBucket, and the least bytes of its entry
	if moves {
		lists, entry = 2, 11
	}
	rev := d.u64("revision")
	replicas := int(d.u8("replicas"))
	nvb := int(d.u16("vbucket count"))
	nn := int(d.u16("node count"))
	if d.err != nil {
		return nil, 0, d.err
	}
	switch {
	case replicas > MaxReplicas:
		return nil, 0, fmt.Errorf("%w: %d replicas (0..%d)", ErrCorrupt, replicas, MaxReplicas)
	case nvb == 0:
		return nil, 0, fmt.Errorf("%w: 0 vbuckets", ErrCorrupt)
	case nn > nvb*lists*(1+replicas):
		return nil, 0, fmt.Errorf("%w: %d nodes for %d vbuckets of %d copies", ErrCorrupt, nn, nvb, lists*(1+replicas))
	case nn*2 > d.left():
		return nil, 0, fmt.Errorf("%w: truncated: %d node ids in %d bytes", ErrCorrupt, nn, d.left())
	}
	nodes := make([]string, nn)
	for i := range nodes {
		l := int(d.u8("node id length"))
		if d.err == nil && l == 0 {
			return nil, 0, fmt.Errorf("%w: node %d has an empty id", ErrCorrupt, i)
		}
		id := d.bytes(l, "node id")
		if d.err != nil {
			return nil, 0, d.err
		}
		nodes[i] = string(id)
		if i > 0 && nodes[i-1] >= nodes[i] {
			return nil, 0, fmt.Errorf("%w: node ids %q, %q not in increasing order", ErrCorrupt, nodes[i-1], nodes[i])
		}
	}
	if nvb*entry > d.left() {
		return nil, 0, fmt.Errorf("%w: truncated: %d vbuckets in %d bytes", ErrCorrupt, nvb, d.left())
	}
	m := &Map{Revision: rev, Replicas: replicas, VBuckets: make([]VBucket, nvb)}
	used := make([]bool, nn)
	var idx [2 * (1 + MaxReplicas)]uint16
	for vb := range m.VBuckets {
		v := &m.VBuckets[vb]
		v.Epoch = d.u64("epoch")
		if moves {
			flags := d.u8("flags")
			if d.err == nil && flags&^flagFrozen != 0 {
				return nil, 0, fmt.Errorf("%w: vbucket %d has unknown flags %#x", ErrCorrupt, vb, flags)
			}
			v.Frozen = flags&flagFrozen != 0
		}
		l := int(d.u8("chain length"))
		if d.err != nil {
			return nil, 0, d.err
		}
		if l > 1+replicas {
			return nil, 0, fmt.Errorf("%w: vbucket %d has a chain of %d for %d replicas", ErrCorrupt, vb, l, replicas)
		}
		if l > 0 && v.Epoch == 0 {
			return nil, 0, fmt.Errorf("%w: vbucket %d has a chain but epoch 0", ErrCorrupt, vb)
		}
		if !d.indexes(idx[:0], l, nn, vb, nodes) {
			return nil, 0, d.err
		}
		p := 0
		if moves {
			p = int(d.u8("pending count"))
			if d.err == nil && p > 1+replicas {
				return nil, 0, fmt.Errorf("%w: vbucket %d has %d pending copies for %d replicas", ErrCorrupt, vb, p, replicas)
			}
			if d.err != nil || !d.indexes(idx[:l], p, nn, vb, nodes) {
				return nil, 0, d.err
			}
		}
		if l > 0 {
			v.Chain = make([]string, l)
		}
		if p > 0 {
			v.Pending = make([]string, p)
		}
		for i, x := range idx[:l+p] {
			if i < l {
				v.Chain[i] = nodes[x]
			} else {
				v.Pending[i-l] = nodes[x]
			}
			used[x] = true
		}
	}
	if moves && m.Moving() == 0 {
		return nil, 0, fmt.Errorf("%w: version %d without a pending copy or a freeze (a map without moves is version %d)", ErrCorrupt, mapVersionMoves, mapVersion)
	}
	if i := slices.Index(used, false); i >= 0 {
		return nil, 0, fmt.Errorf("%w: node %q is in no chain", ErrCorrupt, nodes[i])
	}
	if err := m.Validate(nil); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return m, d.off, nil
}

// decoder reads little-endian fields; the first short read sets err and
// makes every later read return zero.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > d.left() {
		d.err = fmt.Errorf("%w: truncated at byte %d: %s needs %d bytes, %d left", ErrCorrupt, d.off, what, n, d.left())
		return nil
	}
	out := d.b[d.off : d.off+n]
	d.off += n
	return out
}

func (d *decoder) u8(what string) uint8 {
	if p := d.bytes(1, what); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if p := d.bytes(2, what); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u64(what string) uint64 {
	if p := d.bytes(8, what); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// indexes reads n node indexes into have[len(have):len(have)+n] (have
// is a prefix of a fixed array with room), checking each is below nn and
// not already in have; false (with err set) on the first that is not.
func (d *decoder) indexes(have []uint16, n, nn, vb int, nodes []string) bool {
	for range n {
		x := d.u16("node index")
		switch {
		case d.err != nil:
			return false
		case int(x) >= nn:
			d.err = fmt.Errorf("%w: vbucket %d names node %d of %d", ErrCorrupt, vb, x, nn)
			return false
		case slices.Contains(have, x):
			d.err = fmt.Errorf("%w: vbucket %d holds node %q twice", ErrCorrupt, vb, nodes[x])
			return false
		}
		have = append(have, x)
	}
	return true
}
