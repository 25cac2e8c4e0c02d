//go:build linux

package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"shoal/internal/wire"
)

// waitLooped waits until n connections of ts are in an event loop.
func waitLooped(t *testing.T, ts *testServer, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ts.s.looped.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections in the event loop, want %d", ts.s.looped.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEventLoop: an idle connection goes to the event loop; pipelined
// plain requests are answered there in order; a request that is not plain
// (GetChannels), a frame larger than the read buffer and a pipeline cut in
// the middle of a frame send it back to a goroutine, which answers them in
// order and returns it to the loop once idle.
func TestEventLoop(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	if st := r.put("c", "warm", "v"); st != wire.StatusOK {
		t.Fatal(st)
	}
	waitLooped(t, ts, 1)

	var buf []byte
	const n = 200
	for i := 1; i <= n; i++ {
		k := fmt.Sprintf("key%d", i)
		op, body := wire.OpPut, putBody("c", k, "value", 0)
		if i%50 == 0 {
			op, body = wire.OpGetChannels, nil // leaves the loop
		}
		buf = append(buf, frame(op, vbOf(k), uint32(1000+i), body)...)
	}
	// Written in two parts cut inside a frame: the loop sees a partial one.
	cut := len(buf)/2 + 3
	r.nc.Write(buf[:cut])
	time.Sleep(10 * time.Millisecond)
	r.nc.Write(buf[cut:])
	for i := 1; i <= n; i++ {
		h, _ := r.read()
		if h.ID != uint32(1000+i) || h.Status != wire.StatusOK {
			t.Fatalf("answer %d: id %d status %v", i, h.ID, h.Status)
		}
	}
	waitLooped(t, ts, 1)

	big := strings.Repeat("b", 3*readBufSize)
	if st := r.put("c", "big", big); st != wire.StatusOK {
		t.Fatal(st)
	}
	h, body := r.call(wire.OpGet, vbOf("big"), keyBody("c", "big"))
	if h.Status != wire.StatusOK || string(body[8:]) != big {
		t.Fatalf("big value: %v, %d bytes", h.Status, len(body))
	}
	waitLooped(t, ts, 1)

	// Another connection, then the client closes one: the loop ends it.
	r2 := dialRaw(t, ts.addr)
	if st := r2.put("c", "k2", "v"); st != wire.StatusOK {
		t.Fatal(st)
	}
	waitLooped(t, ts, 2)
	r2.nc.Close()
	waitLooped(t, ts, 1)
	deadline := time.Now().Add(5 * time.Second)
	for ts.s.nconns.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open after one closed, want 1", ts.s.nconns.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEventLoopShutdown: Shutdown ends the connections waiting in the
// event loop and the loops themselves (goleak checks the goroutines).
func TestEventLoopShutdown(t *testing.T) {
	ts := startServer(t, Config{})
	var rs []*raw
	for i := range 4 {
		r := dialRaw(t, ts.addr)
		if st := r.put("c", fmt.Sprint("k", i), "v"); st != wire.StatusOK {
			t.Fatal(st)
		}
		rs = append(rs, r)
	}
	waitLooped(t, ts, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := ts.s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for i, r := range rs {
		if !r.closed() {
			t.Errorf("connection %d not closed by shutdown", i)
		}
	}
	if n := ts.s.looped.Load(); n != 0 {
		t.Errorf("%d connections still in the loop", n)
	}
}
