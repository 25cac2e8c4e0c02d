package stream

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"shoal/internal/engine"
	"shoal/internal/wire"
)

// Directions a proxy forwards.
const (
	up   = 0 // consumer to producer
	down = 1 // producer to consumer
)

// proxy forwards TCP connections to a target and can stop forwarding in
// either direction while keeping the sockets open: a peer that goes silent
// without closing, as a frozen process or a dead link looks.
type proxy struct {
	ln     net.Listener
	target string
	frozen [2]atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.forward(client, server, up)
		go p.forward(server, client, down)
	}
}

// forward copies src to dst; while its direction is frozen it holds what it
// read. When either side ends it closes both.
func (p *proxy) forward(src, dst net.Conn, dir int) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.frozen[dir].Load() {
			time.Sleep(2 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) close() {
	p.frozen[up].Store(false)
	p.frozen[down].Store(false)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPeerGoesSilent: the link stops carrying anything in both directions
// while the sockets stay open. Both sides must notice within two NOOP
// intervals of the last thing they received, and the consumer must name
// every vBucket it lost.
func TestPeerGoesSilent(t *testing.T) {
	const noop = 100 * time.Millisecond
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(4, 10, 10)
	px := newProxy(t, srv.addr())
	rec := newRecorder()
	c := dial(t, px.addr(), ConsumerConfig{Connections: 2, NoopInterval: noop, Handler: rec})
	for vb := range uint16(4) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	for vb := range uint16(4) {
		waitFor(t, "the snapshots", func() bool { return rec.last(vb) == 10 })
	}
	time.Sleep(3 * noop) // idle: only NOOPs flow, and they keep the session up
	select {
	case l := <-rec.lost:
		t.Fatalf("idle session lost: %v", l)
	default:
	}

	px.frozen[up].Store(true)
	px.frozen[down].Store(true)
	start := time.Now()
	var lost []uint16
	for range 2 {
		l := rec.lostErr(t)
		lost = append(lost, l.VBuckets...)
		if l.Conn == 0 && !errors.Is(l, ErrSilent) && !errors.Is(l.Err, ErrSilent) {
			t.Errorf("Lost %v, want ErrSilent", l)
		}
	}
	elapsed := time.Since(start)
	// The last NOOP may have arrived up to one interval before the freeze.
	if elapsed < noop-20*time.Millisecond || elapsed > 2*noop+300*time.Millisecond {
		t.Errorf("silence detected after %v, want within 2 noop intervals (%v)", elapsed, 2*noop)
	}
	slices.Sort(lost)
	if !slices.Equal(lost, []uint16{0, 1, 2, 3}) {
		t.Errorf("lost vbuckets %v, want [0 1 2 3]", lost)
	}
	if err := c.Wait(); !errors.Is(err, ErrSilent) {
		t.Errorf("Wait = %v, want ErrSilent", err)
	}
	for range 2 {
		if err := srv.serveErr(); !errors.Is(err, ErrSilent) {
			t.Errorf("Serve = %v, want ErrSilent", err)
		}
	}
	if e := time.Since(start); e > 2*noop+300*time.Millisecond {
		t.Errorf("producer noticed after %v", e)
	}
}

// TestHalfOpen: only one direction stops. The side that hears nothing
// notices within two NOOP intervals and closes; the other learns from the
// close.
func TestHalfOpen(t *testing.T) {
	const noop = 100 * time.Millisecond
	for _, tt := range []struct {
		name        string
		dir         int
		consumerErr error
		serveErr    error
	}{
		{"producer to consumer blocked", down, ErrSilent, nil},
		{"consumer to producer blocked", up, ErrPeerClosed, ErrSilent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, ProducerConfig{})
			srv.eng.fill(1, 5, 10)
			px := newProxy(t, srv.addr())
			rec := newRecorder()
			c := dial(t, px.addr(), ConsumerConfig{NoopInterval: noop, Handler: rec})
			if err := c.Request(Request{VBucket: 0}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the snapshot", func() bool { return rec.last(0) == 5 })
			px.frozen[tt.dir].Store(true)
			start := time.Now()
			l := rec.lostErr(t)
			if !errors.Is(l, tt.consumerErr) || !slices.Equal(l.VBuckets, []uint16{0}) {
				t.Fatalf("Lost %v, want %v naming vbucket 0", l, tt.consumerErr)
			}
			if err := srv.serveErr(); !errors.Is(err, tt.serveErr) {
				t.Fatalf("Serve = %v, want %v", err, tt.serveErr)
			}
			if e := time.Since(start); e > 2*noop+300*time.Millisecond {
				t.Errorf("noticed after %v", e)
			}
		})
	}
}

func TestPeerClosesAbruptly(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(3, 5, 10)
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})
	for vb := range uint16(3) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the snapshots", func() bool { return rec.last(2) == 5 })
	srv.dropAll()
	l := rec.lostErr(t)
	if !errors.Is(l, ErrPeerClosed) || !slices.Equal(l.VBuckets, []uint16{0, 1, 2}) {
		t.Fatalf("Lost %v", l)
	}
	if got := l.Error(); got != "stream: connection 0 to "+srv.addr()+" lost 3 vbuckets [0 1 2]: stream: peer closed the connection" {
		t.Fatalf("error text %q", got)
	}
}

