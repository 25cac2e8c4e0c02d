package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"shoal/internal/testproc"
	"shoal/internal/vbmap"
)

// TestRebalancePlanOfAJoin: a fourth node joins three; `shoal rebalance
// plan` (any member asked) gives it its share — a quarter of the copies
// and of the actives, built exactly at the lower bounds — and changes
// nothing; planned without it, nothing moves. `shoal rebalance --wait`
// then makes those moves: the map has the plan's counts, nothing shows
// moving, and planning again moves nothing.
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
		Detail    []struct {
			VBucket  uint16
			From, To []string
		} `json:"detail"`
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
	r := testproc.CLI(t, nodes[0].Addr, "", "rebalance", "--wait")
	if r.Code != 0 || !strings.Contains(r.Stdout, "rebalance done") {
		t.Fatalf("shoal rebalance --wait: %+v", r)
	}
	t.Logf("shoal rebalance --wait: %s", strings.TrimSpace(r.Stdout))
	var st struct {
		State     string `json:"state"`
		Done      int    `json:"done"`
		Total     int    `json:"total"`
		MapMoving int    `json:"map_moving"`
		Revision  uint64 `json:"revision"`
	}
	r = testproc.CLI(t, fourth.Addr, "", "rebalance", "--status", "--json")
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.State != "done" || st.Done != d.Moves || st.Total != d.Moves || st.MapMoving != 0 {
		t.Fatalf("rebalance --status --json: %v %+v\n%s", err, st, r.Stdout)
	}
	// The node asked may apply the last commits a moment after the
	// leader: its map is read until it has the run's last revision.
	var after *vbmap.Map
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, after = clusterMap(t, nodes[0].Addr); after.Revision >= st.Revision || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	counts := map[string][2]int{}
	for _, v := range after.VBuckets {
		for i, id := range v.Chain {
			c := counts[id]
			c[min(i, 1)]++
			counts[id] = c
		}
	}
	for _, n := range d.Nodes {
		if got := counts[n.ID]; got != [2]int{n.After.Active, n.After.Replica} {
			t.Errorf("node %s after the rebalance: %v active/replica, the plan said %+v", n.ID, got, n.After)
		}
	}
	if again := plan(nodes[2].Addr); again.Moves != 0 {
		t.Fatalf("planned after the rebalance: %d moves", again.Moves)
	}
}
