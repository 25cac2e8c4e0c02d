package resp

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"shoal/internal/catalog"
	"shoal/internal/kv"
	"shoal/internal/queue"
	"shoal/internal/server"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// peerNode is a RESP server whose data port serves forwarded commands.
type peerNode struct {
	node
	data     *server.Server
	dataAddr string
}

func startPeer(t *testing.T, cfg Config) *peerNode {
	t.Helper()
	store, err := kv.New(kv.Config{VBuckets: 64, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(queue.Config{Dir: t.TempDir(), VBuckets: 64, Logger: quiet, IndexInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.New()
	data := server.New(server.Config{VBuckets: 64, Logger: quiet}, server.Engines{Catalog: cat, KV: store, Queue: q})
	cfg.VBuckets, cfg.Logger = 64, quiet
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	s := New(cfg, Engines{Catalog: cat, KV: store, Queue: q, Data: data})
	s.HandleForwarded()
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { data.Serve(dln); done <- struct{}{} }()
	go func() { s.Serve(rln); done <- struct{}{} }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		data.Shutdown(ctx)
		<-done
		<-done
		q.Close()
		store.Close()
	})
	return &peerNode{node: node{s: s, addr: rln.Addr().String(), kv: store, q: q}, data: data, dataAddr: dln.Addr().String()}
}

// twoNodeMap puts the even vBuckets on a and the odd ones on b, but moved
// (vBuckets that go to the other node).
func twoNodeMap(rev uint64, moved map[uint16]bool) *vbmap.Map {
	chains := make([][]string, 64)
	for vb := range chains {
		owner := "a"
		if vb%2 == 1 {
			owner = "b"
		}
		if moved[uint16(vb)] {
			owner = map[string]string{"a": "b", "b": "a"}[owner]
		}
		chains[vb] = []string{owner}
	}
	return (*vbmap.Map)(nil).Next(rev, 0, chains)
}

func keyIn(parity int, prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if int(vbucket.OfString(k, 64))%2 == parity {
			return k
		}
	}
}

// TestForwardingFollowsTheMap: a key of the other node's vBucket goes
// there; when the map changes under a forwarded command (the other node
// answers `not my vbucket`), the command is routed again and runs where
// the new map says, here; when the other node is gone, the client gets
// TRYAGAIN after ForwardTimeout.
func TestForwardingFollowsTheMap(t *testing.T) {
	a := startPeer(t, Config{ForwardTimeout: 2 * time.Second})
	b := startPeer(t, Config{})
	addrs := map[string]string{"a": a.dataAddr, "b": b.dataAddr}
	m1 := twoNodeMap(1, nil)
	a.data.SetTable(vbmap.NewTable("a", m1, addrs))
	b.data.SetTable(vbmap.NewTable("b", m1, addrs))
	ctx := ctxT(t)
	c := a.client(t, nil)

	remote := keyIn(1, "r")
	eq(t, "SET forwarded", must(c.Set(ctx, remote, "on b", 0).Result()), "OK")
	if v, _, err := b.kv.Get("default", []byte(remote), nil); err != nil || string(v) != "on b" {
		t.Fatalf("b's engine: %q %v", v, err)
	}
	if _, _, err := a.kv.Get("default", []byte(remote), nil); err == nil {
		t.Fatal("a stored a key of b's vBucket")
	}
	eq(t, "GET forwarded", must(c.Get(ctx, remote).Result()), "on b")
	eq(t, "INCR forwarded", must(c.Incr(ctx, keyIn(1, "n")).Result()), int64(1))

	// The map moves the key's vBucket to a: b knows first.
	vb := vbucket.OfString(remote, 64)
	m2 := twoNodeMap(2, map[uint16]bool{vb: true})
	b.data.SetTable(vbmap.NewTable("b", m2, addrs))
	go func() {
		time.Sleep(150 * time.Millisecond)
		a.data.SetTable(vbmap.NewTable("a", m2, addrs))
	}()
	start := time.Now()
	eq(t, "SET during the change", must(c.Set(ctx, remote, "on a", 0).Result()), "OK")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("answered in %v, before a had the new map", d)
	}
	if v, _, err := a.kv.Get("default", []byte(remote), nil); err != nil || string(v) != "on a" {
		t.Fatalf("a's engine after the change: %q %v", v, err)
	}

	// A multi-key part that meets a map change is TRYAGAIN, not wrong.
	other := keyIn(1, "o")
	ovb := vbucket.OfString(other, 64)
	b.data.SetTable(vbmap.NewTable("b", twoNodeMap(3, map[uint16]bool{vb: true, ovb: true}), addrs))
	wantErr(t, "MGET during a change", c.MGet(ctx, other, remote).Err(), "TRYAGAIN")

	// b gone: TRYAGAIN once ForwardTimeout has passed.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.s.Shutdown(sctx)
	b.data.Shutdown(sctx)
	start = time.Now()
	far := keyIn(1, "far")
	once := a.client(t, &redis.Options{MaxRetries: -1}) // go-redis retries TRYAGAIN itself
	err := once.Set(ctx, far, "x", 0).Err()
	wantErr(t, "SET to a node that is gone", err, "TRYAGAIN")
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Fatalf("TRYAGAIN after %v", d)
	}
	eq(t, "local keys still served", must(c.Set(ctx, keyIn(0, "l"), "x", 0).Result()), "OK")
}

// TestForwardingConcurrent: many connections forwarding at once over the
// shared peer connections get their own answers, in order.
func TestForwardingConcurrent(t *testing.T) {
	a := startPeer(t, Config{})
	b := startPeer(t, Config{})
	addrs := map[string]string{"a": a.dataAddr, "b": b.dataAddr}
	m := twoNodeMap(1, nil)
	a.data.SetTable(vbmap.NewTable("a", m, addrs))
	b.data.SetTable(vbmap.NewTable("b", m, addrs))
	ctx := ctxT(t)
	c := a.client(t, &redis.Options{PoolSize: 32})
	errs := make(chan error, 16)
	for g := range 16 {
		go func() {
			for i := range 300 {
				k := fmt.Sprintf("g%d:%d", g, i%37)
				v := fmt.Sprintf("%d-%d", g, i)
				p := c.Pipeline()
				p.Set(ctx, k, v, 0)
				get := p.Get(ctx, k)
				if _, err := p.Exec(ctx); err != nil {
					errs <- err
					return
				}
				if get.Val() != v {
					errs <- fmt.Errorf("GET %s = %q, want %q", k, get.Val(), v)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if a.s.forwarded.Load() < 1000 {
		t.Fatalf("only %d commands forwarded", a.s.forwarded.Load())
	}
	// Forwarded or not, every command is counted where the client sent it.
	var f stats.Fields
	a.s.Report(&f)
	for _, fl := range f.List() {
		if fl.Key == "request/RESP.SET/handled" && fl.Value != 16*300 {
			t.Fatalf("SET handled: %v, want %d", fl.Value, 16*300)
		}
	}
}
