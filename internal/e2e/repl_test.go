package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/faultnet"
	"shoal/internal/liveness"
	"shoal/internal/node"
	"shoal/internal/repl"
	"shoal/internal/testproc"
)

// The replication tests run an active node and a standby (--replica-of)
// as real processes, inject one of the six disconnect cases of seed 001
// while a writer goes on writing to the active, and end by comparing both
// nodes: every vBucket's high seqno per engine (status --vbuckets), every
// kv record with its CAS (GetAll), every log record, the queue sizes, and
// the active's kv against what the writer had acknowledged.

// replVBuckets keeps the status documents small.
const replVBuckets = "64"

func startActive(t *testing.T, args ...string) *testproc.Node {
	t.Helper()
	return testproc.Start(t, append([]string{"--vbuckets", replVBuckets, "--liveness-tick", "200ms"}, args...)...)
}

func startStandby(t *testing.T, of string, args ...string) *testproc.Node {
	t.Helper()
	return testproc.Start(t, append([]string{"--vbuckets", replVBuckets, "--liveness-tick", "200ms", "--replica-of", of,
		"--replica-noop-interval", "250ms"}, args...)...)
}

// dialShort connects to the node at addr alone (no routing: the tests
// ask that node), with short timeouts: the node may be frozen.
func dialShort(t *testing.T, addr string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.WithNoRouting(), client.WithTimeout(2*time.Second), client.WithDialTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nodeStatus reads a node's status document.
func nodeStatus(c *client.Client, vbuckets bool) (node.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var st node.Status
	doc, err := c.Status(ctx, vbuckets)
	if err == nil {
		err = json.Unmarshal(doc, &st)
	}
	return st, err
}

// poll calls cond every 50 ms until it holds or d passes.
func poll(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var detail string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, detail = cond(); ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %s", what, d, detail)
}

// engineStatus returns the standby's replicator of bucket.
func engineStatus(st node.Status, bucket string) repl.Status {
	for _, e := range st.Replication.Engines {
		if e.Bucket == bucket {
			return e
		}
	}
	return repl.Status{}
}

// sum adds a field over the standby's replicators.
func sum(st node.Status, f func(repl.Status) uint64) uint64 {
	var n uint64
	for _, e := range st.Replication.Engines {
		n += f(e)
	}
	return n
}

func sessions(e repl.Status) uint64   { return e.Sessions }
func reconnects(e repl.Status) uint64 { return e.Reconnects }
func rollbacks(e repl.Status) uint64  { return e.Rollbacks }

// streaming reports whether every replicator has a session open.
func streaming(st node.Status) bool {
	for _, e := range st.Replication.Engines {
		if e.State != repl.StateStreaming {
			return false
		}
	}
	return len(st.Replication.Engines) > 0
}

// kvWriter writes to the active until stopped: puts and removes over a
// small key space in three channels, queue pushes and log appends. It
// keeps what the active acknowledged; a write that failed leaves its key
// uncertain.
type kvWriter struct {
	c    *client.Client
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	model     map[string]string // channel/key -> value; "" = removed
	uncertain map[string]bool
	pushed    int64 // acknowledged pushes
	pushFails int64 // pushes with an unknown outcome
	logged    int64 // acknowledged log appends
	logFails  int64 // appends with an unknown outcome
	acked     int64
	failed    int64
}

var kvChannels = []string{"c0", "c1", "c2"}

func startKVWriter(t *testing.T, addr string) *kvWriter {
	w := &kvWriter{c: dialShort(t, addr), stop: make(chan struct{}), done: make(chan struct{}),
		model: map[string]string{}, uncertain: map[string]bool{}}
	go w.run()
	t.Cleanup(w.finish)
	return w
}

func (w *kvWriter) run() {
	defer close(w.done)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		ch := kvChannels[rng.IntN(len(kvChannels))]
		key := fmt.Sprintf("k%d", rng.IntN(500))
		id := ch + "/" + key
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var err error
		val := ""
		switch r := rng.IntN(100); {
		case r < 85:
			val = fmt.Sprintf("v%d", i)
			_, err = w.c.Put(ctx, ch, []byte(key), []byte(val))
		case r < 95:
			_, err = w.c.Remove(ctx, ch, []byte(key))
		case r < 97:
			err = w.c.Push(ctx, []string{"q"}, []byte(fmt.Sprintf("p%d", i)))
			w.mu.Lock()
			if err == nil {
				w.pushed++
			} else {
				w.pushFails++
			}
			w.mu.Unlock()
			cancel()
			continue
		default:
			err = w.c.LogPut(ctx, "l", uint64(1_700_000_000+i), []byte(fmt.Sprintf("e%d", i)))
			w.mu.Lock()
			if err == nil {
				w.logged++
			} else {
				w.logFails++
			}
			w.mu.Unlock()
			cancel()
			continue
		}
		cancel()
		w.mu.Lock()
		if err == nil {
			w.model[id], w.acked = val, w.acked+1
			delete(w.uncertain, id)
		} else {
			w.uncertain[id], w.failed = true, w.failed+1
		}
		w.mu.Unlock()
		if err != nil {
			time.Sleep(50 * time.Millisecond) // the active is down or frozen
		} else if i%8 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// acknowledged returns the number of writes acknowledged so far.
func (w *kvWriter) acknowledged() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

// waitWrites waits for n more acknowledged writes.
func (w *kvWriter) waitWrites(t *testing.T, n int64) {
	t.Helper()
	target := w.acknowledged() + n
	poll(t, 30*time.Second, "writes acknowledged", func() (bool, string) {
		got := w.acknowledged()
		return got >= target, fmt.Sprintf("%d of %d", got, target)
	})
}

func (w *kvWriter) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// kvRecords reads every record of the writer's channels with its CAS.
func kvRecords(t *testing.T, c *client.Client, opts ...client.GetAllOption) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ch := range kvChannels {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for r, err := range c.GetAll(ctx, ch, opts...).All() {
			if err != nil {
				cancel()
				t.Fatalf("getall %s: %v", ch, err)
			}
			out[ch+"/"+string(r.Key)] = fmt.Sprintf("%s cas %d", r.Value, r.CAS)
		}
		cancel()
	}
	return out
}

// logRecords reads every record of the writer's log channel, in order.
func logRecords(t *testing.T, c *client.Client, opts ...client.RangeOption) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []string
	for r, err := range c.LogAll(ctx, "l", opts...).All() {
		if err != nil {
			t.Fatalf("log range: %v", err)
		}
		out = append(out, fmt.Sprintf("%d %s", r.Timestamp, r.Value))
	}
	return out
}

