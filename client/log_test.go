package client_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/faultnet"
)

// readLog ranges over a stream and returns "ts:value" strings.
func readLog(t *testing.T, s *client.Stream[client.LogRecord]) []string {
	t.Helper()
	var out []string
	for r, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%s", r.Timestamp, r.Value))
	}
	return out
}

func TestLog(t *testing.T) {
	n := startLogNode(t, 0)
	c := dial(t, n.addr)
	ctx := t.Context()
	for _, r := range []struct {
		ts uint64
		v  string
	}{{20, "b-first"}, {10, "a"}, {20, "b-second"}} {
		if err := c.LogPut(ctx, "events", r.ts, []byte(r.v)); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := c.LogPutBatch(ctx, "events", []client.LogRecord{{Timestamp: 30, Value: []byte("c-ERROR")}, {Timestamp: 5, Value: []byte("z")}},
		client.RoutingKey([]byte("user-1")))
	if err != nil || stored != 2 {
		t.Fatalf("LogPutBatch = %d, %v", stored, err)
	}
	for _, c2 := range []struct {
		s    *client.Stream[client.LogRecord]
		want string
	}{
		{c.LogAll(ctx, "events"), "5:z 10:a 20:b-first 20:b-second 30:c-ERROR"},
		{c.LogRange(ctx, "events", 10, 20), "10:a 20:b-first 20:b-second"},
		{c.LogRange(ctx, "events", 0, 100, client.FilterSubstring("second")), "20:b-second"},
		{c.LogAll(ctx, "events", client.FilterRegexp("(?i)error|^z$")), "5:z 30:c-ERROR"},
		{c.LogAll(ctx, "nothing"), ""},
	} {
		if got := strings.Join(readLog(t, c2.s), " "); got != c2.want {
			t.Fatalf("got %q, want %q", got, c2.want)
		}
	}
	for r, err := range c.LogAll(ctx, "events").All() {
		if err != nil || r.Node != n.addr {
			t.Fatalf("record %+v %v: want the node's address", r, err)
		}
		break
	}
	// The node's refusals, as typed errors.
	for _, c2 := range []struct {
		s    *client.Stream[client.LogRecord]
		want error
	}{
		{c.LogRange(ctx, "events", 2, 1), client.ErrBadRange},
		{c.LogAll(ctx, "events", client.FilterRegexp("a(")), client.ErrBadFilter},
		{c.LogAll(ctx, "bad name"), client.ErrBadChannelName},
	} {
		var got error
		for _, err := range c2.s.All() {
			got = err
		}
		if !errors.Is(got, c2.want) {
			t.Fatalf("err = %v, want %v", got, c2.want)
		}
	}
	if err := c.LogPut(ctx, "events", 1, make([]byte, 2<<20)); !errors.Is(err, client.ErrValueTooBig) {
		t.Fatalf("LogPut over the value limit: %v", err)
	}
	if err := c.LogPut(ctx, "bad name", 1, nil); !errors.Is(err, client.ErrBadChannelName) {
		t.Fatalf("LogPut to a bad channel: %v", err)
	}
	chs, err := c.Channels(ctx)
	if err != nil || len(chs) != 1 || chs[0].Name != "events" || chs[0].Kind != "log" {
		t.Fatalf("Channels = %+v %v", chs, err)
	}
	if s, err := c.ChannelSize(ctx, "events"); err != nil || s.Kind != "log" || s.Records != 5 {
		t.Fatalf("ChannelSize = %+v %v", s, err)
	}
	if err := c.RemoveChannel(ctx, "events"); err != nil {
		t.Fatal(err)
	}
	if got := readLog(t, c.LogAll(ctx, "events")); len(got) != 0 {
		t.Fatalf("after RemoveChannel: %v", got)
	}
}

// TestLogTwoNodes: appends alternate between the nodes, skip a node that
// is down, and a read merges the nodes' records in timestamp order.
func TestLogTwoNodes(t *testing.T) {
	a, b := startLogNode(t, 100*time.Millisecond), startLogNode(t, 100*time.Millisecond)
	c := dial(t, a.addr+","+b.addr)
	ctx := t.Context()
	for i := range 10 {
		if err := c.LogPut(ctx, "two", uint64(100-i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{a, b} {
		if cs, _ := n.log.ChannelSize("two"); cs.Records != 5 {
			t.Fatalf("node %s holds %d records, want 5 of 10", n.addr, cs.Records)
		}
	}
	// A read merges both nodes' records in timestamp order (the appends
	// alternated, so do the nodes).
	var got []string
	i := 0
	var prev string
	for r, err := range c.LogAll(ctx, "two").All() {
		if err != nil {
			t.Fatal(err)
		}
		if r.Timestamp != uint64(91+i) || r.Node == prev || (r.Node != a.addr && r.Node != b.addr) {
			t.Fatalf("record %d: %d from %s, after one from %s", i, r.Timestamp, r.Node, prev)
		}
		prev = r.Node
		got = append(got, string(r.Value))
		i++
	}
	if i != 10 {
		t.Fatalf("%d records read: %v", i, got)
	}
	b.stop()
	for i := range 4 {
		if err := c.LogPut(ctx, "two", 1, []byte("while b is down")); err != nil {
			t.Fatalf("append %d with one node down: %v", i, err)
		}
	}
	if cs, _ := a.log.ChannelSize("two"); cs.Records != 9 {
		t.Fatalf("node a holds %d records, want 9", cs.Records)
	}
}

func fillLog(t *testing.T, c *client.Client, ch string, n int) {
	t.Helper()
	var recs []client.LogRecord
	for i := range n {
		recs = append(recs, client.LogRecord{Timestamp: uint64(i / 7), Value: fmt.Appendf(nil, "value-%05d-%s", i, strings.Repeat("x", 100))})
		if len(recs) == 1000 || i == n-1 {
			if _, err := c.LogPutBatch(t.Context(), ch, recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

// checkLogAll checks that got holds the n records of fillLog, in order,
// each once.
func checkLogAll(t *testing.T, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	for i, r := range got {
		if want := fmt.Sprintf("%d:value-%05d-", i/7, i); !strings.HasPrefix(r, want) {
			t.Fatalf("record %d = %.30s, want %s... (a record missing or repeated)", i, r, want)
		}
	}
}

// TestLogRangeResumesAfterDisconnect cuts the connection several times
// mid-range; every record arrives once, in order.
func TestLogRangeResumesAfterDisconnect(t *testing.T) {
	n := startLogNode(t, 100*time.Millisecond)
	fillLog(t, dial(t, n.addr), "r", 5000)
	p, err := faultnet.New(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.CutAfter(150 << 10) // each connection breaks after 150 KB of answers
	c := dial(t, p.Addr(), client.WithStreamWindow(64<<10))
	checkLogAll(t, readLog(t, c.LogAll(t.Context(), "r")), 5000)
	if p.Accepted() < 3 {
		t.Fatalf("only %d connections: the stream was not cut", p.Accepted())
	}
	// A filtered range resumes too.
	got := readLog(t, c.LogRange(t.Context(), "r", 100, 600, client.FilterRegexp("value-0...[05]-")))
	var want []string
	for i := 700; i < 7*601; i += 5 {
		want = append(want, fmt.Sprintf("%d:value-%05d-", i/7, i))
	}
	if len(got) != len(want) {
		t.Fatalf("filtered range: %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("filtered record %d = %.30s, want %s...", i, got[i], want[i])
		}
	}
}

func TestLogStreamSuspendResumeStop(t *testing.T) {
	n := startLogNode(t, 100*time.Millisecond)
	c := dial(t, n.addr, client.WithStreamWindow(16<<10))
	fillLog(t, c, "s", 2000)
	s := c.LogAll(t.Context(), "s")
	// Suspend holds back whole batches (of about 570 records here): the
	// batch being read is finished, the next one waits for Resume.
	var count, atResume atomic.Int64
	for _, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		switch count.Add(1) {
		case 10:
			s.Suspend()
			go func() { time.Sleep(200 * time.Millisecond); atResume.Store(count.Load()); s.Resume() }()
		case 1200:
			s.Stop()
		}
	}
	if n := atResume.Load(); n == 0 || n > 1000 {
		t.Fatalf("%d records read by the time of Resume", n)
	}
	if n := count.Load(); n < 1200 || n >= 2000 {
		t.Fatalf("stream stopped after %d records", n)
	}
	// Breaking out of the loop stops the stream; the connection stays usable.
	for range c.LogAll(t.Context(), "s").All() {
		break
	}
	if err := c.LogPut(t.Context(), "s", 1, []byte("still serving")); err != nil {
		t.Fatal(err)
	}
}
