package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shoal/internal/filedamage"
	"shoal/internal/logstore/segment"
	"shoal/internal/vfs"
)

func TestCheckHealthyStore(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CompressAfter = time.Second
	cfg.Now = fixedClock(25)
	s := mustOpen(t, cfg)
	for i := range 60 {
		mustAppend(t, s, fmt.Sprintf("c%d", i%2), rec(uint64(i%30), fmt.Sprint(i)))
	}
	if err := s.Maintain(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var out bytes.Buffer
	rep, err := Check(vfs.Default, cfg.Dir, false, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Problems() != 0 || rep.Records != 60 || rep.Channels != 2 || rep.Files != 6 {
		t.Fatalf("report %+v\n%s", rep, out.String())
	}
	if !strings.Contains(out.String(), "checked 2 channels, 6 segment files, 60 records") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestCheckFindsAndRepairs(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	for i := range 30 {
		mustAppend(t, s, "c", rec(uint64(i), fmt.Sprintf("value-%02d", i)))
	}
	s.Close()
	seg := func(start uint64) string { return filepath.Join(cfg.Dir, "c", segName(start, 0, false)) }
	// A torn tail in bucket 0, a bit flip in frame 4 of bucket 10, a bad
	// header on bucket 20, a leftover temporary file, a superseded file.
	appendBytes(t, seg(0), []byte{1, 2, 3, 4, 5, 6, 7})
	flipByte(t, seg(10), frameOffset(4, 8)+segment.FrameHeaderSize+2)
	flipByte(t, seg(20), 0)
	os.WriteFile(filepath.Join(cfg.Dir, "c", "x.segz.tmp"), []byte("partial"), 0o644)
	b, _ := os.ReadFile(seg(0))
	os.WriteFile(filepath.Join(cfg.Dir, "c", segName(30, 0, false)), b, 0o644)
	merged := segment.Header{Flags: segment.FlagMerged, Start: 30, Span: 10}
	os.WriteFile(filepath.Join(cfg.Dir, "c", segName(30, 1, false)), merged.Append(nil), 0o644)

	var out bytes.Buffer
	rep, err := Check(vfs.Default, cfg.Dir, false, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TornTails != 1 || rep.Damaged != 1 || rep.BadHeaders != 1 || rep.Leftovers != 2 || rep.Repaired != 0 {
		t.Fatalf("report %+v\n%s", rep, out.String())
	}
	for _, want := range []string{
		seg(0) + ": torn tail at offset " + fmt.Sprint(frameOffset(10, 8)) + ": 7 bytes",
		seg(10) + ": damaged stretch at offset " + fmt.Sprint(frameOffset(4, 8)),
		seg(20) + ": segment: bad file header",
		"x.segz.tmp: leftover temporary file",
		segName(30, 0, false) + ": superseded by generation 1",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
	if b, _ := os.ReadFile(seg(0)); len(b) != int(frameOffset(10, 8))+7 {
		t.Fatal("check without repair changed a file")
	}

	badHeader, _ := os.ReadFile(seg(20))
	out.Reset()
	rep, err = Check(vfs.Default, cfg.Dir, true, &out)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(seg(20) + ".broken"); err != nil || !bytes.Equal(b, badHeader) {
		t.Fatalf("the salvaged file's original is not kept as .broken: %v", err)
	}
	if rep.Repaired != 5 {
		t.Fatalf("repaired %d files\n%s", rep.Repaired, out.String())
	}
	for _, want := range []string{"repaired: cut at offset", "repaired: rewrote it with its 9 valid records",
		"repaired: salvaged 10 records", "repaired: removed"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	rep, err = Check(vfs.Default, cfg.Dir, false, &out)
	if err != nil || rep.Problems() != 0 || rep.Records != 29 {
		t.Fatalf("after repair: %v %+v\n%s", err, rep, out.String())
	}
	s = mustOpen(t, cfg)
	got := readRange(t, s, "c", 0, 100, Filter{})
	if len(got) != 29 {
		t.Fatalf("read %d records after repair", len(got))
	}
	for _, r := range got {
		if string(r.Value) == "value-14" {
			t.Fatal("damaged record returned")
		}
	}
	if st := s.Stats(); st.TailsCut != 0 || st.CorruptAtOpen != 0 || st.BadFiles != 0 {
		t.Fatalf("stats after repair %+v", st)
	}
}

func TestDamagedStateFile(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := mustOpen(t, cfg)
	mustAppend(t, s, "c", rec(1, "a"))
	s.Close()
	flipByte(t, filepath.Join(cfg.Dir, stateName), 20)
	if _, err := Open(cfg); !errors.Is(err, ErrBadState) {
		t.Fatalf("open with a damaged state file: %v", err)
	}
	var out bytes.Buffer
	rep, err := Check(vfs.Default, cfg.Dir, true, &out)
	if err != nil || !rep.BadState || rep.Repaired != 1 {
		t.Fatalf("%v %+v\n%s", err, rep, out.String())
	}
	s = mustOpen(t, cfg)
	if got := pairs(readRange(t, s, "c", 0, 10, Filter{})); got != "1:a" || s.HighSeqno(0) != 1 {
		t.Fatalf("after repair: %s, high %d", got, s.HighSeqno(0))
	}
	cfg.VBuckets = 16
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "vbuckets") {
		t.Fatalf("open with another vbucket count: %v", err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) { filedamage.Append(t, path, b) }

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
