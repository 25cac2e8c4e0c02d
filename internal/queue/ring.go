package queue

import (
	"encoding/binary"
	"math/bits"
)

// itemHeaderLen is the per-record cost of the memory ring beyond the value.
const itemHeaderLen = 16

// itemRemoved marks a ring item removed out of order (a replicated pop, a
// dropped vBucket); it is skipped when it reaches the head.
const itemRemoved = 1

// minRingAlloc is the smallest buffer a ring allocates.
const minRingAlloc = 4 << 10

// maxRingChunk is the chunk size of rings of at least that size; smaller
// rings use chunks of their size rounded up to a power of two.
const maxRingChunk = 1 << 20

// itemHeader describes one ring item:
//
//	+---------+------+-------+-----+----------+-------+
//	| len u32 |vb u16|flags u8|  0  | seqno u64| value |
//	+---------+------+-------+-----+----------+-------+
type itemHeader struct {
	vlen  int
	vb    uint16
	flags byte
	seqno uint64
}

// ring is a byte queue holding records in push order. Its capacity is
// limit bytes of items. The bytes live in chunks of one size (a power of
// two, at most maxRingChunk): a push that needs room appends a chunk, the
// head releases a chunk once it has passed it, so growing never copies
// what the ring holds. Only a lone first chunk may be shorter: it starts at
// minRingAlloc and doubles up to the chunk size (copying at most one
// chunk), so an idle channel pins little memory, and while it is the only
// chunk its content moves to its start when it is at most half full
// instead of growing. Offsets are absolute: they stay valid across pops
// until the ring empties.
type ring struct {
	chunks    [][]byte // chunks[0] starts at offset base
	spare     []byte   // a released chunk, for the next one needed
	shift     uint     // log2 of the chunk size; set with the first chunk
	base      int      // offset of chunks[0][0]
	limit     int64
	head      int   // offset of the first item
	used      int   // bytes of items, removed ones included
	items     int   // items, removed ones included
	live      int   // items not removed
	liveBytes int64 // value bytes of the live items
}

// ringMark is the tail state of a ring before a push, to undo it.
type ringMark struct {
	used, items, live int
	liveBytes         int64
}

func (r *ring) fits(vlen int) bool {
	return int64(r.used+itemHeaderLen+vlen) <= r.limit
}

func (r *ring) mark() ringMark {
	return ringMark{used: r.used, items: r.items, live: r.live, liveBytes: r.liveBytes}
}

// rollback forgets the items pushed after m.
func (r *ring) rollback(m ringMark) {
	r.used, r.items, r.live, r.liveBytes = m.used, m.items, m.live, m.liveBytes
}

// push appends a record. The limit is the caller's to check (fits): a
// restore may exceed it.
func (r *ring) push(vb uint16, seqno uint64, value []byte) {
	need := itemHeaderLen + len(value)
	if r.head+r.used+need > r.end() {
		r.makeRoom(need)
	}
	var h [itemHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(value)))
	binary.LittleEndian.PutUint16(h[4:], vb)
	binary.LittleEndian.PutUint64(h[8:], seqno)
	tail := r.head + r.used
	r.copyIn(tail, h[:])
	r.copyIn(tail+itemHeaderLen, value)
	r.used += need
	r.items++
	r.live++
	r.liveBytes += int64(len(value))
}

// end is the offset just past the last chunk.
func (r *ring) end() int {
	if len(r.chunks) == 0 {
		return r.base
	}
	return r.base + (len(r.chunks)-1)<<r.shift + len(r.chunks[len(r.chunks)-1])
}

// makeRoom makes the chunks reach need bytes past the tail.
func (r *ring) makeRoom(need int) {
	chunk := 1 << r.shift
	switch {
	case len(r.chunks) == 0:
		r.shift = uint(bits.Len64(uint64(min(max(r.limit, 64), maxRingChunk)) - 1))
		chunk = 1 << r.shift
		r.base, r.head = 0, 0
		r.chunks = append(r.chunks[:0], make([]byte, min(chunk, max(minRingAlloc, need))))
	case len(r.chunks) == 1:
		c := r.chunks[0]
		from := r.head - r.base
		switch {
		case from > 0 && 2*(r.used+need) <= len(c):
			copy(c, c[from:from+r.used])
		case len(c) < chunk:
			nc := make([]byte, min(chunk, max(2*len(c), r.used+need)))
			copy(nc, c[from:from+r.used])
			r.chunks[0] = nc
		default:
			from = 0
		}
		r.head -= from
	}
	for r.head+r.used+need > r.end() {
		c := r.spare
		r.spare = nil
		if c == nil {
			c = make([]byte, chunk)
		}
		r.chunks = append(r.chunks, c)
	}
}

