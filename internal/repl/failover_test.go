package repl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"shoal/internal/engine"
	"shoal/internal/stream"
	"shoal/internal/vfs"
)

func TestDecide(t *testing.T) {
	// Producer history: uuid 3 from seqno 100 (newest), uuid 2 from 40,
	// uuid 1 from 0; high seqno 150.
	log := []stream.FailoverEntry{{UUID: 3, Seqno: 100}, {UUID: 2, Seqno: 40}, {UUID: 1, Seqno: 0}}
	for _, tc := range []struct {
		name       string
		req        stream.Request
		rollbackTo uint64
		resume     bool
	}{
		{"from 0 with no uuid", stream.Request{}, 0, true},
		{"from 0 with an unknown uuid", stream.Request{UUID: 99}, 0, true},
		{"newest uuid below high", stream.Request{Start: 120, UUID: 3}, 0, true},
		{"newest uuid at high", stream.Request{Start: 150, UUID: 3}, 0, true},
		{"newest uuid above high", stream.Request{Start: 160, UUID: 3}, 150, false},
		{"unknown uuid", stream.Request{Start: 10, UUID: 99}, 0, false},
		{"old uuid inside its history", stream.Request{Start: 30, UUID: 1}, 0, true},
		{"old uuid at its end", stream.Request{Start: 40, UUID: 1}, 0, true},
		{"old uuid past its end", stream.Request{Start: 45, UUID: 1}, 40, false},
		{"middle uuid past its end", stream.Request{Start: 120, UUID: 2}, 100, false},
		{"snapshot inside the history", stream.Request{Start: 35, UUID: 1, SnapStart: 30, SnapEnd: 38}, 0, true},
		{"snapshot straddling the end", stream.Request{Start: 35, UUID: 1, SnapStart: 30, SnapEnd: 50}, 30, false},
		{"snapshot past the end", stream.Request{Start: 45, UUID: 1, SnapStart: 42, SnapEnd: 50}, 40, false},
		{"start at snapshot end collapses it", stream.Request{Start: 40, UUID: 1, SnapStart: 30, SnapEnd: 40}, 0, true},
		{"start at snapshot start collapses it", stream.Request{Start: 40, UUID: 1, SnapStart: 40, SnapEnd: 60}, 0, true},
	} {
		to, resume := Decide(log, 150, tc.req)
		if to != tc.rollbackTo || resume != tc.resume {
			t.Errorf("%s: Decide(%+v) = %d, %v; want %d, %v", tc.name, tc.req, to, resume, tc.rollbackTo, tc.resume)
		}
	}
}

func highs(m map[uint16]uint64) func(uint16) uint64 { return func(vb uint16) uint64 { return m[vb] } }

