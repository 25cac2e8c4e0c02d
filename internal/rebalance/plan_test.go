package rebalance

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"shoal/internal/vbmap"
)

// tb is what the checks need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// placed is the first map of nodes (Place's chains).
func placed(t tb, nodes []vbmap.Node, vbs, replicas int) *vbmap.Map {
	t.Helper()
	chains, err := vbmap.Place(nodes, vbs, replicas)
	if err != nil {
		t.Fatal(err)
	}
	return (*vbmap.Map)(nil).Next(1, replicas, chains)
}

func names(ids ...string) []vbmap.Node {
	var out []vbmap.Node
	for _, id := range ids {
		out = append(out, vbmap.Node{ID: id})
	}
	return out
}

// failOver removes node from every chain, as a failover does (the next
// copy becomes active).
func failOver(m *vbmap.Map, node string) *vbmap.Map {
	chains := m.Chains()
	for vb := range chains {
		chains[vb] = slices.DeleteFunc(chains[vb], func(n string) bool { return n == node })
	}
	return m.Next(m.Revision+1, m.Replicas, chains)
}

// checkPlan checks every rule of Plan's result and returns the target map.
func checkPlan(t tb, cur *vbmap.Map, nodes []vbmap.Node, replicas int, res Result) *vbmap.Map {
	t.Helper()
	known := map[string]bool{}
	zone := map[string]string{}
	for _, nd := range nodes {
		known[nd.ID] = true
		zone[nd.ID] = nd.Zone
	}
	target := cur.Next(cur.Revision+1, replicas, res.Chains)
	if err := target.Validate(func(id string) bool { return known[id] }); err != nil {
		t.Fatalf("target invalid: %v", err)
	}
	k := min(1+replicas, len(nodes))
	for vb, c := range res.Chains {
		if len(c) != k {
			t.Fatalf("vbucket %d: chain %v, want %d copies", vb, c, k)
		}
	}
	// Per node counts: Place's, per zone.
	ideal, err := vbmap.Place(nodes, cur.Len(), replicas)
	if err != nil {
		t.Fatal(err)
	}
	want := (*vbmap.Map)(nil).Next(1, replicas, ideal)
	distinctZones := map[string]bool{}
	zoneSize := map[string]int{}
	for _, nd := range nodes {
		distinctZones[nd.Zone] = true
		if nd.Zone != "" {
			zoneSize[nd.Zone]++
		}
	}
	alike := len(distinctZones) == 1 // no zones: every node alike
	if !alike {
		alike = true // zones of one node each are no zones either
		for _, m := range zoneSize {
			alike = alike && m == 1
		}
	}
	perZone := func(m *vbmap.Map) map[string][]string {
		out := map[string][]string{}
		counts := m.Counts()
		for _, nd := range nodes {
			z := nd.Zone
			switch {
			case alike:
				z = "all"
			case z == "":
				z = "=" + nd.ID
			}
			c := counts[nd.ID]
			out["actives "+z] = append(out["actives "+z], fmt.Sprint(c.Active))
			out["copies "+z] = append(out["copies "+z], fmt.Sprint(c.Active+c.Replica))
		}
		for z := range out {
			slices.Sort(out[z])
		}
		return out
	}
	got, exp := perZone(target), perZone(want)
	for z := range exp {
		if !slices.Equal(got[z], exp[z]) {
			t.Fatalf("%s: %v, Place's %v", z, got[z], exp[z])
		}
	}
	// Zones: copies of each chain per zone as in Place's map of the same
	// vBucket count (its bounds are the same for every chain).
	zonesOf := func(c []string) string {
		per := map[string]int{}
		for _, id := range c {
			z := zone[id]
			if z == "" {
				z = "=" + id
			}
			per[z]++
		}
		var ms []int
		for _, m := range per {
			ms = append(ms, m)
		}
		slices.Sort(ms)
		return fmt.Sprint(ms)
	}
	allowed := map[string]bool{}
	for _, c := range ideal {
		allowed[zonesOf(c)] = true
	}
	if len(distinctZones) > 1 {
		for vb, c := range res.Chains {
			if !allowed[zonesOf(c)] {
				t.Fatalf("vbucket %d: chain %v spreads its zones as %s; Place spreads them as %v", vb, c, zonesOf(c), allowed)
			}
		}
	}
	// Moves agree with the chains.
	built, takeovers := 0, 0
	moved := map[uint16]bool{}
	for _, mv := range res.Moves {
		moved[mv.VBucket] = true
		if !slices.Equal(mv.To, res.Chains[mv.VBucket]) || !slices.Equal(mv.From, cur.VBuckets[mv.VBucket].Chain) {
			t.Fatalf("move of %d: %v -> %v, chains %v -> %v", mv.VBucket, mv.From, mv.To, cur.VBuckets[mv.VBucket].Chain, res.Chains[mv.VBucket])
		}
		built += len(mv.Build)
		if mv.Takeover {
			takeovers++
		}
	}
	for vb := range res.Chains {
		if !moved[uint16(vb)] && !slices.Equal(res.Chains[vb], cur.VBuckets[vb].Chain) {
			t.Fatalf("vbucket %d changes without a move", vb)
		}
	}
	if built != res.Built || takeovers != res.Takeovers {
		t.Fatalf("built %d takeovers %d, result says %d %d", built, takeovers, res.Built, res.Takeovers)
	}
	if res.Built < res.MinBuilt || res.Takeovers < res.MinTakeovers {
		t.Fatalf("built %d takeovers %d below the lower bounds %d %d", res.Built, res.Takeovers, res.MinBuilt, res.MinTakeovers)
	}
	return target
}