// locate returns the chunk and the index in it of offset off.
func (r *ring) locate(off int) ([]byte, int) {
	d := off - r.base
	return r.chunks[d>>r.shift], d & (1<<r.shift - 1)
}

// copyIn writes p at offset off.
func (r *ring) copyIn(off int, p []byte) {
	for len(p) > 0 {
		c, i := r.locate(off)
		n := copy(c[i:], p)
		p = p[n:]
		off += n
	}
}

// copyOut fills p from offset off.
func (r *ring) copyOut(p []byte, off int) {
	for len(p) > 0 {
		c, i := r.locate(off)
		n := copy(p, c[i:])
		p = p[n:]
		off += n
	}
}

func (r *ring) header(off int) itemHeader {
	var h [itemHeaderLen]byte
	r.copyOut(h[:], off)
	return itemHeader{
		vlen:  int(binary.LittleEndian.Uint32(h[0:])),
		vb:    binary.LittleEndian.Uint16(h[4:]),
		flags: h[6],
		seqno: binary.LittleEndian.Uint64(h[8:]),
	}
}

// appendValue appends the value of the item at off, whose header is h, to
// dst.
func (r *ring) appendValue(dst []byte, off int, h itemHeader) []byte {
	l := len(dst)
	dst = append(dst, make([]byte, h.vlen)...)
	r.copyOut(dst[l:], off+itemHeaderLen)
	return dst
}

// skipRemoved drops removed items from the head.
func (r *ring) skipRemoved() {
	for r.items > 0 {
		h := r.header(r.head)
		if h.flags&itemRemoved == 0 {
			return
		}
		r.advance(h)
	}
}

// first returns the header of the first live item.
func (r *ring) first() (itemHeader, bool) {
	r.skipRemoved()
	if r.live == 0 {
		return itemHeader{}, false
	}
	return r.header(r.head), true
}

// pop removes the first live item and appends its value to dst.
func (r *ring) pop(dst []byte) []byte {
	h, ok := r.first()
	if !ok {
		panic("queue: pop of an empty ring")
	}
	dst = r.appendValue(dst, r.head, h)
	r.advance(h)
	return dst
}

// advance drops the head item, whose header is h, releasing the chunks
// the head has passed. An emptied ring keeps one chunk.
func (r *ring) advance(h itemHeader) {
	r.head += itemHeaderLen + h.vlen
	r.used -= itemHeaderLen + h.vlen
	r.items--
	if h.flags&itemRemoved == 0 {
		r.live--
		r.liveBytes -= int64(h.vlen)
	}
	if r.items == 0 {
		last := r.chunks[len(r.chunks)-1]
		clear(r.chunks)
		r.chunks = append(r.chunks[:0], last)
		r.base, r.head, r.spare = 0, 0, nil
		return
	}
	for len(r.chunks) > 1 && r.head-r.base >= 1<<r.shift {
		if r.spare == nil {
			r.spare = r.chunks[0]
		}
		r.chunks[0] = nil
		r.chunks = r.chunks[1:]
		r.base += 1 << r.shift
	}
}

// each calls fn for every live item from the head, with the item's offset,
// until fn returns false.
func (r *ring) each(fn func(off int, h itemHeader) bool) {
	off := r.head
	for range r.items {
		h := r.header(off)
		if h.flags&itemRemoved == 0 && !fn(off, h) {
			return
		}
		off += itemHeaderLen + h.vlen
	}
}

// remove marks the live item at off, whose header is h, removed.
func (r *ring) remove(off int, h itemHeader) {
	c, i := r.locate(off + 6)
	c[i] |= itemRemoved
	r.live--
	r.liveBytes -= int64(h.vlen)
}
