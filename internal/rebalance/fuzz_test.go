package rebalance

import (
	"fmt"
	"testing"

	"shoal/internal/vbmap"
)

// FuzzPlan: Plan never panics and always returns a valid target, for any
// map and nodes the bytes describe (the map from the cluster and the
// members from the metadata are inputs like any other).
func FuzzPlan(f *testing.F) {
	f.Add([]byte{8, 1, 3, 0x31, 0x12, 0x03, 0x45, 0x50, 0x21})
	f.Add([]byte{1, 0, 1, 0})
	f.Add([]byte{64, 3, 0xff, 0xaa, 0x55, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 3 {
			return
		}
		next := func() byte {
			if len(b) == 0 {
				return 0
			}
			c := b[0]
			b = b[1:]
			return c
		}
		vbs := 1 + int(next())%64
		r0 := int(next()) % (vbmap.MaxReplicas + 1)
		members := next() // bit i: node i holds data in the target; bits 6-7: zones
		ids := []string{"a", "b", "c", "d", "e", "f"}
		chains := make([][]string, vbs)
		for vb := range chains {
			c := next()
			seen := map[string]bool{}
			for i := range int(c>>5) % (r0 + 2) {
				id := ids[(int(c)+i*int(c&7+1))%len(ids)]
				if !seen[id] {
					seen[id] = true
					chains[vb] = append(chains[vb], id)
				}
			}
		}
		cur := (*vbmap.Map)(nil).Next(1, r0, chains)
		if cur.Validate(nil) != nil {
			return
		}
		var nodes []vbmap.Node
		for i, id := range ids {
			if members&(1<<i) != 0 {
				zone := ""
				if members&0xc0 != 0 {
					zone = fmt.Sprintf("z%d", (i*int(members>>6))%3)
				}
				nodes = append(nodes, vbmap.Node{ID: id, Zone: zone})
			}
		}
		replicas := int(next()) % (vbmap.MaxReplicas + 1)
		res, err := Plan(cur, nodes, replicas)
		if len(nodes) == 0 {
			if err == nil {
				t.Fatal("no nodes: no error")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		known := map[string]bool{}
		for _, n := range nodes {
			known[n.ID] = true
		}
		target := cur.Next(2, replicas, res.Chains)
		if err := target.Validate(func(id string) bool { return known[id] }); err != nil {
			t.Fatalf("target: %v", err)
		}
		for vb, c := range res.Chains {
			if len(c) != min(1+replicas, len(nodes)) {
				t.Fatalf("vbucket %d: chain %v", vb, c)
			}
		}
	})
}