// rawConsumer speaks the stream protocol by hand, to play a consumer that
// misbehaves.
type rawConsumer struct {
	conn net.Conn
	recv *receiver
	mu   sync.Mutex
}

func openRaw(t *testing.T, addr string, o open) *rawConsumer {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	body := appendOpen(nil, o)
	frame := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version,
		Opcode: wire.OpStreamOpen, ID: 9, BodyLen: uint32(len(body))})
	if _, err := conn.Write(append(frame, body...)); err != nil {
		t.Fatal(err)
	}
	h, reply, err := readFrame(conn)
	if err != nil || h.Status != wire.StatusOK || h.ID != 9 {
		t.Fatalf("open reply %v %q %v", h, reply, err)
	}
	return &rawConsumer{conn: conn, recv: newReceiver(conn, 5*time.Second, ErrIdle)}
}

func (r *rawConsumer) send(t *testing.T, kind byte, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.conn.Write(packet(kind, 0, payload)); err != nil {
		t.Error(err)
	}
}

// TestCreditNeverGranted: a consumer that stops acknowledging gets at most
// its window (plus one packet), keeps receiving NOOPs, gets more when it
// acknowledges, and is dropped with ErrStalled once it stops for good.
func TestCreditNeverGranted(t *testing.T) {
	const (
		window = 4096
		noop   = 60 * time.Millisecond
		stall  = 500 * time.Millisecond
	)
	srv := newServer(t, ProducerConfig{StallTimeout: stall})
	srv.eng.fill(1, 400, 100)
	raw := openRaw(t, srv.addr(), open{consumer: "raw", bucket: "kv", conns: 1, noop: noop, buffer: window})
	raw.send(t, kindMessages, appendRequest(nil, Request{VBucket: 0}))
	stopNoops := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the consumer stays alive: it sends NOOPs
		defer wg.Done()
		for {
			select {
			case <-stopNoops:
				return
			case <-time.After(noop / 4):
				raw.send(t, kindNoop, nil)
			}
		}
	}()
	defer func() { close(stopNoops); wg.Wait() }()

	// read returns the credit the messages packets cost until n NOOPs in a
	// row arrived, or the connection ended.
	var lastData time.Time
	read := func(n int) (credit int, err error) {
		for noops := 0; noops < n; {
			p, err := raw.recv.next()
			if err != nil {
				return credit, err
			}
			if p == nil {
				noops++
				continue
			}
			noops, lastData = 0, time.Now()
			credit += HeaderLen + len(p)
		}
		return credit, nil
	}
	const maxOvershoot = window/2 + 512 // one packet: half the window plus one message
	first, err := read(3)
	if err != nil {
		t.Fatal(err)
	}
	if first < window || first > window+maxOvershoot {
		t.Fatalf("without acks the producer sent %d bytes, want %d..%d", first, window, window+maxOvershoot)
	}
	raw.send(t, kindMessages, appendAck(nil, uint32(first)))
	second, err := read(3)
	if err != nil {
		t.Fatal(err)
	}
	if second < window || second > window+maxOvershoot {
		t.Fatalf("after one ack the producer sent %d bytes", second)
	}
	if _, err := read(1 << 30); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("stalled connection: %v, want it closed by the producer", err)
	}
	// The producer began to wait for credit just before the last data arrived.
	if e := time.Since(lastData); e < stall-20*time.Millisecond || e > stall+time.Second {
		t.Errorf("closed %v after the last data, want about %v", e, stall)
	}
	if err := srv.serveErr(); !errors.Is(err, ErrStalled) {
		t.Fatalf("Serve = %v, want ErrStalled", err)
	}
}

