package logstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"shoal/internal/logstore/segment"
	"shoal/internal/vfs"
)

func TestDiskFullRefusesAppendsAndLosesNothing(t *testing.T) {
	q := vfs.NewDiskQuota(1 << 62)
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, q)
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "before-1"), rec(2, "before-2"))
	want := map[string]bool{"before-1": true, "before-2": true}

	// Leave room for a few frames, then let 20 writers race for it: each
	// append is either acknowledged or refused with ErrNoSpace, and group
	// commit never half-stores a batch.
	q.SetLimit(q.Written() + 300)
	var mu sync.Mutex
	var refused atomic.Int32
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				v := fmt.Sprintf("w%02d-%d-%s", w, i, strings.Repeat("x", 10))
				err := s.Append(context.Background(), "c", []Rec{rec(3, v), rec(4, v+"b")}, nil)
				switch {
				case err == nil:
					mu.Lock()
					want[v], want[v+"b"] = true, true
					mu.Unlock()
				case errors.Is(err, ErrNoSpace) && errors.Is(err, syscall.ENOSPC):
					refused.Add(1)
				default:
					t.Errorf("append: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatal("no append was refused")
	}
	check := func(s *Store) {
		t.Helper()
		got := readRange(t, s, "c", 0, 100, Filter{})
		if len(got) != len(want) {
			t.Fatalf("stored %d records, acknowledged %d", len(got), len(want))
		}
		for _, r := range got {
			if !want[string(r.Value)] {
				t.Fatalf("unacknowledged record %q stored", r.Value)
			}
		}
	}
	check(s)
	if st := s.Stats(); st.AppendErrors == 0 {
		t.Fatalf("stats %+v", st)
	}
	// A new bucket cannot even get its file.
	if err := s.Append(context.Background(), "c", []Rec{rec(50, "new bucket")}, nil); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("append to a new bucket on a full disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "c", segName(50, 0, false))); !os.IsNotExist(err) {
		t.Fatalf("half-created segment left behind: %v", err)
	}
	// Space is back: the store serves again.
	q.SetLimit(1 << 62)
	mustAppend(t, s, "c", rec(5, "after"), rec(50, "new bucket"))
	want["after"], want["new bucket"] = true, true
	check(s)
	s.Close()
	cfg.FS = vfs.Default
	s = mustOpen(t, cfg)
	check(s)
	if st := s.Stats(); st.TailsCut != 0 || st.CorruptAtOpen != 0 {
		t.Fatalf("a full disk left damage: %+v", st)
	}
}

// tornWrite tears the next segment write in half and makes the cut-back
// fail, as a crash in the middle of a write leaves a file.
type tornWrite struct{ armed atomic.Bool }

func (tw *tornWrite) Inject(op vfs.Op, path string, n int) (int, error) {
	if !strings.HasSuffix(path, ".seg") || !tw.armed.Load() {
		return n, nil
	}
	switch op {
	case vfs.OpWrite:
		return n / 2, vfs.ErrInjected
	case vfs.OpTruncate:
		tw.armed.Store(false)
		return 0, vfs.ErrInjected
	}
	return n, nil
}

func TestTornWriteIsCutAtOpen(t *testing.T) {
	tw := &tornWrite{}
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, tw)
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "a"), rec(2, "b"))
	tw.armed.Store(true)
	if err := s.Append(context.Background(), "c", []Rec{rec(3, "torn")}, nil); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("torn append: %v", err)
	}
	// The torn file takes no more appends; the bucket continues in a new
	// generation.
	mustAppend(t, s, "c", rec(3, "c"), rec(4, "d"))
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a 2:b 3:c 4:d" {
		t.Fatalf("before restart: %s", got)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "c", segName(0, 1, false))); err != nil {
		t.Fatalf("no new generation: %v", err)
	}
	s.Close()
	cfg.FS = vfs.Default
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a 2:b 3:c 4:d" {
		t.Fatalf("after restart: %s", got)
	}
	if st := s.Stats(); st.TailsCut != 1 || st.BytesCut == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// failSyncs fails the fsyncs of segment files while on.
type failSyncs struct{ on atomic.Bool }

func (f *failSyncs) Inject(op vfs.Op, path string, n int) (int, error) {
	if op == vfs.OpSync && strings.HasSuffix(path, ".seg") && f.on.Load() {
		return 0, vfs.ErrInjected
	}
	return n, nil
}

func TestFsyncFailureRefusesTheBatch(t *testing.T) {
	fail := &failSyncs{}
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, fail)
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "a"))
	fail.on.Store(true)
	if err := s.Append(context.Background(), "c", []Rec{rec(2, "b")}, nil); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("append with failing fsync: %v", err)
	}
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a" {
		t.Fatalf("unsynced record visible: %s", got)
	}
	fail.on.Store(false)
	mustAppend(t, s, "c", rec(3, "c"))
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a 3:c" {
		t.Fatalf("after fsync recovered: %s", got)
	}
}

// flipFS flips one bit at a file offset on every read of files named
// name: a disk that returns corrupt data.
type flipFS struct {
	vfs.FS
	name string
	off  int64
}

func (f flipFS) Open(name string) (vfs.File, error) {
	file, err := f.FS.Open(name)
	if err != nil || filepath.Base(name) != f.name {
		return file, err
	}
	return flipFile{file, f.off}, nil
}

type flipFile struct {
	vfs.File
	off int64
}

func (f flipFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	if f.off >= off && f.off < off+int64(n) {
		p[f.off-off] ^= 0x10
	}
	return n, err
}