func TestPlanAddThirdNode(t *testing.T) {
	cur := placed(t, names("a", "b"), 1024, 1)
	nodes := names("a", "b", "c")
	res, err := Plan(cur, nodes, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, cur, nodes, 1, res)
	// c takes a third of the copies (682 or 683 of 2048): exactly those
	// are built, a and b each give up their share.
	if res.Fallback || res.Built != res.MinBuilt || res.Built != 682 {
		t.Fatalf("built %d (min %d, fallback %v), want 682", res.Built, res.MinBuilt, res.Fallback)
	}
	if res.Takeovers != res.MinTakeovers || res.Takeovers != 341 {
		t.Fatalf("takeovers %d (min %d), want 341", res.Takeovers, res.MinTakeovers)
	}
	for _, mv := range res.Moves {
		if len(mv.Build) != 1 || mv.Build[0] != "c" || len(mv.Drop) != 1 {
			t.Fatalf("move %+v: want one copy built on c and one dropped", mv)
		}
	}
}

func TestPlanRemoveNode(t *testing.T) {
	cur := placed(t, names("a", "b", "c"), 1024, 1)
	nodes := names("a", "b")
	res, err := Plan(cur, nodes, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, cur, nodes, 1, res)
	if res.Fallback || res.Built != res.MinBuilt {
		t.Fatalf("built %d, min %d, fallback %v", res.Built, res.MinBuilt, res.Fallback)
	}
	for _, mv := range res.Moves {
		if !slices.Contains(mv.Drop, "c") {
			t.Fatalf("move %+v does not take c's copy", mv)
		}
	}
}

func TestPlanAfterFailoverRestoresReplicas(t *testing.T) {
	cur := failOver(placed(t, names("a", "b", "c"), 256, 2), "c")
	nodes := names("a", "b")
	res, err := Plan(cur, nodes, 2)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, cur, nodes, 2, res)
	if res.Built != 0 {
		t.Fatalf("%d copies built: two nodes already hold every vbucket twice", res.Built)
	}
	nodes = names("a", "b", "d")
	res, err = Plan(cur, nodes, 2)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, cur, nodes, 2, res)
	if res.Built != 256 || res.Takeovers != res.MinTakeovers {
		t.Fatalf("built %d takeovers %d (min %d), want 256 copies on d", res.Built, res.Takeovers, res.MinTakeovers)
	}
}