func TestProtocolViolationsFromConsumer(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload []byte
	}{
		{"ack of credit never spent", appendAck(nil, 10)},
		{"producer message", appendEnd(nil, 0, ReasonDone, 0, "")},
		{"second request for a vbucket", appendRequest(appendRequest(nil, Request{VBucket: 2}), Request{VBucket: 2})},
		{"garbage", []byte{0xee, 1, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, ProducerConfig{})
			raw := openRaw(t, srv.addr(), open{consumer: "raw", bucket: "kv", conns: 1, noop: time.Second, buffer: 1 << 20})
			raw.send(t, kindMessages, tt.payload)
			if err := srv.serveErr(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("Serve = %v, want ErrProtocol", err)
			}
		})
	}
}

// TestProtocolViolationsFromProducer plays a producer that answers the
// open correctly and then sends what a producer must not.
func TestProtocolViolationsFromProducer(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload []byte
	}{
		{"mutation without a stream", appendSnapshot(nil, 0, 1, 1)},
		{"consumer message", appendAck(nil, 1)},
		{"mutation outside its snapshot", appendStart(nil, 0, nil)},
		{"truncated", []byte{msgEnd, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				h, _, _ := readFrame(conn)
				reply := appendOpenReply(nil, "evil", 0)
				conn.Write(append(wire.AppendHeader(nil, wire.Header{Magic: wire.MagicResponse, Version: wire.Version,
					Opcode: wire.OpStreamOpen, ID: h.ID, BodyLen: uint32(len(reply))}), reply...))
				readPackets(conn) // the request
				payload := tt.payload
				if tt.name == "mutation outside its snapshot" {
					payload = appendSnapshot(payload, 0, 5, 6)
					payload = appendMutation(payload, &testMutation)
				}
				conn.Write(packet(kindMessages, 0, payload))
				io.Copy(io.Discard, conn)
			}()
			rec := newRecorder()
			c := dial(t, ln.Addr().String(), ConsumerConfig{Handler: rec})
			if err := c.Request(Request{VBucket: 0}); err != nil {
				t.Fatal(err)
			}
			if l := rec.lostErr(t); !errors.Is(l, ErrProtocol) || !slices.Equal(l.VBuckets, []uint16{0}) {
				t.Fatalf("Lost %v, want ErrProtocol naming vbucket 0", l)
			}
			c.Wait()
			<-done
		})
	}
}

// testMutation lies outside the snapshot [5, 6] the evil producer announces.
var testMutation = engine.Mutation{VBucket: 0, Seqno: 9, Op: engine.OpSet, Channel: "c"}

// readPackets reads one packet's header and payload from conn.
func readPackets(conn net.Conn) {
	r := newReceiver(conn, 5*time.Second, ErrIdle)
	r.next()
}

// recordingSpy is a Spy that keeps every call.
type recordingSpy struct {
	mu     sync.Mutex
	heard  map[uint64][]time.Time
	who    map[uint64]string
	forgot map[uint64]bool
}

func newRecordingSpy() *recordingSpy {
	return &recordingSpy{heard: map[uint64][]time.Time{}, who: map[uint64]string{}, forgot: map[uint64]bool{}}
}

func (s *recordingSpy) Heard(conn uint64, peer, bucket string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard[conn] = append(s.heard[conn], now)
	s.who[conn] = peer + "/" + bucket
}

func (s *recordingSpy) Forget(conn uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgot[conn] = true
}