// compareNodes stops the writer, waits until the standby has caught up
// (every vBucket's high seqno equal per engine, every replicator caught
// up), then compares the kv records with their CAS, the queue sizes, and
// the active's kv with what the writer had acknowledged.
func compareNodes(t *testing.T, w *kvWriter, active, standby *client.Client) {
	t.Helper()
	w.finish()
	poll(t, 60*time.Second, "standby caught up with equal seqnos", func() (bool, string) {
		sa, err := nodeStatus(active, true)
		if err != nil {
			return false, err.Error()
		}
		sb, err := nodeStatus(standby, true)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range sb.Replication.Engines {
			if e.Lagging != 0 || e.State != repl.StateStreaming {
				return false, fmt.Sprintf("%s: %s, %d lagging, last error %q", e.Bucket, e.State, e.Lagging, e.LastError)
			}
		}
		for _, b := range []string{"kv", "queue", "log"} {
			ha, hb := sa.Replication.HighSeqnos[b], sb.Replication.HighSeqnos[b]
			if len(ha) == 0 || fmt.Sprint(ha) != fmt.Sprint(hb) {
				return false, fmt.Sprintf("%s high seqnos differ:\nactive  %v\nstandby %v", b, ha, hb)
			}
		}
		if sa.Queue.Records != sb.Queue.Records {
			return false, fmt.Sprintf("queue records %d vs %d", sa.Queue.Records, sb.Queue.Records)
		}
		return true, ""
	})
	// The standby holds replica copies only: its scans read them with the
	// replica option, and are empty without it.
	if la, lb := logRecords(t, active), logRecords(t, standby, client.RangeWithReplicaCopies()); fmt.Sprint(la) != fmt.Sprint(lb) || len(la) == 0 {
		t.Errorf("log records differ: %d on the active, %d on the standby", len(la), len(lb))
	}
	if lb := logRecords(t, standby); len(lb) != 0 {
		t.Errorf("the standby's log range without the replica option returned %d records", len(lb))
	}
	ra, rb := kvRecords(t, active), kvRecords(t, standby, client.WithReplicaCopies())
	if nb := kvRecords(t, standby); len(nb) != 0 {
		t.Errorf("the standby's getall without the replica option returned %d records", len(nb))
	}
	if len(ra) == 0 {
		t.Fatal("the active holds no kv record")
	}
	for id, v := range ra {
		if rb[id] != v {
			t.Errorf("%s: active %q, standby %q", id, v, rb[id])
		}
	}
	for id, v := range rb {
		if _, ok := ra[id]; !ok {
			t.Errorf("%s: only on the standby (%q)", id, v)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	certain := 0
	for id, want := range w.model {
		if w.uncertain[id] {
			continue
		}
		certain++
		got, _, _ := strings.Cut(ra[id], " cas ")
		if got != want {
			t.Errorf("%s: the writer's acknowledged value %q, the active holds %q", id, want, got)
		}
	}
	sa, _ := nodeStatus(active, false)
	if q := sa.Queue.Records; q < w.pushed || q > w.pushed+w.pushFails {
		t.Errorf("queue holds %d records; %d pushes acknowledged, %d uncertain", q, w.pushed, w.pushFails)
	}
	if sa.Log == nil || sa.Log.Records < uint64(w.logged) || sa.Log.Records > uint64(w.logged+w.logFails) {
		t.Errorf("log holds %+v records; %d appends acknowledged, %d uncertain", sa.Log, w.logged, w.logFails)
	}
	t.Logf("compared: %d kv records equal with their CAS, %d keys as acknowledged (%d writes, %d failed), %d queue records, %d log records",
		len(ra), certain, w.acked, w.failed, sa.Queue.Records, sa.Log.Records)
}

// Case 1: the producer is shut down cleanly (SIGTERM) and restarted on
// its data: the standby reconnects and resumes. The kv engine comes back
// from its shutdown dump, the queue from its state file, the log from its
// segments, all at the high seqnos the failover logs recorded at the clean
// stop, so every history is kept: no vBucket rolls back, and every write
// acknowledged before the stop is still there.
func TestReplicaProducerShutdown(t *testing.T) {
	a := startActive(t)
	standby := startStandby(t, a.Addr)
	cb := dialShort(t, standby.Addr)
	w := startKVWriter(t, a.Addr)
	w.waitWrites(t, 1500)
	poll(t, 30*time.Second, "standby streaming", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		return err == nil && streaming(st) && engineStatus(st, "kv").Applied > 0, fmt.Sprint(err)
	})
	a.Stop()
	poll(t, 10*time.Second, "the loss seen by the standby", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		return err == nil && !streaming(st), fmt.Sprintf("%+v", st.Replication)
	})
	// Restart on the same data and address (the flags after the seven
	// testproc puts first).
	a2 := testproc.StartIn(t, a.Dir, append(a.Args[7:], "--listen", a.Addr)...)
	w.waitWrites(t, 1500)
	st, err := nodeStatus(cb, false)
	if err != nil {
		t.Fatal(err)
	}
	if r := sum(st, reconnects); r < 2 {
		t.Fatalf("reconnects %d after the producer's restart", r)
	}
	compareNodes(t, w, dialShort(t, a2.Addr), cb)
	st, _ = nodeStatus(cb, false)
	for _, b := range []string{"kv", "queue", "log"} {
		if e := engineStatus(st, b); e.Rollbacks != 0 {
			for _, l := range strings.Split(a.Output()+a2.Output()+standby.Output(), "\n") {
				if strings.Contains(l, "history") || strings.Contains(l, "rolling back") || strings.Contains(l, "drained") {
					t.Log(l)
				}
			}
			t.Fatalf("the %s replica rolled back %d vbuckets after a clean restart with its data: %+v", b, e.Rollbacks, e)
		}
	}
}

