package dump

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"shoal/internal/vfs"
)

// dumpFiles lists the names in dir (files and directories).
func dumpFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestManagerEmptiesTheDumpOfAnEmptiedChannel(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 20, 10)
	s.fill("b", 20, 10)
	m := newTestManager(t, dir, s, newFakeClock(), nil)
	if _, err := m.DumpNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every record of b goes: the source no longer lists b, but its dump
	// must not bring the records back at the next start.
	s.removeChannel("b")
	res, err := m.DumpNow(context.Background())
	if err != nil || len(res) != 2 || res[1].Channel != "b" || res[1].Records != 0 {
		t.Fatalf("second dump: %+v, %v", res, err)
	}
	got, _ := loadDir(t, dir, OnCorruptFail)
	sameData(t, got, s)
	// Once its dump is empty, b is forgotten.
	if res, err := m.DumpNow(context.Background()); err != nil || len(res) != 1 || res[0].Channel != "a" {
		t.Fatalf("third dump: %+v, %v", res, err)
	}
}

func TestManagerDumpsTheChannelsItLoaded(t *testing.T) {
	dir := t.TempDir()
	old := newFakeStore(faultVBuckets)
	old.fill("gone", 10, 10)
	if _, err := writeDump(vfs.Default, dir, old, "gone"); err != nil {
		t.Fatal(err)
	}
	// The node loaded gone.dump, and the channel has been emptied since.
	s := newFakeStore(faultVBuckets)
	m, err := NewManager(Config{Dir: dir, VBuckets: faultVBuckets, Source: s, Channels: []string{"gone"}, Logger: (&logBuffer{}).logger()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.DumpNow(context.Background())
	if err != nil || len(res) != 1 || res[0].Channel != "gone" || res[0].Records != 0 {
		t.Fatalf("DumpNow: %+v, %v", res, err)
	}
	if got, _ := loadDir(t, dir, OnCorruptFail); len(got.contents()) != 0 {
		t.Fatalf("loaded %v", got.contents())
	}
	// The records are still in the backup.
	info, err := Inspect(vfs.Default, filepath.Join(dir, "gone"+BackupExt))
	if err != nil || info.Records != 10 {
		t.Fatalf("backup: %+v, %v", info, err)
	}
}

func TestManagerDumpEachReportsChannelsInOrder(t *testing.T) {
	s := newFakeStore(faultVBuckets)
	s.fill("b", 5, 10)
	s.fill("a", 7, 10)
	m := newTestManager(t, t.TempDir(), s, newFakeClock(), nil)
	m.cfg.Codec = CodecS2
	var seen []string
	res, err := m.DumpEach(context.Background(), func(r Result) { seen = append(seen, r.Channel) })
	if err != nil || !slices.Equal(seen, []string{"a", "b"}) || len(res) != 2 || res[0].Records != 7 {
		t.Fatalf("DumpEach: %v, %+v, %v", seen, res, err)
	}
	info, err := Inspect(vfs.Default, Path(m.cfg.Dir, "a"))
	if err != nil || info.Codec != CodecS2 || info.Records != 7 {
		t.Fatalf("Inspect: %+v, %v", info, err)
	}
}

func TestManagerRemoveChannelMovesFilesAside(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 10, 10)
	s.fill("b", 10, 10)
	m := newTestManager(t, dir, s, newFakeClock(), nil)
	for range 2 { // a dump and a backup
		if _, err := m.DumpNow(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	s.removeChannel("a")
	if err := m.RemoveChannel("a"); err != nil {
		t.Fatal(err)
	}
	if got := dumpFiles(t, dir); !slices.Equal(got, []string{"b.dump", "b.dump.backup", DeletedDir}) {
		t.Fatalf("dump directory %v", got)
	}
	if got := dumpFiles(t, filepath.Join(dir, DeletedDir)); !slices.Equal(got, []string{"a.dump", "a.dump.backup"}) {
		t.Fatalf("deleted directory %v", got)
	}
	if res, err := m.DumpNow(context.Background()); err != nil || len(res) != 1 || res[0].Channel != "b" {
		t.Fatalf("dump after the removal: %+v, %v", res, err)
	}
	// A channel of the same name, created again, dumped once and removed
	// again: deleted/ holds the files of the last removal only.
	s.put("a", "new", "x", 0)
	if _, err := m.DumpNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.removeChannel("a")
	if err := m.RemoveChannel("a"); err != nil {
		t.Fatal(err)
	}
	if got := dumpFiles(t, filepath.Join(dir, DeletedDir)); !slices.Equal(got, []string{"a.dump"}) {
		t.Fatalf("deleted directory after a second removal %v", got)
	}
	if info, err := Inspect(vfs.Default, filepath.Join(dir, DeletedDir, "a.dump")); err != nil || info.Records != 1 {
		t.Fatalf("deleted dump: %+v, %v", info, err)
	}
	// Removing a channel without dumps is not an error.
	if err := m.RemoveChannel("never"); err != nil {
		t.Fatal(err)
	}
}

func TestManagerRemoveChannelDuringItsDump(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 10, 10)
	s.fill("b", 10, 10)
	src := &blockingSource{fakeStore: s, entered: make(chan struct{}), release: make(chan struct{})}
	m := newTestManager(t, dir, src, newFakeClock(), nil)
	dumped := make(chan []Result)
	go func() {
		res, _ := m.DumpNow(context.Background())
		dumped <- res
	}()
	<-src.entered // dumping a
	removedA, removedB := make(chan error), make(chan error)
	go func() { removedA <- m.RemoveChannel("a") }()
	select {
	case err := <-removedA:
		t.Fatalf("RemoveChannel returned while the channel was being dumped: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// b is removed before the dump reaches it: whether the dump skips it or
	// writes it before the removal takes the lock, no file is left.
	s.removeChannel("a")
	s.removeChannel("b")
	go func() { removedB <- m.RemoveChannel("b") }()
	close(src.release)
	if err := <-removedA; err != nil {
		t.Fatal(err)
	}
	if err := <-removedB; err != nil {
		t.Fatal(err)
	}
	if res := <-dumped; len(res) == 0 || res[0].Channel != "a" || res[0].Err != nil {
		t.Fatalf("results %+v", res)
	}
	if got := dumpFiles(t, dir); !slices.Equal(got, []string{DeletedDir}) {
		t.Fatalf("dump directory %v: a dump put back the files of a removed channel", got)
	}
}
