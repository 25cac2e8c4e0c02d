package client_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/faultnet"
	"shoal/internal/queue"
	"shoal/internal/server"
)

// records returns the records queued in channel on node n.
func records(n *node, channel string) int64 {
	var r int64
	for _, q := range n.q.Channels() {
		if q.Name == channel {
			r += q.Records
		}
	}
	return r
}

func TestQueueRoundRobin(t *testing.T) {
	a, b := startNode(t, server.Config{}, ""), startNode(t, server.Config{}, "")
	c := dial(t, a.addr+","+b.addr)
	ctx := t.Context()
	for i := range 10 {
		if err := c.Push(ctx, []string{"jobs"}, fmt.Append(nil, i)); err != nil {
			t.Fatal(err)
		}
	}
	if ra, rb := records(a, "jobs"), records(b, "jobs"); ra != 5 || rb != 5 {
		t.Fatalf("pushes not spread round-robin: %d and %d", ra, rb)
	}
	// Pops take from both nodes, each node's records in push order.
	var got []int
	for range 10 {
		v, err := c.Pop(ctx, "jobs")
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(v))
		got = append(got, n)
	}
	var even, odd []int
	for _, n := range got {
		if n%2 == 0 {
			even = append(even, n)
		} else {
			odd = append(odd, n)
		}
	}
	if !slices.IsSorted(even) || !slices.IsSorted(odd) || len(even) != 5 {
		t.Fatalf("pops %v: a node's order was not kept", got)
	}
	if _, err := c.Pop(ctx, "jobs"); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("pop of empty queues: %v", err)
	}

	// Pop moves on from an empty node: records only on b.
	cb := dial(t, b.addr)
	for i := range 3 {
		cb.Push(ctx, []string{"only-b"}, fmt.Append(nil, i))
	}
	for i := range 3 {
		if v, err := c.Pop(ctx, "only-b"); err != nil || string(v) != fmt.Sprint(i) {
			t.Fatalf("pop %d: %q %v", i, v, err)
		}
	}

	// Push moves on from a node that is down; Pop with a node down and the
	// other empty is not "empty".
	a.stop()
	for i := range 4 {
		err := c.Push(ctx, []string{"after"}, fmt.Append(nil, i))
		if i == 0 && errors.Is(err, client.ErrDisconnected) {
			// Sent on the connection the node was closing: Push cannot
			// know whether it was stored, so it does not try elsewhere.
			// (It was not: the node had stopped reading.)
			err = c.Push(ctx, []string{"after"}, fmt.Append(nil, i))
		}
		if err != nil {
			t.Fatalf("push with a node down: %v", err)
		}
	}
	if rb := records(b, "after"); rb != 4 {
		t.Fatalf("%d of 4 pushes reached the live node", rb)
	}
	for range 4 {
		if _, err := c.Pop(ctx, "after"); err != nil {
			t.Fatalf("pop with a node down: %v", err)
		}
	}
	if _, err := c.Pop(ctx, "after"); errors.Is(err, client.ErrEmpty) || !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("pop with one node down and one empty: %v", err)
	}
}