func TestPlanBalancedMapHasNoMoves(t *testing.T) {
	nodes := []vbmap.Node{{ID: "a", Zone: "x"}, {ID: "b", Zone: "y"}, {ID: "c", Zone: "x"}, {ID: "d", Zone: "y"}}
	cur := placed(t, nodes, 1024, 1)
	res, err := Plan(cur, nodes, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Moves) != 0 {
		t.Fatalf("%d moves for Place's own map", len(res.Moves))
	}
}

func TestPlanErrors(t *testing.T) {
	cur := placed(t, names("a"), 16, 0)
	for _, tc := range []struct {
		name  string
		cur   *vbmap.Map
		nodes []vbmap.Node
		reps  int
	}{
		{"no map", nil, names("a"), 0},
		{"no nodes", cur, nil, 0},
		{"twice", cur, names("a", "a"), 0},
		{"replicas", cur, names("a"), 4},
		{"invalid map", &vbmap.Map{}, names("a"), 0},
	} {
		if _, err := Plan(tc.cur, tc.nodes, tc.reps); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestPlanProperties: for random clusters and changes (nodes added,
// removed, failed over, replicas changed, zones), the target meets the
// rules; the copies built and the takeovers are within the bounds Plan
// states of their lower bounds; planning again from the target moves
// nothing.
func TestPlanProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		vbs := rapid.IntRange(1, 200).Draw(rt, "vbuckets")
		zoned := rapid.Bool().Draw(rt, "zoned")
		zoneOf := func(i int) string {
			if !zoned {
				return ""
			}
			return fmt.Sprintf("z%d", rapid.IntRange(0, 2).Draw(rt, fmt.Sprintf("zone%d", i)))
		}
		var all []vbmap.Node
		for i := range 9 {
			all = append(all, vbmap.Node{ID: fmt.Sprintf("n%d", i), Zone: zoneOf(i)})
		}
		n0 := rapid.IntRange(1, 6).Draw(rt, "first nodes")
		r0 := rapid.IntRange(0, 3).Draw(rt, "first replicas")
		cur := placed(rt, all[:n0], vbs, r0)
		// Failovers of some of the first nodes (never the last).
		fails := rapid.IntRange(0, n0-1).Draw(rt, "failovers")
		for i := range fails {
			cur = failOver(cur, all[i].ID)
		}
		// The nodes that should hold data: some of the first ones (the
		// failed ones included or not), some new ones.
		var nodes []vbmap.Node
		for i, nd := range all {
			if rapid.Bool().Draw(rt, fmt.Sprintf("keep%d", i)) {
				nodes = append(nodes, nd)
			}
		}
		if len(nodes) == 0 {
			nodes = all[n0 : n0+1]
		}
		replicas := r0
		if rapid.Bool().Draw(rt, "change replicas") {
			replicas = rapid.IntRange(0, 3).Draw(rt, "replicas")
		}
		// The map may have lost every copy of some vBuckets.
		keep := false
		for vb := range cur.VBuckets {
			if len(cur.VBuckets[vb].Chain) > 0 {
				keep = true
			}
		}
		if !keep {
			return
		}
		res, err := Plan(cur, nodes, replicas)
		if err != nil {
			rt.Fatal(err)
		}
		target := checkPlan(rt, cur, nodes, replicas, res)
		if !zoned {
			if res.Built > res.MinBuilt+res.MinBuilt/5+4 || res.Takeovers > res.MinTakeovers+res.MinTakeovers/2+2 {
				rt.Fatalf("built %d (min %d), takeovers %d (min %d)", res.Built, res.MinBuilt, res.Takeovers, res.MinTakeovers)
			}
		} else if !res.Fallback && (res.Built > 2*res.MinBuilt+4 || res.Takeovers > 2*res.MinTakeovers+2) {
			rt.Fatalf("built %d (min %d), takeovers %d (min %d)", res.Built, res.MinBuilt, res.Takeovers, res.MinTakeovers)
		}
		again, err := Plan(target, nodes, replicas)
		if err != nil {
			rt.Fatal(err)
		}
		if len(again.Moves) != 0 {
			rt.Fatalf("planning from the target moves %d vbuckets: %+v", len(again.Moves), again.Moves[0])
		}
	})
}

