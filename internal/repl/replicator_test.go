package repl

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"shoal/internal/engine"
	"shoal/internal/faultnet"
	"shoal/internal/logstore"
	"shoal/internal/vbmap"
)

// writer changes the producer's kv until stopped: puts over a small key
// space (so keys are overwritten), removes, TTLs, and now and then a
// channel removal.
type writer struct {
	stop chan struct{}
	wg   sync.WaitGroup
	n    atomic.Int64
}

func startWriter(t *testing.T, a *side, seed uint64) *writer {
	w := &writer{stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			ch := fmt.Sprintf("c%d", rng.IntN(3))
			key := []byte(fmt.Sprintf("k%d", rng.IntN(300)))
			var err error
			switch r := rng.IntN(100); {
			case r < 70:
				_, err = a.kv.Put(ch, key, []byte(fmt.Sprintf("v%d", i)), 0)
			case r < 80:
				_, err = a.kv.Put(ch, key, []byte(fmt.Sprintf("t%d", i)), time.Hour)
			case r < 99:
				_, err = a.kv.Remove(ch, key)
			default:
				a.kv.RemoveChannel(ch)
			}
			if err != nil {
				t.Errorf("write: %v", err)
				return
			}
			w.n.Add(1)
			if i%64 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	return w
}

func (w *writer) finish() { close(w.stop); w.wg.Wait() }

// waitWrites waits until the writer has made n more writes.
func (w *writer) waitWrites(t *testing.T, n int64) {
	t.Helper()
	target := w.n.Load() + n
	eventually(t, 10*time.Second, "writes", func() (bool, string) { return w.n.Load() >= target, "" })
}

func TestReplicateKVCatchUpThenLive(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	for i := range 2000 {
		a.kv.Put("pre", []byte(fmt.Sprintf("k%d", i)), []byte("v"), 0)
	}
	addr := a.serve(nil)
	b := newSide(t, "node-b", t.TempDir(), false, false)
	r := b.replicate(addr, "kv", b.kv, nil)
	w := startWriter(t, a, 1)
	w.waitWrites(t, 3000)
	w.finish()
	sameKV(t, a.kv, b.kv, r)
	st := r.Status(true)
	if st.Rollbacks != 0 || st.Reconnects != 0 || st.Sessions != 1 || st.State != StateStreaming || st.ProducerNode != "node-a" {
		t.Fatalf("status %+v", st)
	}
	for vb, s := range st.Seqnos {
		if s != a.kv.HighSeqno(uint16(vb)) {
			t.Fatalf("vb %d status seqno %d, producer %d", vb, s, a.kv.HighSeqno(uint16(vb)))
		}
	}
	// The replica took the producer's failover logs.
	for vb := range uint16(testVBuckets) {
		if !cmp.Equal(b.logs["kv"].Get(vb), a.logs["kv"].Get(vb)) {
			t.Fatalf("vb %d replica log %v, producer %v", vb, b.logs["kv"].Get(vb), a.logs["kv"].Get(vb))
		}
	}
}

// TestReconnectResumes cuts the connection again and again while writes
// go on (seed 001 cases 3 and 4): every reconnect resumes from the seqno
// applied, nothing is copied again.
func TestReconnectResumes(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	addr := a.serve(nil)
	p, err := faultnet.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := newSide(t, "node-b", t.TempDir(), false, false)
	r := b.replicate(p.Addr(), "kv", b.kv, func(c *Config) {
		c.Options.Connections = 2
		c.Options.IdleTimeout = 300 * time.Millisecond
	})
	w := startWriter(t, a, 2)
	for i := range 6 {
		w.waitWrites(t, 500)
		if i%2 == 0 {
			p.Cut()
		} else {
			p.Freeze()
			time.Sleep(400 * time.Millisecond)
			p.Thaw()
		}
		eventually(t, 10*time.Second, "a new session", func() (bool, string) {
			st := r.Status(false)
			return st.Sessions >= uint64(i+2) && st.State == StateStreaming, fmt.Sprintf("%+v", st)
		})
	}
	w.finish()
	sameKV(t, a.kv, b.kv, r)
	st := r.Status(false)
	if st.Rollbacks != 0 || st.Reconnects < 6 {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(st.LastError, "idle timeout") {
		t.Fatalf("last error %q, want the idle timeout of the last freeze", st.LastError)
	}
}

func TestProducerShutdownAndRestart(t *testing.T) {
	dir := t.TempDir()
	a := newSide(t, "node-a", dir, false, false)
	addr := a.serve(nil)
	b := newSide(t, "node-b", t.TempDir(), false, false)
	r := b.replicate(addr, "kv", b.kv, nil)
	w := startWriter(t, a, 3)
	w.waitWrites(t, 1000)
	w.finish()
	sameKV(t, a.kv, b.kv, r)

	// A clean stop with the data kept: same histories, the replica resumes.
	a.stop()
	if err := a.logs["kv"].SaveClean(a.kv.HighSeqno); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the loss noticed", func() (bool, string) {
		st := r.Status(false)
		return st.State != StateStreaming, st.State
	})
	a.openLogs("kv", a.kv)
	a2 := &side{t: t, name: "node-a", dir: dir, kv: a.kv, logs: a.logs}
	a2.serveAt(addr)
	w = startWriter(t, a2, 4)
	w.waitWrites(t, 1000)
	w.finish()
	sameKV(t, a.kv, b.kv, r)
	if st := r.Status(false); st.Rollbacks != 0 || st.Reconnects == 0 {
		t.Fatalf("status after a clean restart %+v", st)
	}

	// A restart that lost the data (a kv restarted without a dump): new
	// histories, the replica rolls every vBucket back and copies again.
	a2.stop()
	a3 := newSide(t, "node-a", dir, false, false)
	a3.serveAt(addr)
	w = startWriter(t, a3, 5)
	w.waitWrites(t, 1000)
	w.finish()
	sameKV(t, a3.kv, b.kv, r)
	if st := r.Status(false); st.Rollbacks < testVBuckets {
		t.Fatalf("status after a restart without data %+v", st)
	}
}

