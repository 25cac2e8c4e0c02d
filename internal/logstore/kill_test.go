package logstore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/logstore/segment"
)

// childEnv makes the test binary run runChild instead of the tests (the
// os.Args[0] re-exec trick of groupcache).
const childEnv = "SHOAL_LOGSTORE_KILL_CHILD"

const killWriters = 8

// runChild appends from killWriters goroutines with Fsync always and
// prints "writer n" for every acknowledged append, until it is killed.
// Writer w's n-th record is "w<w>-<n>" at timestamp n/5.
func runChild(dir string) int {
	s, err := Open(Config{Dir: dir, VBuckets: 8, SegmentSpan: 10 * time.Second, MaintainEvery: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	for w := range killWriters {
		go func() {
			for n := 0; ; n++ {
				v := fmt.Sprintf("w%d-%d", w, n)
				if err := s.Append(context.Background(), "k", []Rec{{Timestamp: uint64(n / 5), Value: []byte(v)}}, nil); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%d %d\n", w, n)
				mu.Unlock()
			}
		}()
	}
	select {}
}

func TestKill9KeepsAcknowledgedAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := make([]int, killWriters)
	for i := range acked {
		acked[i] = -1
	}
	r := bufio.NewReader(out)
	lines := 0
	deadline := time.Now().Add(20 * time.Second)
	killed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // EOF after the kill; a last line without '\n' was not fully printed
		}
		var w, n int
		if _, err := fmt.Sscanf(line, "%d %d", &w, &n); err != nil || w >= killWriters {
			t.Fatalf("bad line from child: %q", line)
		}
		if n != acked[w]+1 {
			t.Fatalf("writer %d acknowledged %d after %d", w, n, acked[w])
		}
		acked[w] = n
		lines++
		if !killed && (lines == 2000 || time.Now().After(deadline)) {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed || lines < 100 {
		t.Fatalf("child stopped by itself after %d acknowledged appends", lines)
	}

	// Make a torn tail as a crash in the middle of a write would: half a
	// frame at the end of the newest segment.
	segs, _ := filepath.Glob(filepath.Join(dir, "k", "*.seg"))
	sort.Strings(segs)
	last := segs[len(segs)-1]
	frame := segment.AppendFrame(nil, &segment.Record{Timestamp: 0, Value: []byte("w0-999999999")})
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(frame[:len(frame)/2])
	f.Close()

	s := mustOpen(t, testConfig(dir))
	if st := s.Stats(); st.TailsCut != 1 || st.CorruptAtOpen != 0 {
		t.Fatalf("stats after restart: %+v", st)
	}
	got := readRange(t, s, "k", 0, 1<<40, Filter{})
	next := make([]int, killWriters)
	var prevTs uint64
	for _, r := range got {
		var w, n int
		if _, err := fmt.Sscanf(string(r.Value), "w%d-%d", &w, &n); err != nil || w >= killWriters || !strings.HasPrefix(string(r.Value), "w") {
			t.Fatalf("garbage record %q returned", r.Value)
		}
		if n != next[w] {
			t.Fatalf("writer %d: record %d where %d was due (lost, duplicated or out of order)", w, n, next[w])
		}
		if r.Timestamp != uint64(n/5) || r.Timestamp < prevTs {
			t.Fatalf("record %q at %d after %d", r.Value, r.Timestamp, prevTs)
		}
		prevTs = r.Timestamp
		next[w]++
	}
	for w := range killWriters {
		// Every acknowledged record is there; at most the one in flight
		// when the child died is there without an acknowledgement.
		if next[w] <= acked[w] || next[w] > acked[w]+2 {
			t.Fatalf("writer %d: %d records stored, %d acknowledged", w, next[w], acked[w]+1)
		}
	}
	t.Logf("%d acknowledged, %d stored after kill -9", lines, len(got))
}
