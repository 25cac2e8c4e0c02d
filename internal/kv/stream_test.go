package kv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// sinkEvent is a marker (Op 0, Seqno = start, Ref = end) or a copied
// mutation.
type sinkEvent = engine.Mutation

// applySink records what a stream sends and applies it to dst (if any).
type applySink struct {
	dst    *Store
	before func(m *engine.Mutation) // called before each mutation; may block
	mu     sync.Mutex
	events []sinkEvent
	signal chan struct{}
}

// newApplySink returns a sink that records what it gets and, when dst is
// not nil, applies it to dst, whose vBuckets it makes replicas.
func newApplySink(dst *Store) *applySink {
	if dst != nil {
		setAll(dst, vbmap.Replica)
	}
	return &applySink{dst: dst, signal: make(chan struct{}, 1)}
}

// setAll sets every vBucket of s to st.
func setAll(s *Store, st vbmap.State) {
	for vb := range s.parts {
		if err := s.SetState(uint16(vb), st); err != nil {
			panic(err)
		}
	}
}

func (a *applySink) Snapshot(start, end uint64) error {
	a.add(sinkEvent{Seqno: start, Ref: end})
	return nil
}

func (a *applySink) Mutation(m *engine.Mutation) error {
	if a.before != nil {
		a.before(m)
	}
	c := *m
	c.Key, c.Value = slices.Clone(m.Key), slices.Clone(m.Value)
	a.add(c)
	if a.dst != nil {
		return a.dst.Apply(m)
	}
	return nil
}

func (a *applySink) add(e sinkEvent) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
	select {
	case a.signal <- struct{}{}:
	default:
	}
}

func (a *applySink) snapshot() []sinkEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

// waitEvents waits until the sink holds at least n events.
func (a *applySink) waitEvents(t *testing.T, n int) []sinkEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if ev := a.snapshot(); len(ev) >= n {
			return ev
		}
		select {
		case <-a.signal:
		case <-deadline:
			t.Fatalf("timed out waiting for %d events, have %d", n, len(a.snapshot()))
		}
	}
}

// streamRun is a Stream running in a goroutine.
type streamRun struct {
	cancel context.CancelFunc
	done   chan error
}

func startStream(s *Store, vb uint16, from uint64, sink engine.Sink) *streamRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &streamRun{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Stream(ctx, vb, from, sink) }()
	return r
}

// startConsumer streams vb of a into b like a replication consumer: from
// b's seqno, and after a rollback from 0 once b's vBucket is dropped.
func startConsumer(a, b *Store, vb uint16) *streamRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &streamRun{cancel: cancel, done: make(chan error, 1)}
	go func() {
		for {
			err := a.Stream(ctx, vb, b.HighSeqno(vb), newApplySink(b))
			if !errors.Is(err, engine.ErrRollback) {
				r.done <- err
				return
			}
			if err := b.DropVBucket(vb); err != nil {
				r.done <- err
				return
			}
		}
	}()
	return r
}

// stop cancels the stream and returns its error.
func (r *streamRun) stop() error {
	r.cancel()
	return <-r.done
}

// entry is one index entry of a Store, for comparisons.
type entry struct {
	Ch, Key       string
	Value         string
	Seqno         uint64
	Tomb, Expired bool
	Expiry        int64
}

// entries lists every record and tombstone of vb, and its channel removals.
func entries(s *Store, vb uint16) ([]entry, []string) {
	p := s.parts[vb]
	p.mu.RLock()
	defer p.mu.RUnlock()
	var es []entry
	for name, t := range p.tables {
		for i, sl := range t.slots {
			if sl == 0 {
				continue
			}
			r := t.recAt(i)
			es = append(es, entry{name, string(r.key), string(r.value), r.seqno, r.tomb(), r.flags&flagExpired != 0, r.expiry()})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.Ch+"/"+a.Key, b.Ch+"/"+b.Key) })
	var rm []string
	for _, c := range p.removed {
		rm = append(rm, fmt.Sprintf("%s@%d", c.name, c.seqno))
	}
	slices.Sort(rm)
	return es, rm
}