func TestQueueErrors(t *testing.T) {
	n := startNode(t, server.Config{MaxValueSize: 1000}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	f := func(err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
	}
	c.Put(ctx, "kv", []byte("k"), []byte("v"))
	f(c.Push(ctx, nil, []byte("v")), client.ErrBadRequest)
	f(c.Push(ctx, make([]string, 256), []byte("v")), client.ErrBadRequest)
	f(c.Push(ctx, []string{"ok", "bad name"}, []byte("v")), client.ErrBadChannelName)
	f(c.Push(ctx, []string{"q", "kv"}, []byte("v")), client.ErrWrongKind)
	f(c.Push(ctx, []string{"q"}, make([]byte, 1001)), client.ErrValueTooBig)
	_, err := c.Pop(ctx, "kv")
	f(err, client.ErrWrongKind)
	_, err = c.Pop(ctx, "bad name")
	f(err, client.ErrBadChannelName)
	if err := c.Push(ctx, []string{"q"}, []byte("v"), client.WithRoutingKey([]byte("user-1"))); err != nil {
		t.Fatal(err)
	}
	s := c.Consume(ctx, "q", "sub")
	for v, err := range s.All() {
		if err != nil || string(v) != "v" {
			t.Fatalf("consume: %q %v", v, err)
		}
		break
	}
	_, err = c.Pop(ctx, "q")
	f(err, client.ErrSubscribed)
	for _, err := range c.Consume(ctx, "kv", "").All() {
		f(err, client.ErrWrongKind)
	}
}

func TestQueueSizesAndStats(t *testing.T) {
	n := startNodeIn(t, server.Config{}, "", queue.Config{Dir: t.TempDir(), RingSize: 4 << 10})
	c := dial(t, n.addr)
	ctx := t.Context()
	for range 100 {
		if err := c.Push(ctx, []string{"s1", "s2"}, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	size, err := c.ChannelSize(ctx, "s1")
	if err != nil || size.Kind != "queue" || size.Records != 100 || size.Bytes != 100*100 {
		t.Fatalf("ChannelSize = %+v %v", size, err)
	}
	chs, err := c.Channels(ctx)
	if err != nil || len(chs) != 2 || chs[0].Kind != "queue" {
		t.Fatalf("Channels = %+v %v", chs, err)
	}
	qs, err := c.Queues(ctx)
	if err != nil || len(qs) != 2 {
		t.Fatalf("Queues = %+v %v", qs, err)
	}
	q := qs[0]
	if q.Channel != "s1" || q.Node != n.addr || q.Records != 100 || q.MemoryRecords+q.OverflowRecords != 100 ||
		q.OverflowRecords == 0 || q.MemoryBytes+q.OverflowBytes != q.Bytes || q.RingSize != 4<<10 || q.Fullness < 90 || q.Subscribed {
		t.Fatalf("Queues entry: %+v", q)
	}
	if err := c.RemoveChannel(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if qs, _ := c.Queues(ctx); len(qs) != 1 || qs[0].Channel != "s2" {
		t.Fatalf("Queues after RemoveChannel: %+v", qs)
	}
}

// pushNumbered pushes values "00000".."n-1" (zero-padded, then padding).
func pushNumbered(t *testing.T, c *client.Client, channel string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := c.Push(t.Context(), []string{channel}, fmt.Appendf(nil, "%05d%s", i, strings.Repeat("x", 95))); err != nil {
			t.Fatal(err)
		}
	}
}

func number(v []byte) int {
	n, _ := strconv.Atoi(string(v[:5]))
	return n
}

func TestConsumeSuspendResumeStop(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr, client.WithStreamWindow(16<<10))
	pushNumbered(t, c, "s", 0, 2000)
	s := c.Consume(t.Context(), "s", "")
	count := 0
	for v, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		if number(v) != count {
			t.Fatalf("record %d, want %d", number(v), count)
		}
		count++
		if count == 10 {
			s.Suspend()
			resumed := make(chan struct{})
			go func() { time.Sleep(100 * time.Millisecond); close(resumed); s.Resume() }()
			defer func() { <-resumed }()
		}
		if count == 500 {
			s.Stop()
		}
	}
	// The node took out of the queue only what the window allowed.
	left := records(n, "s")
	if count < 500 || count >= 2000 || int64(count)+left != 2000 {
		t.Fatalf("stopped after %d records, %d left in the queue", count, left)
	}
	// The subscription stays; a new consumer continues where it stopped.
	for v, err := range c.Consume(t.Context(), "s", "").All() {
		if err != nil || number(v) != count {
			t.Fatalf("next consumer: %q %v, want %d", v[:5], err, count)
		}
		break
	}
}

// TestConsumeTwoNodes merges the records of two nodes and ends when the
// channel is removed.
func TestConsumeTwoNodes(t *testing.T) {
	a, b := startNode(t, server.Config{}, ""), startNode(t, server.Config{}, "")
	c := dial(t, a.addr+","+b.addr)
	ctx := t.Context()
	pushNumbered(t, c, "m", 0, 100)
	got := map[int]bool{}
	var end error
	for v, err := range c.Consume(ctx, "m", "g").All() {
		if err != nil {
			end = err
			break
		}
		got[number(v)] = true
		if len(got) == 100 {
			pushNumbered(t, c, "m", 100, 2)
		}
		if len(got) == 102 {
			if err := c.RemoveChannel(ctx, "m"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != 102 || !errors.Is(end, client.ErrChannelRemoved) {
		t.Fatalf("%d distinct records, end %v", len(got), end)
	}
}

// TestConsumeReconnects cuts the connection twice mid-stream: the consumer
// reconnects and goes on, in order; records in flight at a cut are lost.
func TestConsumeReconnects(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	p, err := faultnet.New(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dial(t, p.Addr(), client.WithStreamWindow(8<<10))
	pushNumbered(t, c, "r", 0, 1000)
	last, count := -1, 0
	for v, err := range c.Consume(t.Context(), "r", "").All() {
		if err != nil {
			t.Fatal(err)
		}
		if number(v) <= last {
			t.Fatalf("record %d after %d", number(v), last)
		}
		last = number(v)
		count++
		if count == 100 || count == 300 {
			p.Cut()
		}
		if last == 999 {
			break
		}
	}
	lost := 1000 - count
	if p.Accepted() < 3 || lost > 2*(8<<10)/100 {
		t.Fatalf("%d connections, %d records lost", p.Accepted(), lost)
	}
	if left := records(n, "r"); left != 0 {
		t.Fatalf("%d records left in the queue", left)
	}
}

// TestConsumeSurvivesNodeRestart restarts the node (memory mode saves the
// queue on a clean stop): the consumer reconnects and goes on.
func TestConsumeSurvivesNodeRestart(t *testing.T) {
	dir := t.TempDir()
	n := startNodeIn(t, server.Config{}, "", queue.Config{Dir: dir})
	c := dial(t, n.addr)
	pushNumbered(t, c, "rs", 0, 10)
	got := make(chan int, 100)
	go func() {
		defer close(got)
		for v, err := range c.Consume(t.Context(), "rs", "").All() {
			if err != nil {
				return
			}
			got <- number(v)
		}
	}()
	next := func() int {
		t.Helper()
		select {
		case v := <-got:
			return v
		case <-time.After(10 * time.Second):
			t.Fatal("no record")
		}
		return 0
	}
	for i := range 10 {
		if v := next(); v != i {
			t.Fatalf("record %d, want %d", v, i)
		}
	}
	n.stop()
	startNodeIn(t, server.Config{}, n.addr, queue.Config{Dir: dir})
	pushed := false
	for deadline := time.Now().Add(10 * time.Second); !pushed && time.Now().Before(deadline); {
		pushed = c.Push(t.Context(), []string{"rs"}, fmt.Appendf(nil, "%05d", 10)) == nil
		time.Sleep(20 * time.Millisecond)
	}
	if v := next(); !pushed || v != 10 {
		t.Fatalf("after the restart: record %d (pushed %v)", v, pushed)
	}
}

func TestProduce(t *testing.T) {
	n := startNode(t, server.Config{MaxValueSize: 1000}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	p, err := c.Produce(ctx, []string{"p1", "p2"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 { // 200 KB: several frames
		if err := p.Send(fmt.Appendf(nil, "%05d%s", i, strings.Repeat("x", 195))); err != nil {
			t.Fatal(err)
		}
	}
	if stored, err := p.Close(); err != nil || stored != 1000 {
		t.Fatalf("Close = %d %v", stored, err)
	}
	for i := range 1000 {
		if v, err := c.Pop(ctx, "p2"); err != nil || number(v) != i {
			t.Fatalf("pop %d: %v", i, err)
		}
	}
	if _, err := p.Close(); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	// An empty Produce stores nothing.
	p, _ = c.Produce(ctx, []string{"p3"})
	if stored, err := p.Close(); err != nil || stored != 0 {
		t.Fatalf("empty Produce: %d %v", stored, err)
	}
	// The node's error ends the Produce, with the count in its message.
	p, _ = c.Produce(ctx, []string{"p4"})
	p.Send([]byte("one"))
	p.Send(make([]byte, 1001))
	var e *client.Error
	if _, err := p.Close(); !errors.Is(err, client.ErrValueTooBig) || !errors.As(err, &e) || !strings.Contains(e.Message, "0 records") {
		t.Fatalf("Produce with a value too big: %v", err)
	}
	if _, err := c.Pop(ctx, "p4"); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("a frame with a bad value was partly stored: %v", err)
	}
	c.Put(ctx, "kv", []byte("k"), []byte("v"))
	p, _ = c.Produce(ctx, []string{"kv"})
	for range 2000 { // the node refuses the first frame; Send notices
		if err = p.Send(make([]byte, 100)); err != nil {
			break
		}
		time.Sleep(time.Millisecond / 10)
	}
	if !errors.Is(err, client.ErrWrongKind) {
		t.Fatalf("Produce to a kv channel: %v", err)
	}
	if _, err := c.Produce(ctx, nil); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("Produce without channels: %v", err)
	}
}

// TestSubscribersAcrossNodes: Subscribers sums each subscriber over the
// nodes (idle only when idle on every node), Unsubscribe removes it on
// every node.
func TestSubscribersAcrossNodes(t *testing.T) {
	n1 := startNode(t, server.Config{}, "")
	n2 := startNode(t, server.Config{}, "")
	ctx := t.Context()
	for _, n := range []*node{n1, n2} {
		// A push through the server makes "jobs" a queue channel of the
		// node; the first subscriber, a, takes that record over.
		if err := dial(t, n.addr).Push(ctx, []string{"jobs"}, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := n.q.Subscribe("jobs", "a"); err != nil {
			t.Fatal(err)
		}
		cons, err := n.q.Subscribe("jobs", "b")
		if err != nil {
			t.Fatal(err)
		}
		if n == n1 {
			cons.Close() // b is attached on n2 only
		}
		if err := n.q.Push(ctx, []string{"jobs"}, []byte("v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, n1.addr+","+n2.addr, client.WithNoRouting())
	subs, err := c.Subscribers(ctx, "jobs")
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 || subs[0].Name != "a" || subs[0].Records != 4 || subs[0].Consumers != 2 || subs[0].Idle != 0 ||
		subs[1].Name != "b" || subs[1].Records != 2 || subs[1].Consumers != 1 || subs[1].Idle != 0 {
		t.Fatalf("Subscribers: %+v", subs)
	}
	if ok, err := c.Unsubscribe(ctx, "jobs", "b"); !ok || err != nil {
		t.Fatalf("Unsubscribe: %v %v", ok, err)
	}
	for _, n := range []*node{n1, n2} {
		if s := n.q.Subscribers("jobs"); len(s) != 1 || s[0].Subscriber != "a" {
			t.Fatalf("%s after Unsubscribe: %+v", n.addr, s)
		}
	}
	if ok, err := c.Unsubscribe(ctx, "jobs", "b"); ok || err != nil {
		t.Fatalf("second Unsubscribe: %v %v", ok, err)
	}
	if subs, err := c.Subscribers(ctx, "nosuch"); err != nil || len(subs) != 0 {
		t.Fatalf("Subscribers of no channel: %+v %v", subs, err)
	}
}