// Case 2: an operator stops, starts and retunes the standby's replication
// at runtime with the CLI; the node is not restarted.
func TestReplicaStopStartSet(t *testing.T) {
	a := startActive(t)
	b := startStandby(t, a.Addr)
	ca, cb := dialShort(t, a.Addr), dialShort(t, b.Addr)
	started := time.Now()
	st0, err := nodeStatus(cb, false)
	if err != nil {
		t.Fatal(err)
	}
	w := startKVWriter(t, a.Addr)
	w.waitWrites(t, 1000)
	cli := func(args ...string) {
		t.Helper()
		if r := testproc.CLI(t, b.Addr, "", args...); r.Code != 0 {
			t.Fatalf("shoal %v: %d %s", args, r.Code, r.Stderr)
		}
	}
	cli("replica", "stop")
	st, err := nodeStatus(cb, false)
	if err != nil {
		t.Fatal(err)
	}
	stopped := sum(st, func(e repl.Status) uint64 { return e.Applied })
	for _, e := range st.Replication.Engines {
		if e.State != repl.StateStopped {
			t.Fatalf("after replica stop: %+v", e)
		}
	}
	w.waitWrites(t, 1000)
	st, _ = nodeStatus(cb, false)
	if got := sum(st, func(e repl.Status) uint64 { return e.Applied }); got != stopped {
		t.Fatalf("%d mutations applied while stopped", got-stopped)
	}
	cli("replica", "start")
	w.waitWrites(t, 500)
	cli("replica", "set", "--connections", "3", "--noop-interval", "200ms")
	poll(t, 20*time.Second, "the retuned sessions", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range st.Replication.Engines {
			if e.Connections != 3 || e.NoopInterval != "200ms" || e.State != repl.StateStreaming {
				return false, fmt.Sprintf("%+v", e)
			}
		}
		return true, ""
	})
	w.waitWrites(t, 1000)
	compareNodes(t, w, ca, cb)
	st, _ = nodeStatus(cb, false)
	if sum(st, rollbacks) != 0 {
		t.Fatalf("rollbacks after stop/start/set: %+v", st.Replication)
	}
	if r := testproc.CLI(t, b.Addr, "", "replica", "set", "--connections", "99"); r.Code == 0 || !strings.Contains(r.Stderr, "bad request") {
		t.Fatalf("replica set --connections 99: %d %q", r.Code, r.Stderr)
	}
	if r := testproc.CLI(t, a.Addr, "", "replica", "stop"); r.Code == 0 || !strings.Contains(r.Stderr, "not a standby") {
		t.Fatalf("replica stop on the active: %d %q", r.Code, r.Stderr)
	}
	if st.NodeID != st0.NodeID || time.Duration(st.UptimeSeconds-st0.UptimeSeconds)*time.Second < time.Since(started)-2*time.Second {
		t.Fatalf("the standby restarted: uptime %ds, %ds at the start %v ago", st.UptimeSeconds, st0.UptimeSeconds, time.Since(started))
	}
}

