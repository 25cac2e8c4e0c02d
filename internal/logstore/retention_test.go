package logstore

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// fixedClock returns a clock stopped at unix second sec.
func fixedClock(sec int64) func() time.Time { return func() time.Time { return time.Unix(sec, 0) } }

// settableClock is a clock tests move by hand.
type settableClock struct{ sec int64 }

func (c *settableClock) now() time.Time { return time.Unix(c.sec, 0) }

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestRetentionCompressesThenDeletes(t *testing.T) {
	clock := &settableClock{sec: 0}
	cfg := testConfig(t.TempDir())
	cfg.CompressAfter = 20 * time.Second
	cfg.Retention = 40 * time.Second
	cfg.Now = clock.now
	s := mustOpen(t, cfg)
	// Buckets [0,10) [10,20) [20,30), each out of order with ties.
	for i := range 90 {
		mustAppend(t, s, "c", rec(uint64((i*7)%30), fmt.Sprintf("v%02d", i)))
	}
	want := pairs(readRange(t, s, "c", 0, 100, Filter{}))
	chdir := filepath.Join(cfg.Dir, "c")

	clock.sec = 40 // buckets ending at 10 and 20 ended 20s ago or more: compress them
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{segName(0, 1, true), segName(10, 1, true), segName(20, 0, false)}
	if got := segFiles(t, chdir); !slices.Equal(got, wantFiles) {
		t.Fatalf("files after compression %v, want %v", got, wantFiles)
	}
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != want {
		t.Fatalf("compressed read:\n got %s\nwant %s", got, want)
	}
	if st := s.Stats(); st.Compressed != 2 {
		t.Fatalf("stats %+v", st)
	}
	// A late append to a compressed bucket lands in a new generation and
	// reads in order; the next pass folds it into the compressed file.
	mustAppend(t, s, "c", rec(5, "late"))
	if got := segFiles(t, chdir); !slices.Contains(got, segName(0, 2, false)) {
		t.Fatalf("late append files %v", got)
	}
	want = pairs(readRange(t, s, "c", 0, 100, Filter{}))
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if got := segFiles(t, chdir); !slices.Equal(got, []string{segName(0, 3, true), segName(10, 1, true), segName(20, 0, false)}) {
		t.Fatalf("files after second pass %v", got)
	}
	s.Close()
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != want {
		t.Fatalf("after reopen:\n got %s\nwant %s", got, want)
	}

	clock.sec = 55 // bucket [0,10) ended 45s ago: delete it; [10,20) 35s: keep
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if got := segFiles(t, chdir); !slices.Equal(got, []string{segName(10, 1, true), segName(20, 1, true)}) {
		t.Fatalf("files after retention %v", got)
	}
	if got := readRange(t, s, "c", 0, 9, Filter{}); len(got) != 0 {
		t.Fatalf("deleted bucket still reads %s", pairs(got))
	}
	clock.sec = 1000
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ChannelSize("c"); ok {
		t.Fatal("channel with every segment deleted still listed")
	}
	if st := s.Stats(); st.Deleted != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInterruptedRewriteIsFinishedAtOpen(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CompressAfter = time.Second
	cfg.Now = fixedClock(100)
	s := mustOpen(t, cfg)
	for i := range 20 {
		mustAppend(t, s, "c", rec(uint64(i%10), fmt.Sprint(i)))
	}
	want := pairs(readRange(t, s, "c", 0, 100, Filter{}))
	plain := filepath.Join(cfg.Dir, "c", segName(0, 0, false))
	old, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// As if the process died after renaming the merged file into place
	// but before deleting its input.
	os.WriteFile(plain, old, 0o644)
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != want {
		t.Fatalf("duplicates or losses:\n got %s\nwant %s", got, want)
	}
	if _, err := os.Stat(plain); !os.IsNotExist(err) {
		t.Fatalf("superseded input not removed: %v", err)
	}
}
