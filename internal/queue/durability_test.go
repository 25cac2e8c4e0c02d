package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"shoal/internal/vfs"
)

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The journal is checkpointed and restarted, and drained overflow
// segments are deleted, so a long run does not grow the disk.
func TestJournalCompaction(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Durability = DurabilityJournal
	cfg.FsyncInterval = 1 << 40 // interval mode keeps this test fast
	cfg.JournalSize = 16 << 10
	s := mustOpen(t, cfg)
	defer func() { s.Close() }()
	var want []string
	peak := int64(0)
	for round := range 20 {
		for i := range 200 {
			v := fmt.Sprintf("%02d-%03d-%s", round, i, strings.Repeat("j", 60))
			mustPush(t, s, v, "q")
			want = append(want, v)
		}
		for range 190 {
			v, err := s.Pop("q", nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(v) != want[0] {
				t.Fatalf("popped %q, want %q", v, want[0])
			}
			want = want[1:]
		}
		peak = max(peak, dirSize(t, filepath.Join(dir, "journal")))
	}
	// 8000 records of ~80 bytes went through: ~650 KiB of pushes alone.
	t.Logf("journal directory peaked at %d bytes", peak)
	if peak > 4*cfg.JournalSize {
		t.Fatalf("journal grew to %d bytes, checkpoints at %d", peak, cfg.JournalSize)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.abandon()
	s = mustOpen(t, cfg)
	equal(t, "after crash", popAll(t, s, "q"), want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := dirSize(t, filepath.Join(dir, "overflow")); n != 0 {
		t.Fatalf("drained overflow still holds %d bytes", n)
	}
}

// A failed fsync leaves the journal untrustworthy: the push reports it and
// every later write is refused until the store is reopened.
func TestJournalFsyncFailure(t *testing.T) {
	var failing atomic.Bool
	cfg := testConfig(t.TempDir())
	cfg.Durability = DurabilityJournal
	cfg.FS = vfs.Faulty(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, path string, n int) (int, error) {
		if failing.Load() && op == vfs.OpSync && strings.HasSuffix(path, journalSuffix) {
			return 0, vfs.ErrInjected
		}
		return n, nil
	}))
	s := mustOpen(t, cfg)
	mustPush(t, s, "kept", "q")
	failing.Store(true)
	if err := s.Push(context.Background(), []string{"q"}, []byte("unsure"), nil); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("push with a failing fsync: %v", err)
	}
	if _, err := s.Pop("q", nil); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("pop after a failed fsync: %v", err)
	}
	failing.Store(false)
	s.abandon()
	s = mustOpen(t, cfg)
	defer s.Close()
	// The unacknowledged push may or may not have reached the disk.
	got := popAll(t, s, "q")
	if len(got) == 0 || got[0] != "kept" || len(got) > 2 {
		t.Fatalf("after reopening: %q", got)
	}
}

func TestCorruptStateRefused(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	for _, v := range seq("s", 0, 50) {
		mustPush(t, s, v, "q")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, stateName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"flipped":   flip(good, len(good)/2),
		"empty":     nil,
		"garbage":   []byte("not a state file at all"),
	} {
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(testConfig(dir)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s state file: Open returned %v, want ErrCorrupt", name, err)
		}
	}
	// A different vBucket count is refused too.
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir)
	cfg.VBuckets = 32
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "vbuckets") {
		t.Errorf("other vbucket count: %v", err)
	}
	// A leftover temporary file is ignored.
	if err := os.WriteFile(filepath.Join(dir, stateTmpName), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, testConfig(dir))
	defer s.Close()
	equal(t, "restored", popAll(t, s, "q"), seq("s", 0, 50))
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func TestTornJournalTail(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Durability = DurabilityJournal
	s := mustOpen(t, cfg)
	want := seq("t", 0, 60)
	for _, v := range want {
		mustPush(t, s, v, "q")
	}
	s.abandon()
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*"+journalSuffix))
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Half of a push entry: a header claiming more than follows.
	f.Write(appendPushEntry(nil, 0, []pushTarget{{"q", 99}}, []byte("torn"))[:15])
	f.Close()
	s = mustOpen(t, cfg)
	defer s.Close()
	equal(t, "after torn tail", popAll(t, s, "q"), want)
}

// A damaged overflow record costs the rest of its segment, logged, and
// nothing else: no panic, later segments are served in order and the
// counts follow.
func TestCorruptOverflowRecord(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	want := seq("o", 0, 400)
	for _, v := range want {
		mustPush(t, s, v, "q")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "overflow", "*", "*"+segSuffix))
	if len(segs) < 3 {
		t.Fatalf("want several segments, have %d", len(segs))
	}
	b, _ := os.ReadFile(segs[0])
	os.WriteFile(segs[0], flip(b, len(b)/2), 0o644)
	s = mustOpen(t, testConfig(dir))
	defer s.Close()
	st := stats(t, s, "q", "")
	got := popAll(t, s, "q")
	if len(got) >= len(want) || len(got) < len(want)/2 {
		t.Fatalf("%d of %d records after damaging one segment", len(got), len(want))
	}
	// What is left is in order: a prefix (ring and the intact part of the
	// segment) and a suffix (the later segments).
	i := 0
	for i < len(got) && got[i] == want[i] {
		i++
	}
	tail := got[i:]
	equal(t, "records after the damage", tail, want[len(want)-len(tail):])
	// Counted before the damage was found, recounted after.
	if st.Records != int64(len(want)) {
		t.Fatalf("stats before reading: %+v", st)
	}
	if st := stats(t, s, "q", ""); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("stats after reading everything: %+v", st)
	}
}

// Recovery follows the state file, not the configured mode: a crashed
// journal-mode store opened in memory mode still replays its journal, and
// a crashed memory-mode store opened in journal mode keeps the overflow
// written after its last index.
func TestModeSwitchAfterCrash(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Durability = DurabilityJournal
	s := mustOpen(t, cfg)
	want := seq("m", 0, 100)
	for _, v := range want[:60] {
		mustPush(t, s, v, "q")
	}
	s.abandon()
	cfg.Durability = DurabilityMemory
	s = mustOpen(t, cfg)
	if st := stats(t, s, "q", ""); st.Records != 60 {
		t.Fatalf("journal replayed in memory mode: %+v", st)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	ring := stats(t, s, "q", "").MemoryRecords
	for _, v := range want[60:] {
		mustPush(t, s, v, "q") // overflow written after the index
	}
	s.abandon()
	cfg.Durability = DurabilityJournal
	s = mustOpen(t, cfg)
	defer s.Close()
	equal(t, "memory crash opened in journal mode", popAll(t, s, "q"), want[ring:])
}