// TestSpy: while mutations flow every few milliseconds, each connection
// tells its spy at most once per 100 ms, naming the peer and the bucket, and
// forgets on close.
func TestSpy(t *testing.T) {
	const run = 650 * time.Millisecond
	consumerSpy, producerSpy := newRecordingSpy(), newRecordingSpy()
	srv := newServer(t, ProducerConfig{Spy: producerSpy})
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Connections: 2, NoopInterval: 100 * time.Millisecond, Handler: rec, Spy: consumerSpy})
	for vb := range uint16(2) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	for start := time.Now(); time.Since(start) < run; time.Sleep(5 * time.Millisecond) {
		srv.eng.put(0, "k", nil)
		srv.eng.put(1, "k", nil)
	}
	c.Close()
	c.Wait()
	for range 2 {
		if err := srv.serveErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		spy  *recordingSpy
		peer string
	}{{consumerSpy, "node-a/kv"}, {producerSpy, "node-b/kv"}} {
		tt.spy.mu.Lock()
		if len(tt.spy.heard) != 2 {
			t.Errorf("%s: %d connections heard, want 2", tt.peer, len(tt.spy.heard))
		}
		for id, times := range tt.spy.heard {
			if tt.spy.who[id] != tt.peer || !tt.spy.forgot[id] {
				t.Errorf("connection %d: heard %q, forgotten %v", id, tt.spy.who[id], tt.spy.forgot[id])
			}
			if max := int(run/SpyInterval) + 2; len(times) < 3 || len(times) > max {
				t.Errorf("connection %d heard %d times in %v, want 3..%d", id, len(times), run, max)
			}
			for i := 1; i < len(times); i++ {
				if d := times[i].Sub(times[i-1]); d < SpyInterval {
					t.Errorf("connection %d: two calls %v apart", id, d)
				}
			}
		}
		tt.spy.mu.Unlock()
	}
}

// freezable wraps a net.Conn: while frozen, its reads and writes hang, as
// those of a process stopped with SIGSTOP would, until thawed.
type freezable struct {
	net.Conn
	frozen *atomic.Bool
	thaw   chan struct{}
}

func (c freezable) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.frozen.Load() {
		<-c.thaw
	}
	return n, err
}

func (c freezable) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		<-c.thaw
	}
	return c.Conn.Write(p)
}

// TestFrozenProducerInVirtualTime runs a session over net.Pipe in a
// synctest bubble: an idle stream stays up for a minute on 1 s NOOPs, and
// a producer frozen in place is declared dead no later than two NOOP
// intervals after the consumer last heard from it.
func TestFrozenProducerInVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const noop = time.Second
		eng := newMemEngine()
		eng.fill(1, 3, 10)
		prod, err := NewProducer(ProducerConfig{Name: "node-a", Engines: func(string) engine.Engine { return eng }, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		var frozen atomic.Bool
		thaw := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		pipeDial := func(context.Context, string) (net.Conn, error) {
			a, b := net.Pipe()
			go func() {
				h, body, err := readFrame(b)
				if err != nil {
					served <- err
					return
				}
				served <- prod.Serve(ctx, freezable{b, &frozen, thaw}, h, body)
			}()
			return a, nil
		}
		rec := newRecorder()
		c, err := Dial(ctx, ConsumerConfig{Name: "node-b", Bucket: "kv", Addr: "pipe", NoopInterval: noop,
			Dial: pipeDial, Handler: rec, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Request(Request{VBucket: 0}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if rec.last(0) != 3 || len(rec.lost) != 0 {
			t.Fatalf("after an idle minute: last seqno %d, %d lost", rec.last(0), len(rec.lost))
		}
		eng.put(0, "live", nil)
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if rec.last(0) != 4 {
			t.Fatalf("live mutation not delivered: last seqno %d", rec.last(0))
		}

		frozen.Store(true)
		start := time.Now()
		l := <-rec.lost
		if !errors.Is(l, ErrSilent) || !slices.Equal(l.VBuckets, []uint16{0}) {
			t.Fatalf("Lost %v", l)
		}
		// The consumer last heard the producer at most one NOOP interval
		// before the freeze, and must give up two intervals after that.
		if elapsed := time.Since(start); elapsed < noop || elapsed > 2*noop {
			t.Fatalf("declared dead %v after the freeze, want %v..%v", elapsed, noop, 2*noop)
		}
		close(thaw)
		cancel()
		c.Wait()
		<-served
	})
}
