package failover

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"shoal/internal/vbmap"
)

func mapOf(replicas int, chains ...[]string) *vbmap.Map {
	return (*vbmap.Map)(nil).Next(10, replicas, chains)
}

func TestPlanPromotesTheReplicaHoldingTheMost(t *testing.T) {
	m := mapOf(2, []string{"a", "b", "c"}, []string{"b", "a", "c"}, []string{"a", "c", "b"}, []string{"c", "b"})
	held := map[string][]uint64{"b/0": {5, 1, 0}, "c/0": {6, 1, 0}, "b/2": {3, 0, 0}, "c/2": {3, 0, 0}}
	seqnos := func(n string, vb uint16) ([]uint64, bool) {
		s, ok := held[fmt.Sprintf("%s/%d", n, vb)]
		return s, ok
	}
	res, err := Plan(m, "a", []string{"b", "c"}, seqnos, false)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"c", "b"}, {"b", "c"}, {"c", "b"}, {"c", "b"}}
	if fmt.Sprint(res.Chains) != fmt.Sprint(want) {
		t.Fatalf("chains %v, want %v", res.Chains, want)
	}
	// vb 0: c holds more (7 > 6); vb 2: a tie, the first in the chain (c).
	if res.Promoted[0] != "c" || res.Promoted[2] != "c" || len(res.Promoted) != 2 || len(res.Lost) != 0 {
		t.Fatalf("promoted %v lost %v", res.Promoted, res.Lost)
	}
	next := m.Next(11, 2, res.Chains)
	if next.VBuckets[0].Epoch != 2 || next.VBuckets[1].Epoch != 1 || next.VBuckets[3].Epoch != 1 {
		t.Fatalf("epochs %v", next.VBuckets)
	}
}

func TestPlanRefusesToLoseTheLastCopy(t *testing.T) {
	m := mapOf(1, []string{"a", "b"}, []string{"a"}, []string{"b", "a"}, []string{"a", "c"}, []string{"a"})
	all := func(string, uint16) ([]uint64, bool) { return []uint64{1, 1, 1}, true }
	// vb 3's replica c does not answer: it cannot be promoted either.
	seqnos := func(n string, vb uint16) ([]uint64, bool) {
		if n == "c" {
			return nil, false
		}
		return all(n, vb)
	}
	_, err := Plan(m, "a", []string{"b", "c"}, seqnos, false)
	if !errors.Is(err, ErrLastCopy) || !strings.Contains(err.Error(), "vbuckets 1,3-4") {
		t.Fatalf("no copy left: %v", err)
	}
	res, err := Plan(m, "a", []string{"b", "c"}, seqnos, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Lost, []uint16{1, 3, 4}) {
		t.Fatalf("lost %v", res.Lost)
	}
	for _, vb := range res.Lost {
		if a := res.Chains[vb][0]; a == "a" {
			t.Fatalf("vb %d still on the failed node", vb)
		}
	}
	// Forced vBuckets go to the survivor with the fewest actives.
	if res.Chains[1][0] == res.Chains[4][0] && res.Chains[3][0] == res.Chains[1][0] {
		t.Fatalf("every lost vbucket on one node: %v", res.Chains)
	}
	if _, err := Plan(m, "a", []string{"a"}, all, true); err == nil {
		t.Fatal("failing over the last node planned")
	}
}

func TestRecoverFillsShortChains(t *testing.T) {
	m := mapOf(1, []string{"b"}, []string{"c", "b"}, []string{"c"}, []string{})
	got := Recover(m, "a")
	if fmt.Sprint(got) != "[[b a] [c b] [c a] []]" {
		t.Fatalf("recover: %v", got)
	}
}

// TestPlanProperties: for random maps, the failed node is in no chain,
// every vBucket it was active for has a surviving active (or is lost,
// with force), chains stay distinct and no longer, and vBuckets it was
// not active for keep their active.
func TestPlanProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(2, 8).Draw(rt, "nodes")
		replicas := rapid.IntRange(0, 3).Draw(rt, "replicas")
		var nodes []vbmap.Node
		for i := range n {
			nodes = append(nodes, vbmap.Node{ID: fmt.Sprintf("n%d", i)})
		}
		chains, err := vbmap.Place(nodes, 32, replicas)
		if err != nil {
			rt.Fatal(err)
		}
		m := mapOf(replicas, chains...)
		failed := fmt.Sprintf("n%d", rapid.IntRange(0, n-1).Draw(rt, "failed"))
		var survivors []string
		for _, x := range nodes {
			if x.ID != failed {
				survivors = append(survivors, x.ID)
			}
		}
		silent := map[string]bool{}
		for _, s := range survivors {
			silent[s] = rapid.IntRange(0, 4).Draw(rt, "silent "+s) == 0
		}
		seqnos := func(node string, vb uint16) ([]uint64, bool) {
			return []uint64{uint64(vb) * uint64(len(node)), 1, 2}, !silent[node]
		}
		force := rapid.Bool().Draw(rt, "force")
		res, err := Plan(m, failed, survivors, seqnos, force)
		if errors.Is(err, ErrLastCopy) && !force {
			return
		}
		if err != nil {
			rt.Fatal(err)
		}
		next := m.Next(11, replicas, res.Chains)
		if err := next.Validate(nil); err != nil {
			rt.Fatal(err)
		}
		for vb := range m.Len() {
			c := res.Chains[vb]
			if slices.Contains(c, failed) || len(c) == 0 {
				rt.Fatalf("vb %d: chain %v", vb, c)
			}
			if old := m.Active(uint16(vb)); old != failed && c[0] != old {
				rt.Fatalf("vb %d: active moved from %s to %s", vb, old, c[0])
			}
			if m.Active(uint16(vb)) == failed && silent[c[0]] && !slices.Contains(res.Lost, uint16(vb)) {
				rt.Fatalf("vb %d: promoted %s, which did not answer", vb, c[0])
			}
		}
	})
}
