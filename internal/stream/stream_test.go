package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shoal/internal/engine"
)

// TestSnapshotThenLive streams 32 vBuckets (a snapshot of what the engine
// holds, then live mutations) over 1 and 4 connections, with and without
// compression and with a window small enough to make credit matter, and
// checks that each vBucket arrives complete and in order.
func TestSnapshotThenLive(t *testing.T) {
	for _, tt := range []struct {
		conns  int
		s2     bool
		buffer int
	}{{1, false, 0}, {4, false, 0}, {1, true, 0}, {4, true, 0}, {2, false, 2048}, {3, true, 4096}} {
		t.Run(fmt.Sprintf("conns=%d,s2=%v,buffer=%d", tt.conns, tt.s2, tt.buffer), func(t *testing.T) {
			const vbs, before, after = 32, 40, 25
			srv := newServer(t, ProducerConfig{})
			srv.eng.fill(vbs, before, 100)
			rec := newRecorder()
			c := dial(t, srv.addr(), ConsumerConfig{Connections: tt.conns, Compression: tt.s2, BufferSize: tt.buffer, Handler: rec})
			if c.Producer() != "node-a" {
				t.Fatalf("Producer() = %q", c.Producer())
			}
			for vb := range uint16(vbs) {
				if err := c.Request(Request{VBucket: vb}); err != nil {
					t.Fatal(err)
				}
			}
			for vb := range uint16(vbs) {
				waitFor(t, "the snapshots", func() bool { return rec.last(vb) == before })
			}
			for i := range after {
				for vb := range uint16(vbs) {
					srv.eng.put(vb, fmt.Sprintf("live:%d", i), []byte(strings.Repeat("v", i)))
				}
			}
			for vb := range uint16(vbs) {
				waitFor(t, "the live mutations", func() bool { return rec.last(vb) == before+after })
				if d := diffMutations(srv.eng.history(vb), rec.got(vb)); d != "" {
					t.Fatalf("vbucket %d (-engine +consumer):\n%s", vb, d)
				}
				rec.mu.Lock()
				snaps := rec.snaps[vb]
				rec.mu.Unlock()
				if len(snaps) != 1+after || snaps[0] != [2]uint64{1, before} || snaps[1] != [2]uint64{before + 1, before + 1} {
					t.Fatalf("vbucket %d snapshots %v", vb, snaps)
				}
			}
		})
	}
}

// TestItemLargerThanWindow: a mutation larger than the whole credit window
// still goes, alone, and the stream goes on after it.
func TestItemLargerThanWindow(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.put(0, "small", []byte("v"))
	srv.eng.put(0, "big", make([]byte, 256<<10))
	srv.eng.put(0, "after", []byte("v"))
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{BufferSize: 1024, Compression: true, Handler: rec})
	if err := c.Request(Request{VBucket: 0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the three mutations", func() bool { return rec.last(0) == 3 })
	srv.eng.put(0, "big-live", make([]byte, 300<<10))
	waitFor(t, "the live one", func() bool { return rec.last(0) == 4 })
	if d := diffMutations(srv.eng.history(0), rec.got(0)); d != "" {
		t.Fatalf("(-engine +consumer):\n%s", d)
	}
}

func TestResumeAndRollback(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(2, 50, 10)
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})

	if err := c.Request(Request{VBucket: 0, Start: 30}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vbucket 0", func() bool { return rec.last(0) == 50 })
	if got := rec.got(0); len(got) != 20 || got[0].Seqno != 31 {
		t.Fatalf("resumed from 30: got %d mutations starting at %d", len(got), got[0].Seqno)
	}

	if err := c.Request(Request{VBucket: 1, Start: 80}); err != nil {
		t.Fatal(err)
	}
	if e := rec.end(t); e.VBucket != 1 || e.Reason != ReasonRollback || e.Seqno != 50 {
		t.Fatalf("ahead of the producer: %+v, want rollback to 50", e)
	}
	// The vBucket may be asked for again after its end.
	if err := c.Request(Request{VBucket: 1, Start: 50}); err != nil {
		t.Fatal(err)
	}
	srv.eng.put(1, "k", nil)
	waitFor(t, "vbucket 1", func() bool { return rec.last(1) == 51 })
}

