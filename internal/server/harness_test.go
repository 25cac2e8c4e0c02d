package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/internal/kv"
	"shoal/internal/queue"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testVBuckets = 64

type testServer struct {
	s      *Server
	kv     *kv.Store
	q      *queue.Store
	addr   string
	writes atomic.Int64 // Write calls on accepted connections
	reads  atomic.Int64 // Read calls on accepted connections
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startServer serves a kv store and a memory-mode queue store.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	return startServerWith(t, cfg, queue.Config{})
}

// startServerWith is startServer with a queue store configured by qcfg
// (Dir defaults to a temporary directory).
func startServerWith(t testing.TB, cfg Config, qcfg queue.Config) *testServer {
	t.Helper()
	store, err := kv.New(kv.Config{VBuckets: testVBuckets, MaxValueSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if qcfg.Dir == "" {
		qcfg.Dir = t.TempDir()
	}
	qcfg.VBuckets = testVBuckets
	qcfg.Logger = quietLogger()
	qs, err := queue.Open(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.VBuckets = testVBuckets
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "test-node"
	}
	ts := &testServer{kv: store, q: qs}
	ts.s = New(cfg, Engines{KV: store, Queue: qs})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); ts.s.Serve(&countingListener{Listener: ln, ts: ts}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.s.Shutdown(ctx)
		<-done
		store.Close()
		qs.Close()
	})
	return ts
}

type countingListener struct {
	net.Listener
	ts *testServer
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, ts: l.ts}, nil
}

type countingConn struct {
	net.Conn
	ts *testServer
}

// SyscallConn lets the server's event loop serve the connection (its
// reads and writes then bypass the counts).
func (c *countingConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

func (c *countingConn) Write(b []byte) (int, error) { c.ts.writes.Add(1); return c.Conn.Write(b) }
func (c *countingConn) Read(b []byte) (int, error)  { c.ts.reads.Add(1); return c.Conn.Read(b) }

// raw is a client that speaks frames by hand.
type raw struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
	id uint32
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func frame(op wire.Opcode, vb uint16, id uint32, body []byte) []byte {
	b := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, VBucket: vb, ID: id, BodyLen: uint32(len(body))})
	return append(b, body...)
}

// send writes one request and returns its id.
func (r *raw) send(op wire.Opcode, vb uint16, body []byte) uint32 {
	r.t.Helper()
	r.id++
	if _, err := r.nc.Write(frame(op, vb, r.id, body)); err != nil {
		r.t.Fatal(err)
	}
	return r.id
}

// read reads one answer frame.
func (r *raw) read() (wire.Header, []byte) {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hb [wire.HeaderLen]byte
	if _, err := io.ReadFull(r.br, hb[:]); err != nil {
		r.t.Fatalf("reading an answer: %v", err)
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil || h.Magic != wire.MagicResponse {
		r.t.Fatalf("bad answer header %v: %v", h, err)
	}
	body := make([]byte, h.BodyLen)
	if _, err := io.ReadFull(r.br, body); err != nil {
		r.t.Fatalf("reading an answer body: %v", err)
	}
	return h, body
}

func (r *raw) call(op wire.Opcode, vb uint16, body []byte) (wire.Header, []byte) {
	r.t.Helper()
	id := r.send(op, vb, body)
	h, b := r.read()
	if h.ID != id {
		r.t.Fatalf("answer to id %d, want %d", h.ID, id)
	}
	return h, b
}

// closed reports whether the server closed the connection (EOF within 2s).
func (r *raw) closed() bool {
	r.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := r.br.ReadByte()
	return err == io.EOF || isReset(err)
}

func isReset(err error) bool {
	var ne *net.OpError
	return err != nil && (errors.As(err, &ne) && !ne.Timeout())
}

func vbOf(key string) uint16 { return vbucket.OfString(key, testVBuckets) }

func putBody(ch, key, val string, ttl uint32) []byte {
	b := wire.AppendStr8(nil, ch)
	b = wire.AppendStr8(b, key)
	b = wire.AppendU32(b, ttl)
	return append(b, val...)
}

func keyBody(ch, key string) []byte {
	return wire.AppendStr8(wire.AppendStr8(nil, ch), key)
}

func (r *raw) put(ch, key, val string) wire.Status {
	h, _ := r.call(wire.OpPut, vbOf(key), putBody(ch, key, val, 0))
	return h.Status
}

func (r *raw) get(ch, key string) (wire.Status, string) {
	h, b := r.call(wire.OpGet, vbOf(key), keyBody(ch, key))
	if h.Status != wire.StatusOK {
		return h.Status, string(b)
	}
	return h.Status, string(b[8:])
}

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }
