package logstore

import (
	"testing"
	"time"
)

// TestMarks: in Fsync-always mode every committed batch is synced; in
// interval mode the synced mark stays behind until Sync, which closes the
// channel of SyncedMoved.
func TestMarks(t *testing.T) {
	always := mustOpen(t, testConfig(t.TempDir()))
	mustAppend(t, always, "c", Rec{Timestamp: 1, Value: []byte("a")})
	if w, s, ok := always.Marks(); !ok || w == 0 || s != w {
		t.Fatalf("always mode: marks %d %d %v", w, s, ok)
	}

	cfg := testConfig(t.TempDir())
	cfg.Fsync = time.Hour
	st := mustOpen(t, cfg)
	moved := st.SyncedMoved()
	mustAppend(t, st, "c", Rec{Timestamp: 1, Value: []byte("a")})
	w, s, _ := st.Marks()
	if w == 0 || s >= w {
		t.Fatalf("interval mode before Sync: marks %d %d", w, s)
	}
	select {
	case <-moved:
		t.Fatal("moved before Sync")
	default:
	}
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, s, _ := st.Marks(); s != w {
		t.Fatalf("after Sync: synced %d, written %d", s, w)
	}
	select {
	case <-moved:
	default:
		t.Fatal("Sync did not close the SyncedMoved channel")
	}
	// A Sync with nothing new moves nothing: the next channel stays open.
	moved = st.SyncedMoved()
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-moved:
		t.Fatal("an empty Sync closed the channel")
	default:
	}
}
