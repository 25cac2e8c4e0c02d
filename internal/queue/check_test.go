package queue

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shoal/internal/filedamage"
)

// appendBytes appends n stray bytes to path.
func appendBytes(t *testing.T, path string, n int) { filedamage.Append(t, path, filedamage.Stray(n)) }

// TestStateStrayTailRecovered: a state file with stray bytes after its
// end opens (the store says so in its log and rewrites the file), with
// every record.
func TestStateStrayTailRecovered(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	want := seq("r", 0, 50)
	for _, v := range want {
		mustPush(t, s, v, "q")
	}
	s.Close()
	state := filepath.Join(dir, stateName)
	appendBytes(t, state, 333)
	var logs bytes.Buffer
	cfg := testConfig(dir)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s = mustOpen(t, cfg)
	equal(t, "records after the stray tail", popAll(t, s, "q"), want)
	s.Close()
	if !strings.Contains(logs.String(), "queue state file has stray bytes after its end") || !strings.Contains(logs.String(), state) {
		t.Errorf("log:\n%s", logs.String())
	}
	if rep, err := Check(nil, dir, false, &bytes.Buffer{}); err != nil || rep.Problems != 0 {
		t.Errorf("check after the restart: %+v %v", rep, err)
	}
}

// TestCheck: stray bytes after the state and a torn journal tail are
// found, and mended by repair; damage inside the state is found and left.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.Durability = DurabilityJournal
	s := mustOpen(t, cfg)
	want := seq("r", 0, 30)
	for _, v := range want {
		mustPush(t, s, v, "q")
	}
	s.abandon() // the pushes are in the journal only
	appendBytes(t, filepath.Join(dir, stateName), 333)
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*"+journalSuffix))
	if len(segs) == 0 {
		t.Fatal("no journal segment")
	}
	appendBytes(t, segs[len(segs)-1], 17)

	var out bytes.Buffer
	rep, err := Check(nil, dir, false, &out)
	if err != nil || rep.Problems != 2 || rep.Repaired != 0 || rep.Files != 2 {
		t.Fatalf("check: %+v %v\n%s", rep, err, out.String())
	}
	if !strings.Contains(out.String(), "333 stray bytes after the end of the state") || !strings.Contains(out.String(), "torn tail from offset") {
		t.Errorf("check output:\n%s", out.String())
	}
	out.Reset()
	if rep, err := Check(nil, dir, true, &out); err != nil || rep.Problems != 2 || rep.Repaired != 2 {
		t.Fatalf("check --repair: %+v %v\n%s", rep, err, out.String())
	}
	if rep, err := Check(nil, dir, false, &out); err != nil || rep.Problems != 0 {
		t.Fatalf("check after the repair: %+v %v", rep, err)
	}
	s = mustOpen(t, cfg)
	equal(t, "records after the repair", popAll(t, s, "q"), want)
	s.Close()

	// A flipped byte inside the state: found, not repaired.
	state := filepath.Join(dir, stateName)
	b, _ := os.ReadFile(state)
	b[len(b)/2] ^= 0x40
	os.WriteFile(state, b, 0o644)
	out.Reset()
	if rep, err := Check(nil, dir, true, &out); err != nil || rep.Problems != 1 || rep.Repaired != 0 || !strings.Contains(out.String(), "cannot be repaired without losing the queues") {
		t.Fatalf("check of a damaged state: %+v %v\n%s", rep, err, out.String())
	}
}

// overflowSegments lists the overflow segment files under dir, in order.
func overflowSegments(t *testing.T, dir string) []string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "overflow", "*", "*"+segSuffix))
	if len(segs) < 2 {
		t.Fatalf("want records in two overflow segments at least, found %v", segs)
	}
	return segs
}

// TestCheckOverflow: the overflow segments are checked frame by frame.
// Stray bytes and a torn tail after what the state vouches for are found
// and cut by repair (the node cuts them itself); damage in the middle of
// vouched records is found and left, saying what is lost.
func TestCheckOverflow(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	s := mustOpen(t, cfg)
	big := strings.Repeat("v", 200)
	for i := range 80 {
		mustPush(t, s, fmt.Sprintf("%s%03d", big, i), "q")
	}
	s.Close()
	segs := overflowSegments(t, dir)
	check := func(repair bool, problems, repaired int, want ...string) {
		t.Helper()
		var out bytes.Buffer
		rep, err := Check(nil, dir, repair, &out)
		if err != nil || rep.Problems != problems || rep.Repaired != repaired {
			t.Fatalf("check (repair %v): %+v %v, want %d problems, %d repaired\n%s", repair, rep, err, problems, repaired, out.String())
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Fatalf("check (repair %v): no %q in\n%s", repair, w, out.String())
			}
		}
	}
	var out bytes.Buffer
	if rep, err := Check(nil, dir, false, &out); err != nil || rep.Problems != 0 || rep.Files != 1+len(segs) {
		t.Fatalf("check of a clean close: %+v %v (%d segments)\n%s", rep, err, len(segs), out.String())
	}

	// Stray bytes after the last segment's vouched end.
	last := segs[len(segs)-1]
	appendBytes(t, last, 333)
	check(false, 1, 0, last+": torn tail from offset", "--repair mends it")
	check(true, 1, 1, "repaired")
	check(false, 0, 0)

	// A torn tail: records pushed after the last index, the last one cut
	// short by a crash.
	s = mustOpen(t, cfg)
	for i := range 5 {
		mustPush(t, s, fmt.Sprintf("%s%03d", big, 100+i), "q")
	}
	s.abandon()
	segs = overflowSegments(t, dir)
	last = segs[len(segs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	os.Truncate(last, fi.Size()-7)
	check(false, 1, 0, last+": torn tail from offset")
	check(true, 1, 1)
	check(false, 0, 0)
	s = mustOpen(t, cfg)
	s.Close()
	check(false, 0, 0)

	// Damage in the middle of vouched records: found, not repaired.
	segs = overflowSegments(t, dir)
	filedamage.Flip(t, segs[0])
	check(true, 1, 0, segs[0]+": damaged at offset", "cannot be repaired: the node drops the records from there")
}

// TestCheckOverflowMissingSegment: a segment the state counts records in
// that is gone is one problem, which no repair mends.
func TestCheckOverflowMissingSegment(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	for i := range 80 {
		mustPush(t, s, fmt.Sprintf("%s%03d", strings.Repeat("v", 200), i), "q")
	}
	s.Close()
	segs := overflowSegments(t, dir)
	os.Remove(segs[0])
	var out bytes.Buffer
	rep, err := Check(nil, dir, true, &out)
	if err != nil || rep.Problems != 1 || rep.Repaired != 0 || !strings.Contains(out.String(), "1 of the overflow segments") {
		t.Fatalf("check: %+v %v\n%s", rep, err, out.String())
	}
}

// TestCheckOverflowWithoutState: overflow directories without a state
// file are said to be deleted at start, not counted as problems.
func TestCheckOverflowWithoutState(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	for i := range 80 {
		mustPush(t, s, fmt.Sprintf("%s%03d", strings.Repeat("v", 200), i), "q")
	}
	s.Close()
	os.Remove(filepath.Join(dir, stateName))
	var out bytes.Buffer
	rep, err := Check(nil, dir, false, &out)
	if err != nil || rep.Problems != 0 || !strings.Contains(out.String(), "1 overflow directories and no state file") {
		t.Fatalf("check: %+v %v\n%s", rep, err, out.String())
	}
}
