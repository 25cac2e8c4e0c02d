package queue

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// appendBytes appends n stray bytes to path.
func appendBytes(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("KLMN"), n/4+1)[:n])
	f.Close()
}

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
