package vbmap

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// goldenMap is the map of goldenBytes.
func goldenMap() *Map {
	return &Map{Revision: 0x0102030405060708, Replicas: 1, VBuckets: []VBucket{
		{Chain: []string{"b2", "a"}, Epoch: 1},
		{Chain: []string{"a"}, Epoch: 0x1122},
		{Epoch: 2}, // no node holds it any more
	}}
}

// goldenBytes pins the layout (the protocol document copies it).
var goldenBytes = []byte{
	0x01,                                           // version
	0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // revision 0x0102030405060708
	0x01,       // replicas
	0x03, 0x00, // 3 vbuckets
	0x02, 0x00, // 2 node ids, sorted:
	0x01, 'a', //   0: "a"
	0x02, 'b', '2', //   1: "b2"
	0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, // vb 0: epoch 1, [b2 a]
	0x22, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // vb 1: epoch 0x1122, [a]
	0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // vb 2: epoch 2, []
}

func sameMap(a, b *Map) bool {
	return a.Revision == b.Revision && a.Replicas == b.Replicas &&
		slices.EqualFunc(a.VBuckets, b.VBuckets, func(x, y VBucket) bool {
			return x.Epoch == y.Epoch && slices.Equal(x.Chain, y.Chain)
		})
}

func TestMapGolden(t *testing.T) {
	if got := AppendMap(nil, goldenMap()); !bytes.Equal(got, goldenBytes) {
		t.Fatalf("encoding\n% x\nwant\n% x", got, goldenBytes)
	}
	m, n, err := DecodeMap(goldenBytes)
	if err != nil || n != len(goldenBytes) || !sameMap(m, goldenMap()) {
		t.Fatalf("decoded %+v, %d, %v", m, n, err)
	}
}

// placedMap is a map made by Place: n nodes, 3 replicas.
func placedMap(t testing.TB, n, vbuckets int) *Map {
	var nodes []Node
	for i := range n {
		nodes = append(nodes, Node{ID: fmt.Sprintf("node-%02d", i), Zone: fmt.Sprint(i % 4)})
	}
	chains, err := Place(nodes, vbuckets, 3)
	if err != nil {
		t.Fatal(err)
	}
	return (*Map)(nil).Next(42, 3, chains)
}

func TestMapRoundTrip(t *testing.T) {
	failed := placedMap(t, 16, 1024).Chains()
	for vb := range failed {
		failed[vb] = slices.DeleteFunc(failed[vb], func(id string) bool { return id == "node-03" })
	}
	maxIDs := &Map{Revision: ^uint64(0), Replicas: 0, VBuckets: []VBucket{
		{Chain: []string{strings.Repeat("z", MaxIDLen)}, Epoch: ^uint64(0)},
		{Chain: []string{"\x00"}, Epoch: 1},
	}}
	for name, m := range map[string]*Map{
		"golden":                       goldenMap(),
		"solo":                         Solo("only", 1024),
		"1024 vbuckets, 3 replicas":    placedMap(t, 16, 1024),
		"65535 vbuckets, 3 replicas":   placedMap(t, 16, 65535),
		"after a failover":             placedMap(t, 16, 1024).Next(43, 3, failed),
		"no nodes left":                {Revision: 9, Replicas: 2, VBuckets: []VBucket{{Epoch: 5}}},
		"longest id, largest integers": maxIDs,
	} {
		t.Run(name, func(t *testing.T) {
			prefix := []byte("body:")
			b := AppendMap(slices.Clone(prefix), m)
			if !bytes.HasPrefix(b, prefix) {
				t.Fatal("AppendMap overwrote what it appends to")
			}
			enc := b[len(prefix):]
			// Trailing bytes are not the map's.
			got, n, err := DecodeMap(append(slices.Clone(enc), 0xff, 0x01))
			if err != nil || n != len(enc) || !sameMap(got, m) {
				t.Fatalf("decoded %d of %d bytes, err %v, same %v", n, len(enc), err, err == nil && sameMap(got, m))
			}
			if again := AppendMap(nil, got); !bytes.Equal(again, enc) {
				t.Fatal("the decoded map encodes differently")
			}
		})
	}
}

func TestMapRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		replicas := rapid.IntRange(0, MaxReplicas).Draw(t, "replicas")
		ids := rapid.SliceOfNDistinct(rapid.StringN(1, 8, MaxIDLen), 1, 20, rapid.ID).Draw(t, "ids")
		chains := make([][]string, rapid.IntRange(1, 300).Draw(t, "vbuckets"))
		for vb := range chains {
			l := rapid.IntRange(0, min(1+replicas, len(ids))).Draw(t, "len")
			chains[vb] = rapid.Permutation(ids).Draw(t, "chain")[:l]
		}
		m := (*Map)(nil).Next(rapid.Uint64().Draw(t, "rev"), replicas, chains)
		if rapid.Bool().Draw(t, "next") {
			// A second map, whose epochs have moved.
			for vb := range chains {
				chains[vb] = rapid.Permutation(chains[vb]).Draw(t, "reorder")
			}
			m = m.Next(m.Revision+1, replicas, chains)
		}
		b := AppendMap(nil, m)
		got, n, err := DecodeMap(b)
		if err != nil || n != len(b) || !sameMap(got, m) {
			t.Fatalf("decoded %d of %d bytes: %v", n, len(b), err)
		}
	})
}

func TestDecodeMapTruncated(t *testing.T) {
	for _, b := range [][]byte{goldenBytes, AppendMap(nil, placedMap(t, 5, 64))} {
		for l := range len(b) {
			if m, n, err := DecodeMap(b[:l]); !errors.Is(err, ErrCorrupt) || m != nil || n != 0 {
				t.Fatalf("%d of %d bytes: %v, %d, %v", l, len(b), m, n, err)
			}
		}
	}
}

func TestDecodeMapCorrupt(t *testing.T) {
	// edit returns goldenBytes with bytes from off replaced.
	edit := func(off int, with ...byte) []byte {
		b := slices.Clone(goldenBytes)
		copy(b[off:], with)
		return b
	}
	const (
		offReplicas = 9
		offVBuckets = 10
		offNodes    = 12
		offIDs      = 14 // "a" at 14..15, "b2" at 16..18
		offVB0      = 19 // epoch, length 27, indices 28..31
		offVB1      = 32 // epoch, length 40, index 41..42
	)
	huge := slices.Clone(goldenBytes[:offIDs])
	huge[offVBuckets], huge[offVBuckets+1] = 0xff, 0xff
	huge[offNodes], huge[offNodes+1] = 0xff, 0xff
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"version 0", edit(0, 0), "version"},
		{"version 3", edit(0, 3), "version"},
		{"4 replicas", edit(offReplicas, 4), "replicas"},
		{"0 vbuckets", edit(offVBuckets, 0, 0), "0 vbuckets"},
		{"more nodes than copies", edit(offNodes, 7, 0), "nodes for"},
		{"65535 nodes in few bytes", huge, "truncated"},
		{"empty id", edit(offIDs, 0), "empty id"},
		{"ids out of order", edit(offIDs+1, 'c'), "order"},
		{"id twice", edit(offIDs+2, 1, 'a', 0x01), "order"},
		{"id in no chain", []byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 2, 0, 1, 'a', 2, 'b', '2', 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0}, `"a" is in no chain`},
		{"index out of range", edit(offVB0+9, 2, 0), "names node 2 of 2"},
		{"node twice in a chain", edit(offVB0+9, 1, 0, 1, 0), "twice"},
		{"chain too long", edit(offVB1+8, 3), "chain of 3 for 1 replicas"},
		{"epoch 0", edit(offVB0, 0), "epoch 0"},
		{"more vbuckets than bytes", edit(offVBuckets, 0xff, 0xff), "truncated"},
	} {
		m, n, err := DecodeMap(tc.b)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) || m != nil || n != 0 {
			t.Errorf("%s: %v, %d, %v; want ErrCorrupt, %q", tc.name, m, n, err, tc.want)
		}
	}
}

