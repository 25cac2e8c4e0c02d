package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	goleak.VerifyTestMain(m)
}

// testConfig is a small store: 8 vBuckets, 10-second buckets, fsync
// always, no background maintenance, logs discarded.
func testConfig(dir string) Config {
	return Config{Dir: dir, VBuckets: 8, SegmentSpan: 10 * time.Second, MaintainEvery: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustAppend(t testing.TB, s *Store, ch string, recs ...Rec) {
	t.Helper()
	if err := s.Append(context.Background(), ch, recs, nil); err != nil {
		t.Fatal(err)
	}
}

func rec(ts uint64, v string) Rec { return Rec{Timestamp: ts, Value: []byte(v)} }

// readRange reads a whole range in batches of batchBytes.
func readRange(t testing.TB, s *Store, ch string, from, to uint64, f Filter) []Record {
	t.Helper()
	it, err := s.Range(ch, from, to, f, Position{})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []Record
	for {
		b, err := it.Next(DefaultBatchBytes)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			return out
		}
		out = append(out, b...)
	}
}

// pairs renders records as "ts:value" for comparisons.
func pairs(rs []Record) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%s", r.Timestamp, r.Value)
	}
	return b.String()
}

func TestAppendRangeOrderAndBounds(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	// Out of order, across buckets [0,10) [10,20) [20,30), ties kept in append order.
	mustAppend(t, s, "c", rec(25, "a"), rec(5, "b"), rec(15, "c"), rec(5, "d"))
	mustAppend(t, s, "c", rec(12, "e"), rec(5, "f"), rec(29, "g"), rec(0, "h"))
	if got, want := pairs(readRange(t, s, "c", 0, 100, Filter{})), "0:h 5:b 5:d 5:f 12:e 15:c 25:a 29:g"; got != want {
		t.Fatalf("full range:\n got %s\nwant %s", got, want)
	}
	if got, want := pairs(readRange(t, s, "c", 5, 15, Filter{})), "5:b 5:d 5:f 12:e 15:c"; got != want {
		t.Fatalf("inclusive range:\n got %s\nwant %s", got, want)
	}
	if got := readRange(t, s, "c", 30, 1000, Filter{}); len(got) != 0 {
		t.Fatalf("empty range returned %s", pairs(got))
	}
	if got := readRange(t, s, "nochannel", 0, 100, Filter{}); len(got) != 0 {
		t.Fatalf("absent channel returned %s", pairs(got))
	}
	cs, ok := s.ChannelSize("c")
	if !ok || cs.Records != 8 || cs.Bytes != 8 || cs.First != 0 || cs.Last != 29 || cs.Segments != 3 {
		t.Fatalf("channel size %+v %v", cs, ok)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustAppend(t, s, "x", rec(uint64(i%37), fmt.Sprint(i)))
	}
	mustAppend(t, s, "y", rec(1, "y"))
	want := pairs(readRange(t, s, "x", 0, 1000, Filter{}))
	var high []uint64
	for vb := range 8 {
		high = append(high, s.HighSeqno(uint16(vb)))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "x", 0, 1000, Filter{})); got != want {
		t.Fatalf("after reopen:\n got %s\nwant %s", got, want)
	}
	for vb := range 8 {
		if got := s.HighSeqno(uint16(vb)); got != high[vb] {
			t.Fatalf("vb %d high seqno %d, want %d", vb, got, high[vb])
		}
	}
	chs := s.Channels()
	if len(chs) != 2 || chs[0].Name != "x" || chs[0].Records != 100 || chs[1].Name != "y" || chs[1].Records != 1 {
		t.Fatalf("channels %+v", chs)
	}
	if st := s.Stats(); st.TailsCut != 0 || st.CorruptAtOpen != 0 || st.BadFiles != 0 {
		t.Fatalf("clean reopen reported damage: %+v", st)
	}
}

