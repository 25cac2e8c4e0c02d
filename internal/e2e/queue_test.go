package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/testproc"
)

// value is record number i of a test, padded to 100 bytes.
func value(i int) []byte {
	v := fmt.Appendf(nil, "%d:", i)
	return append(v, strings.Repeat("v", 100-len(v))...)
}

func valueNumber(t *testing.T, v []byte) int {
	t.Helper()
	num, _, _ := strings.Cut(string(v), ":")
	n, err := strconv.Atoi(num)
	if err != nil {
		t.Fatalf("not a test value: %q", v)
	}
	return n
}

// popAll pops channel until it is empty and returns the record numbers.
func popAll(t *testing.T, c *client.Client, channel string) []int {
	t.Helper()
	var out []int
	for {
		v, err := c.Pop(t.Context(), channel)
		if errors.Is(err, client.ErrEmpty) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, valueNumber(t, v))
	}
}

func TestQueueCLI(t *testing.T) {
	n := testproc.Start(t)
	f := func(stdin string, wantCode int, wantOut string, args ...string) testproc.Result {
		t.Helper()
		r := testproc.CLI(t, n.Addr, stdin, args...)
		if r.Code != wantCode || (wantOut != "" && r.Stdout != wantOut) {
			t.Fatalf("shoal %v: code %d stdout %q stderr %q; want code %d stdout %q", args, r.Code, r.Stdout, r.Stderr, wantCode, wantOut)
		}
		return r
	}
	f("", 0, "", "push", "jobs", "first")
	f("second\n", 0, "", "push", "jobs", "-")
	f("", 0, "", "push", "jobs", "both", "--channel", "audit,copy", "--channel", "more")
	f("", 0, "first", "pop", "jobs")
	f("", 0, "second\n", "pop", "jobs")
	f("", 0, "both", "pop", "jobs")
	r := f("", 1, "", "pop", "jobs")
	if strings.TrimSpace(r.Stderr) != `shoal: empty: queue "jobs" has no record` {
		t.Fatalf("pop of an empty queue: stderr %q", r.Stderr)
	}
	f("", 0, "both", "pop", "copy")
	r = f("", 0, "", "queues")
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "CHANNEL") || !strings.Contains(lines[0], "FULL%") ||
		strings.Join(strings.Fields(lines[1]), " ") != "audit - 1 4 1 4 0 0 0 0" {
		t.Fatalf("queues:\n%s", r.Stdout)
	}
	f("", 0, "audit\tqueue\ncopy\tqueue\njobs\tqueue\nmore\tqueue\n", "channels")
	f("", 0, "records 2\nbytes 8\n", "size")
	f("", 0, "", "put", "kvchan", "k", "v")
	r = f("", 4, "", "push", "kvchan", "v")
	if !strings.Contains(r.Stderr, "wrong channel kind") {
		t.Fatalf("push to a kv channel: %q", r.Stderr)
	}
	for _, args := range [][]string{{"push", "bad name", "v"}, {"pop"}, {"push", "c"}, {"consume"}} {
		if r := testproc.CLI(t, n.Addr, "", args...); r.Code == 0 || strings.TrimSpace(r.Stderr) == "" {
			t.Fatalf("shoal %v: code %d stderr %q", args, r.Code, r.Stderr)
		}
	}

	// consume: the backlog, then live records, one per line; it ends with
	// an error when the channel is removed.
	cmd := testproc.Command(t, n.Addr, "consume", "audit", "--subscriber", "s1")
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	next := func() string {
		t.Helper()
		line := make(chan string, 1)
		go func() {
			if sc.Scan() {
				line <- sc.Text()
			}
			close(line)
		}()
		select {
		case l := <-line:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no consume output")
		}
		return ""
	}
	if l := next(); l != "both" {
		t.Fatalf("consume backlog: %q", l)
	}
	f("", 0, "", "push", "audit", "live")
	if l := next(); l != "live" {
		t.Fatalf("consume live: %q", l)
	}
	r = f("", 4, "", "pop", "audit")
	if !strings.Contains(r.Stderr, "subscribers") || !strings.Contains(r.Stderr, "shoal queue unsubscribe audit NAME") {
		t.Fatalf("pop of a subscribed channel: %q", r.Stderr)
	}
	f("", 0, "", "rmchannel", "audit")
	if err := cmd.Wait(); err == nil || !strings.Contains(stderr.String(), "channel removed") {
		t.Fatalf("consume after rmchannel: %v %q", err, stderr.String())
	}
	f("", 0, "both\n", "consume", "more", "--count", "1")
}