// Case 3: the connection is closed cleanly under the standby (a proxy
// cuts it): it reconnects with backoff and resumes.
func TestReplicaConnectionClosed(t *testing.T) {
	a := startActive(t)
	p, err := faultnet.New(a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := startStandby(t, p.Addr())
	ca, cb := dialShort(t, a.Addr), dialShort(t, b.Addr)
	w := startKVWriter(t, a.Addr)
	for i := range 3 {
		w.waitWrites(t, 700)
		p.Cut()
		poll(t, 20*time.Second, "a new session after the cut", func() (bool, string) {
			st, err := nodeStatus(cb, false)
			return err == nil && streaming(st) && sum(st, reconnects) >= uint64(len(st.Replication.Engines)*(i+1)), fmt.Sprintf("%+v", st.Replication)
		})
	}
	w.waitWrites(t, 700)
	compareNodes(t, w, ca, cb)
	st, _ := nodeStatus(cb, false)
	if !strings.Contains(engineStatus(st, "kv").LastError, "closed the connection") || sum(st, rollbacks) != 0 {
		t.Fatalf("after the cuts: %+v", st.Replication)
	}
}

// Case 4: nothing arrives for longer than the idle timeout (the proxy
// freezes both directions): the standby gives up on the connection and
// reconnects after the thaw.
func TestReplicaIdleTimeout(t *testing.T) {
	a := startActive(t)
	p, err := faultnet.New(a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := startStandby(t, p.Addr(), "--replica-noop-interval", "1s", "--replica-idle-timeout", "1500ms")
	ca, cb := dialShort(t, a.Addr), dialShort(t, b.Addr)
	w := startKVWriter(t, a.Addr)
	w.waitWrites(t, 1000)
	p.Freeze()
	poll(t, 10*time.Second, "the idle timeout", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		return err == nil && strings.Contains(engineStatus(st, "kv").LastError, "idle timeout"), fmt.Sprintf("%+v", st.Replication)
	})
	w.waitWrites(t, 500) // the active goes on meanwhile
	p.Thaw()
	poll(t, 20*time.Second, "a new session after the thaw", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		return err == nil && streaming(st) && engineStatus(st, "kv").Sessions >= 2, fmt.Sprintf("%+v", st.Replication)
	})
	w.waitWrites(t, 700)
	compareNodes(t, w, ca, cb)
}