func TestAccept(t *testing.T) {
	log := []FailoverEntry{{UUID: 0xbeef, Seqno: 10}, {UUID: 0xcafe, Seqno: 0}}
	var asked atomic.Value
	srv := newServer(t, ProducerConfig{Accept: func(ci ConsumerInfo, req Request) ([]FailoverEntry, error) {
		asked.Store(fmt.Sprintf("%s %s %d %#x %+v", ci.Name, ci.Bucket, ci.Conn, ci.Features, req))
		switch req.VBucket {
		case 1:
			return nil, &RollbackError{Seqno: 7}
		case 2:
			return nil, errors.New("not my vbucket")
		}
		return log, nil
	}})
	srv.eng.fill(3, 5, 10)
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec, Standby: true})

	if err := c.Request(Request{VBucket: 0, Start: 2, UUID: 0xbeef, SnapStart: 1, SnapEnd: 4}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vbucket 0", func() bool { return rec.last(0) == 5 })
	if got := asked.Load(); got != "node-b kv 0 0x4 {VBucket:0 Start:2 UUID:48879 SnapStart:1 SnapEnd:4}" {
		t.Fatalf("Accept saw %v", got)
	}
	rec.mu.Lock()
	gotLog := rec.logs[0]
	rec.mu.Unlock()
	if d := cmp.Diff(log, gotLog); d != "" {
		t.Fatalf("failover log (-sent +received):\n%s", d)
	}

	if err := c.Request(Request{VBucket: 1}); err != nil {
		t.Fatal(err)
	}
	if e := rec.end(t); e.Reason != ReasonRollback || e.Seqno != 7 {
		t.Fatalf("rollback: %+v", e)
	}
	if err := c.Request(Request{VBucket: 2}); err != nil {
		t.Fatal(err)
	}
	if e := rec.end(t); e.Reason != ReasonRefused || e.Message != "not my vbucket" {
		t.Fatalf("refusal: %+v", e)
	}
}

func TestCloseStreamAndRequestAgain(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(1, 20, 10)
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})
	if err := c.Request(Request{VBucket: 0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the snapshot", func() bool { return rec.last(0) == 20 })
	if err := c.Request(Request{VBucket: 0}); !errors.Is(err, ErrStreamExists) {
		t.Fatalf("second request = %v, want ErrStreamExists", err)
	}
	if err := c.CloseStream(0); err != nil {
		t.Fatal(err)
	}
	if e := rec.end(t); e.Reason != ReasonClosed || e.Seqno != 20 {
		t.Fatalf("close: %+v", e)
	}
	if err := c.CloseStream(0); !errors.Is(err, ErrNoStream) {
		t.Fatalf("closing a closed stream = %v, want ErrNoStream", err)
	}
	srv.eng.put(0, "later", nil)
	if err := c.Request(Request{VBucket: 0, Start: rec.last(0)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resumed stream", func() bool { return rec.last(0) == 21 })
	if d := diffMutations(srv.eng.history(0), rec.got(0)); d != "" {
		t.Fatalf("(-engine +consumer):\n%s", d)
	}
}

func TestHandlerErrorStopsOnlyItsStream(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(2, 30, 10)
	rec := newRecorder()
	rec.failAt[1] = 10
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})
	for vb := range uint16(2) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	e := rec.end(t)
	if e.VBucket != 1 || e.Reason != ReasonHandler || !errors.Is(e.Err, errApply) || !strings.Contains(e.Err.Error(), "vbucket 1") {
		t.Fatalf("end %+v, want vbucket 1 ended by its handler's error", e)
	}
	if got := rec.last(1); got != 9 {
		t.Fatalf("vbucket 1 applied up to %d, want 9", got)
	}
	waitFor(t, "vbucket 0", func() bool { return rec.last(0) == 30 })
}

func TestEngineErrorEndsStream(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(1, 10, 10)
	srv.eng.failAt[0] = 6
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})
	if err := c.Request(Request{VBucket: 0}); err != nil {
		t.Fatal(err)
	}
	if e := rec.end(t); e.Reason != ReasonError || e.Seqno != 5 || !strings.Contains(e.Message, "injected failure at seqno 6") {
		t.Fatalf("end %+v", e)
	}
	if got := rec.last(0); got != 5 {
		t.Fatalf("got up to %d, want 5", got)
	}
}

func TestEngineSendsBadMutation(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	if err := srv.eng.Apply(&engine.Mutation{VBucket: 0, Seqno: 1, Op: engine.OpSet, Channel: "no spaces"}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})
	if err := c.Request(Request{VBucket: 0}); err != nil {
		t.Fatal(err)
	}
	if e := rec.end(t); e.Reason != ReasonError || !strings.Contains(e.Message, "bad channel name") {
		t.Fatalf("end %+v", e)
	}
}