// TestApplyErrorRestartsSession: an apply error stops that stream, the
// session is reopened and resumes (seed 001 case 6). The failure lands
// inside the first snapshot, so the resume also presents a snapshot range.
func TestApplyErrorRestartsSession(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	for i := range 3000 {
		a.kv.Put("pre", []byte(fmt.Sprintf("k%d", i)), []byte("v"), 0)
	}
	addr := a.serve(nil)
	b := newSide(t, "node-b", t.TempDir(), false, false)
	hook, err := ApplyFailpoint("repl-apply-error=100")
	if err != nil {
		t.Fatal(err)
	}
	var failedAt atomic.Uint64
	r := b.replicate(addr, "kv", b.kv, func(c *Config) {
		c.ApplyHook = func(m *engine.Mutation) error {
			err := hook(m)
			if err != nil {
				failedAt.Store(uint64(m.VBucket)<<48 | m.Seqno)
			}
			return err
		}
	})
	w := startWriter(t, a, 6)
	w.waitWrites(t, 2000)
	w.finish()
	sameKV(t, a.kv, b.kv, r)
	st := r.Status(false)
	if st.Reconnects != 1 || st.Rollbacks != 0 || !strings.Contains(st.LastError, "failpoint") {
		t.Fatalf("status %+v", st)
	}
	if failedAt.Load() == 0 {
		t.Fatal("the failpoint never fired")
	}
}