// Case 5: the producer is frozen with SIGSTOP (its sockets stay open,
// nothing flows): the standby declares the connection dead within two
// NOOP intervals, shows the active inactive within two liveness ticks of
// its last frame, reconnects after SIGCONT and shows it active again.
func TestReplicaProducerFrozen(t *testing.T) {
	const noop, tick = 250 * time.Millisecond, 200 * time.Millisecond
	a := startActive(t)
	b := startStandby(t, a.Addr)
	ca, cb := dialShort(t, a.Addr), dialShort(t, b.Addr)
	w := startKVWriter(t, a.Addr)
	w.waitWrites(t, 1000)
	sa, err := nodeStatus(ca, false)
	if err != nil {
		t.Fatal(err)
	}
	activeID := sa.NodeID
	peer := func(st node.Status) liveness.NodeStatus {
		if st.Liveness != nil {
			for _, n := range st.Liveness.Nodes {
				if n.Node == activeID {
					return n
				}
			}
		}
		return liveness.NodeStatus{}
	}
	poll(t, 10*time.Second, "the active seen active", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		return err == nil && peer(st).State == liveness.Active, fmt.Sprintf("%+v", peer(st))
	})
	st0, _ := nodeStatus(cb, false)
	before := sum(st0, sessions)

	stoppedAt := time.Now()
	a.Signal(syscall.SIGSTOP)
	var inactiveAfter time.Duration
	poll(t, 10*time.Second, "the active seen inactive", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		if err == nil && peer(st).State == liveness.Inactive {
			inactiveAfter = time.Since(stoppedAt)
			return true, ""
		}
		return false, fmt.Sprintf("%+v %v", peer(st), err)
	})
	var deadAfter time.Duration
	poll(t, 10*time.Second, "the frozen connection declared dead", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		e := engineStatus(st, "kv")
		if err == nil && strings.Contains(e.LastError, "2 noop intervals") && e.LastErrorAt != nil {
			deadAfter = e.LastErrorAt.Sub(stoppedAt)
			return true, ""
		}
		return false, fmt.Sprintf("%+v %v", e, err)
	})
	t.Logf("after SIGSTOP: connection declared dead after %v (2 NOOP intervals = %v), active shown inactive after %v (2 ticks = %v)",
		deadAfter, 2*noop, inactiveAfter, 2*tick)
	// The detection fires 2 intervals after the last frame, which arrived
	// at most one spy interval before the SIGSTOP; the slack covers a
	// loaded machine's timers. Status computes liveness when asked: the
	// active shows inactive 2 ticks after its last frame, which came before
	// the SIGSTOP.
	if deadAfter > 2*noop+300*time.Millisecond {
		t.Errorf("the dead connection was detected %v after SIGSTOP; want within 2 NOOP intervals (%v) + 300ms", deadAfter, 2*noop)
	}
	if inactiveAfter > 2*tick+300*time.Millisecond {
		t.Errorf("the active was shown inactive %v after SIGSTOP; want within 2 ticks (%v) + 300ms", inactiveAfter, 2*tick)
	}
	time.Sleep(time.Second)
	a.Signal(syscall.SIGCONT)
	poll(t, 20*time.Second, "reconnected and active again", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		return err == nil && streaming(st) && sum(st, sessions) > before && peer(st).State == liveness.Active,
			fmt.Sprintf("%+v %+v %v", st.Replication, peer(st), err)
	})
	w.waitWrites(t, 700)
	compareNodes(t, w, ca, cb)
}

