package e2e

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"shoal/internal/testproc"
)

// TestRebalancePlanOfAJoin: a fourth node joins three; `shoal rebalance
// plan` (any member asked) gives it its share — a quarter of the copies
// and of the actives, built exactly at the lower bounds — and changes
// nothing; planned without it, nothing moves; `shoal rebalance` alone
// says the online moves are not there yet (exit 4).
func TestRebalancePlanOfAJoin(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	addrs := make([]string, 3)
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	fourth := testproc.Start(t, clusterArgs(testproc.FreePorts(t, 1)[0], addrs, 0)...)
	docs := waitCluster(t, append(slices.Clone(nodes), fourth), 30*time.Second)
	fid := docs[3].Self
	_, before := clusterMap(t, nodes[0].Addr)

	type planDoc struct {
		Revision uint64 `json:"revision"`
		Nodes    []struct {
			ID    string `json:"id"`
			After struct {
				Active  int `json:"active"`
				Replica int `json:"replica"`
			} `json:"after"`
		} `json:"nodes"`
		Moves     int `json:"moves"`
		Built     int `json:"copies_built"`
		MinBuilt  int `json:"copies_built_lower_bound"`
		Takeovers int `json:"takeovers"`
		MinTake   int `json:"takeovers_lower_bound"`
	}
	plan := func(addr string, args ...string) planDoc {
		t.Helper()
		r := testproc.CLI(t, addr, "", append([]string{"rebalance", "plan", "--json"}, args...)...)
		if r.Code != 0 {
			t.Fatalf("shoal rebalance plan %v: %+v", args, r)
		}
		var d planDoc
		if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil {
			t.Fatalf("plan output: %v\n%s", err, r.Stdout)
		}
		return d
	}
	d := plan(fourth.Addr)
	copies := clusterVBuckets * (1 + before.Replicas)
	for _, n := range d.Nodes {
		total := n.After.Active + n.After.Replica
		if total < copies/4 || total > copies/4+1 || n.After.Active < clusterVBuckets/4 || n.After.Active > clusterVBuckets/4+1 {
			t.Errorf("node %s after the plan: %+v (%d copies of %d vbuckets over 4 nodes)", n.ID, n.After, copies, clusterVBuckets)
		}
	}
	if d.Revision != before.Revision || d.Moves == 0 || d.Built != d.MinBuilt || d.Takeovers != d.MinTake {
		t.Fatalf("plan from revision %d (map %d): %d moves, built %d (min %d), takeovers %d (min %d)", d.Revision, before.Revision, d.Moves, d.Built, d.MinBuilt, d.Takeovers, d.MinTake)
	}
	t.Logf("4th node %s: %d vbuckets move, %d copies to build, %d takeovers (both the lower bounds)", fid, d.Moves, d.Built, d.Takeovers)
	if w := plan(nodes[1].Addr, "--without", fid); w.Moves != 0 {
		t.Fatalf("planned without the new node: %d moves, want none (the map is Place's of the three)", w.Moves)
	}
	if _, after := clusterMap(t, nodes[0].Addr); after.Revision != before.Revision {
		t.Fatalf("a plan changed the map: revision %d -> %d", before.Revision, after.Revision)
	}
	if r := testproc.CLI(t, nodes[0].Addr, "", "rebalance"); r.Code != 4 {
		t.Fatalf("shoal rebalance: %+v, want exit 4", r)
	}
}
