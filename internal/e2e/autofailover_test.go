package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
)

// autoArgs are the flags of a cluster with automatic failover at the
// defaults: a 1 s timeout, raft's 200/200/100 ms timeouts (spelled out:
// they come after the other test clusters' slowArgs).
var autoArgs = []string{"--auto-failover", "--failover-timeout", "1s",
	"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms"}

// autoTrial kills (kill -9) a member that is not the leader while a
// writer writes to one of its vBuckets through the routing client, and
// returns the time from the kill to the first successful write after it,
// with the automatic failover's event.
func autoTrial(t *testing.T, cc *chainCluster) trial {
	t.Helper()
	leader := cc.status(0).Cluster.Leader
	vi := slices.IndexFunc(cc.ids, func(id string) bool { return id != leader })
	li := slices.Index(cc.ids, leader)
	victim, vid := cc.nodes[vi], cc.ids[vi]
	// Heartbeats flow between every pair before the kill.
	poll(t, 10*time.Second, "heartbeats between every pair", func() (bool, string) {
		for i := range cc.nodes {
			var af client.AutoFailover
			r := testproc.CLI(t, cc.nodes[i].Addr, "", "failover", "settings", "--json")
			if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &af) != nil || len(af.HeardMsAgo) != len(cc.nodes)-1 {
				return false, r.Stdout + r.Stderr
			}
			for _, ms := range af.HeardMsAgo {
				if ms > 300 {
					return false, r.Stdout
				}
			}
		}
		return true, ""
	})
	wc := dialNode(t, cc.nodes[li].Addr)
	m := wc.RoutingMap()
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("probe-%d", i); m.VBuckets[vbucket.Of([]byte(k), len(m.VBuckets))].Active() == vid {
			key = k
		}
	}
	if _, err := wc.Put(t.Context(), "auto", []byte(key), []byte("before")); err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	killed := time.Now()
	var wrote time.Duration
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := wc.Put(ctx, "auto", []byte(key), []byte("after"))
		cancel()
		if err == nil {
			wrote = time.Since(killed)
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("no write to the dead node's vbucket 20 s after the kill: %v\n%s", err, tail(cc.nodes[li].Output(), 30))
		}
	}
	var af client.AutoFailover
	poll(t, 10*time.Second, "the failover recorded on the leader", func() (bool, string) {
		r := testproc.CLI(t, cc.nodes[li].Addr, "", "failover", "settings", "--json")
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &af) != nil {
			return false, fmt.Sprintf("%+v", r)
		}
		return slices.ContainsFunc(af.Recent, func(e client.FailoverEvent) bool {
			return e.Kind == "failover" && slices.Contains(e.Nodes, vid)
		}), r.Stdout
	})
	tr := trial{killed: killed, wrote: wrote, af: af, leader: cc.nodes[li]}
	for _, e := range af.Recent {
		if e.Kind == "failover" && slices.Contains(e.Nodes, vid) {
			tr.ev = e
		}
	}
	return tr
}

// trial is the outcome of autoTrial.
type trial struct {
	killed time.Time
	wrote  time.Duration // from the kill to the first write that succeeded
	af     client.AutoFailover
	ev     client.FailoverEvent // the victim's failover
	leader *testproc.Node
}

