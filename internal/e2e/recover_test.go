package e2e

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"shoal/internal/testproc"
)

var recoverMissed = flag.Int("recover-missed", 10000, "kv writes a failed-over node misses before `shoal recover` (TestRecoverAfterMissedWrites)")

// TestRecoverAfterMissedWrites: three nodes, one replica. A node stopped
// cleanly is failed over by hand, misses writes to every vBucket, comes
// back and is recovered with `shoal recover`: it becomes the replica of
// every chain short of a copy and catches up from its failover logs. Its
// histories still hold (its clean stop drained its streams, so the
// replicas promoted in its place had everything it had), so its kv and
// log vBuckets resume where they were (delta recovery: no rollback);
// the queue's are reported, not checked (a queue vBucket rolls back
// whenever a pop followed the seqno it asks for, docs/design.md §7).
// Every record then has its two copies. The figures: how many vBuckets
// resumed and how many were copied (rolled back), per engine. Then `shoal
// rebalance --wait` gives it its share of actives again, and every
// record is still there.
func TestRecoverAfterMissedWrites(t *testing.T) {
	c := startChains(t, 1, nil, nil)
	var w written
	c.write("before", 200, &w)
	c.waitCaughtUp(30 * time.Second)
	leader := c.status(0).Cluster.Leader
	vi := slices.IndexFunc(c.ids, func(id string) bool { return id != leader })
	victim, vid := c.nodes[vi], c.ids[vi]
	seed := c.nodes[(vi+1)%3]

	victim.Stop()
	r := testproc.CLI(t, seed.Addr, "", "failover", vid)
	if r.Code != 0 && !strings.Contains(r.Stderr, "failed") {
		t.Fatalf("shoal failover: %+v", r)
	}
	poll(t, 20*time.Second, "the stopped node failed over", func() (bool, string) {
		cs, err := clusterStatus(seed)
		if err != nil {
			return false, err.Error()
		}
		for _, mm := range cs.Nodes {
			if mm.ID == vid {
				return mm.State == "failed", mm.State
			}
		}
		return false, "not listed"
	})

	// The writes it misses, through the routing client of a survivor.
	wc := dialNode(t, seed.Addr)
	start := time.Now()
	for i := range *recoverMissed {
		key := fmt.Sprintf("missed-key-%d", i)
		var cas uint64
		if err := retryNMVB(func() (err error) {
			cas, err = wc.Put(t.Context(), "kv", []byte(key), []byte("value of "+key))
			return err
		}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		w.kv[key] = cas
	}
	t.Logf("%d writes missed by %s in %v", *recoverMissed, vid, time.Since(start).Round(time.Millisecond))

	c.nodes[vi] = restart(t, victim)
	poll(t, 20*time.Second, "the restarted node knows it is failed", func() (bool, string) {
		cs, err := clusterStatus(c.nodes[vi])
		if err != nil {
			return false, err.Error()
		}
		for _, mm := range cs.Nodes {
			if mm.ID == vid {
				return mm.State == "failed" && cs.Fenced == "", fmt.Sprintf("%+v fenced %q", mm, cs.Fenced)
			}
		}
		return false, "not listed"
	})
	recovered := time.Now()
	if r := testproc.CLI(t, seed.Addr, "", "recover", vid); r.Code != 0 {
		t.Fatalf("shoal recover: %+v", r)
	}
	c.connect()
	_, replica := c.m.Counts(vid)
	if replica == 0 {
		t.Fatalf("the recovered node is a replica of nothing: %+v", c.m)
	}
	c.waitCaughtUp(60 * time.Second)
	caughtUp := time.Since(recovered)
	c.checkRecords(&w)

	// Per engine: the vBuckets the recovered node replicates, and how
	// many of them were rolled back (dropped and copied from 0).
	st := c.status(vi)
	copied := map[string]uint64{}
	for _, e := range st.Replication.Engines {
		copied[e.Bucket] += e.Rollbacks
	}
	var figures []string
	for _, b := range []string{"kv", "log", "queue"} {
		figures = append(figures, fmt.Sprintf("%s %d resumed, %d copied", b, uint64(replica)-min(copied[b], uint64(replica)), copied[b]))
	}
	t.Logf("%s recovered as the replica of %d vbuckets, caught up %v after `shoal recover`: %s", vid, replica, caughtUp.Round(time.Millisecond), strings.Join(figures, "; "))
	for _, b := range []string{"kv", "log"} {
		if copied[b] != 0 {
			t.Errorf("%s: %d vbuckets copied again, want every one resumed from its failover log (delta recovery after a clean stop)", b, copied[b])
		}
	}
	if r := testproc.CLI(t, seed.Addr, "", "rebalance", "--wait"); r.Code != 0 {
		t.Fatalf("shoal rebalance --wait after the recovery: %+v", r)
	}
	c.connect()
	if active, _ := c.m.Counts(vid); active < len(c.m.VBuckets)/3 {
		t.Fatalf("after the rebalance the recovered node is active for %d of %d vbuckets", active, len(c.m.VBuckets))
	}
	c.waitCaughtUp(60 * time.Second)
	c.checkRecords(&w)
}
