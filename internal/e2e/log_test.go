package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/logstore/segment"
	"shoal/internal/testproc"
)

func TestLogCLI(t *testing.T) {
	n := testproc.Start(t, "--stats-interval", "200ms")
	f := func(wantCode int, wantOut string, args ...string) testproc.Result {
		t.Helper()
		r := testproc.CLI(t, n.Addr, "", args...)
		if r.Code != wantCode || (wantOut != "" && r.Stdout != wantOut) {
			t.Fatalf("shoal %v: code %d stdout %q stderr %q; want code %d stdout %q", args, r.Code, r.Stdout, r.Stderr, wantCode, wantOut)
		}
		return r
	}
	f(0, "", "log", "put", "events", "login alice", "--ts", "1700000100")
	f(0, "", "log", "put", "events", "login bob", "--ts", "1700000050")
	f(0, "", "log", "put", "events", "ERROR disk", "--ts", "2023-11-14T22:15:00Z") // 1700000100
	f(0, "", "log", "put", "events", "keyed", "--ts", "1700000200", "--key", "user-1")
	before := time.Now().Unix()
	f(0, "", "log", "put", "events", "now")
	f(0, "1700000050\tlogin bob\n1700000100\tlogin alice\n1700000100\tERROR disk\n1700000200\tkeyed\n",
		"log", "range", "events", "0", "1700000200")
	f(0, "1700000100\tlogin alice\n", "log", "range", "events", "1700000100", "1700000100", "--filter", "alice")
	f(0, "1700000100\tERROR disk\n", "log", "range", "events", "0", "1800000000", "--regex", "(?i)^error")
	r := f(0, "", "log", "range", "events", "1700000201", "now")
	var ts int64
	if _, err := fmt.Sscanf(r.Stdout, "%d\tnow\n", &ts); err != nil || ts < before || ts > time.Now().Unix() {
		t.Fatalf("record put with the default --ts: %q", r.Stdout)
	}
	if r := f(0, "", "log", "bench", "bench", "--duration", "300ms", "--writers", "4", "--batch", "10"); !strings.Contains(r.Stdout, "records/s") {
		t.Fatalf("log bench: %q", r.Stdout)
	}
	f(0, "", "rmchannel", "bench")
	f(0, "events\n", "log", "channels")
	f(0, "events\tlog\n", "channels")
	f(0, "records 5\nbytes 38\n", "size", "events")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"log", "range", "events", "5", "2"}, "bad range"},
		{[]string{"log", "range", "events", "0", "5", "--regex", "a("}, "bad filter"},
		{[]string{"log", "range", "events", "0", "5", "--regex", "a", "--filter", "b"}, "none of the others"},
		{[]string{"log", "range", "events", "yesterday", "5"}, "bad timestamp"},
		{[]string{"log", "put", "bad name", "v"}, "bad channel name"},
		{[]string{"get", "events", "k"}, "wrong channel kind"},
		{[]string{"put", "events", "k", "v"}, "wrong channel kind"},
	} {
		r := testproc.CLI(t, n.Addr, "", c.args...)
		if r.Code == 0 || !strings.Contains(r.Stderr, c.msg) || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
			t.Fatalf("shoal %v: code %d stderr %q, want one line with %q", c.args, r.Code, r.Stderr, c.msg)
		}
	}

	time.Sleep(600 * time.Millisecond)
	stats, err := os.ReadFile(filepath.Join(n.Dir, "log", "stats.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"channel/events/records:5", "channel/events/disk_bytes:", "log/records:5", "action/appended/records:",
		"log/fsyncs:", "log/fsync_1_ms:", "log/tails_cut:0", "request/LogPut/handled:", "request/LogRange/handled:"} {
		if !strings.Contains(string(stats), field) {
			t.Errorf("stats.log lacks %q", field)
		}
	}
	resp, err := http.Get("http://" + n.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`shoal_channel_records{channel="events",kind="log"} 5`, `shoal_action_records_total{action="appended"} `,
		"shoal_log_fsync_duration_seconds_count ", "shoal_log_fsync_duration_seconds_sum ", `shoal_log_fsync_duration_seconds_bucket{le="0.001"}`, "shoal_log_tails_cut_total 0",
		`shoal_request_duration_seconds_count{request="LogPut"} 5`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	f(0, "", "rmchannel", "events")
	f(0, "", "log", "channels")
}

// TestLogKill9DuringAppends kills a node with --log-fsync=always while 8
// writers append through the client, adds a torn half-frame to a segment
// as a crash in the middle of a write would leave, and restarts it: every
// acknowledged append is there, in order per writer, at most the one in
// flight per writer is there unacknowledged, and nothing of the torn tail
// is returned.
func TestLogKill9DuringAppends(t *testing.T) {
	const writers = 8
	args := []string{"--log-fsync", "always", "--log-segment-span", "10s"}
	n := testproc.Start(t, args...)
	c, err := client.Dial(t.Context(), n.Addr, client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const t0 = 1_700_000_000
	acked := make([]int, writers) // records acknowledged per writer
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	enough := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				// Timestamps grow with i, so a writer's records come back
				// in its order; a new segment every 10 s of them.
				v := fmt.Sprintf("w%d-%06d-%s", w, i, strings.Repeat("x", 50))
				if err := c.LogPut(context.Background(), "crash", uint64(t0+i/20), []byte(v)); err != nil {
					if !errors.Is(err, client.ErrDisconnected) {
						t.Errorf("writer %d: %v", w, err)
					}
					return
				}
				mu.Lock()
				acked[w]++
				if total++; total == 3000 {
					close(enough)
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(30 * time.Second):
	}
	n.Kill()
	wg.Wait()
	if total < 200 {
		t.Fatalf("only %d appends acknowledged before the kill", total)
	}

	segs, _ := filepath.Glob(filepath.Join(n.Dir, "log-data", "crash", "*.seg"))
	sort.Strings(segs)
	if len(segs) < 2 {
		t.Fatalf("%d segment files; want appends spread over several", len(segs))
	}
	torn := segment.AppendFrame(nil, &segment.Record{Timestamp: t0, Value: []byte("torn-record")})
	tf, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	tf.Write(torn[:len(torn)-3])
	tf.Close()

	n2 := testproc.StartIn(t, n.Dir, args...)
	c2, err := client.Dial(t.Context(), n2.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	next := make([]int, writers)
	count := 0
	for r, err := range c2.LogAll(t.Context(), "crash").All() {
		if err != nil {
			t.Fatal(err)
		}
		var w, i int
		if _, err := fmt.Sscanf(string(r.Value), "w%d-%d-", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("record %q returned: not one a writer sent", r.Value)
		}
		if i != next[w] || r.Timestamp != uint64(t0+i/20) {
			t.Fatalf("writer %d: record %d (ts %d) where %d was due: lost, repeated or out of order", w, i, r.Timestamp, next[w])
		}
		next[w]++
		count++
	}
	for w := range writers {
		if next[w] < acked[w] || next[w] > acked[w]+1 {
			t.Fatalf("writer %d: %d records after restart, %d acknowledged (at most 1 more may be in flight)", w, next[w], acked[w])
		}
	}
	log, _ := os.ReadFile(filepath.Join(n.Dir, "log", "root.log"))
	if !strings.Contains(string(log), "torn tail") {
		t.Fatalf("root.log does not report the torn tail:\n%s", log)
	}
	t.Logf("%d appends acknowledged, %d records after kill -9 and restart", total, count)
}

// TestLogCheckRepair damages a copy of a stopped node's data directory
// (a bit flip in one segment, a truncation in another) and runs shoal
// check on it, without and with --repair; the node then serves every
// record but the damaged ones.
func TestLogCheckRepair(t *testing.T) {
	n := testproc.Start(t, "--log-segment-span", "100s")
	c, err := client.Dial(t.Context(), n.Addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"flip", "cut"} {
		var recs []client.LogRecord
		for i := range 500 {
			recs = append(recs, client.LogRecord{Timestamp: uint64(i), Value: fmt.Appendf(nil, "%s-%03d-%s", ch, i, strings.Repeat("v", 40))})
		}
		if _, err := c.LogPutBatch(t.Context(), ch, recs); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	n.Stop()
	if r := testproc.CLI(t, "", "", "check", n.Dir); r.Code != 0 || !strings.Contains(r.Stdout, "2 channels, 10 segment files, 1000 records") {
		t.Fatalf("check of an intact directory: %+v", r)
	}

	dir := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(dir, os.DirFS(n.Dir)); err != nil {
		t.Fatal(err)
	}
	seg := func(ch, start string) string { return filepath.Join(dir, "log-data", ch, start+"-00000000.seg") }
	flip := seg("flip", "00000000000000c8") // records 200..299
	b, err := os.ReadFile(flip)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	os.WriteFile(flip, b, 0o644)
	cut := seg("cut", "0000000000000190") // records 400..499
	fi, err := os.Stat(cut)
	if err != nil {
		t.Fatal(err)
	}
	os.Truncate(cut, fi.Size()-30) // into the last frame

	r := testproc.CLI(t, "", "", "check", dir)
	if r.Code != 1 || !strings.Contains(r.Stdout, "1 damaged stretches, 1 torn tails") || !strings.Contains(r.Stderr, "run with --repair") {
		t.Fatalf("check of the damaged copy: %+v", r)
	}
	r = testproc.CLI(t, "", "", "check", "--repair", dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "repaired 2 files") || !strings.Contains(r.Stdout, "no problems remain") {
		t.Fatalf("check --repair: %+v", r)
	}
	if r := testproc.CLI(t, "", "", "check", dir); r.Code != 0 {
		t.Fatalf("check after the repair: %+v", r)
	}
	if _, err := os.Stat(flip + ".broken"); err != nil {
		t.Fatalf("the damaged original is not kept: %v", err)
	}

	n2 := testproc.StartIn(t, dir)
	if r := testproc.CLI(t, n2.Addr, "", "check", dir); r.Code == 0 || !strings.Contains(r.Stderr, fmt.Sprintf("locked by process %d (a running shoald", n2.Pid())) {
		t.Fatalf("check of a running node's directory: %+v", r)
	}
	for ch, lost := range map[string]func(i int) bool{
		"flip": func(i int) bool { return i >= 200 && i < 300 }, // at most the damaged record(s) of this file
		"cut":  func(i int) bool { return i == 499 },
	} {
		r := testproc.CLI(t, n2.Addr, "", "log", "range", ch, "0", "1000")
		lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
		got := map[int]bool{}
		for _, l := range lines {
			var ts, i int
			if _, err := fmt.Sscanf(l, "%d\t"+ch+"-%d-", &ts, &i); err != nil || ts != i {
				t.Fatalf("%s: line %q", ch, l)
			}
			got[i] = true
		}
		missing := 0
		for i := range 500 {
			if !got[i] {
				if !lost(i) {
					t.Fatalf("%s: record %d lost by the repair", ch, i)
				}
				missing++
			}
		}
		if missing == 0 || missing > 2 {
			t.Fatalf("%s: %d records missing after damage and repair", ch, missing)
		}
	}
}