func BenchmarkPlanJoin(b *testing.B) {
	for _, tc := range []struct{ vbs, nodes, replicas int }{{1024, 3, 1}, {4096, 9, 2}, {65535, 17, 1}} {
		b.Run(fmt.Sprintf("%dvb-%dnodes", tc.vbs, tc.nodes), func(b *testing.B) {
			var ids []string
			for i := range tc.nodes {
				ids = append(ids, fmt.Sprintf("n%02d", i))
			}
			cur := placed(b, names(ids[:tc.nodes-1]...), tc.vbs, tc.replicas)
			nodes := names(ids...)
			for b.Loop() {
				if _, err := Plan(cur, nodes, tc.replicas); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPlanArbitraryMaps: from any valid map (chains of any length up to
// the replica count, any nodes, members or not), Plan meets the rules
// and never panics.
func TestPlanArbitraryMaps(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		vbs := rapid.IntRange(1, 64).Draw(rt, "vbuckets")
		r0 := rapid.IntRange(0, 3).Draw(rt, "replicas now")
		ids := []string{"a", "b", "c", "d", "e", "f"}
		chains := make([][]string, vbs)
		for vb := range chains {
			perm := rapid.Permutation(ids).Draw(rt, fmt.Sprintf("perm%d", vb))
			chains[vb] = perm[:rapid.IntRange(0, 1+r0).Draw(rt, fmt.Sprintf("len%d", vb))]
		}
		cur := (*vbmap.Map)(nil).Next(1, r0, chains)
		var nodes []vbmap.Node
		for _, id := range ids {
			if rapid.Bool().Draw(rt, "member "+id) {
				zone := ""
				if rapid.Bool().Draw(rt, "zoned "+id) {
					zone = rapid.SampledFrom([]string{"x", "y"}).Draw(rt, "zone "+id)
				}
				nodes = append(nodes, vbmap.Node{ID: id, Zone: zone})
			}
		}
		if len(nodes) == 0 {
			return
		}
		replicas := rapid.IntRange(0, 3).Draw(rt, "replicas")
		res, err := Plan(cur, nodes, replicas)
		if err != nil {
			rt.Fatal(err)
		}
		checkPlan(rt, cur, nodes, replicas, res)
	})
}

// TestPlanJoinsMeetTheBounds: one node joining n−1 (Place's map), and
// one of n leaving: the plan builds exactly the lower bound of copies and
// takes over exactly the lower bound of actives.
func TestPlanJoinsMeetTheBounds(t *testing.T) {
	for _, tc := range []struct{ vbs, nodes, replicas int }{{1024, 3, 1}, {1024, 5, 2}, {1024, 9, 1}, {4096, 17, 1}, {1024, 4, 3}, {1024, 65, 2}, {1024, 17, 3}} {
		var ids []string
		for i := range tc.nodes {
			ids = append(ids, fmt.Sprintf("n%02d", i))
		}
		cur := placed(t, names(ids[:tc.nodes-1]...), tc.vbs, tc.replicas)
		nodes := names(ids...)
		res, err := Plan(cur, nodes, tc.replicas)
		if err != nil {
			t.Fatal(err)
		}
		checkPlan(t, cur, nodes, tc.replicas, res)
		if res.Fallback || res.Built != res.MinBuilt || res.Takeovers != res.MinTakeovers {
			t.Errorf("join %+v: built %d (min %d), takeovers %d (min %d), fallback %v", tc, res.Built, res.MinBuilt, res.Takeovers, res.MinTakeovers, res.Fallback)
		}
		// And the node leaving again.
		cur = placed(t, nodes, tc.vbs, tc.replicas)
		res, err = Plan(cur, names(ids[:tc.nodes-1]...), tc.replicas)
		if err != nil {
			t.Fatal(err)
		}
		checkPlan(t, cur, names(ids[:tc.nodes-1]...), tc.replicas, res)
		if res.Fallback || res.Built != res.MinBuilt || res.Takeovers != res.MinTakeovers {
			t.Errorf("leave %+v: built %d (min %d), takeovers %d (min %d), fallback %v", tc, res.Built, res.MinBuilt, res.Takeovers, res.MinTakeovers, res.Fallback)
		}
	}
}