func TestVBucketsAndSeqnos(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	var recs []Rec
	for i := range 16 {
		recs = append(recs, rec(uint64(i), "v"))
	}
	mustAppend(t, s, "c", recs...)
	if err := s.Append(context.Background(), "c", []Rec{rec(100, "k1"), rec(101, "k2")}, []byte("key")); err != nil {
		t.Fatal(err)
	}
	got := readRange(t, s, "c", 0, 1000, Filter{})
	for i, r := range got[:16] {
		if r.VBucket != uint16(i%8) || r.Seqno != uint64(i/8+1) {
			t.Fatalf("record %d: vb %d seqno %d, want round-robin vb %d seqno %d", i, r.VBucket, r.Seqno, i%8, i/8+1)
		}
	}
	kvb := vbucket.Of([]byte("key"), 8)
	for _, r := range got[16:] {
		if r.VBucket != kvb {
			t.Fatalf("routed record in vb %d, want %d", r.VBucket, kvb)
		}
	}
	if got[17].Seqno != got[16].Seqno+1 || s.HighSeqno(kvb) != got[17].Seqno {
		t.Fatalf("routed seqnos %d %d, high %d", got[16].Seqno, got[17].Seqno, s.HighSeqno(kvb))
	}
}

func TestBadInput(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	if _, err := s.Range("c", 10, 9, Filter{}, Position{}); !errors.Is(err, ErrBadRange) {
		t.Fatalf("from > to: %v", err)
	}
	if _, err := Regexp("a("); !errors.Is(err, ErrBadFilter) {
		t.Fatalf("bad regexp: %v", err)
	}
	if _, err := Regexp(strings.Repeat("a", MaxRegexpLen+1)); !errors.Is(err, ErrBadFilter) {
		t.Fatalf("long regexp: %v", err)
	}
	big := make([]byte, DefaultMaxValueSize+1)
	if err := s.Append(context.Background(), "c", []Rec{{1, big}}, nil); !errors.Is(err, ErrValueTooBig) {
		t.Fatalf("big value: %v", err)
	}
	for _, ch := range []string{"", "a/b", "..", strings.Repeat("x", 256)} {
		if err := s.Append(context.Background(), ch, []Rec{rec(1, "v")}, nil); !errors.Is(err, ErrBadChannel) {
			t.Fatalf("channel %q: %v", ch, err)
		}
	}
	if got := readRange(t, s, "c", 0, 100, Filter{}); len(got) != 0 {
		t.Fatalf("refused appends stored %s", pairs(got))
	}
	s.Close()
	if err := s.Append(context.Background(), "c", []Rec{rec(1, "v")}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := s.Range("c", 0, 1, Filter{}, Position{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("range after close: %v", err)
	}
}

func TestFilters(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	mustAppend(t, s, "c", rec(1, "apple"), rec(2, "banana"), rec(3, "Apricot"), rec(4, "cherry"))
	if got, want := pairs(readRange(t, s, "c", 0, 10, Substring("an"))), "2:banana"; got != want {
		t.Fatalf("substring: %s", got)
	}
	re, err := Regexp("(?i)^ap")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pairs(readRange(t, s, "c", 0, 10, re)), "1:apple 3:Apricot"; got != want {
		t.Fatalf("regexp: %s", got)
	}
}

func TestIteratorResume(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	for i := range 60 {
		mustAppend(t, s, "c", rec(uint64(i%7)*3, fmt.Sprintf("v%02d", i)))
	}
	want := pairs(readRange(t, s, "c", 3, 15, Filter{}))
	// Read one record per batch, dropping the iterator after each batch and
	// resuming from its position, as a client does after a reconnect.
	var got []Record
	pos := Position{}
	for {
		it, err := s.Range("c", 3, 15, Filter{}, pos)
		if err != nil {
			t.Fatal(err)
		}
		b, err := it.Next(1)
		if err != nil {
			t.Fatal(err)
		}
		pos = it.Position()
		it.Close()
		if b == nil {
			break
		}
		if len(b) != 1 {
			t.Fatalf("batch of %d records with maxBytes 1", len(b))
		}
		got = append(got, b...)
	}
	if pairs(got) != want {
		t.Fatalf("resumed read:\n got %s\nwant %s", pairs(got), want)
	}
}

// openRecorder records the paths of OpOpen operations.
type openRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (o *openRecorder) Inject(op vfs.Op, path string, n int) (int, error) {
	if op == vfs.OpOpen {
		o.mu.Lock()
		o.paths = append(o.paths, filepath.Base(path))
		o.mu.Unlock()
	}
	return n, nil
}

func (o *openRecorder) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.paths
	o.paths = nil
	return p
}

func TestRangeOpensOnlySegmentsThatCanHoldIt(t *testing.T) {
	rec0 := &openRecorder{}
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, rec0)
	s := mustOpen(t, cfg)
	for b := range 10 { // ten buckets of ten seconds
		for i := range 5 {
			mustAppend(t, s, "c", rec(uint64(b*10+i*2), "v"))
		}
	}
	rec0.take()
	if got := readRange(t, s, "c", 42, 47, Filter{}); len(got) != 3 {
		t.Fatalf("got %s", pairs(got))
	}
	if opened := rec0.take(); len(opened) != 1 || opened[0] != segName(40, 0, false) {
		t.Fatalf("range [42,47] opened %v, want only bucket 40", opened)
	}
	// 49..51 spans two buckets but bucket 40 holds nothing above 48.
	if got := readRange(t, s, "c", 49, 51, Filter{}); len(got) != 1 {
		t.Fatalf("got %s", pairs(got))
	}
	if opened := rec0.take(); len(opened) != 1 || opened[0] != segName(50, 0, false) {
		t.Fatalf("range [49,51] opened %v, want only bucket 50", opened)
	}
}