// TestAutoFailoverKill9: three nodes with automatic failover (1 s): a
// member killed with kill -9 is failed over without an operator; a write
// to one of its vBuckets succeeds again within a few seconds (the figure
// is logged; bench/failover.sh measures it over many trials); the second
// failover is refused by max-count until the count is reset.
func TestAutoFailoverKill9(t *testing.T) {
	cc := startChains(t, 1, nil, nil, autoArgs...)
	tr := autoTrial(t, cc)
	af, leader := tr.af, tr.leader
	t.Logf("kill -9 to the first write to a dead node's vbucket: %v (silent %d ms at the decision, decided %d ms after the first sighting, committed in %d ms)",
		tr.wrote.Round(time.Millisecond), tr.ev.SilentMillis, tr.ev.DecisionMillis, tr.ev.CommitMillis)
	if af.Count != 1 {
		t.Fatalf("count %d after one automatic failover", af.Count)
	}
	// shoal nodes through the other survivor shows the leader's view.
	for _, n := range cc.nodes {
		if n == leader || slices.Contains(tr.ev.Nodes, cc.ids[slices.Index(cc.nodes, n)]) {
			continue
		}
		r := testproc.CLI(t, n.Addr, "", "nodes")
		if r.Code != 0 || !strings.Contains(r.Stdout, "up (the leader)") || !strings.Contains(r.Stdout, "up (heard ") || !strings.Contains(r.Stdout, " failed ") {
			t.Fatalf("shoal nodes through a follower: %+v", r)
		}
	}
	r := testproc.CLI(t, leader.Addr, "", "failover", "settings")
	if r.Code != 0 || !strings.Contains(r.Stdout, "automatic failover on: timeout 1s") || !strings.Contains(r.Stdout, "1 of max-count 1 used") {
		t.Fatalf("failover settings: %+v", r)
	}
	if r := testproc.CLI(t, leader.Addr, "", "failover", "settings", "--disable"); r.Code != 0 || !strings.Contains(r.Stdout, "automatic failover off") {
		t.Fatalf("failover settings --disable: %+v", r)
	}
	if r := testproc.CLI(t, leader.Addr, "", "failover", "settings", "--enable", "--max-count", "2"); r.Code != 0 || !strings.Contains(r.Stdout, "automatic failover on") || !strings.Contains(r.Stdout, "of max-count 2") {
		t.Fatalf("failover settings --enable --max-count 2: %+v", r)
	}
	if r := testproc.CLI(t, leader.Addr, "", "failover", "reset-count"); r.Code != 0 || !strings.Contains(r.Stdout, "0 of max-count 2 used") {
		t.Fatalf("failover reset-count: %+v", r)
	}
}

var failoverTrials = flag.Int("failover-trials", 0, "run TestAutoFailoverFigures with this many kill -9 trials (bench/failover.sh)")

// TestAutoFailoverFigures measures the automatic failover over
// -failover-trials kill -9 trials, each on a fresh three-node cluster:
// from the kill to the decision, to the committed map and to the first
// successful write to a vBucket of the dead node (docs/performance.md).
func TestAutoFailoverFigures(t *testing.T) {
	if *failoverTrials == 0 {
		t.Skip("measures the figures of docs/performance.md: bench/failover.sh")
	}
	var detect, commit, write []time.Duration
	for i := range *failoverTrials {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			tr := autoTrial(t, startChains(t, 1, nil, nil, autoArgs...))
			d := tr.ev.At.Sub(tr.killed)
			detect = append(detect, d)
			commit = append(commit, d+time.Duration(tr.ev.CommitMillis)*time.Millisecond)
			write = append(write, tr.wrote)
			t.Logf("trial %d: decided %v, committed %v, written %v after the kill", i, d.Round(time.Millisecond),
				commit[len(commit)-1].Round(time.Millisecond), tr.wrote.Round(time.Millisecond))
		})
	}
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{{"kill -9 to the decision", detect}, {"kill -9 to the committed map", commit}, {"kill -9 to the first write to a dead node's vbucket", write}} {
		slices.Sort(row.ds)
		q := func(p float64) time.Duration { return row.ds[min(len(row.ds)-1, int(p*float64(len(row.ds))))] }
		t.Logf("| %s | %v | %v | %v | %v |", row.name, row.ds[0].Round(time.Millisecond), q(0.5).Round(time.Millisecond),
			q(0.99).Round(time.Millisecond), row.ds[len(row.ds)-1].Round(time.Millisecond))
	}
}