// TestQueueTwoNodes gives the client and the CLI two nodes that are not
// one cluster (each node is a cluster of its own), without routing:
// pushes alternate, pops drain both.
func TestQueueTwoNodes(t *testing.T) {
	a, b := testproc.Start(t), testproc.Start(t)
	addrs := a.Addr + "," + b.Addr
	c, err := client.Dial(t.Context(), addrs, client.WithNoRouting(), client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 10 {
		if err := c.Push(t.Context(), []string{"rr"}, value(i)); err != nil {
			t.Fatal(err)
		}
	}
	qs, err := c.Queues(t.Context())
	if err != nil || len(qs) != 2 || qs[0].Node != a.Addr || qs[0].Records != 5 || qs[1].Node != b.Addr || qs[1].Records != 5 {
		t.Fatalf("10 pushes over two nodes: %+v %v", qs, err)
	}
	// Each CLI run starts the round-robin at a random node.
	for i := 10; i < 14; i++ {
		if r := testproc.CLI(t, addrs, "", "--no-route", "push", "rr", string(value(i))); r.Code != 0 {
			t.Fatalf("push: %+v", r)
		}
	}
	r := testproc.CLI(t, addrs, "", "--no-route", "queues")
	if lines := strings.Split(strings.TrimSpace(r.Stdout), "\n"); len(lines) != 3 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "NODE") {
		t.Fatalf("queues of two nodes:\n%s", r.Stdout)
	}
	got := map[int]bool{}
	for range 14 {
		v, err := c.Pop(t.Context(), "rr")
		if err != nil {
			t.Fatal(err)
		}
		got[valueNumber(t, v)] = true
	}
	if len(got) != 14 {
		t.Fatalf("pops: %v", got)
	}
	if r := testproc.CLI(t, addrs, "", "--no-route", "pop", "rr"); r.Code != 1 {
		t.Fatalf("pop of two empty nodes: %+v", r)
	}
}