// slowSync delays every fsync so that appends pile up behind it.
type slowSync struct{ d time.Duration }

func (s slowSync) Inject(op vfs.Op, path string, n int) (int, error) {
	if op == vfs.OpSync && strings.HasSuffix(path, ".seg") {
		time.Sleep(s.d)
	}
	return n, nil
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, slowSync{20 * time.Millisecond})
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "first")) // creates the segment
	base := s.Stats().Fsyncs
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustAppend(t, s, "c", rec(2, fmt.Sprint(i)))
		}()
	}
	wg.Wait()
	st := s.Stats()
	if n := st.Fsyncs - base; n == 0 || n > 10 {
		t.Fatalf("50 concurrent appends took %d fsyncs, want a few shared ones", n)
	}
	if st.Appends != 51 || st.FsyncMax < 20*time.Millisecond || st.FsyncBuckets[len(FsyncBounds)-1] == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIntervalModeAcksBeforeFsync(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Fsync = time.Hour
	s := mustOpen(t, cfg)
	for i := range 20 {
		mustAppend(t, s, "c", rec(uint64(i), "v"))
	}
	if n := s.Stats().Fsyncs; n != 0 {
		t.Fatalf("%d fsyncs before the interval", n)
	}
	if len(readRange(t, s, "c", 0, 100, Filter{})) != 20 {
		t.Fatal("written records not readable before fsync")
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Fsyncs; n != 2 { // buckets [0,10) and [10,20)
		t.Fatalf("%d fsyncs after Sync, want 2", n)
	}
}

func TestManyBucketsEvictWriters(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxOpenWriters = 2
	cfg.Fsync = time.Hour
	s := mustOpen(t, cfg)
	for i := range 50 {
		mustAppend(t, s, "c", rec(uint64(i*7%100), fmt.Sprint(i)))
	}
	if n := len(s.open); n > 2 {
		t.Fatalf("%d writers open, limit 2", n)
	}
	if got := readRange(t, s, "c", 0, 1000, Filter{}); len(got) != 50 {
		t.Fatalf("read %d records", len(got))
	}
}

func TestRemoveChannel(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	mustAppend(t, s, "a", rec(1, "x"), rec(2, "y"), rec(3, "z"))
	mustAppend(t, s, "b", rec(1, "keep"))
	h0 := s.HighSeqno(0)
	if err := s.RemoveChannel("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveChannel("never"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ChannelSize("a"); ok {
		t.Fatal("removed channel still listed")
	}
	if s.HighSeqno(0) != h0+1 {
		t.Fatalf("removal did not take a seqno in vb 0: %d -> %d", h0, s.HighSeqno(0))
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "a")); !os.IsNotExist(err) {
		t.Fatalf("channel directory left: %v", err)
	}
	mustAppend(t, s, "a", rec(9, "again"))
	s.Close()
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "a", 0, 100, Filter{})); got != "9:again" {
		t.Fatalf("recreated channel reads %s", got)
	}
	if s.HighSeqno(0) < h0+1 {
		t.Fatal("seqno went back after reopen")
	}
}