// Case 6: applying a mutation fails on the standby (a failpoint): that
// stream stops, the session is closed, reopened and resumed.
func TestReplicaApplyError(t *testing.T) {
	a := startActive(t)
	w := startKVWriter(t, a.Addr)
	w.waitWrites(t, 500)
	t.Setenv(repl.FailpointsEnv, "repl-apply-error=1000")
	// NOOPs every second: the reconnect counted is the failpoint's, not a
	// loaded machine's stall.
	b := startStandby(t, a.Addr, "--replica-noop-interval", "1s")
	ca, cb := dialShort(t, a.Addr), dialShort(t, b.Addr)
	poll(t, 30*time.Second, "the injected apply error", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		// The failpoint counts mutations over every engine's replicator: any
		// of kv, queue and log may take the failure.
		var lastErrors string
		for _, e := range st.Replication.Engines {
			lastErrors += e.LastError
		}
		return err == nil && sum(st, reconnects) >= 1 && strings.Contains(lastErrors, "failpoint"),
			fmt.Sprintf("%+v %v", st.Replication, err)
	})
	w.waitWrites(t, 1000)
	compareNodes(t, w, ca, cb)
	if !strings.Contains(b.Output(), "replication stream stopped: apply failed") {
		t.Fatal("the standby did not log the stopped stream")
	}
	st, _ := nodeStatus(cb, false)
	if r := sum(st, reconnects); r != 1 {
		t.Fatalf("%d reconnects for one apply error: %+v", r, st.Replication)
	}
}