// frameOffset returns the offset of frame i in a plain segment whose
// values all have n bytes.
func frameOffset(i, n int) int64 { return int64(segment.HeaderSize + i*segment.FrameSize(n)) }

func TestBitFlipSkipsOneRecord(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	for i := range 50 {
		mustAppend(t, s, "c", rec(uint64(i%10), fmt.Sprintf("value-%02d", i)))
	}
	want := readRange(t, s, "c", 0, 100, Filter{})
	s.Close()
	name := segName(0, 0, false)

	for _, tc := range []struct {
		what string
		off  int64
	}{
		{"value", frameOffset(20, 8) + segment.FrameHeaderSize + 3},
		{"length", frameOffset(20, 8) + 5},
		{"crc", frameOffset(20, 8)},
	} {
		t.Run(tc.what, func(t *testing.T) {
			cfg := cfg
			cfg.FS = flipFS{vfs.Default, name, tc.off}
			s := mustOpen(t, cfg)
			got := readRange(t, s, "c", 0, 100, Filter{})
			if len(got) != 49 {
				t.Fatalf("read %d records, want 49", len(got))
			}
			j := 0
			for _, r := range got {
				if string(want[j].Value) == "value-20" {
					j++
				}
				if string(r.Value) != string(want[j].Value) || r.Timestamp != want[j].Timestamp {
					t.Fatalf("got %d:%s, want %d:%s", r.Timestamp, r.Value, want[j].Timestamp, want[j].Value)
				}
				j++
			}
			if st := s.Stats(); st.CorruptAtOpen != 1 || st.TailsCut != 0 || st.CorruptRead == 0 {
				t.Fatalf("stats %+v", st)
			}
			s.Close()
		})
	}
	// The file itself was never changed.
	s = mustOpen(t, cfg)
	if got := readRange(t, s, "c", 0, 100, Filter{}); len(got) != 50 {
		t.Fatalf("read %d after the flips went away", len(got))
	}
}

func TestBitFlipOnDiskInCompressedSegment(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CompressAfter = 1
	cfg.Now = fixedClock(1000)
	s := mustOpen(t, cfg)
	value := strings.Repeat("v", 90)
	var recs []Rec
	for i := range 30000 { // ~3.5 MB: several compressed blocks
		recs = append(recs, Rec{Timestamp: uint64(i % 10), Value: []byte(fmt.Sprintf("%05d%s", i, value))})
	}
	mustAppend(t, s, "c", recs...)
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(cfg.Dir, "c", segName(0, 1, true))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	got := readRange(t, s, "c", 0, 100, Filter{})
	if len(got) == 0 || len(got) >= 30000 {
		t.Fatalf("read %d records from a compressed segment with one damaged block", len(got))
	}
	for i, r := range got {
		if len(r.Value) != 95 || (i > 0 && r.Timestamp < got[i-1].Timestamp) {
			t.Fatalf("bad record %d: %d:%q", i, r.Timestamp, r.Value)
		}
	}
	if st := s.Stats(); st.CorruptAtOpen != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTruncatedSegment(t *testing.T) {
	for _, cut := range []int64{1, 10, segment.FrameHeaderSize, segment.FrameHeaderSize + 4} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			s := mustOpen(t, cfg)
			for i := range 10 {
				mustAppend(t, s, "c", rec(uint64(i), fmt.Sprintf("value-%d", i)))
			}
			s.Close()
			// Keep 7 whole frames and cut bytes into the 8th.
			path := filepath.Join(cfg.Dir, "c", segName(0, 0, false))
			if err := os.Truncate(path, frameOffset(7, 7)+cut); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, cfg)
			if got := readRange(t, s, "c", 0, 100, Filter{}); len(got) != 7 || string(got[6].Value) != "value-6" {
				t.Fatalf("after truncation: %s", pairs(got))
			}
			if st := s.Stats(); st.TailsCut != 1 || st.BytesCut != uint64(cut) {
				t.Fatalf("stats %+v", st)
			}
			mustAppend(t, s, "c", rec(9, "value-new"))
			if got := readRange(t, s, "c", 0, 100, Filter{}); len(got) != 8 || string(got[7].Value) != "value-new" {
				t.Fatalf("append after cut: %s", pairs(got))
			}
		})
	}
}

func TestUnfinishedSegmentIsRemoved(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "a"))
	s.Close()
	short := filepath.Join(cfg.Dir, "c", segName(10, 0, false))
	zeros := filepath.Join(cfg.Dir, "c", segName(20, 0, false))
	os.WriteFile(short, []byte("SHOAL"), 0o644)
	os.WriteFile(zeros, make([]byte, 4096), 0o644)
	os.WriteFile(filepath.Join(cfg.Dir, "c", "x.seg.tmp"), []byte("partial"), 0o644)
	s = mustOpen(t, cfg)
	for _, p := range []string{short, zeros, filepath.Join(cfg.Dir, "c", "x.seg.tmp")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s not removed: %v", p, err)
		}
	}
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a" {
		t.Fatalf("read %s", got)
	}
}

func TestBadHeaderIsIgnoredNotServed(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "a"), rec(11, "b"))
	s.Close()
	path := filepath.Join(cfg.Dir, "c", segName(10, 0, false))
	b, _ := os.ReadFile(path)
	b[0] = 'X'
	os.WriteFile(path, b, 0o644)
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a" {
		t.Fatalf("read %s", got)
	}
	if st := s.Stats(); st.BadFiles != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Appends to that bucket go to a new generation; the bad file is kept for check.
	mustAppend(t, s, "c", rec(12, "c"))
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:a 12:c" {
		t.Fatalf("read %s", got)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