// sameVBuckets fails unless a and b hold the same entries and seqnos.
func sameVBuckets(t *testing.T, a, b *Store) {
	t.Helper()
	for vb := range a.parts {
		ea, ra := entries(a, uint16(vb))
		eb, rb := entries(b, uint16(vb))
		if d := cmp.Diff(ea, eb); d != "" {
			t.Fatalf("vb %d entries differ (-active +replica):\n%s", vb, d)
		}
		if d := cmp.Diff(ra, rb); d != "" {
			t.Fatalf("vb %d channel removals differ:\n%s", vb, d)
		}
		if ha, hb := a.HighSeqno(uint16(vb)), b.HighSeqno(uint16(vb)); ha != hb {
			t.Fatalf("vb %d high seqno %d on the active, %d on the replica", vb, ha, hb)
		}
	}
}

// waitCaughtUp waits until every vBucket of b has a's high seqno.
func waitCaughtUp(t *testing.T, a, b *Store) {
	t.Helper()
	for vb := range a.parts {
		waitVBCaughtUp(t, a, b, uint16(vb))
	}
}

// waitVBCaughtUp waits until vb of b has a's high seqno.
func waitVBCaughtUp(t *testing.T, a, b *Store, vb uint16) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for a.HighSeqno(vb) != b.HighSeqno(vb) {
		if time.Now().After(deadline) {
			t.Fatalf("vb %d: replica at %d, active at %d", vb, b.HighSeqno(vb), a.HighSeqno(vb))
		}
		time.Sleep(time.Millisecond)
	}
}

// keyIn returns the i-th key (of a fixed sequence) that falls in vb.
func keyIn(vb uint16, vbs, i int) []byte {
	for n := 0; ; n++ {
		k := fmt.Appendf(nil, "k%d", n)
		if vbucket.Of(k, vbs) == vb {
			if i == 0 {
				return k
			}
			i--
		}
	}
}

