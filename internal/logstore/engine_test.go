package logstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// collectSink records what a stream sends.
type collectSink struct {
	mu    sync.Mutex
	snaps [][2]uint64
	muts  []engine.Mutation
	gate  chan struct{} // if not nil, each Mutation waits for it to be closed
	apply func(*engine.Mutation) error
}

func (c *collectSink) Snapshot(start, end uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.snaps = append(c.snaps, [2]uint64{start, end})
	return nil
}

func (c *collectSink) Mutation(m *engine.Mutation) error {
	if c.gate != nil {
		<-c.gate
	}
	if c.apply != nil {
		if err := c.apply(m); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *m
	cp.Value = slices.Clone(m.Value)
	c.muts = append(c.muts, cp)
	return nil
}

// waitMuts waits until the sink holds n mutations and returns them.
func (c *collectSink) waitMuts(t *testing.T, n int) []engine.Mutation {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.muts)
		if got >= n {
			defer c.mu.Unlock()
			return slices.Clone(c.muts)
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("stream delivered %d mutations, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// startStream runs Stream in a goroutine; stop cancels it and returns its
// error.
func startStream(s *Store, vb uint16, from uint64, sink engine.Sink) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Stream(ctx, vb, from, sink) }()
	return func() error { cancel(); return <-done }
}

func checkSeqnos(t *testing.T, muts []engine.Mutation, from uint64) {
	t.Helper()
	for i, m := range muts {
		if m.Seqno != from+uint64(i)+1 {
			t.Fatalf("mutation %d has seqno %d, want %d", i, m.Seqno, from+uint64(i)+1)
		}
	}
}

func TestStreamSnapshotThenLive(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.VBuckets = 4
	cfg.CompressAfter = time.Second
	cfg.Now = fixedClock(1000)
	s := mustOpen(t, cfg)
	for i := range 40 {
		mustAppend(t, s, fmt.Sprintf("ch%d", i%3), rec(uint64(i), fmt.Sprint(i)))
	}
	if err := s.Maintain(); err != nil { // everything below 1000 gets compressed
		t.Fatal(err)
	}
	mustAppend(t, s, "ch0", rec(2000, "plain"), rec(2001, "plain"), rec(2002, "plain"), rec(2003, "plain"))
	vb := uint16(1)
	high := s.HighSeqno(vb)
	if high != 11 {
		t.Fatalf("vb 1 high seqno %d", high)
	}
	sink := &collectSink{}
	stop := startStream(s, vb, 3, sink)
	got := sink.waitMuts(t, int(high-3))
	checkSeqnos(t, got, 3)
	for _, m := range got {
		if m.Op != engine.OpAppend || m.VBucket != vb || len(m.Value) == 0 {
			t.Fatalf("bad mutation %+v", m)
		}
	}
	// Live: each mutation comes as its own snapshot.
	for i := range 8 {
		mustAppend(t, s, "live", rec(uint64(3000+i), "live"))
	}
	got = sink.waitMuts(t, int(high-3)+2)
	checkSeqnos(t, got, 3)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("stream ended with %v", err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.snaps[0] != [2]uint64{3, high} || sink.snaps[1] != [2]uint64{high, high + 1} {
		t.Fatalf("snapshot markers %v", sink.snaps)
	}
}

func TestStreamCatchesUpAfterOverflow(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Fsync = time.Hour
	s := mustOpen(t, cfg)
	key := []byte("k")
	if err := s.Append(context.Background(), "c", []Rec{rec(1, "first")}, key); err != nil {
		t.Fatal(err)
	}
	vb := s.vbOf(key)
	gate := make(chan struct{})
	sink := &collectSink{gate: gate}
	stop := startStream(s, vb, 0, sink)
	var recs []Rec
	for i := range maxSubQueue + 500 {
		recs = append(recs, rec(uint64(i%10), fmt.Sprint(i)))
	}
	if err := s.Append(context.Background(), "c", recs, key); err != nil {
		t.Fatal(err)
	}
	close(gate)
	got := sink.waitMuts(t, len(recs)+1)
	checkSeqnos(t, got, 0)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func (s *Store) vbOf(key []byte) uint16 { return vbucket.Of(key, s.cfg.VBuckets) }

// waitSubscribed waits until a stream of vb is live.
func waitSubscribed(t *testing.T, s *Store, vb uint16) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(time.Millisecond) {
		s.mu.RLock()
		n := len(s.subs[vb])
		s.mu.RUnlock()
		if n > 0 {
			return
		}
	}
	t.Fatalf("no stream of vb %d", vb)
}

func TestStreamErrors(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "a"))
	if err := s.Stream(context.Background(), 0, 5, &collectSink{}); !errors.Is(err, engine.ErrRollback) {
		t.Fatalf("from above high: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Stream(context.Background(), 0, 1, &collectSink{}) }()
	waitSubscribed(t, s, 0)
	if err := s.DropVBucket(0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrVBucketDropped) {
		t.Fatalf("stream of dropped vbucket ended with %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- s.Stream(ctx, 1, 0, &collectSink{}) }()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("stream at close ended with %v", err)
	}
}

// replicate streams every vBucket of src from 0 into dst through Apply,
// until dst has caught up with src's high seqnos.
func replicate(t *testing.T, src, dst *Store) {
	t.Helper()
	setAll(t, dst, vbmap.Replica)
	for vb := range uint16(src.cfg.VBuckets) {
		if src.HighSeqno(vb) == 0 {
			continue
		}
		sink := &collectSink{apply: dst.Apply}
		stop := startStream(src, vb, 0, sink)
		deadline := time.Now().Add(10 * time.Second)
		for dst.HighSeqno(vb) < src.HighSeqno(vb) {
			if time.Now().After(deadline) {
				t.Fatalf("vb %d: replica at %d, source at %d", vb, dst.HighSeqno(vb), src.HighSeqno(vb))
			}
			time.Sleep(time.Millisecond)
		}
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

// setAll sets every vBucket of s to st.
func setAll(t testing.TB, s *Store, st vbmap.State) {
	t.Helper()
	for vb := range s.cfg.VBuckets {
		if err := s.SetState(uint16(vb), st); err != nil {
			t.Fatal(err)
		}
	}
}

func TestApplyBuildsAnIdenticalReplica(t *testing.T) {
	src := mustOpen(t, testConfig(t.TempDir()))
	for i := range 100 {
		mustAppend(t, src, fmt.Sprintf("ch%d", i%4), rec(uint64(i%25), fmt.Sprint(i)))
	}
	if err := src.RemoveChannel("ch3"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, src, "ch3", rec(7, "reborn"))
	dcfg := testConfig(t.TempDir())
	dst := mustOpen(t, dcfg)
	// Records of ch3 land on the replica before the removal: it must
	// hide them with the tombstone.
	replicate(t, src, dst)
	replicate(t, src, dst) // a full replay changes nothing
	compare := func() {
		t.Helper()
		for ch := range 4 {
			name := fmt.Sprintf("ch%d", ch)
			want := pairs(readRange(t, src, name, 0, 100, Filter{}))
			if got := pairs(readRange(t, dst, name, 0, 100, Filter{})); got != want {
				t.Fatalf("%s on the replica:\n got %s\nwant %s", name, got, want)
			}
		}
		for vb := range uint16(8) {
			if dst.HighSeqno(vb) != src.HighSeqno(vb) {
				t.Fatalf("vb %d: replica high %d, source %d", vb, dst.HighSeqno(vb), src.HighSeqno(vb))
			}
		}
	}
	compare()
	dst.Close()
	dst = mustOpen(t, dcfg)
	compare()
}

func TestApplyRemoveChannelPerVBucket(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.VBuckets = 2
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "vb0"), rec(2, "vb1"), rec(3, "vb0"), rec(4, "vb1"))
	remove0 := &engine.Mutation{Op: engine.OpRemoveChannel, Channel: "c", VBucket: 0, Seqno: 10}
	if err := s.Apply(remove0); !errors.Is(err, engine.ErrNotReplica) {
		t.Fatalf("Apply to an active vbucket: %v", err)
	}
	s.SetState(0, vbmap.Replica)
	if err := s.Apply(remove0); err != nil {
		t.Fatal(err)
	}
	s.SetState(0, vbmap.Active)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "2:vb1 4:vb1" {
		t.Fatalf("after removing vb 0: %s", got)
	}
	if s.HighSeqno(0) != 10 {
		t.Fatalf("high %d", s.HighSeqno(0))
	}
	mustAppend(t, s, "c", rec(5, "vb0-new")) // round-robin: vb 0, seqno 11
	s.Close()
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "2:vb1 4:vb1 5:vb0-new" {
		t.Fatalf("after reopen: %s", got)
	}
	setAll(t, s, vbmap.Replica)
	if err := s.Append(context.Background(), "c", []Rec{rec(6, "x")}, nil); !errors.Is(err, engine.ErrNoActiveVBucket) {
		t.Fatalf("round-robin append with no active vbucket: %v", err)
	}
	if err := s.Apply(&engine.Mutation{Op: engine.OpRemoveChannel, Channel: "c", VBucket: 1, Seqno: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(&engine.Mutation{Op: engine.OpRemoveChannel, Channel: "c", VBucket: 0, Seqno: 12}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ChannelSize("c"); ok {
		t.Fatal("channel hidden in every vbucket still listed")
	}
	for _, m := range []*engine.Mutation{
		{Op: engine.OpSet, Channel: "c", VBucket: 0, Seqno: 20},
		{Op: engine.OpAppend, Channel: "c", VBucket: 9, Seqno: 20},
		{Op: engine.OpAppend, Channel: "c", VBucket: 0, Seqno: 0},
		{Op: engine.OpAppend, Channel: "bad name", VBucket: 0, Seqno: 20},
	} {
		if err := s.Apply(m); err == nil {
			t.Fatalf("Apply(%+v) accepted", m)
		}
	}
}

func TestDropVBucket(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.VBuckets = 4
	cfg.CompressAfter = time.Second
	cfg.Now = fixedClock(50)
	s := mustOpen(t, cfg)
	for i := range 40 {
		mustAppend(t, s, "c", rec(uint64(i*2), fmt.Sprint(i))) // buckets 0..70
	}
	if err := s.Maintain(); err != nil { // compresses buckets ending by 49
		t.Fatal(err)
	}
	var want []string
	for _, r := range readRange(t, s, "c", 0, 1000, Filter{}) {
		if r.VBucket != 2 {
			want = append(want, fmt.Sprintf("%d:%s", r.Timestamp, r.Value))
		}
	}
	if err := s.DropVBucket(2); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		var got []string
		for _, r := range readRange(t, s, "c", 0, 1000, Filter{}) {
			got = append(got, fmt.Sprintf("%d:%s", r.Timestamp, r.Value))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("after drop:\n got %v\nwant %v", got, want)
		}
		if s.HighSeqno(2) != 0 {
			t.Fatalf("vb 2 high %d", s.HighSeqno(2))
		}
	}
	check()
	s.Close()
	s = mustOpen(t, cfg)
	check()
	s.SetState(2, vbmap.Replica)
	if err := s.Apply(&engine.Mutation{Op: engine.OpAppend, Channel: "c", VBucket: 2, Seqno: 1, Timestamp: 3, Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if s.HighSeqno(2) != 1 {
		t.Fatalf("vb 2 high %d after a new record", s.HighSeqno(2))
	}
}

// TestCancelledBackfillsEndPromptly: streams whose consumer left while
// they waited for the maintenance lock (every snapshot pass takes it and
// scans the segments holding its vBucket) end at once instead of each
// scanning the files in turn (seen: ~7 vBuckets/s for 2.5 minutes after a
// standby left mid-backfill).
func TestCancelledBackfillsEndPromptly(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.VBuckets = 64
	cfg.Fsync = time.Hour
	s := mustOpen(t, cfg)
	recs := make([]Rec, 0, 1000)
	for i := range 20_000 {
		recs = append(recs, rec(uint64(i%5), fmt.Sprintf("value-%06d-................................", i)))
		if len(recs) == cap(recs) {
			mustAppend(t, s, "c", recs...)
			recs = recs[:0]
		}
	}
	// Time one pass alone, for the bound below.
	start := time.Now()
	stop := startStream(s, 0, 0, &collectSink{})
	for s.HighSeqno(0) == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	stop()
	one := time.Since(start)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	s.maintMu.Lock() // every pass queues behind it, as behind a long scan
	for vb := range uint16(64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Stream(ctx, vb, 0, &collectSink{})
		}()
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	start = time.Now()
	s.maintMu.Unlock()
	wg.Wait()
	if took := time.Since(start); took > one+500*time.Millisecond {
		t.Fatalf("64 cancelled streams took %v to end; one backfill alone takes %v", took, one)
	}
}

// TestRemoveChannelActiveOnly: RemoveChannel tombstones only the active
// vBuckets (a seqno each); the copies of a replica vBucket stay visible,
// and in the files, until their active's removal arrives; then the
// channel and its files go.
func TestRemoveChannelActiveOnly(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.VBuckets = 2
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "vb0")) // round-robin: vb 0, seqno 1
	if err := s.SetState(1, vbmap.Replica); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(&engine.Mutation{Op: engine.OpAppend, Channel: "c", VBucket: 1, Seqno: 1, Timestamp: 2, Value: []byte("copy")}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveChannel("c"); err != nil {
		t.Fatal(err)
	}
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "2:copy" {
		t.Fatalf("after the removal: %s", got)
	}
	if s.HighSeqno(0) != 2 || s.HighSeqno(1) != 1 {
		t.Fatalf("seqnos %d %d, want 2 1", s.HighSeqno(0), s.HighSeqno(1))
	}
	if err := s.RemoveChannel("c"); err != nil || s.HighSeqno(0) != 2 {
		t.Fatalf("again: %v, seqno %d", err, s.HighSeqno(0))
	}
	s.Close()
	s = mustOpen(t, cfg)
	s.SetState(1, vbmap.Replica)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "2:copy" {
		t.Fatalf("after a restart: %s", got)
	}
	if err := s.Apply(&engine.Mutation{Op: engine.OpRemoveChannel, Channel: "c", VBucket: 1, Seqno: 2}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ChannelSize("c"); ok {
		t.Fatal("the channel is still listed once every copy is removed")
	}
}
