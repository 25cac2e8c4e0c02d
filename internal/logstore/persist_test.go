package logstore

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shoal/internal/vfs"
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

// TestAppendsGoOnDuringIntervalSync makes the interval fsync of a segment
// take 400 ms: appends to it, and the removal of its channel, which closes
// its writer, do not wait for that fsync; the marks move to what was
// written before the Sync began, and the file is closed once its fsync is
// done.
func TestAppendsGoOnDuringIntervalSync(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Fsync = time.Hour // Sync is called by the test
	var slow atomic.Bool
	inSync := make(chan struct{}, 8)
	cfg.FS = vfs.Faulty(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, path string, n int) (int, error) {
		if op == vfs.OpSync && strings.HasSuffix(path, ".seg") && slow.Load() {
			inSync <- struct{}{}
			time.Sleep(400 * time.Millisecond)
		}
		return n, nil
	}))
	st := mustOpen(t, cfg)
	mustAppend(t, st, "c", Rec{Timestamp: 1, Value: []byte("before")})
	mustAppend(t, st, "d", Rec{Timestamp: 1, Value: []byte("before")})
	written, _, _ := st.Marks()
	slow.Store(true)
	synced := make(chan error, 1)
	go func() { synced <- st.Sync() }()
	<-inSync
	slow.Store(false)
	t0 := time.Now()
	mustAppend(t, st, "c", Rec{Timestamp: 1, Value: []byte("during")})
	if err := st.RemoveChannel("d"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 200*time.Millisecond {
		t.Fatalf("an append and a removal during an interval fsync took %v", d)
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if w, s, _ := st.Marks(); s != written || w <= written {
		t.Fatalf("after the Sync: synced %d, want %d (written %d)", s, written, w)
	}
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	if w, s, _ := st.Marks(); s != w {
		t.Fatalf("after a second Sync: synced %d, written %d", s, w)
	}
	recs := readRange(t, st, "c", 0, 10, Filter{})
	if len(recs) != 2 || string(recs[0].Value) != "before" || string(recs[1].Value) != "during" {
		t.Fatalf("channel c: %v", recs)
	}
}