// TestPromote: a standby refuses writes naming the active, then `shoal
// promote` makes it active: it accepts writes and starts new histories.
func TestPromote(t *testing.T) {
	a := startActive(t)
	b := startStandby(t, a.Addr)
	cb := dialShort(t, b.Addr)
	testproc.CLI(t, a.Addr, "", "put", "c", "k", "v1")
	poll(t, 20*time.Second, "replicated", func() (bool, string) {
		r := testproc.CLI(t, b.Addr, "", "get", "--replica", "c", "k")
		return r.Stdout == "v1" && strings.Contains(r.Stderr, "replica copy on "+b.Addr), r.Stderr
	})
	r := testproc.CLI(t, b.Addr, "", "put", "c", "k", "v2")
	if r.Code == 0 || !strings.Contains(r.Stderr, "not my vbucket") || !strings.Contains(r.Stderr, a.Addr) {
		t.Fatalf("put on the standby: %d %q", r.Code, r.Stderr)
	}
	if r := testproc.CLI(t, b.Addr, "", "get", "c", "k"); r.Code == 0 || !strings.Contains(r.Stderr, "not my vbucket") || !strings.Contains(r.Stderr, a.Addr) {
		t.Fatalf("get (not --replica) on the standby: %d %q", r.Code, r.Stderr)
	}
	if r := testproc.CLI(t, b.Addr, "", "push", "q", "x"); r.Code == 0 || !strings.Contains(r.Stderr, "not my vbucket") {
		t.Fatalf("push on the standby: %d %q", r.Code, r.Stderr)
	}
	r = testproc.CLI(t, b.Addr, "", "status")
	if r.Code != 0 || !strings.Contains(r.Stdout, "replica of "+a.Addr) || !strings.Contains(r.Stdout, "caught up") {
		t.Fatalf("status of the standby: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	r = testproc.CLI(t, b.Addr, "", "status", "--vbuckets")
	if lines := strings.Split(r.Stdout, "\n"); r.Code != 0 || !strings.Contains(r.Stdout, "\nvbucket\tkv\tlog\tqueue\n") || !strings.Contains(r.Stdout, "\n63\t") {
		t.Fatalf("status --vbuckets: %d lines %q", len(lines), r.Stderr)
	}
	if r := testproc.CLI(t, a.Addr, "", "status"); r.Code != 0 || !strings.Contains(r.Stdout, " active ") {
		t.Fatalf("status of the active: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	// Not while the active streams to it: both would take writes.
	if r := testproc.CLI(t, b.Addr, "", "promote"); r.Code == 0 || !strings.Contains(r.Stderr, "the active is alive") || !strings.Contains(r.Stderr, a.Addr) {
		t.Fatalf("promote with the active alive: %d %q", r.Code, r.Stderr)
	}
	// A clean stop drains the streams: the standby holds everything.
	a.Stop()
	poll(t, 20*time.Second, "promoted", func() (bool, string) {
		r := testproc.CLI(t, b.Addr, "", "promote")
		return r.Code == 0, r.Stderr
	})
	if r := testproc.CLI(t, b.Addr, "", "put", "c", "k", "v2"); r.Code != 0 {
		t.Fatalf("put on the promoted node: %d %q", r.Code, r.Stderr)
	}
	if r := testproc.CLI(t, b.Addr, "", "get", "c", "k"); r.Stdout != "v2" {
		t.Fatalf("get on the promoted node: %q", r.Stdout)
	}
	after, err := nodeStatus(cb, true)
	if err != nil {
		t.Fatal(err)
	}
	if after.Replication.Role != "active" || after.Replication.PromotedFrom != a.Addr || len(after.Replication.Engines) != 0 {
		t.Fatalf("after promote: %+v", after.Replication)
	}
	if r := testproc.CLI(t, b.Addr, "", "promote"); r.Code == 0 || !strings.Contains(r.Stderr, "not a standby") {
		t.Fatalf("second promote: %d %q", r.Code, r.Stderr)
	}
	// It will not come back as a standby by accident.
	b.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(testproc.Build(t), "shoald"), b.Args...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "was promoted") {
		t.Fatalf("restart as a standby after promotion: %v %s", err, out)
	}
}

// TestPromoteOfALaggingStandby: the defect found by a new user — promote
// of a standby still copying reported success and left it with a third of
// the log — must not come back. The standby applies slowly (a failpoint),
// its active is killed in the middle of the copy: promote is refused,
// naming the lag; --force promotes it and says what is lost.
func TestPromoteOfALaggingStandby(t *testing.T) {
	a := startActive(t)
	ca := dialShort(t, a.Addr)
	const records = 20_000
	batch := make([]client.LogRecord, 1000)
	for i := 0; i < records; i += len(batch) {
		for j := range batch {
			batch[j] = client.LogRecord{Timestamp: uint64(1_700_000_000_000 + i + j), Value: []byte("a record of the log")}
		}
		if _, err := ca.LogPutBatch(t.Context(), "l", batch); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(repl.FailpointsEnv, "repl-apply-delay=1ms")
	b := startStandby(t, a.Addr)
	cb := dialShort(t, b.Addr)
	poll(t, 20*time.Second, "the copy under way", func() (bool, string) {
		st, err := nodeStatus(cb, false)
		e := engineStatus(st, "log")
		return err == nil && e.Applied > 100, fmt.Sprintf("%+v %v", e, err)
	})
	a.Kill()
	var refusal string
	poll(t, 20*time.Second, "promote refused for the lag", func() (bool, string) {
		r := testproc.CLI(t, b.Addr, "", "promote")
		refusal = r.Stderr
		return r.Code != 0 && strings.Contains(r.Stderr, "behind its active"), fmt.Sprintf("%d %q", r.Code, r.Stderr)
	})
	if !strings.Contains(refusal, "log: ") || !strings.Contains(refusal, "--force") {
		t.Fatalf("the refusal does not name the lagging engine and the way out: %q", refusal)
	}
	t.Logf("refused: %s", strings.TrimSpace(refusal))
	if st, _ := nodeStatus(cb, false); st.Replication.Role == "active" {
		t.Fatal("a refused promotion made the standby active")
	}
	if r := testproc.CLI(t, b.Addr, "", "promote", "--force"); r.Code != 0 {
		t.Fatalf("promote --force: %d %q", r.Code, r.Stderr)
	}
	if !strings.Contains(b.Output(), "promoting a standby that is behind its active") {
		t.Fatal("the forced promotion did not log what is lost")
	}
	if n := len(logRecords(t, cb)); n == 0 || n >= records {
		t.Fatalf("the promoted standby holds %d of %d log records: the test did not catch it mid-copy", n, records)
	}
}
