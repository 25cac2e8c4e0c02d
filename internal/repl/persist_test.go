package repl

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/logstore"
	"shoal/internal/queue"
)

// fakePersister is an engine.Persister whose marks the test sets.
type fakePersister struct {
	engine.Engine
	mu              sync.Mutex
	written, synced uint64
}

func (f *fakePersister) Marks() (uint64, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written, f.synced, true
}

func (f *fakePersister) SyncedMoved() <-chan struct{} { return nil }

func (f *fakePersister) set(written, synced uint64) {
	f.mu.Lock()
	f.written, f.synced = written, synced
	f.mu.Unlock()
}

// TestSessionPersisted: an acknowledged seqno counts as persisted once
// the engine's synced mark reaches the written mark of its
// acknowledgement; a newer acknowledgement waits behind the oldest, never
// in its place; a restarted stream forgets everything.
func TestSessionPersisted(t *testing.T) {
	f := &fakePersister{}
	s := &session{persist: newSessionPersist(f)}
	steps := []struct {
		written, synced uint64
		applied, want   uint64
	}{
		{10, 10, 5, 5},  // fsynced already (always mode)
		{12, 10, 8, 5},  // 8 waits for mark 12
		{15, 11, 9, 5},  // 9 waits for mark 15 (the newer)
		{16, 12, 11, 8}, // 12 covers 8; 11 replaces 9 as the newer, mark 16
		{16, 15, 11, 8}, // 15 does not cover 16
		{16, 16, 11, 11},
		{20, 16, 3, 3}, // never above applied
	}
	for i, st := range steps {
		f.set(st.written, st.synced)
		if got := s.Persisted(7, st.applied); got != st.want {
			t.Fatalf("step %d: Persisted(7, %d) = %d, want %d", i, st.applied, got, st.want)
		}
	}
	s.persist.forget(7)
	f.set(30, 20)
	if got := s.Persisted(7, 11); got != 0 {
		t.Fatalf("after forget: %d", got)
	}
	// An engine that cannot tell.
	s = &session{persist: newSessionPersist(nil)}
	if got := s.Persisted(7, 11); got != 0 {
		t.Fatalf("no persister: %d", got)
	}
}

// TestPersistedFromAReplica: a log replica fsyncing every hour (so only
// when the test says) acknowledges what it applied at once and what it
// has on disk only after its fsync, which the producer's persist waits
// see; the same for a queue replica with a journal fsynced every hour,
// and a queue replica in memory mode never says anything is on disk.
func TestPersistedFromAReplica(t *testing.T) {
	for _, kind := range []string{"log", "queue-journal", "queue-memory"} {
		t.Run(kind, func(t *testing.T) {
			a := newSide(t, "node-a", t.TempDir(), kind != "log", kind == "log")
			acks := NewAcks("log", "queue")
			addr := a.serveCfg(ProducerConfig{Acks: acks})
			b := newSide(t, "node-b", t.TempDir(), false, false)
			var e engine.Engine
			var sync func() error
			var write func(i int) uint64
			bucket := "log"
			const vb = 3
			switch kind {
			case "log":
				l, err := logstore.Open(logstore.Config{Dir: filepath.Join(b.dir, "log"), VBuckets: testVBuckets, Fsync: time.Hour, MaintainEvery: -1, Logger: quiet})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				e, sync = l, l.Sync
				write = func(i int) uint64 {
					if err := a.log.AppendVB(context.Background(), "ev", []logstore.Rec{{Timestamp: 1, Value: []byte(fmt.Sprint(i))}}, vb); err != nil {
						t.Fatal(err)
					}
					return a.log.HighSeqno(vb)
				}
			default:
				bucket = "queue"
				cfg := queue.Config{Dir: filepath.Join(b.dir, "queue"), VBuckets: testVBuckets, Logger: quiet}
				if kind == "queue-journal" {
					cfg.Durability, cfg.FsyncInterval = queue.DurabilityJournal, time.Hour
				}
				q, err := queue.Open(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { q.Close() })
				e, sync = q, q.Sync
				write = func(i int) uint64 {
					if err := a.queue.PushVB(context.Background(), []string{"jobs"}, []byte(fmt.Sprint(i)), vb); err != nil {
						t.Fatal(err)
					}
					return a.queue.HighSeqno(vb)
				}
			}
			b.openLogs(bucket, e)
			b.replicate(addr, bucket, e, nil)
			for i := range 3 {
				seq := write(i)
				applied, _ := waitIn(acks, bucket, vb, seq, false, []string{"node-a", "node-b"}, 10*time.Second)
				if err := outcome(t, applied); err != nil {
					t.Fatalf("majority wait for %d: %v", seq, err)
				}
				persisted, w := waitIn(acks, bucket, vb, seq, true, []string{"node-a", "node-b"}, 10*time.Second)
				notYet(t, persisted, "persist wait before the replica's fsync")
				if kind == "queue-memory" {
					if err := sync(); err != nil { // writes the index: nothing is said
						t.Fatal(err)
					}
					notYet(t, persisted, "persist wait on a queue without a journal")
					w.Cancel()
					if _, p := acks.Acked(bucket, "node-b", vb); p != 0 {
						t.Fatalf("a queue in memory mode said %d is on disk", p)
					}
					continue
				}
				if err := sync(); err != nil {
					t.Fatal(err)
				}
				if err := outcome(t, persisted); err != nil {
					t.Fatalf("persist wait for %d after the replica's fsync: %v", seq, err)
				}
			}
		})
	}
}
