package client

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// goldenClusterMap is the worked example of docs/protocol.md §4.8: two
// members, n1 (with an HTTP address and a zone) and n2 (joining), and a
// map of revision 7, 1 replica and 4 vBuckets.
const goldenClusterMap = "" +
	"0200" + // 2 members
	"026e31" + "0768313a37343030" + "0768313a37343830" + "02" + "027a31" + // n1 h1:7400 h1:7480 active z1
	"026e32" + "0768323a37343030" + "00" + "01" + "00" + // n2 h2:7400, no HTTP, joining, no zone
	"01" + // map version 1
	"0700000000000000" + // revision 7
	"01" + // 1 replica
	"0400" + // 4 vbuckets
	"0200" + "026e31" + "026e32" + // node table: n1 (0), n2 (1)
	"0300000000000000" + "02" + "0000" + "0100" + // vb 0: epoch 3, [n1, n2]
	"0500000000000000" + "02" + "0100" + "0000" + // vb 1: epoch 5, [n2, n1]
	"0200000000000000" + "01" + "0000" + // vb 2: epoch 2, [n1]
	"0000000000000000" + "00" // vb 3: epoch 0, no node

var goldenWant = &ClusterMap{
	Revision: 7, Replicas: 1,
	Nodes: []ClusterNode{
		{ID: "n1", Addr: "h1:7400", HTTP: "h1:7480", State: NodeActive, Zone: "z1"},
		{ID: "n2", Addr: "h2:7400", State: NodeJoining},
	},
	VBuckets: []VBucketChain{
		{Epoch: 3, Chain: []string{"n1", "n2"}},
		{Epoch: 5, Chain: []string{"n2", "n1"}},
		{Epoch: 2, Chain: []string{"n1"}},
		{},
	},
}

func golden(t *testing.T) []byte {
	t.Helper()
	b, err := hex.DecodeString(goldenClusterMap)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClusterMapGolden: the documented bytes are what the node's layout
// (members as internal/node writes them, then vbmap.AppendMap) produces,
// and they decode to the documented map.
func TestClusterMapGolden(t *testing.T) {
	b := golden(t)
	want := wire.AppendU16(nil, 2)
	for _, m := range []struct {
		id, addr, http string
		state          uint8
		zone           string
	}{{"n1", "h1:7400", "h1:7480", 2, "z1"}, {"n2", "h2:7400", "", 1, ""}} {
		want = wire.AppendStr8(want, m.id)
		want = wire.AppendStr8(want, m.addr)
		want = wire.AppendStr8(want, m.http)
		want = wire.AppendU8(want, m.state)
		want = wire.AppendStr8(want, m.zone)
	}
	want = vbmap.AppendMap(want, &vbmap.Map{Revision: 7, Replicas: 1, VBuckets: []vbmap.VBucket{
		{Chain: []string{"n1", "n2"}, Epoch: 3}, {Chain: []string{"n2", "n1"}, Epoch: 5}, {Chain: []string{"n1"}, Epoch: 2}, {},
	}})
	if !bytes.Equal(b, want) {
		t.Fatalf("golden bytes\n%x\nbut the layout gives\n%x", b, want)
	}
	m, err := decodeClusterMap(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, goldenWant) {
		t.Fatalf("decoded %+v\nwant %+v", m, goldenWant)
	}
	if a, r := m.Counts("n1"); a != 2 || r != 1 {
		t.Errorf("Counts(n1) = %d, %d; want 2, 1", a, r)
	}
	if a, r := m.Counts("n3"); a != 0 || r != 0 {
		t.Errorf("Counts(n3) = %d, %d", a, r)
	}
	if n, ok := m.Node("n2"); !ok || n.Addr != "h2:7400" {
		t.Errorf("Node(n2) = %+v %v", n, ok)
	}
	if _, ok := m.Node("n3"); ok {
		t.Error("Node(n3) found")
	}
	if got, want := m.VBucketOf([]byte("alice")), int(vbucket.Of([]byte("alice"), 4)); got != want {
		t.Errorf("VBucketOf(alice) = %d, want %d", got, want)
	}
	if m.VBuckets[1].Active() != "n2" || m.VBuckets[3].Active() != "" {
		t.Errorf("Active: %q %q", m.VBuckets[1].Active(), m.VBuckets[3].Active())
	}
	if (&ClusterMap{}).VBucketOf([]byte("x")) != -1 {
		t.Error("VBucketOf on an empty map")
	}
}

// TestClusterMapMalformed: every truncation of a valid answer, trailing
// bytes, and answers that break the rules are errors, never panics.
func TestClusterMapMalformed(t *testing.T) {
	b := golden(t)
	for i := range b {
		if m, err := decodeClusterMap(b[:i]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: decoded %+v", i, len(b), m)
		}
	}
	if _, err := decodeClusterMap(append(bytes.Clone(b), 0)); err == nil || !strings.Contains(err.Error(), "after the map") {
		t.Errorf("trailing byte: %v", err)
	}
	const members = 2 + 23 + 14 // the member table's bytes
	mutate := func(off int, v byte) []byte {
		c := bytes.Clone(b)
		c[off] = v
		return c
	}
	for _, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"huge member count", append([]byte{0xff, 0xff}, b[2:]...), "cannot fit"},
		{"empty member id", append([]byte{1, 0, 0, 0, 0, 2, 0}, b[members:]...), "empty id"},
		{"members out of order", mutate(4, '3'), "increasing order"},            // n1 becomes n3, before n2
		{"chain names a non-member", mutate(members+14+5, 'x'), "not a member"}, // n2 of the map's node table becomes nx
	} {
		if _, err := decodeClusterMap(c.body); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	// An unknown state code is kept, not refused (a newer node).
	m, err := decodeClusterMap(mutate(2+3+8+8, 9))
	if err != nil || m.Nodes[0].State != "state(9)" {
		t.Errorf("unknown state: %v %+v", err, m)
	}
	// Random damage never panics.
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		c := bytes.Clone(b)
		for range 1 + r.IntN(4) {
			c[r.IntN(len(c))] = byte(r.IntN(256))
		}
		decodeClusterMap(c[:r.IntN(len(c)+1)])
	}
}

// FuzzDecodeClusterMap: nothing panics, and what decodes is consistent.
func FuzzDecodeClusterMap(f *testing.F) {
	b, _ := hex.DecodeString(goldenClusterMap)
	f.Add(b)
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodeClusterMap(body)
		if err != nil {
			return
		}
		for vb, v := range m.VBuckets {
			for _, id := range v.Chain {
				if _, ok := m.Node(id); !ok {
					t.Fatalf("vbucket %d held by unknown %q", vb, id)
				}
			}
		}
	})
}