func TestLogsTornTailCut(t *testing.T) {
	var logBuf bytes.Buffer
	cfg := testConfig(t.TempDir())
	cfg.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "one"), rec(2, "two"))
	s.Close()
	path := filepath.Join(cfg.Dir, "c", segName(0, 0, false))
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()-2); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:one" {
		t.Fatalf("after torn tail: %s", got)
	}
	st := s.Stats()
	wantOff := fi.Size() - 29 // header 26 + "two"
	if st.TailsCut != 1 || st.BytesCut != 27 {
		t.Fatalf("stats %+v", st)
	}
	line := logBuf.String()
	for _, want := range []string{"cut torn tail", "file=" + path, fmt.Sprintf("offset=%d", wantOff), "bytes=27"} {
		if !strings.Contains(line, want) {
			t.Fatalf("log lacks %q:\n%s", want, line)
		}
	}
	if fi2, _ := os.Stat(path); fi2.Size() != wantOff {
		t.Fatalf("file is %d bytes, want cut at %d", fi2.Size(), wantOff)
	}
	mustAppend(t, s, "c", rec(3, "three"))
	if got := pairs(readRange(t, s, "c", 0, 100, Filter{})); got != "1:one 3:three" {
		t.Fatalf("append after cut: %s", got)
	}
}

// TestAppendVB: records appended to an explicit vBucket take its seqnos
// (the round robin is not advanced); an append to a vBucket out of range
// or not Active is refused and stores nothing.
func TestAppendVB(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	ctx := context.Background()
	if err := s.AppendVB(ctx, "c", []Rec{rec(1, "a"), rec(2, "b")}, 5); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "c", rec(3, "rr"))
	got := readRange(t, s, "c", 0, 10, Filter{})
	if len(got) != 3 || got[0].VBucket != 5 || got[1].VBucket != 5 || got[0].Seqno != 1 || got[1].Seqno != 2 || got[2].VBucket != 0 {
		t.Fatalf("records %+v", got)
	}
	if err := s.AppendVB(ctx, "c", []Rec{rec(4, "x")}, 8); !errors.Is(err, ErrBadMutation) {
		t.Fatalf("append to vbucket 8 of 8: %v", err)
	}
	s.SetState(6, vbmap.Replica)
	if err := s.AppendVB(ctx, "c", []Rec{rec(4, "x")}, 6); !errors.Is(err, engine.ErrNotActive) {
		t.Fatalf("append to a replica vbucket: %v", err)
	}
	if n := len(readRange(t, s, "c", 0, 10, Filter{})); n != 3 || s.HighSeqno(6) != 0 {
		t.Fatalf("refused appends stored something: %d records, vbucket 6 at %d", n, s.HighSeqno(6))
	}
}

// TestFilterInVBuckets: a range read restricted to some vBuckets returns
// only their records, in order, and resumes by its own positions.
func TestFilterInVBuckets(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	for i := range 40 {
		mustAppend(t, s, "c", rec(uint64(i/3), fmt.Sprintf("v%02d", i))) // round robin over 8 vBuckets
	}
	even := func(vb uint16) bool { return vb%2 == 0 }
	f := Substring("v").InVBuckets(even)
	all := readRange(t, s, "c", 0, 100, f)
	if len(all) != 20 {
		t.Fatalf("%d records of the even vBuckets, want 20", len(all))
	}
	for i, r := range all {
		if r.VBucket%2 != 0 || (i > 0 && r.Timestamp < all[i-1].Timestamp) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	// Resume after every record: the same records, none twice.
	var got []Record
	pos := Position{}
	for {
		it, err := s.Range("c", 0, 100, f, pos)
		if err != nil {
			t.Fatal(err)
		}
		b, err := it.Next(1)
		it.Close()
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			break
		}
		got = append(got, b...)
		pos = it.Position()
	}
	if pairs(got) != pairs(all) {
		t.Fatalf("resumed:\n got %s\nwant %s", pairs(got), pairs(all))
	}
}