func TestStopStartSet(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	addr := a.serve(nil)
	b := newSide(t, "node-b", t.TempDir(), false, false)
	r := b.replicate(addr, "kv", b.kv, nil)
	w := startWriter(t, a, 7)
	w.waitWrites(t, 500)
	r.Stop()
	r.Stop() // idempotent
	if st := r.Status(false); st.State != StateStopped || st.CaughtUp != 0 {
		t.Fatalf("stopped: %+v", st)
	}
	applied := r.Status(false).Applied
	w.waitWrites(t, 500)
	if got := r.Status(false).Applied; got != applied {
		t.Fatalf("applied %d mutations while stopped", got-applied)
	}
	if err := r.Set(Options{Connections: 3, NoopInterval: 800 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	r.Start()
	r.Start() // idempotent
	w.waitWrites(t, 500)
	if err := r.Set(Options{Connections: 2, NoopInterval: 900 * time.Millisecond, Compression: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the retuned session", func() (bool, string) {
		st := r.Status(false)
		return st.Sessions == 3 && st.State == StateStreaming, fmt.Sprintf("%+v", st)
	})
	w.waitWrites(t, 500)
	w.finish()
	sameKV(t, a.kv, b.kv, r)
	st := r.Status(false)
	if st.Connections != 2 || st.NoopInterval != "900ms" || st.Rollbacks != 0 || st.Reconnects != 0 {
		t.Fatalf("status %+v", st)
	}
	if err := r.Set(Options{Connections: 65}); err == nil {
		t.Fatal("65 connections accepted")
	}
}

func TestRollbackAfterPromotion(t *testing.T) {
	// b replicates a; c replicates b. b is promoted (new histories) after c
	// got ahead of a writer-free point... then b takes writes of its own
	// while a, still writing, is followed by nobody. Finally c is pointed
	// at a, whose histories b's promotion does not contain: c rolls back.
	a := newSide(t, "node-a", t.TempDir(), false, false)
	addrA := a.serve(nil)
	b := newSide(t, "node-b", t.TempDir(), false, false)
	rb := b.replicate(addrA, "kv", b.kv, nil)
	w := startWriter(t, a, 8)
	w.waitWrites(t, 1000)
	w.finish()
	sameKV(t, a.kv, b.kv, rb)
	rb.Stop()
	// Promote b: a new history per vBucket at its high seqno.
	if err := b.logs["kv"].BranchAll(b.kv.HighSeqno); err != nil {
		t.Fatal(err)
	}
	for vb := range uint16(testVBuckets) {
		b.kv.SetState(vb, vbmap.Active)
	}
	addrB := b.serve(nil)
	c := newSide(t, "node-c", t.TempDir(), false, false)
	rc := c.replicate(addrB, "kv", c.kv, nil)
	w = startWriter(t, b, 9)
	w.waitWrites(t, 1000)
	w.finish()
	sameKV(t, b.kv, c.kv, rc)
	if st := rc.Status(false); st.Rollbacks != 0 {
		t.Fatalf("c rolled back while following b: %+v", st)
	}
	// a moves on too: its history and b's diverged after the promotion.
	w = startWriter(t, a, 10)
	w.waitWrites(t, 1000)
	w.finish()
	rc.Stop()
	rc2 := c.replicate(addrA, "kv", c.kv, nil)
	sameKV(t, a.kv, c.kv, rc2)
	if st := rc2.Status(false); st.Rollbacks != testVBuckets {
		t.Fatalf("c following a after b's promotion: %+v", st)
	}
}

func TestQueueReplication(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), true, false)
	addr := a.serve(nil)
	p, err := faultnet.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bdir := t.TempDir()
	b := newSide(t, "node-b", bdir, true, false)
	r := b.replicate(p.Addr(), "queue", b.queue, nil)
	ctx := context.Background()
	push := func(from, to int) {
		for i := from; i < to; i++ {
			ch := fmt.Sprintf("q%d", i%3)
			if err := a.queue.Push(ctx, []string{ch}, []byte(fmt.Sprintf("r%05d", i)), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	push(0, 600)
	for range 100 {
		if _, err := a.queue.Pop("q0", nil); err != nil {
			t.Fatal(err)
		}
	}
	same := func() {
		t.Helper()
		eventually(t, 20*time.Second, "queue replica equal", func() (bool, string) {
			ca, cb := a.queue.Channels(), b.queue.Channels()
			st := r.Status(false)
			if len(ca) != len(cb) {
				return false, fmt.Sprintf("%v vs %v", ca, cb)
			}
			for i := range ca {
				if ca[i].Name != cb[i].Name || ca[i].Records != cb[i].Records || ca[i].Bytes != cb[i].Bytes {
					return false, fmt.Sprintf("%+v vs %+v (%+v)", ca[i], cb[i], st)
				}
			}
			return true, ""
		})
	}
	same()
	// A cut after pops: the queue engine cannot resume past a pop, so the
	// vBuckets that saw pops are copied again; nothing is doubled.
	p.Cut()
	push(600, 900)
	for range 50 {
		a.queue.Pop("q1", nil)
	}
	same()
	if st := r.Status(false); st.Reconnects != 1 {
		t.Fatalf("status %+v, want one reconnect for the cut", st)
	}
	r.Stop()
	if ra, rb := queueContents(t, a.queue), queueContents(t, b.queue); !cmp.Equal(ra, rb) {
		t.Fatalf("queue contents differ:\n%v\n%v", ra, rb)
	}
}

func TestLogReplication(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, true)
	addr := a.serve(nil)
	p, err := faultnet.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := newSide(t, "node-b", t.TempDir(), false, true)
	r := b.replicate(p.Addr(), "log", b.log, nil)
	ctx := context.Background()
	appendN := func(from, to int) {
		for i := from; i < to; i += 10 {
			var recs []logstore.Rec
			for j := i; j < i+10; j++ {
				recs = append(recs, logstore.Rec{Timestamp: uint64(1_700_000_000 + j), Value: []byte(fmt.Sprintf("e%d", j))})
			}
			if err := a.log.Append(ctx, fmt.Sprintf("l%d", i%2), recs, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	same := func() {
		t.Helper()
		eventually(t, 20*time.Second, "log replica equal", func() (bool, string) {
			for vb := range uint16(testVBuckets) {
				if ha, hb := a.log.HighSeqno(vb), b.log.HighSeqno(vb); ha != hb {
					return false, fmt.Sprintf("vb %d: %d vs %d", vb, ha, hb)
				}
			}
			st := r.Status(false)
			return st.CaughtUp == st.VBuckets, fmt.Sprintf("%+v", st)
		})
		for _, ch := range []string{"l0", "l1"} {
			if ra, rb := logRecords(t, a.log, ch), logRecords(t, b.log, ch); !cmp.Equal(ra, rb) {
				t.Fatalf("channel %s: %d records vs %d", ch, len(ra), len(rb))
			}
		}
	}
	appendN(0, 500)
	same()
	p.Cut()
	appendN(500, 1000)
	same()
	// One reconnect, for the cut: live appends follow their snapshot
	// without a protocol error (see ascending).
	if st := r.Status(false); st.Rollbacks != 0 || st.Reconnects != 1 {
		t.Fatalf("status %+v", st)
	}
}

func logRecords(t *testing.T, s *logstore.Store, ch string) []string {
	t.Helper()
	it, err := s.Range(ch, 0, 1<<62, logstore.Filter{}, logstore.Position{})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for {
		recs, err := it.Next(logstore.DefaultBatchBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			out = append(out, fmt.Sprintf("%d %d %d %s", r.Timestamp, r.VBucket, r.Seqno, r.Value))
		}
	}
}

func TestAuthenticatedProducer(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	a := newSide(t, "node-a", t.TempDir(), false, false)
	addr := a.serve(map[string][]byte{"admin": secret, "reader": secret})
	a.kv.Put("c", []byte("k"), []byte("v"), 0)
	b := newSide(t, "node-b", t.TempDir(), false, false)

	// Without credentials, and as a user that is not admin: refused, retried.
	for _, hs := range []struct{ user, want string }{{"", "requires authentication"}, {"reader", "not permitted"}} {
		r := b.replicate(addr, "kv", b.kv, func(c *Config) { c.Handshake = Handshake("node-b", hs.user, secret, testVBuckets) })
		eventually(t, 10*time.Second, "a refusal", func() (bool, string) {
			st := r.Status(false)
			return strings.Contains(st.LastError, hs.want), fmt.Sprintf("%+v", st)
		})
		r.Stop()
	}
	// A producer with another vBucket count is refused.
	r := b.replicate(addr, "kv", b.kv, func(c *Config) { c.Handshake = Handshake("node-b", "admin", secret, 2*testVBuckets) })
	eventually(t, 10*time.Second, "a refusal", func() (bool, string) {
		st := r.Status(false)
		return strings.Contains(st.LastError, "vbuckets"), fmt.Sprintf("%+v", st)
	})
	r.Stop()
	r = b.replicate(addr, "kv", b.kv, func(c *Config) { c.Handshake = Handshake("node-b", "admin", secret, testVBuckets) })
	sameKV(t, a.kv, b.kv, r)
}

func TestConfigErrors(t *testing.T) {
	b := newSide(t, "node-b", t.TempDir(), false, false)
	base := Config{Name: "b", Addr: "127.0.0.1:1", Bucket: "kv", Engine: b.kv, Logs: b.logs["kv"], VBuckets: []uint16{0}, Logger: quiet}
	for name, mod := range map[string]func(*Config){
		"no name":        func(c *Config) { c.Name = "" },
		"no addr":        func(c *Config) { c.Addr = "" },
		"bad bucket":     func(c *Config) { c.Bucket = "a b" },
		"no engine":      func(c *Config) { c.Engine = nil },
		"no vbuckets":    func(c *Config) { c.VBuckets = nil },
		"twice":          func(c *Config) { c.VBuckets = []uint16{1, 1} },
		"bad backoff":    func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond },
		"noop too small": func(c *Config) { c.Options.NoopInterval = time.Microsecond },
	} {
		cfg := base
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewProducer(ProducerConfig{Name: "a"}); err == nil {
		t.Error("producer without buckets accepted")
	}
	if _, err := NewProducer(ProducerConfig{Name: "a", Buckets: []Bucket{{Name: "kv"}}}); err == nil {
		t.Error("bucket without engine accepted")
	}
	// A producer that is not there: connect errors, backoff, Stop works.
	r, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	eventually(t, 10*time.Second, "a connect error", func() (bool, string) {
		st := r.Status(false)
		return st.LastError != "" && st.State == StateBackoff, fmt.Sprintf("%+v", st)
	})
	r.Stop()
	if st := r.Status(false); st.State != StateStopped {
		t.Fatalf("state %s after Stop", st.State)
	}
}

// TestDrainThenShutdown: once writes stop, Drain waits until every stream
// was handed the latest mutations; a shutdown then leaves the replica
// with everything, without a reconnect.
func TestDrainThenShutdown(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), true, false)
	prod, err := NewProducer(ProducerConfig{Name: "node-a", Buckets: a.buckets(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	addr := a.serveWith(prod)
	b := newSide(t, "node-b", t.TempDir(), true, false)
	r := b.replicate(addr, "kv", b.kv, nil)
	rq := b.replicate(addr, "queue", b.queue, nil)
	for round := range 3 {
		w := startWriter(t, a, uint64(20+round))
		w.waitWrites(t, 1000)
		for i := range 50 {
			a.queue.Push(context.Background(), []string{"q"}, []byte(fmt.Sprint(i)), nil)
		}
		w.finish()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := prod.Drain(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if round < 2 {
			continue
		}
		a.stop()
		eventually(t, 5*time.Second, "the drained tail on the replica", func() (bool, string) {
			want, got := kvContents(a.kv), kvContents(b.kv)
			for vb := range uint16(testVBuckets) {
				if a.queue.HighSeqno(vb) != b.queue.HighSeqno(vb) {
					return false, fmt.Sprintf("queue vb %d: %d vs %d", vb, a.queue.HighSeqno(vb), b.queue.HighSeqno(vb))
				}
			}
			return want == got, head(got)
		})
	}
	if st := r.Status(false); st.Sessions != 1 || st.Rollbacks != 0 {
		t.Fatalf("kv %+v", st)
	}
	if st := rq.Status(false); st.Sessions != 1 {
		t.Fatalf("queue %+v", st)
	}
}
