package queue

import (
	"testing"
	"time"
)

// TestMarks: in journal mode the written mark grows with every push and
// the synced one at the journal's fsync (Sync here: the interval is an
// hour), which closes the channel of SyncedMoved; in memory mode nothing
// is said to be on disk.
func TestMarks(t *testing.T) {
	mem := mustOpen(t, testConfig(t.TempDir()))
	defer mem.Close()
	mustPush(t, mem, "a", "c")
	if _, _, ok := mem.Marks(); ok || mem.Journaled() {
		t.Fatal("memory mode claims marks")
	}

	cfg := testConfig(t.TempDir())
	cfg.Durability, cfg.FsyncInterval = DurabilityJournal, time.Hour
	s := mustOpen(t, cfg)
	defer s.Close()
	w0, _, _ := s.Marks()
	mustPush(t, s, "a", "c")
	moved := s.SyncedMoved()
	w, synced, ok := s.Marks()
	if !ok || !s.Journaled() || w <= w0 || synced >= w {
		t.Fatalf("journal mode before Sync: marks %d (from %d) %d %v", w, w0, synced, ok)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, synced, _ := s.Marks(); synced != w {
		t.Fatalf("after Sync: synced %d, written %d", synced, w)
	}
	select {
	case <-moved:
	default:
		t.Fatal("Sync did not close the SyncedMoved channel")
	}
}