// TestAutoFailoverSIGSTOP: a member frozen (SIGSTOP) is failed over like
// a dead one; resumed (SIGCONT), it serves nothing: its lease ran out and
// its map, once it hears the leader, holds nothing.
func TestAutoFailoverSIGSTOP(t *testing.T) {
	cc := startChains(t, 1, nil, nil, autoArgs...)
	leader := cc.status(0).Cluster.Leader
	vi := slices.IndexFunc(cc.ids, func(id string) bool { return id != leader })
	li := slices.Index(cc.ids, leader)
	victim, vid := cc.nodes[vi], cc.ids[vi]
	m := cc.m
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); m.VBuckets[vbucket.Of([]byte(k), len(m.VBuckets))].Active() == vid {
			key = k
		}
	}
	old := dialShort(t, victim.Addr)
	if _, err := old.Put(t.Context(), "users", []byte(key), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	victim.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	wc := dialNode(t, cc.nodes[li].Addr)
	poll(t, 20*time.Second, "a write to the frozen node's vbucket", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := wc.Put(ctx, "users", []byte(key), []byte("v2"))
		return err == nil, fmt.Sprint(err)
	})
	took := time.Since(stopped)
	t.Logf("SIGSTOP to the first write to a frozen node's vbucket: %v", took.Round(time.Millisecond))
	if took < 400*time.Millisecond { // less than a failover can take: who took it? (seen once in a loaded run)
		cs := cc.status(li).Cluster
		proc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", victim.Pid()))
		v, cas, gerr := wc.Gets(t.Context(), "users", []byte(key))
		t.Fatalf("a write to %s's vbucket %d succeeded %v after its SIGSTOP (the map at the start, revision %d, made it the active; now revision %d, failovers %d, leader %s; the victim's /proc stat %q; the key now %q cas %d %v)",
			vid, vbucket.Of([]byte(key), len(m.VBuckets)), took, m.Revision, cs.Revision, cs.Failovers, cs.Leader, proc, v, cas, gerr)
	}
	victim.Signal(syscall.SIGCONT)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := old.Put(t.Context(), "users", []byte(key), []byte("stale")); !errors.Is(err, client.ErrNotMyVBucket) {
			t.Fatalf("the frozen node took a write after SIGCONT: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, err := wc.Get(t.Context(), "users", []byte(key)); err != nil || string(v) != "v2" {
		t.Fatalf("after SIGCONT the key holds %q, %v", v, err)
	}
}

// TestAutoFailoverLeaderKilled: kill -9 of the metadata leader: a new
// leader is elected, starts deciding, and fails the old one over.
func TestAutoFailoverLeaderKilled(t *testing.T) {
	cc := startChains(t, 1, nil, nil, autoArgs...)
	leader := cc.status(0).Cluster.Leader
	li := slices.Index(cc.ids, leader)
	other := cc.nodes[(li+1)%3]
	cc.nodes[li].Kill()
	killed := time.Now()
	poll(t, 20*time.Second, "the old leader failed over", func() (bool, string) {
		cs, err := clusterStatus(other)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range cs.Nodes {
			if n.ID == leader {
				return n.State == "failed", fmt.Sprintf("%+v", n)
			}
		}
		return false, "not listed"
	})
	t.Logf("kill -9 of the leader to its failover committed: %v", time.Since(killed).Round(time.Millisecond))
}

