package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// TestFailoverAfterKill9: three nodes, one replica. A writer keeps
// writing through the routing client while a node is killed (kill -9)
// and failed over with `shoal failover`. Every vBucket takes writes
// again; every write the writer saw acknowledged is served, except the
// asynchronous-replication loss window: writes to the killed node's
// vBuckets that had not reached their replica. Those are counted, and
// must be, per vBucket, the last ones acknowledged (a tail, never a hole).
func TestFailoverAfterKill9(t *testing.T) {
	cc := startChains(t, 1, nil, nil, "--failover-timeout", "2s")
	leader := cc.status(0).Cluster.Leader
	vi := slices.IndexFunc(cc.ids, func(id string) bool { return id != leader })
	victim, vid := cc.nodes[vi], cc.ids[vi]
	seed := cc.nodes[(vi+1)%3]
	wc := dialNode(t, seed.Addr)
	m := wc.RoutingMap()
	vbs := len(m.VBuckets)
	victimVB := func(vb uint16) bool { return m.VBuckets[vb].Active() == vid }

	type ack struct {
		key string
		vb  uint16
	}
	var (
		mu    sync.Mutex
		acked []ack
		fails int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("w-%07d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, err := wc.Put(ctx, "acked", []byte(key), []byte("value of "+key))
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, ack{key, vbucket.Of([]byte(key), vbs)})
			} else {
				fails++
			}
			mu.Unlock()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	poll(t, 20*time.Second, "2,000 acknowledged writes", func() (bool, string) { return count() >= 2000, fmt.Sprint(count()) })

	victim.Kill()
	killed := time.Now()
	beforeKill := count() // acknowledged before the kill: the history the loss window is a tail of
	r := testproc.CLI(t, seed.Addr, "", "failover", vid)
	if r.Code != 0 || !strings.Contains(r.Stdout, "failed over") {
		t.Fatalf("shoal failover: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	failedOver := time.Now()
	// The first write to a failed-over vBucket after the failover.
	probe := ""
	for i := 0; probe == ""; i++ {
		if k := fmt.Sprintf("probe-%d", i); victimVB(vbucket.Of([]byte(k), vbs)) {
			probe = k
		}
	}
	poll(t, 10*time.Second, "a write to a failed-over vbucket", func() (bool, string) {
		_, err := wc.Put(t.Context(), "acked", []byte(probe), []byte("p"))
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("kill -9 to failover answered %v (the victim's lease, failover timeout 2 s); failover answered to the first write to a failed-over vbucket %v: %s",
		failedOver.Sub(killed).Round(time.Millisecond), time.Since(failedOver).Round(100*time.Microsecond), strings.TrimSpace(r.Stdout))
	time.Sleep(300 * time.Millisecond) // the writer writes to the new actives too
	close(stop)
	<-done

	// Every vBucket takes writes.
	for vb := range vbs {
		for i := 0; ; i++ {
			if k := fmt.Appendf(nil, "every-%d-%d", vb, i); vbucket.Of(k, vbs) == uint16(vb) {
				if _, err := wc.Put(t.Context(), "every", k, []byte("x")); err != nil {
					t.Fatalf("vbucket %d after the failover: %v", vb, err)
				}
				break
			}
		}
	}
	// Every acknowledged write is served, but for a tail per vBucket of
	// the killed node's.
	lost := map[uint16]int{}
	lostTotal, onVictim := 0, 0
	for i, a := range acked {
		pre := i < beforeKill // after the kill: written on the new actives' histories
		if victimVB(a.vb) && pre {
			onVictim++
		}
		v, err := wc.Get(t.Context(), "acked", []byte(a.key))
		switch {
		case err == nil && string(v) == "value of "+a.key:
			if pre && lost[a.vb] > 0 {
				t.Fatalf("vbucket %d lost an acknowledged write and kept a later one (%s): a hole, not a tail", a.vb, a.key)
			}
		case errors.Is(err, client.ErrNotFound) && victimVB(a.vb) && pre:
			lost[a.vb]++
			lostTotal++
		default:
			t.Fatalf("acknowledged %s (vbucket %d, active %s): %q %v", a.key, a.vb, m.VBuckets[a.vb].Active(), v, err)
		}
	}
	t.Logf("%d writes acknowledged (%d failed or timed out during the failure), %d of them to the killed node's vbuckets; asynchronous-replication loss window: %d lost in %d vbuckets",
		len(acked), fails, onVictim, lostTotal, len(lost))

	// The killed node comes back: it serves nothing (it is failed) until
	// `shoal recover`, which makes it the replica of every chain short of a
	// copy; it rolls back to the new actives' histories and catches up.
	cc.nodes[vi] = restart(t, victim)
	poll(t, 20*time.Second, "the restarted node knows it is failed", func() (bool, string) {
		cs, err := clusterStatus(cc.nodes[vi])
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
	if r := testproc.CLI(t, cc.nodes[vi].Addr, "", "--no-route", "get", "acked", acked[0].key); r.Code == 0 || !strings.Contains(r.Stderr, "not my vbucket") {
		t.Fatalf("the failed node served a read: %+v", r)
	}
	if r := testproc.CLI(t, seed.Addr, "", "recover", vid); r.Code != 0 {
		t.Fatalf("shoal recover: %+v", r)
	}
	cc.connect()
	if _, replica := cc.m.Counts(vid); replica == 0 {
		t.Fatalf("the recovered node is a replica of nothing: %+v", cc.m)
	}
	cc.waitCaughtUp(30 * time.Second)
}

// TestFailoverRefusedWithoutACopy: with no replicas, failing a killed
// node over would leave its vBuckets without any copy: refused, naming
// them and the way out; nothing changes.
func TestFailoverRefusedWithoutACopy(t *testing.T) {
	cc := startChains(t, 0, nil, nil, "--failover-timeout", "1s")
	leader := cc.status(0).Cluster.Leader
	vi := slices.IndexFunc(cc.ids, func(id string) bool { return id != leader })
	rev := cc.m.Revision
	cc.nodes[vi].Kill()
	r := testproc.CLI(t, cc.nodes[(vi+1)%3].Addr, "", "failover", cc.ids[vi])
	if r.Code == 0 || !strings.Contains(r.Stderr, "refused: failover: a vbucket would have no copy left: vbuckets ") || !strings.Contains(r.Stderr, "--force") {
		t.Fatalf("failover of the only copy: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("refused: %s", strings.TrimSpace(r.Stderr))
	if _, m := clusterMap(t, cc.nodes[(vi+1)%3].Addr); m.Revision != rev {
		t.Fatalf("a refused failover changed the map: revision %d -> %d", rev, m.Revision)
	}
}
