package failover

import (
	"fmt"
	"testing"
)

// TestPlanPromotesTheReplicaAheadInEveryEngine: durability's premise
// (docs/design.md, "Durability"). A replica holds at least what it
// acknowledged, so the replica at or above every other in every engine
// holds every write a majority acknowledged; the sum rule always promotes
// it when there is one (being at or above everywhere, its sum is the
// largest, and a tie means equal copies). Without one (only with two
// replicas: one ahead in kv, the other in the log) the sum decides, and
// a majority write of the engine it is behind in can be lost.
func TestPlanPromotesTheReplicaAheadInEveryEngine(t *testing.T) {
	m := mapOf(2, []string{"a", "b", "c"}, []string{"a", "b", "c"}, []string{"a", "c", "b"})
	held := map[string][]uint64{
		// vb 0: b is ahead in every engine, c's sum is not larger anyway.
		"b/0": {9, 4, 2}, "c/0": {8, 4, 2},
		// vb 1: neither dominates (b ahead in kv, c in the log): the sum (c).
		"b/1": {9, 0, 1}, "c/1": {2, 0, 20},
		// vb 2: c is ahead of b.
		"b/2": {5, 0, 0}, "c/2": {5, 1, 0},
	}
	seqnos := func(n string, vb uint16) ([]uint64, bool) {
		s, ok := held[fmt.Sprintf("%s/%d", n, vb)]
		return s, ok
	}
	res, err := Plan(m, "a", []string{"b", "c"}, seqnos, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Promoted[0] != "b" || res.Promoted[1] != "c" || res.Promoted[2] != "c" {
		t.Fatalf("promoted %v", res.Promoted)
	}
	// Equal everywhere: the first in the chain.
	held["b/0"], held["c/0"] = []uint64{3, 3, 3}, []uint64{3, 3, 3}
	res, _ = Plan(m, "a", []string{"b", "c"}, seqnos, false)
	if res.Promoted[0] != "b" {
		t.Fatalf("tie: promoted %v", res.Promoted[0])
	}
}