// TestAutoFailoverNoQuorum: two of three members killed: the survivor has
// no metadata leader, nothing is failed over, and it says why.
func TestAutoFailoverNoQuorum(t *testing.T) {
	cc := startChains(t, 1, nil, nil, autoArgs...)
	cc.nodes[1].Kill()
	cc.nodes[2].Kill()
	poll(t, 20*time.Second, "the survivor says why it does not fail over", func() (bool, string) {
		return strings.Contains(cc.nodes[0].Output(), "automatic failover cannot decide: no metadata leader"), tail(cc.nodes[0].Output(), 5)
	})
	cs, err := clusterStatus(cc.nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cs.Nodes {
		if n.State != "active" {
			t.Fatalf("a member changed state without a quorum: %+v", n)
		}
	}
}

var soakDuration = flag.Duration("soak-duration", 10*time.Second, "how long TestAutoFailoverSoak loads the cluster")

// TestAutoFailoverSoak: three members with automatic failover at 1 s,
// every core kept busy by spinning goroutines of the test process
// competing with the nodes, and a steady writer: not one failover
// (-soak-duration, 10 s by default; bench/failover.sh runs it longer).
func TestAutoFailoverSoak(t *testing.T) {
	cc := startChains(t, 1, nil, nil, autoArgs...)
	stop := make(chan struct{})
	var spinners sync.WaitGroup
	for range runtime.NumCPU() {
		spinners.Add(1)
		go func() {
			defer spinners.Done()
			for x := 0; ; x++ {
				select {
				case <-stop:
					return
				default:
				}
				for range 100_000 {
					x ^= x<<1 + 1
				}
			}
		}()
	}
	wc := dialNode(t, cc.nodes[0].Addr)
	end := time.Now().Add(*soakDuration)
	var writes, fails atomic.Int64
	var writers sync.WaitGroup
	for w := range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; time.Now().Before(end); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if _, err := wc.Put(ctx, "soak", fmt.Appendf(nil, "w%d-%d", w, i%10000), []byte("v")); err != nil {
					fails.Add(1)
				} else {
					writes.Add(1)
				}
				cancel()
			}
		}()
	}
	writers.Wait()
	close(stop)
	spinners.Wait()
	for i := range cc.nodes {
		cs := cc.status(i).Cluster
		if cs.Failovers != 0 {
			t.Fatalf("%d false failovers under load (on %s): %+v", cs.Failovers, cc.ids[i], cs.AutoFailover)
		}
		for _, n := range cs.Nodes {
			if n.State != "active" {
				t.Fatalf("member %s is %s after the soak", n.ID, n.State)
			}
		}
	}
	t.Logf("soak of %v: %d writes, %d failed, 0 failovers", *soakDuration, writes.Load(), fails.Load())
}

// TestAutoFailoverFiveNodesTwoDown: five members, two replicas, max-count
// 2: two members killed together are failed over as one down set, and the
// vBuckets they were active for take writes again.
func TestAutoFailoverFiveNodesTwoDown(t *testing.T) {
	nodes, docs := startCluster(t, 5, append([]string{"--replicas", "2"}, autoArgs...)...)
	leader, followers := leaderOf(t, nodes, docs)
	if r := testproc.CLI(t, leader.Addr, "", "failover", "settings", "--max-count", "2"); r.Code != 0 {
		t.Fatalf("failover settings --max-count 2: %+v", r)
	}
	ids := map[*testproc.Node]string{}
	for i, n := range nodes {
		ids[n] = docs[i].Self
	}
	// Two that leave the metadata group a quorum: by default three of the
	// five vote, so at most one voter goes.
	var victims []*testproc.Node
	votersKilled := 0
	for _, f := range followers {
		voter := slices.Contains(docs[0].Voters, ids[f])
		if len(victims) < 2 && (!voter || votersKilled == 0) {
			victims = append(victims, f)
			if voter {
				votersKilled++
			}
		}
	}
	wc := dialNode(t, leader.Addr)
	m := wc.RoutingMap()
	var keys []string
	for _, v := range victims {
		for i := 0; ; i++ {
			if k := fmt.Sprintf("k-%s-%d", ids[v], i); m.VBuckets[vbucket.Of([]byte(k), len(m.VBuckets))].Active() == ids[v] {
				keys = append(keys, k)
				break
			}
		}
	}
	for _, v := range victims {
		v.Kill()
	}
	killed := time.Now()
	for _, k := range keys {
		poll(t, 20*time.Second, "a write to a dead member's vbucket", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := wc.Put(ctx, "auto", []byte(k), []byte("after"))
			return err == nil, fmt.Sprint(err)
		})
	}
	t.Logf("two of five killed: both vbuckets writable %v after the kill", time.Since(killed).Round(time.Millisecond))
	cs, err := clusterStatus(leader)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, n := range cs.Nodes {
		if n.State == "failed" {
			failed++
		}
	}
	if failed != 2 || cs.Failovers != 2 {
		t.Fatalf("%d failed members, count %d: %+v", failed, cs.Failovers, cs.AutoFailover)
	}
}
