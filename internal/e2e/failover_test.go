package e2e

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
)

// TestFailoverFencesTheOldActive: a node frozen (SIGSTOP) while it is
// active for vBuckets is failed over through another member with `shoal
// failover`, which waits out the frozen node's lease; resumed (SIGCONT), the
// old active never takes a write or serves a read as active again: its
// lease ran out while it was frozen (every request checks it) and, once it
// hears the leader, its map holds nothing. The promoted survivors take
// writes for its vBuckets.
func TestFailoverFencesTheOldActive(t *testing.T) {
	nodes, docs := startCluster(t, 3, "--failover-timeout", "1s", "--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms")
	leader, followers := leaderOf(t, nodes, docs)
	victim := followers[0]
	var vid string
	for i, n := range nodes {
		if n == victim {
			vid = docs[i].Self
		}
	}
	_, m := clusterMap(t, victim.Addr)
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); m.Active(vbucket.Of([]byte(k), clusterVBuckets)) == vid {
			key = k
		}
	}
	old := dialShort(t, victim.Addr)
	ctx := t.Context()
	if _, err := old.Put(ctx, "users", []byte(key), []byte("v1")); err != nil {
		t.Fatal(err)
	}

	victim.Signal(syscall.SIGSTOP)
	start := time.Now()
	r := testproc.CLI(t, leader.Addr, "", "failover", vid)
	if r.Code != 0 || !strings.Contains(r.Stdout, "failed over") {
		t.Fatalf("shoal failover: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("shoal failover took %v: %s", time.Since(start), strings.TrimSpace(r.Stdout))

	// The new active of the key's vBucket takes writes.
	_, after := clusterMap(t, leader.Addr)
	na := after.Active(vbucket.Of([]byte(key), clusterVBuckets))
	if na == "" || na == vid {
		t.Fatalf("the key's vbucket has active %q after the failover", na)
	}
	var naAddr string
	for i, n := range nodes {
		if docs[i].Self == na {
			naAddr = n.Addr
		}
	}
	nc := dialShort(t, naAddr)
	poll(t, 10*time.Second, "a write to the promoted active", func() (bool, string) {
		_, err := nc.Put(ctx, "users", []byte(key), []byte("v2"))
		return err == nil, fmt.Sprint(err)
	})

	victim.Signal(syscall.SIGCONT)
	deadline := time.Now().Add(3 * time.Second)
	for tries := 0; time.Now().Before(deadline); tries++ {
		if _, err := old.Put(ctx, "users", []byte(key), []byte(fmt.Sprintf("stale%d", tries))); !errors.Is(err, client.ErrNotMyVBucket) {
			t.Fatalf("the old active answered a write after the failover (try %d): %v\n%s", tries, err, tail(victim.Output(), 40))
		}
		if v, err := old.Get(ctx, "users", []byte(key)); !errors.Is(err, client.ErrNotMyVBucket) {
			t.Fatalf("the old active served a read after the failover (try %d): %q %v", tries, v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, err := nc.Get(ctx, "users", []byte(key)); err != nil || string(v) != "v2" {
		t.Fatalf("the promoted active holds %q, %v", v, err)
	}
	poll(t, 10*time.Second, "the old node knows it is failed", func() (bool, string) {
		cs, err := clusterStatus(victim)
		if err != nil {
			return false, err.Error()
		}
		for _, mm := range cs.Nodes {
			if mm.ID == vid {
				return mm.State == "failed" && mm.Active == 0, fmt.Sprintf("%+v", mm)
			}
		}
		return false, "not listed"
	})
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