func TestStreamSnapshotThenLive(t *testing.T) {
	const vbs = 4
	s := newStore(t, Config{VBuckets: vbs})
	for i := range 6 {
		if _, err := s.Put("c", keyIn(1, vbs, i), []byte{byte(i)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	s.Put("d", keyIn(1, vbs, 0), []byte("d"), 0)
	s.Remove("c", keyIn(1, vbs, 2))
	s.Put("c", keyIn(1, vbs, 3), []byte("again"), time.Hour)
	s.RemoveChannel("d")
	s.Put("c", keyIn(2, vbs, 0), []byte("other vb"), 0)
	high := s.HighSeqno(1)
	if high != 10 {
		t.Fatalf("high seqno %d, want 10", high)
	}

	sink := newApplySink(nil)
	run := startStream(s, 1, 0, sink)
	ev := sink.waitEvents(t, 7)
	wantSnap := []string{"marker 1-10", "set k?@1", "set k?@2", "set k?@5", "set k?@6", "delete k?@8", "set k?@9", "remove-channel d@10"}
	got := describe(ev)
	if len(got) != len(wantSnap) {
		got = describe(sink.waitEvents(t, len(wantSnap)))
	}
	if d := cmp.Diff(wantSnap, got); d != "" {
		t.Fatalf("snapshot (-want +got):\n%s", d)
	}
	if m := ev[6]; m.Expiry == 0 {
		t.Fatalf("record with ttl streamed without expiry: %+v", m)
	}

	// Live: each mutation under its own marker, in seqno order.
	s.Put("c", keyIn(1, vbs, 7), []byte("live"), 0)
	s.Remove("c", keyIn(1, vbs, 0))
	s.Put("c", keyIn(0, vbs, 0), []byte("not streamed"), 0)
	got = describe(sink.waitEvents(t, len(wantSnap)+4)[len(wantSnap):])
	if d := cmp.Diff([]string{"marker 11-11", "set k?@11", "marker 12-12", "delete k?@12"}, got); d != "" {
		t.Fatalf("live (-want +got):\n%s", d)
	}
	if err := run.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped stream returned %v", err)
	}
}

// describe renders events with keys reduced to "k?" (their order is
// hash-dependent, seqnos are not).
func describe(ev []sinkEvent) []string {
	var out []string
	for _, e := range ev {
		switch {
		case e.Op == 0:
			out = append(out, fmt.Sprintf("marker %d-%d", e.Seqno, e.Ref))
		case e.Op == engine.OpRemoveChannel:
			out = append(out, fmt.Sprintf("remove-channel %s@%d", e.Channel, e.Seqno))
		default:
			out = append(out, fmt.Sprintf("%v k?@%d", e.Op, e.Seqno))
		}
	}
	return out
}

// TestStreamDeduplicates checks that a key changed several times while the
// stream is busy is sent once, at its latest seqno.
func TestStreamDeduplicates(t *testing.T) {
	const vbs = 2
	s := newStore(t, Config{VBuckets: vbs})
	sink := newApplySink(nil)
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	sink.before = func(m *engine.Mutation) {
		once.Do(func() { close(blocked); <-release })
	}
	run := startStream(s, 0, 0, sink)
	x, y, z := keyIn(0, vbs, 0), keyIn(0, vbs, 1), keyIn(0, vbs, 2)
	s.Put("c", x, []byte("x"), 0) // 1: the stream blocks sending it
	<-blocked
	s.Put("c", y, []byte("y1"), 0) // 2: superseded by 4
	s.Put("c", z, []byte("z"), 0)  // 3: removed by 5
	s.Put("c", y, []byte("y2"), 0) // 4
	s.Remove("c", z)               // 5
	close(release)
	ev := sink.waitEvents(t, 6)
	if d := cmp.Diff([]string{"marker 1-1", "set k?@1", "marker 4-4", "set k?@4", "marker 5-5", "delete k?@5"}, describe(ev)); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	if string(ev[3].Value) != "y2" {
		t.Fatalf("value %q, want y2", ev[3].Value)
	}
	run.stop()
}

// TestStreamReplicates streams every vBucket of an active store into a
// replica (Apply) while writers run, then compares them entry by entry;
// then resumes streams from the replica's seqnos after more writes.
func TestStreamReplicates(t *testing.T) {
	for _, backlog := range []int{4, 256} {
		t.Run(fmt.Sprint("backlog", backlog), func(t *testing.T) {
			const vbs = 8
			clock := newFakeClock()
			a := newStore(t, Config{VBuckets: vbs, Now: clock.Now, StreamBacklog: backlog})
			b := newStore(t, Config{VBuckets: vbs, Now: clock.Now})
			rng := rand.New(rand.NewPCG(1, uint64(backlog)))
			write := func(n int) {
				for range n {
					key := fmt.Appendf(nil, "key%d", rng.IntN(300))
					ch := []string{"c1", "c2", "c3"}[rng.IntN(3)]
					switch r := rng.IntN(100); {
					case r < 60:
						ttl := time.Duration(0)
						if rng.IntN(4) == 0 {
							ttl = time.Duration(1+rng.IntN(3)) * time.Second
						}
						a.Put(ch, key, fmt.Appendf(nil, "v%d", rng.IntN(1000)), ttl)
					case r < 90:
						a.Remove(ch, key)
					case r < 98:
						if _, cas, err := a.Get(ch, key, nil); err == nil {
							a.Update(ch, key, []byte("updated"), cas, 0)
						}
					default:
						a.RemoveChannel(ch)
					}
				}
			}
			write(2000) // snapshot material
			sinks := make([]*applySink, vbs)
			runs := make([]*streamRun, vbs)
			for vb := range vbs {
				sinks[vb] = newApplySink(b)
				if backlog < 10 {
					sinks[vb].before = func(*engine.Mutation) {
						if rng := rand.IntN(50); rng == 0 {
							time.Sleep(time.Millisecond) // a slow consumer falls behind
						}
					}
				}
				runs[vb] = startStream(a, uint16(vb), 0, sinks[vb])
			}
			for range 20 {
				write(200)
				clock.Add(700 * time.Millisecond)
				sweepAll(a)
			}
			waitCaughtUp(t, a, b)
			for _, r := range runs {
				if err := r.stop(); !errors.Is(err, context.Canceled) {
					t.Fatal(err)
				}
			}
			sameVBuckets(t, a, b)

			// Resume from where the replica is.
			write(1000)
			clock.Add(2 * time.Second)
			sweepAll(a)
			for vb := range vbs {
				runs[vb] = startStream(a, uint16(vb), b.HighSeqno(uint16(vb)), newApplySink(b))
			}
			write(500)
			waitCaughtUp(t, a, b)
			for _, r := range runs {
				r.stop()
			}
			sameVBuckets(t, a, b)
			if err := checkStore(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStreamRollback(t *testing.T) {
	clock := newFakeClock()
	s := newStore(t, Config{VBuckets: 1, Now: clock.Now, TombstoneTTL: time.Second})
	s.Put("c", []byte("a"), []byte("1"), 0)
	s.Put("c", []byte("b"), []byte("2"), 0)
	s.Remove("c", []byte("b"))
	ctx := context.Background()
	if err := s.Stream(ctx, 0, 4, newApplySink(nil)); !errors.Is(err, engine.ErrRollback) {
		t.Fatalf("stream from above the high seqno: %v", err)
	}
	if err := s.Stream(ctx, 1, 0, newApplySink(nil)); !errors.Is(err, ErrBadVBucket) {
		t.Fatalf("stream of a vbucket out of range: %v", err)
	}
	clock.Add(2 * time.Second)
	sweepAll(s)
	if got := s.PurgeSeqno(0); got != 0 {
		t.Fatalf("the tombstone of the latest mutation was purged (purge seqno %d)", got)
	}
	s.Put("c", []byte("c"), []byte("3"), 0)
	sweepAll(s)
	if got := s.PurgeSeqno(0); got != 3 {
		t.Fatalf("purge seqno %d, want 3", got)
	}
	if err := s.Stream(ctx, 0, 2, newApplySink(nil)); !errors.Is(err, engine.ErrRollback) {
		t.Fatalf("stream from below the purge seqno: %v", err)
	}
	// From 0 is always possible; from the high seqno too.
	for _, from := range []uint64{0, 4} {
		sink := newApplySink(nil)
		run := startStream(s, 0, from, sink)
		if from == 0 {
			if d := cmp.Diff([]string{"marker 1-4", "set k?@1", "set k?@4"}, describe(sink.waitEvents(t, 3))); d != "" {
				t.Fatal(d)
			}
		}
		s.Put("c", []byte("z"), nil, 0)
		sink.waitEvents(t, 2)
		if err := run.stop(); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}

	// Dropping the vBucket ends its streams with a rollback.
	run := startStream(s, 0, s.HighSeqno(0), newApplySink(nil))
	time.Sleep(10 * time.Millisecond)
	if err := s.DropVBucket(0); err != nil {
		t.Fatal(err)
	}
	if err := <-run.done; !errors.Is(err, engine.ErrRollback) {
		t.Fatalf("stream of a dropped vbucket: %v", err)
	}
	if s.HighSeqno(0) != 0 || s.PurgeSeqno(0) != 0 || s.Exists("c", []byte("a")) {
		t.Fatal("DropVBucket left data or seqnos")
	}

	// Closing the store ends streams.
	run = startStream(s, 0, 0, newApplySink(nil))
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if err := <-run.done; !errors.Is(err, ErrClosed) {
		t.Fatalf("stream of a closed store: %v", err)
	}
	run.cancel()
}

// TestStreamSlowSink checks that a stuck consumer neither blocks writers nor
// makes memory grow, and catches up by a new snapshot when released.
func TestStreamSlowSink(t *testing.T) {
	a := newStore(t, Config{VBuckets: 1, StreamBacklog: 8})
	b := newStore(t, Config{VBuckets: 1})
	sink := newApplySink(b)
	release := make(chan struct{})
	var once sync.Once
	sink.before = func(*engine.Mutation) { once.Do(func() { <-release }) }
	run := startStream(a, 0, 0, sink)
	a.Put("c", []byte("first"), nil, 0)
	for i := range 1000 {
		a.Put("c", fmt.Appendf(nil, "warm%d", i), make([]byte, 100), 0)
	}
	for i := range 1000 {
		a.Remove("c", fmt.Appendf(nil, "warm%d", i))
	}
	mem := a.MemoryUsage()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			a.Put("c", fmt.Appendf(nil, "k%d", i%1000), make([]byte, 100), 0)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("writers blocked by a stuck stream")
	}
	if got := a.MemoryUsage(); got > mem+200_000 {
		t.Fatalf("memory grew from %d to %d while a stream was stuck", mem, got)
	}
	close(release)
	waitCaughtUp(t, a, b)
	run.stop()
	sameVBuckets(t, a, b)
}

func TestApply(t *testing.T) {
	clock := newFakeClock()
	const vbs = 4
	s := newStore(t, Config{VBuckets: vbs, Now: clock.Now, MaxValueSize: 10})
	k := keyIn(2, vbs, 0)
	// An active vBucket, or one this node holds no copy of, takes no
	// replicated mutation.
	for _, st := range []vbmap.State{vbmap.Active, vbmap.Dead} {
		s.SetState(2, st)
		if err := s.Apply(&engine.Mutation{VBucket: 2, Seqno: 1, Op: engine.OpSet, Channel: "c", Key: k}); !errors.Is(err, engine.ErrNotReplica) {
			t.Fatalf("Apply to a vbucket in state %v: %v, want ErrNotReplica", st, err)
		}
	}
	setAll(s, vbmap.Replica)
	bad := []engine.Mutation{
		{VBucket: vbs, Seqno: 1, Op: engine.OpSet, Channel: "c", Key: k},
		{VBucket: 1, Seqno: 1, Op: engine.OpSet, Channel: "c", Key: k},
		{VBucket: 2, Seqno: 1, Op: engine.OpPush, Channel: "c", Key: k},
		{VBucket: 2, Seqno: 1, Op: engine.OpSet, Channel: "c/d", Key: k},
		{VBucket: 2, Seqno: 1, Op: engine.OpSet, Channel: "c", Key: nil},
		{VBucket: 2, Seqno: 1, Op: engine.OpSet, Channel: "c", Key: k, Value: make([]byte, 11)},
		{VBucket: 2, Seqno: 1, Op: engine.OpRemoveChannel, Channel: ""},
	}
	for _, m := range bad {
		if err := s.Apply(&m); err == nil {
			t.Fatalf("Apply accepted %+v", m)
		}
	}
	apply := func(m engine.Mutation) {
		t.Helper()
		m.VBucket = 2
		if err := s.Apply(&m); err != nil {
			t.Fatal(err)
		}
	}
	exp := clock.Now().Add(time.Hour).Unix()
	apply(engine.Mutation{Seqno: 5, Op: engine.OpSet, Channel: "c", Key: k, Value: []byte("v5"), Expiry: exp})
	apply(engine.Mutation{Seqno: 3, Op: engine.OpSet, Channel: "c", Key: k, Value: []byte("v3")}) // stale
	if v, cas, _ := s.Get("c", k, nil); string(v) != "v5" || cas != 5 || s.HighSeqno(2) != 5 {
		t.Fatalf("after a stale set: %q cas %d high %d", v, cas, s.HighSeqno(2))
	}
	var r Record
	s.Scan("c", 2, nil, func(x Record) bool { r = x; return false })
	if r.Expiry != exp {
		t.Fatalf("expiry %d, want %d", r.Expiry, exp)
	}
	// A deletion of an unknown key still leaves a tombstone to pass on.
	k2 := keyIn(2, vbs, 1)
	apply(engine.Mutation{Seqno: 6, Op: engine.OpDelete, Channel: "c", Key: k2})
	if es, _ := entries(s, 2); len(es) != 2 || !es[0].Tomb && !es[1].Tomb {
		t.Fatalf("entries %+v", es)
	}
	// The replica does not expire records itself; after promotion it does.
	clock.Add(2 * time.Hour)
	sweepAll(s)
	if s.Exists("c", k) || s.HighSeqno(2) != 6 {
		t.Fatalf("replica expired a record itself: high %d", s.HighSeqno(2))
	}
	s.SetState(2, vbmap.Active)
	sweepAll(s)
	if s.HighSeqno(2) != 7 {
		t.Fatalf("promoted vbucket did not expire: high %d", s.HighSeqno(2))
	}
	s.SetState(2, vbmap.Replica)
	// A channel removal drops what came before it, and later sets below it
	// are stale.
	apply(engine.Mutation{Seqno: 9, Op: engine.OpRemoveChannel, Channel: "c"})
	apply(engine.Mutation{Seqno: 8, Op: engine.OpSet, Channel: "c", Key: k, Value: []byte("old")})
	if s.Exists("c", k) || s.HighSeqno(2) != 9 {
		t.Fatal("set below a channel removal applied")
	}
	apply(engine.Mutation{Seqno: 10, Op: engine.OpSet, Channel: "c", Key: k, Value: []byte("new")})
	if !s.Exists("c", k) {
		t.Fatal("set after a channel removal lost")
	}
}

// TestRemoveChannelActiveOnly: RemoveChannel takes a seqno and removes the
// records only in active vBuckets; a replica vBucket keeps its copies
// (and its seqno) until its active's removal arrives.
func TestRemoveChannelActiveOnly(t *testing.T) {
	s := newStore(t, Config{VBuckets: 4})
	for vb := range uint16(4) {
		if vb%2 == 1 {
			s.SetState(vb, vbmap.Replica)
			if err := s.Apply(&engine.Mutation{VBucket: vb, Seqno: 1, Op: engine.OpSet, Channel: "c", Key: keyIn(vb, 4, 0), Value: []byte("copy")}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := s.Put("c", keyIn(vb, 4, 0), []byte("own"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if !s.RemoveChannel("c") {
		t.Fatal("RemoveChannel found nothing")
	}
	for vb := range uint16(4) {
		want, exists := uint64(2), false // the put, then the removal
		if vb%2 == 1 {
			want, exists = 1, true
		}
		if got, kept := s.HighSeqno(vb), s.Exists("c", keyIn(vb, 4, 0)); got != want || kept != exists {
			t.Fatalf("vb %d: seqno %d (want %d), record kept %v (want %v)", vb, got, want, kept, exists)
		}
	}
	if st := s.ChannelSize("c"); st.Records != 2 {
		t.Fatalf("copies left: %+v", st)
	}
	for _, vb := range []uint16{1, 3} {
		if err := s.Apply(&engine.Mutation{VBucket: vb, Seqno: 2, Op: engine.OpRemoveChannel, Channel: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.ChannelSize("c"); st.Records != 0 || len(s.Channels()) != 0 {
		t.Fatalf("after the replicated removals: %+v %+v", st, s.Channels())
	}
}