// TestQueueMemoryRestart: in memory mode a clean stop saves the rings and
// the overflow; the restarted node has every record, in order.
func TestQueueMemoryRestart(t *testing.T) {
	n := testproc.Start(t, "--queue-ring-size", "16KiB")
	c := dialNode(t, n.Addr)
	for i := range 1000 {
		if err := c.Push(t.Context(), []string{"keep"}, value(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		v, err := c.Pop(t.Context(), "keep")
		if err != nil || valueNumber(t, v) != i {
			t.Fatalf("pop %d: %v", i, err)
		}
	}
	qs, err := c.Queues(t.Context())
	if err != nil || len(qs) != 1 || qs[0].MemoryRecords == 0 || qs[0].OverflowRecords == 0 {
		t.Fatalf("before the restart, want records in memory and on disk: %+v %v", qs, err)
	}
	c.Close()
	n.Stop()
	n = testproc.StartIn(t, n.Dir, "--queue-ring-size", "16KiB")
	got := popAll(t, dialNode(t, n.Addr), "keep")
	if len(got) != 990 || got[0] != 10 || got[989] != 999 {
		t.Fatalf("after a clean restart: %d records, %v ... %v", len(got), got[:min(3, len(got))], got[max(0, len(got)-3):])
	}
	for i, v := range got {
		if v != 10+i {
			t.Fatalf("record %d is %d: order lost", i, v)
		}
	}
}

// TestQueueMemoryKill: in memory mode kill -9 loses exactly the records
// held in the memory ring; those in the disk overflow come back, in order.
// (The overflow index is written when a queue's overflow starts and every
// 10 s; records appended after it are found by reading on. Records popped
// from the overflow since the last index would come back too; this test
// pops nothing.)
func TestQueueMemoryKill(t *testing.T) {
	n := testproc.Start(t, "--queue-ring-size", "16KiB")
	c := dialNode(t, n.Addr)
	for i := range 1000 {
		if err := c.Push(t.Context(), []string{"crash"}, value(i)); err != nil {
			t.Fatal(err)
		}
	}
	qs, err := c.Queues(t.Context())
	if err != nil || len(qs) != 1 {
		t.Fatal(qs, err)
	}
	inMemory := int(qs[0].MemoryRecords)
	if inMemory == 0 || qs[0].OverflowRecords != int64(1000-inMemory) {
		t.Fatalf("split before the kill: %+v", qs[0])
	}
	c.Close()
	n.Kill()
	n = testproc.StartIn(t, n.Dir, "--queue-ring-size", "16KiB")
	got := popAll(t, dialNode(t, n.Addr), "crash")
	if len(got) != 1000-inMemory {
		t.Fatalf("after kill -9: %d records, want the %d of the overflow", len(got), 1000-inMemory)
	}
	for i, v := range got {
		if v != inMemory+i {
			t.Fatalf("record %d is %d, want %d", i, v, inMemory+i)
		}
	}
}

// TestQueueJournalKill runs concurrent pushes and pops (client and CLI)
// against a node in journal mode with fsync always and kills it with -9
// mid-way. After the restart nothing acknowledged is lost, nothing popped
// comes back, and each producer's records are in order.
func TestQueueJournalKill(t *testing.T) {
	args := []string{"--queue-durability", "journal", "--queue-fsync-interval", "always", "--queue-ring-size", "64KiB"}
	n := testproc.Start(t, args...)
	c := dialNode(t, n.Addr)
	const producers = 4
	var mu sync.Mutex
	acked := map[int]bool{}  // pushes the node acknowledged
	popped := map[int]bool{} // records a pop returned
	var clientPops []int     // in the order the client's pops got them
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := g*1_000_000 + i
				if err := c.Push(ctx, []string{"j"}, value(id)); err != nil {
					return // the node died: this push may or may not be stored
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() { // a popper through the client
		defer wg.Done()
		for ctx.Err() == nil {
			v, err := c.Pop(ctx, "j")
			if errors.Is(err, client.ErrEmpty) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				return
			}
			mu.Lock()
			popped[valueNumber(t, v)] = true
			clientPops = append(clientPops, valueNumber(t, v))
			mu.Unlock()
		}
	}()
	wg.Add(1)
	go func() { // a popper through the CLI, one process per pop
		defer wg.Done()
		for ctx.Err() == nil {
			r := testproc.CLI(t, n.Addr, "", "pop", "j")
			if r.Code != 0 {
				if strings.Contains(r.Stderr, "empty") {
					continue
				}
				return
			}
			mu.Lock()
			popped[valueNumber(t, []byte(r.Stdout))] = true
			mu.Unlock()
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	nAcked, nPopped := len(acked), len(popped)
	mu.Unlock()
	n.Kill()
	cancel()
	wg.Wait()
	if nAcked < 100 || nPopped < 10 {
		t.Fatalf("too little traffic before the kill: %d pushes, %d pops", nAcked, nPopped)
	}

	n = testproc.StartIn(t, n.Dir, args...)
	after := popAll(t, dialNode(t, n.Addr), "j")
	present := map[int]bool{}
	for _, id := range after {
		if present[id] {
			t.Fatalf("record %d twice after the restart", id)
		}
		present[id] = true
		if popped[id] {
			t.Fatalf("record %d was popped before the kill and came back", id)
		}
	}
	lost := 0
	for id := range acked {
		if !present[id] && !popped[id] {
			lost++
		}
	}
	// A pop whose answer died with the process took its record: up to the
	// pops in flight (the client's one and the CLI's one) may be missing.
	if lost > 2 {
		t.Fatalf("%d acknowledged records neither popped nor present after kill -9", lost)
	}
	checkProducerOrder(t, "after the restart", after)
	checkProducerOrder(t, "popped by the client", clientPops)
	t.Logf("%d pushes acknowledged, %d popped before kill -9, %d present after, %d unaccounted (pops in flight)", len(acked), len(popped), len(after), lost)
}

// checkProducerOrder checks that each producer's records (id/1e6) come in
// increasing order.
func checkProducerOrder(t *testing.T, what string, ids []int) {
	t.Helper()
	last := map[int]int{}
	for _, id := range ids {
		g := id / 1_000_000
		if prev, ok := last[g]; ok && id <= prev {
			t.Fatalf("%s: record %d after %d of the same producer", what, id, prev)
		}
		last[g] = id
	}
}

func TestQueueObservability(t *testing.T) {
	n := testproc.Start(t, "--stats-interval", "200ms", "--queue-ring-size", "4KiB")
	c := dialNode(t, n.Addr)
	for i := range 100 {
		if err := c.Push(t.Context(), []string{"obsq"}, value(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Pop(t.Context(), "obsq"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	stats, err := os.ReadFile(filepath.Join(n.Dir, "log", "stats.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"action/pushed/records:", "action/pushed/bytes:", "action/popped/records:", "action/popped/bytes:",
		"channel/obsq/records:99", "channel/obsq/records_memory:", "channel/obsq/records_overflow:", "channel/obsq/bytes_memory:",
		"channel/obsq/bytes_overflow:", "channel/obsq/percent_memory:", "queue_total_records:99", "request/Push/handled:"} {
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
	for _, m := range []string{`shoal_action_records_total{action="pushed"} 100`, `shoal_action_records_total{action="popped"} 1`,
		`shoal_channel_records{channel="obsq",kind="queue"} 99`, `shoal_queue_overflow_records{channel="obsq",subscriber=""}`,
		`shoal_queue_fullness_ratio{channel="obsq",subscriber=""}`, `shoal_stored_records{kind="queue"} 99`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	resp, err = http.Get("http://" + n.HTTP + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Queue struct {
			Durability string `json:"durability"`
			Records    int64  `json:"records"`
			Queues     []struct {
				Channel         string  `json:"channel"`
				MemoryRecords   int64   `json:"memory_records"`
				OverflowRecords int64   `json:"overflow_records"`
				Fullness        float64 `json:"fullness_percent"`
			} `json:"queues"`
		} `json:"queue"`
		Channels []struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"channels"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	q := st.Queue
	if q.Durability != "memory" || q.Records != 99 || len(q.Queues) != 1 || q.Queues[0].Channel != "obsq" ||
		q.Queues[0].MemoryRecords+q.Queues[0].OverflowRecords != 99 || q.Queues[0].OverflowRecords == 0 || q.Queues[0].Fullness < 50 ||
		len(st.Channels) != 1 || st.Channels[0].Kind != "queue" {
		t.Fatalf("/status: %+v", st)
	}
	resp, err = http.Get("http://" + n.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `<table id="queues">`) {
		t.Fatalf("the console page has no queue table:\n%s", page)
	}
}
