package repl

import (
	"errors"
	"testing"
	"time"
)

func TestNeed(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2} {
		if got := Need(n); got != want {
			t.Errorf("Need(%d) = %d, want %d", n, got, want)
		}
	}
}

// waitResult runs Acks.Wait and returns a channel with its outcome.
func waitResult(a *Acks, vb uint16, seqno uint64, chain []string, timeout time.Duration) (<-chan error, *Waiter) {
	return waitIn(a, "kv", vb, seqno, false, chain, timeout)
}

// waitIn is waitResult for any bucket and level.
func waitIn(a *Acks, bucket string, vb uint16, seqno uint64, persist bool, chain []string, timeout time.Duration) (<-chan error, *Waiter) {
	ch := make(chan error, 2)
	w := a.Wait(bucket, vb, seqno, persist, chain, timeout, func(err error) { ch <- err })
	return ch, w
}

// notYet fails if ch has an outcome within 20 ms.
func notYet(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s: done early: %v", what, err)
	case <-time.After(20 * time.Millisecond):
	}
}

func outcome(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		select {
		case <-ch:
			t.Fatal("done called twice")
		default:
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the wait never ended")
		return nil
	}
}

// TestAcksWait: the majority rule by chain length, wake-ups by
// acknowledgements of chain members only, timeouts, cancellation and the
// planted bug's hook.
func TestAcksWait(t *testing.T) {
	a := NewAcks("kv")
	// A chain of one: the active alone is a majority.
	ch, _ := waitResult(a, 1, 5, []string{"a"}, time.Hour)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
	// Two replicas: one of them is enough; an outsider's ack is not.
	ch, _ = waitResult(a, 1, 5, []string{"a", "b", "c"}, time.Hour)
	a.Note("kv", "x", 1, 9, 0)
	a.Note("kv", "b", 1, 4, 0)
	a.Note("kv", "kv-other", 1, 9, 0)
	notYet(t, ch, "majority of three")
	a.Note("kv", "c", 1, 5, 0)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
	// Already acknowledged: at once.
	ch, _ = waitResult(a, 1, 5, []string{"a", "c"}, time.Hour)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
	// Another engine's acks do not count.
	ch, _ = waitResult(a, 1, 5, []string{"a", "c"}, 30*time.Millisecond)
	a.Note("queue", "c", 2, 9, 0)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
	// Timeout.
	ch, _ = waitResult(a, 2, 7, []string{"a", "b"}, 30*time.Millisecond)
	if err := outcome(t, ch); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("timeout: %v", err)
	}
	// Cancel.
	ch, w := waitResult(a, 2, 8, []string{"a", "b"}, time.Hour)
	w.Cancel()
	if err := outcome(t, ch); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("cancel: %v", err)
	}
	w.Cancel()
	if n := a.Waiting(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	// The planted bug.
	a.SetSkipWait(true)
	ch, _ = waitResult(a, 3, 100, []string{"a", "b"}, time.Hour)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
}

// TestAcksPersistWait: a persist wait counts the replicas' persisted
// seqnos, never their applied ones; a persisted seqno above the applied
// one is not believed; a chain of one (the caller fsynced the active's
// copy) is done at once.
func TestAcksPersistWait(t *testing.T) {
	a := NewAcks("log")
	ch, _ := waitIn(a, "log", 1, 5, true, []string{"a"}, time.Hour)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
	ch, _ = waitIn(a, "log", 1, 5, true, []string{"a", "b", "c"}, time.Hour)
	plain, _ := waitIn(a, "log", 1, 5, false, []string{"a", "b", "c"}, time.Hour)
	a.Note("log", "b", 1, 9, 4)
	if err := outcome(t, plain); err != nil {
		t.Fatal(err)
	}
	notYet(t, ch, "applied 9, persisted 4")
	a.Note("log", "c", 1, 3, 7) // persisted above applied: 3
	notYet(t, ch, "persisted above applied")
	if applied, persisted := a.Acked("log", "c", 1); applied != 3 || persisted != 3 {
		t.Fatalf("acked %d persisted %d", applied, persisted)
	}
	a.Note("log", "b", 1, 9, 5)
	if err := outcome(t, ch); err != nil {
		t.Fatal(err)
	}
	ch, _ = waitIn(a, "log", 1, 6, true, []string{"a", "b"}, 30*time.Millisecond)
	if err := outcome(t, ch); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("persist wait past the persisted seqno: %v", err)
	}
}

// TestAcksFromAReplica: a replicator's acknowledgements reach the
// producer's Acks: a wait for the latest write ends once the replica
// applied it, and the lag histogram has samples.
func TestAcksFromAReplica(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	acks := NewAcks("kv")
	addr := a.serveCfg(ProducerConfig{Acks: acks})
	b := newSide(t, "node-b", t.TempDir(), false, false)
	r := b.replicate(addr, "kv", b.kv, nil)
	putIn(t, a, 3, 5, "v1")
	caughtUpOn(t, a, b, r, []uint16{3})
	for i := range 20 {
		seq, err := a.kv.Put("c", keysOf(3, 1)[0], []byte{byte(i)}, 0)
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := waitResult(acks, 3, seq, []string{"node-a", "node-b"}, 10*time.Second)
		if err := outcome(t, ch); err != nil {
			applied, _ := acks.Acked("kv", "node-b", 3)
			t.Fatalf("write %d (seqno %d): %v; acked %d", i, seq, err, applied)
		}
		if got := b.kv.HighSeqno(3); got < seq {
			t.Fatalf("replica holds %d, the wait for %d ended", got, seq)
		}
		time.Sleep(lagSampleEvery)
	}
	if n := acks.Lag("kv").Count(); n == 0 {
		t.Fatal("no lag sample")
	}
}
