package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// applySink applies what a stream sends to another store and records the
// snapshot markers.
type applySink struct {
	dst   *Store
	mu    sync.Mutex
	marks [][2]uint64
	muts  []engine.Mutation
	block chan struct{} // when set, Mutation waits on it
}

func (a *applySink) Snapshot(start, end uint64) error {
	a.mu.Lock()
	a.marks = append(a.marks, [2]uint64{start, end})
	a.mu.Unlock()
	return nil
}

func (a *applySink) Mutation(m *engine.Mutation) error {
	if a.block != nil {
		<-a.block
	}
	a.mu.Lock()
	a.muts = append(a.muts, *m)
	a.mu.Unlock()
	if a.dst == nil {
		return nil
	}
	if a.dst.State(m.VBucket) != vbmap.Replica {
		a.dst.SetState(m.VBucket, vbmap.Replica)
	}
	return a.dst.Apply(m)
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

// keyFor returns a routing key that lands in vb.
func keyFor(vb uint16, n int) []byte {
	for i := 0; ; i++ {
		k := []byte(fmt.Sprint("k", i))
		if vbucket.Of(k, n) == vb {
			return k
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSeqnosAndRoundRobin(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	defer s.Close()
	for range 32 {
		mustPush(t, s, "v", "a", "b")
	}
	// 32 pushes round-robin over 16 vBuckets, two channels each.
	for vb := range uint16(16) {
		if got := s.HighSeqno(vb); got != 4 {
			t.Fatalf("vbucket %d: high seqno %d, want 4", vb, got)
		}
	}
	key := keyFor(3, 16)
	if err := s.Push(context.Background(), []string{"a"}, []byte("routed"), key); err != nil {
		t.Fatal(err)
	}
	if got := s.HighSeqno(3); got != 5 {
		t.Fatalf("routed push: high seqno %d, want 5", got)
	}
	if _, err := s.Pop("a", nil); err != nil {
		t.Fatal(err)
	}
	if got := s.HighSeqno(0); got != 5 {
		t.Fatalf("a pop is a mutation of the popped record's vbucket: %d, want 5", got)
	}
	if s.Kind() != engine.KindQueue || s.HighSeqno(999) != 0 {
		t.Fatal("Kind or out of range HighSeqno")
	}
}

// TestStreamReplicates streams one vBucket of an active store into a
// replica, snapshot then live, through overflow on both sides.
func TestStreamReplicates(t *testing.T) {
	for _, d := range []Durability{DurabilityMemory, DurabilityJournal} {
		t.Run(d.String(), func(t *testing.T) {
			cfgA, cfgB := testConfig(t.TempDir()), testConfig(t.TempDir())
			cfgA.Durability, cfgB.Durability = d, d
			a, b := mustOpen(t, cfgA), mustOpen(t, cfgB)
			defer a.Close()
			defer b.Close()
			const vb = 5
			k5, k6 := keyFor(vb, 16), keyFor(6, 16)
			ctx := context.Background()
			push := func(v string, key []byte) {
				t.Helper()
				if err := a.Push(ctx, []string{"q", "r"}, []byte(v), key); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 60 {
				push(fmt.Sprint("snap", i), k5)
				push(fmt.Sprint("other", i), k6)
			}
			for range 10 {
				if _, err := a.Pop("q", nil); err != nil {
					t.Fatal(err)
				}
			}
			sctx, cancel := context.WithCancel(ctx)
			sink := &applySink{dst: b}
			done := make(chan error, 1)
			go func() { done <- a.Stream(sctx, vb, 0, sink) }()
			for i := range 60 {
				push(fmt.Sprint("live", i), k5)
				push(fmt.Sprint("other-live", i), k6)
			}
			for range 40 {
				if _, err := a.Pop("q", nil); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "replica to catch up", func() bool {
				select {
				case err := <-done:
					t.Fatalf("stream ended: %v", err)
				default:
				}
				return b.HighSeqno(vb) == a.HighSeqno(vb)
			})
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Stream ended with %v", err)
			}
			sink.mu.Lock()
			first := sink.marks[0]
			sink.mu.Unlock()
			if first[0] != 0 || first[1] == 0 {
				t.Fatalf("first snapshot marker %v", first)
			}
			// The replica holds exactly the active's records of vb, in order
			// (read by popping them once it is promoted: a replica's pops
			// take nothing).
			if _, err := b.Pop("q", nil); !errors.Is(err, ErrEmpty) {
				t.Fatalf("a pop on the replica: %v", err)
			}
			setAll(t, b, vbmap.Active)
			for _, ch := range []string{"q", "r"} {
				var want []string
				for _, v := range popAll(t, a, ch) {
					if len(v) >= 4 && (v[:4] == "snap" || v[:4] == "live") {
						want = append(want, v)
					}
				}
				equal(t, "replica "+ch, popAll(t, b, ch), want)
			}
		})
	}
}

func TestStreamRollbackAndResume(t *testing.T) {
	a := mustOpen(t, testConfig(t.TempDir()))
	defer a.Close()
	k := keyFor(2, 16)
	ctx := context.Background()
	for i := range 5 {
		if err := a.Push(ctx, []string{"q"}, []byte(fmt.Sprint(i)), k); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Stream(cctx, 2, 6, &applySink{}); !errors.Is(err, engine.ErrRollback) {
		t.Fatalf("from above high: %v", err)
	}
	// Resuming from 3 without pops since: only 4 and 5 are sent.
	sink := &applySink{}
	if err := a.Stream(cctx, 2, 3, sink); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if len(sink.muts) != 2 || sink.muts[0].Seqno != 4 || sink.muts[1].Seqno != 5 || sink.marks[0] != [2]uint64{3, 5} {
		t.Fatalf("resume from 3: marks %v, mutations %+v", sink.marks, sink.muts)
	}
	// After a pop the engine cannot tell a consumer at 3 what it missed.
	if _, err := a.Pop("q", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Stream(cctx, 2, 3, &applySink{}); !errors.Is(err, engine.ErrRollback) {
		t.Fatalf("resume across a pop: %v", err)
	}
	// From the high seqno there is nothing to send; from 0 a full snapshot.
	sink = &applySink{}
	if err := a.Stream(cctx, 2, 6, sink); !errors.Is(err, context.Canceled) || len(sink.muts) != 0 {
		t.Fatalf("from high: %v %+v", err, sink.muts)
	}
	// From 0: the 4 records left, then, since the latest mutation was a
	// pop, a pop of nothing (Ref 0) at the high seqno that ends the
	// snapshot, so that the consumer reaches it.
	sink = &applySink{}
	if err := a.Stream(cctx, 2, 0, sink); !errors.Is(err, context.Canceled) || len(sink.muts) != 5 {
		t.Fatalf("from 0: %v %+v", err, sink.muts)
	}
	if end := sink.muts[4]; end.Op != engine.OpPop || end.Ref != 0 || end.Seqno != 6 || sink.marks[0] != [2]uint64{0, 6} {
		t.Fatalf("snapshot end: %+v, marks %v", end, sink.marks)
	}
	b := mustOpen(t, testConfig(t.TempDir()))
	defer b.Close()
	setAll(t, b, vbmap.Replica)
	for i := range sink.muts {
		if err := b.Apply(&sink.muts[i]); err != nil {
			t.Fatal(err)
		}
	}
	if b.HighSeqno(2) != 6 || stats(t, b, "q", "").Records != 4 {
		t.Fatalf("replica: high %d, %+v", b.HighSeqno(2), stats(t, b, "q", ""))
	}
}

func TestStreamLagged(t *testing.T) {
	a := mustOpen(t, testConfig(t.TempDir()))
	defer a.Close()
	k := keyFor(1, 16)
	sink := &applySink{block: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- a.Stream(context.Background(), 1, 0, sink) }()
	waitFor(t, "stream to start", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.vbs[1].streams) == 1
	})
	for i := range streamMaxMutations + 2 {
		if err := a.Push(context.Background(), []string{"q"}, []byte(fmt.Sprint(i)), k); err != nil {
			t.Fatal(err)
		}
	}
	close(sink.block)
	if err := <-done; !errors.Is(err, ErrStreamLagged) {
		t.Fatalf("slow stream ended with %v", err)
	}
}

// TestApplyOutOfOrder: a replica receives pops of records that are not at
// its head (their vBuckets interleave differently than on the active),
// including records in its overflow, and channel removals per vBucket.
func TestApplyOutOfOrder(t *testing.T) {
	b := mustOpen(t, testConfig(t.TempDir()))
	defer func() { b.Close() }()
	if err := b.Apply(&engine.Mutation{VBucket: 0, Seqno: 1, Op: engine.OpPush, Channel: "q"}); !errors.Is(err, engine.ErrNotReplica) {
		t.Fatalf("Apply to an active vbucket: %v, want ErrNotReplica", err)
	}
	setAll(t, b, vbmap.Replica)
	if err := b.Push(context.Background(), []string{"q"}, []byte("x"), nil); !errors.Is(err, engine.ErrNoActiveVBucket) {
		t.Fatalf("round-robin Push with no active vbucket: %v", err)
	}
	apply := func(m engine.Mutation) {
		t.Helper()
		if err := b.Apply(&m); err != nil {
			t.Fatalf("Apply(%+v): %v", m, err)
		}
	}
	var want []string
	for i := range 100 {
		vb := uint16(i % 3)
		v := fmt.Sprintf("v%03d-%040d", i, 0)
		apply(engine.Mutation{VBucket: vb, Seqno: uint64(i/3 + 1), Op: engine.OpPush, Channel: "q", Value: []byte(v)})
		want = append(want, v)
	}
	if st := stats(t, b, "q", ""); st.OverflowRecords == 0 {
		t.Fatalf("want an overflowing replica: %+v", st)
	}
	// Pop record 40 (vb 1, seqno 14) and record 95 (vb 2, seqno 32, in
	// the overflow).
	apply(engine.Mutation{VBucket: 1, Seqno: 100, Op: engine.OpPop, Channel: "q", Ref: 14})
	apply(engine.Mutation{VBucket: 2, Seqno: 100, Op: engine.OpPop, Channel: "q", Ref: 32})
	want = append(append(append([]string{}, want[:40]...), want[41:95]...), want[96:]...)
	if b.HighSeqno(1) != 100 || stats(t, b, "q", "").Records != 98 {
		t.Fatalf("after pops: high %d, stats %+v", b.HighSeqno(1), stats(t, b, "q", ""))
	}
	// Removing the channel in vBucket 0 removes only its records.
	apply(engine.Mutation{VBucket: 0, Seqno: 200, Op: engine.OpRemoveChannel, Channel: "q"})
	var left []string
	for _, v := range want {
		var i int
		fmt.Sscanf(v, "v%03d", &i)
		if i%3 != 0 {
			left = append(left, v)
		}
	}
	if err := b.Apply(&engine.Mutation{Op: engine.OpSet, Channel: "q"}); !errors.Is(err, ErrBadMutation) {
		t.Fatalf("kv mutation: %v", err)
	}
	// Survives a restart, then drop vBucket 1 entirely.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, testConfig(b.cfg.Dir))
	setAll(t, b, vbmap.Replica)
	if err := b.DropVBucket(1); err != nil {
		t.Fatal(err)
	}
	if b.HighSeqno(1) != 0 || b.HighSeqno(2) != 100 {
		t.Fatalf("after drop: high %d / %d", b.HighSeqno(1), b.HighSeqno(2))
	}
	var only2 []string
	for _, v := range left {
		var i int
		fmt.Sscanf(v, "v%03d", &i)
		if i%3 == 2 {
			only2 = append(only2, v)
		}
	}
	if st := stats(t, b, "q", ""); st.Records != int64(len(only2)) {
		t.Fatalf("stats after drop %+v, want %d records", st, len(only2))
	}
	if _, err := b.Pop("q", nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("a pop on a replica: %v (it takes only records of active vbuckets)", err)
	}
	setAll(t, b, vbmap.Active) // promoted: its copies are its own
	equal(t, "after drop", popAll(t, b, "q"), only2)
}

// TestPushVB: a push to an explicit vBucket takes that vBucket's next
// seqno (the round robin is not advanced), and is refused for a vBucket
// out of range or not Active here; the record survives a restart with
// its vBucket.
func TestPushVB(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Durability = DurabilityJournal
	s := mustOpen(t, cfg)
	ctx := context.Background()
	for range 3 {
		if err := s.PushVB(ctx, []string{"a", "b"}, []byte("x"), 7); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.HighSeqno(7); got != 6 {
		t.Fatalf("vbucket 7: high seqno %d, want 6 (3 pushes to 2 channels)", got)
	}
	mustPush(t, s, "rr", "a")
	if got := s.HighSeqno(0); got != 1 {
		t.Fatalf("the round robin moved: vbucket 0 has seqno %d", got)
	}
	if err := s.PushVB(ctx, []string{"a"}, []byte("x"), 16); !errors.Is(err, ErrBadVBucket) {
		t.Fatalf("push to vbucket 16 of 16: %v", err)
	}
	s.SetState(9, vbmap.Replica)
	if err := s.PushVB(ctx, []string{"a"}, []byte("x"), 9); !errors.Is(err, engine.ErrNotActive) {
		t.Fatalf("push to a replica vbucket: %v", err)
	}
	if s.HighSeqno(9) != 0 {
		t.Fatal("a refused push took a seqno")
	}
	s.Close()
	s = mustOpen(t, cfg)
	defer s.Close()
	if got := s.HighSeqno(7); got != 6 {
		t.Fatalf("after a restart vbucket 7 has seqno %d", got)
	}
	v, err := s.Pop("b", nil)
	if err != nil || string(v) != "x" {
		t.Fatalf("pop after the restart: %q %v", v, err)
	}
}
