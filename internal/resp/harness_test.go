package resp

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"shoal/internal/catalog"
	"shoal/internal/kv"
	"shoal/internal/queue"
	"shoal/internal/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// node is a RESP server on its own engines, listening on 127.0.0.1.
type node struct {
	s    *Server
	addr string
	kv   *kv.Store
	q    *queue.Store
}

func startNode(t *testing.T, cfg Config) *node {
	t.Helper()
	store, err := kv.New(kv.Config{VBuckets: 64, MaxValueSize: cfg.MaxValueSize, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(queue.Config{Dir: t.TempDir(), VBuckets: 64, Logger: quiet, IndexInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.New()
	data := server.New(server.Config{VBuckets: 64, Logger: quiet}, server.Engines{Catalog: cat, KV: store, Queue: q})
	cfg.VBuckets = 64
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	s := New(cfg, Engines{Catalog: cat, KV: store, Queue: q, Data: data})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
		q.Close()
		store.Close()
	})
	return &node{s: s, addr: ln.Addr().String(), kv: store, q: q}
}

// client returns a go-redis client of n (RESP3 unless opts say otherwise).
func (n *node) client(t *testing.T, opts *redis.Options) *redis.Client {
	t.Helper()
	if opts == nil {
		opts = &redis.Options{}
	}
	opts.Addr = n.addr
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// raw dials n and returns the connection with a deadline.
func (n *node) raw(t *testing.T) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return nc
}

func tlsClient(t *testing.T) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} // the test's own self-signed certificate
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// must returns v; an error fails the test with a panic (which shows the
// line).
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// wantErr checks that err is a Redis error starting with prefix.
func wantErr(t *testing.T, what string, err error, prefix string) {
	t.Helper()
	if err == nil || len(err.Error()) < len(prefix) || err.Error()[:len(prefix)] != prefix {
		t.Fatalf("%s: error %v, want %q...", what, err, prefix)
	}
}