func TestProducerShutdown(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(4, 5, 10)
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Connections: 2, Handler: rec})
	for vb := range uint16(4) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	for vb := range uint16(4) {
		waitFor(t, "the snapshots", func() bool { return rec.last(vb) == 5 })
	}
	srv.cancel()
	// Each stream is reported once: ended by the shutdown, or lost with a
	// connection the session closed when its first connection saw the
	// producer leave.
	seen := map[uint16]int{}
	for range 2 {
		lost := rec.lostErr(t)
		if !errors.Is(lost, ErrPeerClosed) {
			t.Fatalf("after the shutdown: %v", lost)
		}
		for _, vb := range lost.VBuckets {
			seen[vb]++
		}
	}
	for len(rec.ends) > 0 {
		if e := <-rec.ends; e.Reason == ReasonShutdown {
			seen[e.VBucket]++
		} else {
			t.Fatalf("end %+v", e)
		}
	}
	if d := cmp.Diff(map[uint16]int{0: 1, 1: 1, 2: 1, 3: 1}, seen); d != "" {
		t.Fatalf("streams reported (-want +got):\n%s", d)
	}
	if err := c.Wait(); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Wait = %v", err)
	}
	for range 2 {
		if err := srv.serveErr(); err != nil {
			t.Fatalf("Serve after shutdown = %v", err)
		}
	}
}

func TestConsumerClose(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	srv.eng.fill(3, 5, 10)
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Connections: 3, Handler: rec})
	for vb := range uint16(3) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the snapshots", func() bool { return rec.last(2) == 5 })
	c.Close()
	if err := c.Wait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait = %v", err)
	}
	var lost []uint16
	for range 3 {
		e := rec.lostErr(t)
		if !errors.Is(e, ErrClosed) {
			t.Fatalf("Lost %v", e)
		}
		lost = append(lost, e.VBuckets...)
	}
	if len(lost) != 3 {
		t.Fatalf("lost %v, want the 3 open streams", lost)
	}
	if err := c.Request(Request{VBucket: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Request after Close = %v", err)
	}
	for range 3 {
		if err := srv.serveErr(); err != nil {
			t.Fatalf("Serve after the consumer left = %v", err)
		}
	}
}

func TestBadRequestAndConfig(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	c := dial(t, srv.addr(), ConsumerConfig{Handler: newRecorder()})
	if err := c.Request(Request{VBucket: 1, Start: 5, SnapStart: 6, SnapEnd: 9}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Request = %v, want ErrBadRequest", err)
	}
	for name, cfg := range map[string]ConsumerConfig{
		"no handler":      {Name: "n", Bucket: "kv"},
		"no name":         {Bucket: "kv", Handler: newRecorder()},
		"bad bucket":      {Name: "n", Bucket: "a/b", Handler: newRecorder()},
		"too many conns":  {Name: "n", Bucket: "kv", Connections: 65, Handler: newRecorder()},
		"noop too short":  {Name: "n", Bucket: "kv", NoopInterval: 1, Handler: newRecorder()},
		"negative buffer": {Name: "n", Bucket: "kv", BufferSize: -1, Handler: newRecorder()},
	} {
		cfg.Addr = srv.addr()
		if _, err := Dial(context.Background(), cfg); err == nil {
			t.Errorf("%s: Dial succeeded", name)
		}
	}
	if _, err := NewProducer(ProducerConfig{Name: "p"}); err == nil {
		t.Error("NewProducer without engines succeeded")
	}
}

func TestDialRefused(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	_, err := Dial(context.Background(), ConsumerConfig{Name: "n", Bucket: "queue", Addr: srv.addr(), Handler: newRecorder(), Logger: quiet})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `no bucket "queue"`) {
		t.Fatalf("Dial = %v", err)
	}
	if err := srv.serveErr(); err == nil {
		t.Fatal("Serve of a refused open returned nil")
	}
}

func TestHandshake(t *testing.T) {
	srv := newServer(t, ProducerConfig{})
	var calls atomic.Int32
	hs := func(ctx context.Context, conn net.Conn) error {
		calls.Add(1)
		return nil
	}
	dial(t, srv.addr(), ConsumerConfig{Connections: 3, Handshake: hs, Handler: newRecorder()})
	if calls.Load() != 3 {
		t.Fatalf("handshake ran %d times, want 3", calls.Load())
	}
	failing := func(ctx context.Context, conn net.Conn) error { return errors.New("auth failed") }
	_, err := Dial(context.Background(), ConsumerConfig{Name: "n", Bucket: "kv", Addr: srv.addr(), Handshake: failing, Handler: newRecorder(), Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "handshake: auth failed") {
		t.Fatalf("Dial = %v", err)
	}
}

func TestDialCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			accepted <- conn // never answers the open frame
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, ConsumerConfig{Name: "n", Bucket: "kv", Addr: ln.Addr().String(), Handler: newRecorder(), Logger: quiet})
		errc <- err
	}()
	conn := <-accepted
	defer conn.Close()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
}
