package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/client"
	"shoal/internal/faultnet"
	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/queue"
	"shoal/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is an in-process node serving the kv and queue engines.
type node struct {
	addr string
	s    *server.Server
	kv   *kv.Store
	q    *queue.Store
	log  *logstore.Store
	done chan struct{}
}

func startNode(t testing.TB, cfg server.Config, addr string) *node {
	t.Helper()
	return startNodeIn(t, cfg, addr, queue.Config{Dir: t.TempDir()})
}

// startNodeIn starts a node whose queue store is configured by qcfg.
func startNodeIn(t testing.TB, cfg server.Config, addr string, qcfg queue.Config) *node {
	t.Helper()
	return startFullNode(t, cfg, addr, qcfg, 0)
}

// startLogNode starts a node whose log engine fsyncs every fsync (0: before
// every acknowledgement).
func startLogNode(t testing.TB, fsync time.Duration) *node {
	t.Helper()
	return startFullNode(t, server.Config{}, "", queue.Config{Dir: t.TempDir()}, fsync)
}

// startFullNode starts a node with every engine on addr ("" picks a port).
func startFullNode(t testing.TB, cfg server.Config, addr string, qcfg queue.Config, logFsync time.Duration) *node {
	t.Helper()
	qcfg.VBuckets = 64
	qcfg.Logger = slog.New(slog.DiscardHandler)
	qs, err := queue.Open(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := kv.New(kv.Config{VBuckets: 64})
	logs, err := logstore.Open(logstore.Config{Dir: t.TempDir(), VBuckets: 64, Fsync: logFsync, MaintainEvery: -1, Logger: qcfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg.VBuckets = 64
	cfg.NodeID = "test"
	cfg.Logger = slog.New(slog.DiscardHandler)
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{addr: ln.Addr().String(), s: server.New(cfg, server.Engines{KV: store, Queue: qs, Log: logs}), kv: store, q: qs, log: logs, done: make(chan struct{})}
	go func() { defer close(n.done); n.s.Serve(ln) }()
	t.Cleanup(n.stop)
	return n
}

// stop shuts the node down and closes its queue store (saving it).
func (n *node) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.s.Shutdown(ctx)
	<-n.done
	n.q.Close()
	n.kv.Close()
	n.log.Close()
}

func dial(t testing.TB, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestKV(t *testing.T) {
	n := startNode(t, server.Config{MaxValueSize: 1000}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	cas, err := c.Put(ctx, "users", []byte("alice"), []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	v, gotCAS, err := c.Gets(ctx, "users", []byte("alice"))
	if err != nil || string(v) != "v1" || gotCAS != cas {
		t.Fatalf("Gets = %q %d %v, want v1 %d", v, gotCAS, err, cas)
	}
	if _, err := c.Update(ctx, "users", []byte("alice"), []byte("v2"), cas+7); !errors.Is(err, client.ErrExists) {
		t.Fatalf("Update with a stale CAS: %v", err)
	}
	if _, err := c.Update(ctx, "users", []byte("alice"), []byte("v2"), cas); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Exists(ctx, "users", []byte("alice")); !ok || err != nil {
		t.Fatalf("Exists = %v %v", ok, err)
	}
	if ok, err := c.Remove(ctx, "users", []byte("alice")); !ok || err != nil {
		t.Fatalf("Remove = %v %v", ok, err)
	}
	if _, err := c.Get(ctx, "users", []byte("alice")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Get after Remove: %v", err)
	}
	// Typed errors, checked client-side or by the node.
	f := func(err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
	}
	_, err = c.Put(ctx, "bad name", []byte("k"), nil)
	f(err, client.ErrBadChannelName)
	_, err = c.Put(ctx, "c", nil, nil)
	f(err, client.ErrBadKey)
	_, err = c.Put(ctx, "c", []byte(strings.Repeat("k", 251)), nil)
	f(err, client.ErrKeyTooBig)
	_, err = c.Put(ctx, "c", []byte("k"), make([]byte, 1001))
	f(err, client.ErrValueTooBig)
	var se *client.Error
	if !errors.As(err, &se) || se.Status != 4 || !strings.Contains(se.Message, "1001") {
		t.Fatalf("error detail: %#v", err)
	}
}

func TestBatchChannelsSizes(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	var recs []client.Record
	for i := range 100 {
		recs = append(recs, client.Record{Key: fmt.Appendf(nil, "k%03d", i), Value: []byte("value")})
	}
	if stored, err := c.PutBatch(ctx, "b", recs); err != nil || stored != 100 {
		t.Fatalf("PutBatch = %d %v", stored, err)
	}
	s, err := c.ChannelSize(ctx, "b")
	if err != nil || s.Records != 100 || s.Bytes != 100*(4+5) || s.Kind != "kv" {
		t.Fatalf("ChannelSize = %+v %v", s, err)
	}
	chs, err := c.Channels(ctx)
	if err != nil || len(chs) != 1 || chs[0].Name != "b" || chs[0].Kind != "kv" {
		t.Fatalf("Channels = %+v %v", chs, err)
	}
	if err := c.RemoveChannel(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.Size(ctx); s.Records != 0 {
		t.Fatalf("Size after RemoveChannel = %+v", s)
	}
	info, err := c.Info(ctx)
	if err != nil || info[n.addr]["node_id"] != "test" {
		t.Fatalf("Info = %v %v", info, err)
	}
}

func TestTTL(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	if _, err := c.Put(ctx, "t", []byte("k"), []byte("v"), client.WithTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "t", []byte("k")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Get(ctx, "t", []byte("k"))
		if errors.Is(err, client.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record with a 1s TTL still there after 5s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConcurrentPipelining runs many goroutines over one connection.
func TestConcurrentPipelining(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				k := fmt.Appendf(nil, "g%d-%d", g, i)
				if _, err := c.Put(ctx, "p", k, k); err != nil {
					t.Error(err)
					return
				}
				if v, err := c.Get(ctx, "p", k); err != nil || string(v) != string(k) {
					t.Errorf("Get %s = %q %v", k, v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s, _ := c.ChannelSize(ctx, "p"); s.Records != 5000 {
		t.Fatalf("records = %d", s.Records)
	}
}

func TestReconnect(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	addr := n.addr
	c := dial(t, addr)
	ctx := t.Context()
	if _, err := c.Put(ctx, "r", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	n.stop()
	if _, err := c.Get(ctx, "r", []byte("k")); !errors.Is(err, client.ErrDisconnected) && !errors.Is(err, client.ErrShuttingDown) {
		t.Fatalf("Get with the node down: %v", err)
	}
	startNode(t, server.Config{}, addr) // same address, empty store
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Put(ctx, "r", []byte("k"), []byte("v2"))
		if err == nil {
			break
		}
		if !errors.Is(err, client.ErrDisconnected) || time.Now().After(deadline) {
			t.Fatalf("no reconnect: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, err := c.Get(ctx, "r", []byte("k")); err != nil || string(v) != "v2" {
		t.Fatalf("after reconnect: %q %v", v, err)
	}
}

func TestAuth(t *testing.T) {
	secret := []byte("0123456789abcdef")
	n := startNode(t, server.Config{Credentials: map[string][]byte{"app": secret}}, "")
	if _, err := client.Dial(t.Context(), n.addr); !errors.Is(err, client.ErrAuthRequired) {
		t.Fatalf("Dial without credentials: %v", err)
	}
	if _, err := client.Dial(t.Context(), n.addr, client.WithAuth("app", []byte("wrong-secret...."))); !errors.Is(err, client.ErrAuthFailed) {
		t.Fatalf("Dial with a wrong secret: %v", err)
	}
	c := dial(t, n.addr, client.WithAuth("app", secret))
	if _, err := c.Put(t.Context(), "a", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveChannel(t.Context(), "a"); !errors.Is(err, client.ErrNotPermitted) {
		t.Fatalf("RemoveChannel as a non-admin: %v", err)
	}
}

func TestTooManyConnections(t *testing.T) {
	n := startNode(t, server.Config{MaxConnections: 1}, "")
	dial(t, n.addr)
	if _, err := client.Dial(t.Context(), n.addr); !errors.Is(err, client.ErrTooManyConnections) {
		t.Fatalf("second Dial: %v", err)
	}
}

func fill(t *testing.T, c *client.Client, ch string, n int) {
	t.Helper()
	var recs []client.Record
	for i := range n {
		recs = append(recs, client.Record{Key: fmt.Appendf(nil, "key%05d", i), Value: fmt.Appendf(nil, "value-%05d-%s", i, strings.Repeat("x", 100))})
		if len(recs) == 1000 || i == n-1 {
			if _, err := c.PutBatch(t.Context(), ch, recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
}

func collect(t *testing.T, s *client.Stream[client.Record]) []string {
	t.Helper()
	var keys []string
	for r, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, string(r.Key))
	}
	return keys
}

func checkAllKeys(t *testing.T, keys []string, n int) {
	t.Helper()
	if len(keys) != n {
		t.Fatalf("got %d keys, want %d", len(keys), n)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if want := fmt.Sprintf("key%05d", i); k != want {
			t.Fatalf("key %d = %s, want %s (a key missing or repeated)", i, k, want)
		}
	}
}

func TestGetAllFlowControlled(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr, client.WithStreamWindow(8<<10)) // many credit grants
	fill(t, c, "g", 3000)
	checkAllKeys(t, collect(t, c.GetAll(t.Context(), "g")), 3000)
	for r, err := range c.GetAll(t.Context(), "g", client.KeysOnly()).All() {
		if err != nil || r.Value != nil {
			t.Fatalf("keys only: %q %v", r.Value, err)
		}
	}
	got := collect(t, c.GetAll(t.Context(), "g", client.ValueFilter([]byte("value-0012"))))
	if len(got) != 10 {
		t.Fatalf("filter: %d records, want 10", len(got))
	}
	if keys := collect(t, c.GetAll(t.Context(), "nothing")); len(keys) != 0 {
		t.Fatalf("GetAll of a missing channel: %v", keys)
	}
}

// TestGetAllResumesAfterDisconnect cuts the connection several times
// mid-stream; every key arrives exactly once.
func TestGetAllResumesAfterDisconnect(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	fill(t, dial(t, n.addr), "g", 5000)
	p, err := faultnet.New(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.CutAfter(200 << 10) // each connection breaks after 200 KB of answers
	c := dial(t, p.Addr(), client.WithStreamWindow(64<<10))
	keys := collect(t, c.GetAll(t.Context(), "g"))
	checkAllKeys(t, keys, 5000)
	if p.Accepted() < 3 {
		t.Fatalf("only %d connections: the stream was not cut", p.Accepted())
	}
}

func TestStreamSuspendResumeStop(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr, client.WithStreamWindow(16<<10))
	fill(t, c, "s", 2000)
	s := c.GetAll(t.Context(), "s")
	count := 0
	for _, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		count++
		if count == 10 {
			s.Suspend()
			resumed := make(chan struct{})
			go func() { time.Sleep(100 * time.Millisecond); close(resumed); s.Resume() }()
			// The loop body continues only after Resume.
			defer func() { <-resumed }()
		}
		if count == 500 {
			s.Stop()
		}
	}
	if count < 500 || count >= 2000 {
		t.Fatalf("stream stopped after %d records", count)
	}
	// Breaking out of the loop stops the stream too; the connection stays usable.
	for range c.GetAll(t.Context(), "s").All() {
		break
	}
	if _, err := c.Get(t.Context(), "s", []byte("key00001")); err != nil {
		t.Fatal(err)
	}
}

func TestMirror(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	c.Put(ctx, "m", []byte("before"), []byte("v0"))
	m := c.Mirror(ctx, "m", client.InitialRefresh())
	events := make(chan client.MirrorEvent, 100)
	errc := make(chan error, 1)
	go func() {
		for ev, err := range m.All() {
			if err != nil {
				errc <- err
				return
			}
			events <- ev
		}
		errc <- nil
	}()
	next := func() client.MirrorEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no mirror event")
		}
		return client.MirrorEvent{}
	}
	if ev := next(); ev.Type != client.MirrorRefresh || string(ev.Key) != "before" {
		t.Fatalf("refresh: %+v", ev)
	}
	if ev := next(); ev.Type != client.MirrorRefreshEnd {
		t.Fatalf("refresh end: %+v", ev)
	}
	c.Put(ctx, "m", []byte("k"), []byte("v1"))
	if ev := next(); ev.Type != client.MirrorPut || string(ev.Key) != "k" || string(ev.Value) != "v1" {
		t.Fatalf("put: %+v", ev)
	}
	c.Remove(ctx, "m", []byte("k"))
	if ev := next(); ev.Type != client.MirrorDelete || string(ev.Key) != "k" {
		t.Fatalf("delete: %+v", ev)
	}
	c.RemoveChannel(ctx, "m")
	select {
	case err := <-errc:
		if !errors.Is(err, client.ErrChannelRemoved) {
			t.Fatalf("end of mirror: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("mirror did not end when its channel was removed")
	}
}

// TestMirrorSlowConsumer suspends a Mirror while 20000 writes happen: the
// node must not queue them all; the consumer gets "updates lost" and a
// refresh holding every record.
func TestMirrorSlowConsumer(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	m := c.Mirror(ctx, "m", client.InitialRefresh())
	started := make(chan struct{})
	got := map[string]bool{}
	var sawLost bool
	done := make(chan error, 1)
	go func() {
		first := true
		for ev, err := range m.All() {
			if err != nil {
				done <- err
				return
			}
			if first {
				first = false
				m.Suspend()
				close(started)
			}
			switch ev.Type {
			case client.MirrorUpdatesLost:
				sawLost = true
			case client.MirrorRefresh, client.MirrorPut:
				got[string(ev.Key)] = true
			case client.MirrorRefreshEnd:
				if sawLost {
					done <- nil
					return
				}
			}
		}
		done <- errors.New("mirror ended")
	}()
	<-started // the refresh of the empty channel ended: the mirror is watching
	fill(t, c, "m", 20000)
	m.Resume()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no updates-lost and refresh")
	}
	if !sawLost || len(got) < 20000 {
		t.Fatalf("lost=%v, %d distinct keys seen", sawLost, len(got))
	}
	m.Stop()
}

// TestCloseAfterFailedDial: a Dial to a port where no node listens fails
// with a nil client, and Close on it is a no-op, not a panic (the
// README's snippet may defer Close before looking at err).
func TestCloseAfterFailedDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err == nil || c != nil {
		t.Fatalf("Dial of a closed port: %v, %v", c, err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close of a nil client: %v", err)
	}
	var nilClient *client.Client
	if err := nilClient.Close(); err != nil {
		t.Errorf("Close of a nil client: %v", err)
	}
}

// TestExpiry: Update keeps a record's TTL unless given a new one; TTL,
// Expire and Persist read, set and clear it over the wire.
func TestExpiry(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	key := []byte("k")
	cas, err := c.Put(ctx, "t", key, []byte("v1"), client.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.TTL(ctx, "t", key)
	if err != nil || e.Never() || e.CAS != cas || e.Left <= 59*time.Minute || e.Left > time.Hour+time.Second || time.Until(e.At) > time.Hour+time.Second {
		t.Fatalf("TTL after Put: %+v %v", e, err)
	}
	if cas, err = c.Update(ctx, "t", key, []byte("v2"), cas); err != nil {
		t.Fatal(err)
	}
	if e2, err := c.TTL(ctx, "t", key); err != nil || !e2.At.Equal(e.At) || e2.CAS != cas {
		t.Fatalf("Update without WithTTL: %+v %v, want the expiry %v kept", e2, err, e.At)
	}
	if cas, err = c.Update(ctx, "t", key, []byte("v3"), cas, client.WithTTL(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if e2, _ := c.TTL(ctx, "t", key); e2.Left > 10*time.Minute+time.Second || e2.Left < 9*time.Minute {
		t.Fatalf("Update WithTTL: %+v", e2)
	}
	ncas, err := c.Persist(ctx, "t", key)
	if err != nil || ncas <= cas {
		t.Fatalf("Persist: %d %v", ncas, err)
	}
	if e2, err := c.TTL(ctx, "t", key); err != nil || !e2.Never() || e2.Left != 0 || e2.CAS != ncas {
		t.Fatalf("TTL after Persist: %+v %v", e2, err)
	}
	if _, err := c.Expire(ctx, "t", key, time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "t", key); err != nil || string(v) != "v3" {
		t.Fatalf("Expire changed the value: %q %v", v, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, err := c.Get(ctx, "t", key); !errors.Is(err, client.ErrNotFound); _, err = c.Get(ctx, "t", key) {
		if time.Now().After(deadline) {
			t.Fatal("a record given 1s by Expire is there after 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, k := range []string{"k", "missing"} {
		if _, err := c.TTL(ctx, "t", []byte(k)); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("TTL of %s: %v", k, err)
		}
		if _, err := c.Persist(ctx, "t", []byte(k)); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("Persist of %s: %v", k, err)
		}
	}
	if _, err := c.TTL(ctx, "nochannel", key); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("TTL in a missing channel: %v", err)
	}
	if _, err := c.Expire(ctx, "t", key, 0); !errors.Is(err, client.ErrBadRequest) {
		t.Errorf("Expire 0: %v", err)
	}
}

// TestDialHTTPPort: a Dial that gets an HTTP answer fails at once with
// ErrProtocol saying it is an HTTP port (and, from a shoal node's HTTP
// port, where the data port is).
func TestDialHTTPPort(t *testing.T) {
	for _, c := range []struct{ answer, want string }{
		{"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n", "this is an HTTP port, not a shoal data port"},
		{"HTTP/1.1 400 Bad Request\r\nContent-Length: 60\r\n\r\nthis is shoal's HTTP port; the data port is 127.0.0.1:7400\n", "this is shoal's HTTP port; the data port is 127.0.0.1:7400"},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			nc.Write([]byte(c.answer))
			nc.Close()
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = client.Dial(ctx, ln.Addr().String())
		cancel()
		ln.Close()
		if !errors.Is(err, client.ErrProtocol) || !strings.HasSuffix(err.Error(), ln.Addr().String()+": "+c.want) {
			t.Errorf("Dial of an HTTP port: %v, want it to end with %q", err, c.want)
		}
	}
}