func TestLogsHistories(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repl", "failover-kv")
	cfg := LogsConfig{Path: path, VBuckets: 4, Logger: quiet}
	high := map[uint16]uint64{0: 0, 1: 10, 2: 20, 3: 30}

	l, err := OpenLogs(cfg, highs(high))
	if err != nil {
		t.Fatal(err)
	}
	first := make([][]stream.FailoverEntry, 4)
	for vb := range uint16(4) {
		first[vb] = l.Get(vb)
		if len(first[vb]) != 1 || first[vb][0].Seqno != high[vb] || first[vb][0].UUID == 0 {
			t.Fatalf("vb %d first log %v", vb, first[vb])
		}
	}

	// A crash (no SaveClean): every vBucket starts a new history.
	l, err = OpenLogs(cfg, highs(high))
	if err != nil {
		t.Fatal(err)
	}
	for vb := range uint16(4) {
		got := l.Get(vb)
		if len(got) != 2 || got[1] != first[vb][0] || got[0].UUID == first[vb][0].UUID || got[0].Seqno != high[vb] {
			t.Fatalf("vb %d after a crash: %v", vb, got)
		}
	}
	before := [][]stream.FailoverEntry{l.Get(0), l.Get(1), l.Get(2), l.Get(3)}

	// A clean stop keeps the histories whose high seqno is found again;
	// vBucket 2 came back lower (a restart from an older dump).
	if err := l.SaveClean(highs(high)); err != nil {
		t.Fatal(err)
	}
	high[2] = 15
	l, err = OpenLogs(cfg, highs(high))
	if err != nil {
		t.Fatal(err)
	}
	for vb := range uint16(4) {
		got := l.Get(vb)
		if vb == 2 {
			if len(got) != 3 || got[0].Seqno != 15 || !cmp.Equal(got[1:], before[2]) {
				t.Fatalf("vb 2 after a lower restart: %v", got)
			}
			continue
		}
		if !cmp.Equal(got, before[vb]) {
			t.Fatalf("vb %d after a clean stop: %v, want %v", vb, got, before[vb])
		}
	}
	// The file written at start is unclean again: a crash now branches.
	l, err = OpenLogs(cfg, highs(high))
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Get(0); len(got) != 3 {
		t.Fatalf("vb 0 after a crash following a clean restart: %v", got)
	}

	// Consumer side: Replace, Reset, Save; Branch; the cap.
	l.Replace(1, []stream.FailoverEntry{{UUID: 77, Seqno: 5}})
	l.Reset(3)
	if err := l.Save(); err != nil {
		t.Fatal(err)
	}
	if l.UUID(1) != 77 || l.UUID(3) != 0 || l.Get(3) != nil {
		t.Fatalf("after Replace/Reset: uuid(1)=%d log(3)=%v", l.UUID(1), l.Get(3))
	}
	if got := l.Ensure(3, 9); len(got) != 1 || got[0].Seqno != 9 {
		t.Fatalf("Ensure: %v", got)
	}
	for range MaxLogEntries + 5 {
		if err := l.Branch(0, 7); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Get(0); len(got) != MaxLogEntries {
		t.Fatalf("log of %d entries, cap %d", len(got), MaxLogEntries)
	}
	if err := l.BranchAll(highs(high)); err != nil {
		t.Fatal(err)
	}
	f, err := readLogFile(vfs.Default, path, 4)
	if err != nil {
		t.Fatal(err)
	}
	for vb := range uint16(4) {
		if !cmp.Equal(f.logs[vb], l.Get(vb)) {
			t.Fatalf("vb %d on disk %v, in memory %v", vb, f.logs[vb], l.Get(vb))
		}
	}
	if l.Get(9) != nil || l.UUID(9) != 0 || l.Branch(9, 0) == nil {
		t.Fatal("a vbucket out of range was accepted")
	}
}

func TestLogsDamagedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "failover-kv")
	cfg := LogsConfig{Path: path, VBuckets: 4, Logger: quiet}
	zero := func(uint16) uint64 { return 0 }
	l, err := OpenLogs(cfg, zero)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SaveClean(zero); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"flipped bit": func() []byte { b := append([]byte(nil), good...); b[12] ^= 1; return b }(),
		"truncated":   good[:len(good)-3],
		"empty":       {},
		"other count": func() []byte { b, _ := os.ReadFile(path); return b }(),
	} {
		vbs := 4
		if name == "other count" {
			vbs = 5
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := OpenLogs(LogsConfig{Path: path, VBuckets: vbs, Logger: quiet}, zero)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for vb := range uint16(vbs) {
			if got := l.Get(vb); len(got) != 1 {
				t.Fatalf("%s: vb %d log %v, want one fresh entry", name, vb, got)
			}
		}
		if err := os.WriteFile(path, good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A file that cannot be written fails OpenLogs, and Save reports it.
	quota := vfs.NewDiskQuota(1 << 20)
	fs := vfs.Faulty(vfs.Default, quota)
	l, err = OpenLogs(LogsConfig{Path: filepath.Join(dir, "q", "failover-kv"), VBuckets: 4, FS: fs, Logger: quiet}, zero)
	if err != nil {
		t.Fatal(err)
	}
	quota.SetLimit(quota.Written())
	l.Replace(0, []stream.FailoverEntry{{UUID: 5, Seqno: 1}})
	if err := l.Save(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Save on a full disk: %v", err)
	}
	if _, err := OpenLogs(LogsConfig{Path: filepath.Join(dir, "q", "failover-kv"), VBuckets: 4, FS: fs, Logger: quiet}, zero); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("OpenLogs on a full disk: %v", err)
	}
	quota.SetLimit(1 << 30)
	if err := l.Save(); err != nil {
		t.Fatalf("Save once space is back (still dirty): %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "q")); len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
}

func FuzzDecodeLogFile(f *testing.F) {
	f.Add(encodeLogFile([][]stream.FailoverEntry{{{UUID: 1, Seqno: 2}}, nil}, []uint64{3, 4}), 2)
	f.Add(encodeLogFile([][]stream.FailoverEntry{nil}, nil), 1)
	f.Add([]byte("SHFL"), 1)
	f.Fuzz(func(t *testing.T, b []byte, vbuckets int) {
		if vbuckets < 1 || vbuckets > 64 {
			return
		}
		lf, err := decodeLogFile(b, vbuckets)
		if err != nil {
			if !errors.Is(err, ErrCorruptLog) {
				t.Fatalf("error without ErrCorruptLog: %v", err)
			}
			return
		}
		var highs []uint64
		if lf.clean {
			highs = lf.highs
		}
		if again := encodeLogFile(lf.logs, highs); string(again) != string(b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for _, tc := range []struct {
		failures int
		base     time.Duration
	}{{1, lo}, {2, 2 * lo}, {3, 4 * lo}, {5, 1600 * time.Millisecond}, {6, hi}, {60, hi}} {
		for _, r := range []float64{0, 0.5, 0.999999} {
			got := backoff(tc.failures, lo, hi, func() float64 { return r })
			if min, max := tc.base*8/10, tc.base*12/10; got < min || got > max {
				t.Errorf("backoff(%d) with jitter %v = %v, want within [%v, %v]", tc.failures, r, got, min, max)
			}
		}
	}
}

func TestApplyFailpoint(t *testing.T) {
	for spec, want := range map[string][]bool{
		"":                                   {false, false, false},
		"repl-apply-error=once":              {true, false, false},
		"repl-apply-error=2":                 {false, true, false},
		" other=1 , repl-apply-error=always": nil,
		"repl-apply-error=always":            {true, true, true},
		"repl-apply-delay=1ms":               {false, false, false},
		"repl-apply-delay=1ms,repl-apply-error=2": {false, true, false},
	} {
		hook, err := ApplyFailpoint(spec)
		if want == nil {
			if err == nil || !strings.Contains(err.Error(), "unknown failpoint") {
				t.Errorf("%q: err %v", spec, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		for i, w := range want {
			got := hook != nil && hook(nil) != nil
			if got != w {
				t.Errorf("%q: call %d failed=%v, want %v", spec, i+1, got, w)
			}
		}
	}
	start := time.Now()
	if hook, _ := ApplyFailpoint("repl-apply-delay=20ms"); hook == nil || hook(nil) != nil || time.Since(start) < 20*time.Millisecond {
		t.Error("repl-apply-delay did not delay")
	}
	for _, bad := range []string{"repl-apply-error=0", "repl-apply-error=x", "repl-apply-delay=2s", "repl-apply-delay=x"} {
		if _, err := ApplyFailpoint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// markerSink records snapshot markers.
type markerSink struct{ marks [][2]uint64 }

func (m *markerSink) Snapshot(start, end uint64) error {
	m.marks = append(m.marks, [2]uint64{start, end})
	return nil
}
func (m *markerSink) Mutation(*engine.Mutation) error { return nil }

func TestAscendingMarkers(t *testing.T) {
	for name, tc := range map[string]struct {
		from     uint64
		in, want [][2]uint64
	}{
		"log live":        {0, [][2]uint64{{0, 3}, {3, 4}, {4, 5}}, [][2]uint64{{1, 3}, {4, 4}, {5, 5}}},
		"queue snapshot":  {7, [][2]uint64{{7, 20}, {21, 21}}, [][2]uint64{{8, 20}, {21, 21}}},
		"kv unchanged":    {7, [][2]uint64{{8, 20}, {21, 21}, {25, 25}}, [][2]uint64{{8, 20}, {21, 21}, {25, 25}}},
		"engine bug kept": {5, [][2]uint64{{2, 4}}, [][2]uint64{{2, 4}}},
	} {
		rec := &markerSink{}
		s := &ascendingSink{Sink: rec, h: &handed{}, end: tc.from}
		for _, m := range tc.in {
			s.Snapshot(m[0], m[1])
		}
		if !cmp.Equal(rec.marks, tc.want) {
			t.Errorf("%s: %v, want %v", name, rec.marks, tc.want)
		}
	}
}