func TestAppendMapUnencodable(t *testing.T) {
	for name, m := range map[string]*Map{
		"invalid map": {Replicas: 1, VBuckets: []VBucket{{Chain: []string{"a", "a"}, Epoch: 1}}},
		"long id":     Solo(strings.Repeat("x", MaxIDLen+1), 4),
	} {
		if err := CheckEncodable(m); err == nil {
			t.Errorf("%s: CheckEncodable accepts it", name)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: AppendMap did not panic", name)
				}
			}()
			AppendMap(nil, m)
		}()
	}
	if err := CheckEncodable(placedMap(t, 8, 256)); err != nil {
		t.Fatal(err)
	}
}

// movingMap is a map in the middle of a rebalance: pending copies, a
// freeze, a node (d) that is only pending.
func movingMap() *Map {
	return &Map{Revision: 7, Replicas: 1, VBuckets: []VBucket{
		{Chain: []string{"a", "b"}, Epoch: 2, Pending: []string{"c"}},
		{Chain: []string{"b", "a"}, Epoch: 3, Pending: []string{"d"}, Frozen: true},
		{Chain: []string{"c"}, Epoch: 1},
		{Epoch: 4},
	}}
}

func TestMapWithMovesRoundTrips(t *testing.T) {
	m := movingMap()
	b := AppendMap(nil, m)
	if b[0] != mapVersionMoves {
		t.Fatalf("version %d, want %d", b[0], mapVersionMoves)
	}
	got, n, err := DecodeMap(b)
	if err != nil || n != len(b) {
		t.Fatalf("decode: %v (%d of %d bytes)", err, n, len(b))
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("decoded %+v, want %+v", got, m)
	}
	if got.StateOf("d", 1) != Pending || got.StateOf("b", 1) != Active || got.StateOf("d", 0) != Dead {
		t.Fatal("states of a moving map")
	}
	if c := got.Counts(); c["d"] != (Counts{}) || c["c"].Active != 1 {
		t.Fatalf("a pending copy is counted: %v", c)
	}
	// Without moves the same map is version 1, and a version 2 without
	// moves is refused (one encoding per map).
	done, _ := m.Edit(8, []Edit{{VBucket: 0}, {VBucket: 1}})
	b = AppendMap(nil, done)
	if b[0] != mapVersion {
		t.Fatalf("a map without moves is version %d", b[0])
	}
	b[0] = mapVersionMoves
	if _, _, err := DecodeMap(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 2 without moves: %v", err)
	}
}

func TestEdit(t *testing.T) {
	m := movingMap()
	next, err := m.Edit(9, []Edit{{VBucket: 1, Chain: []string{"d", "a"}}, {VBucket: 0, Pending: []string{"c"}, Frozen: true}})
	if err != nil {
		t.Fatal(err)
	}
	if v := next.VBuckets[1]; v.Epoch != 4 || v.Frozen || v.Pending != nil || v.Active() != "d" {
		t.Fatalf("takeover edit: %+v", v)
	}
	if v := next.VBuckets[0]; v.Epoch != 2 || !v.Frozen || !reflect.DeepEqual(v.Chain, []string{"a", "b"}) {
		t.Fatalf("freeze edit: %+v", v)
	}
	if !reflect.DeepEqual(next.VBuckets[2], m.VBuckets[2]) || m.VBuckets[1].Active() != "b" {
		t.Fatal("Edit changed what it was not asked to, or its input")
	}
	if err := next.Validate(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Edit(10, []Edit{{VBucket: 4}}); err == nil {
		t.Fatal("an edit out of range")
	}
	bad, _ := m.Edit(10, []Edit{{VBucket: 0, Pending: []string{"b"}}})
	if err := bad.Validate(nil); err == nil {
		t.Fatal("a chain member pending too passed Validate")
	}
	if next := m.Next(11, 1, m.Chains()); next.Moving() != 0 {
		t.Fatal("Next kept the moves")
	}
}
