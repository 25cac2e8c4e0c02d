package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/wire"
)

func TestKVRequests(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	if st := r.put("users", "alice", "v1"); st != wire.StatusOK {
		t.Fatalf("put: %v", st)
	}
	if st, v := r.get("users", "alice"); st != wire.StatusOK || v != "v1" {
		t.Fatalf("get: %v %q", st, v)
	}
	if st, _ := r.get("users", "bob"); st != wire.StatusNotFound {
		t.Fatalf("get of a missing key: %v", st)
	}
	if st, _ := r.get("nochannel", "bob"); st != wire.StatusNotFound {
		t.Fatalf("get in a missing channel: %v", st)
	}
	h, b := r.call(wire.OpExists, vbOf("alice"), keyBody("users", "alice"))
	if h.Status != wire.StatusOK || !bytes.Equal(b, []byte{1}) {
		t.Fatalf("exists: %v %v", h.Status, b)
	}
	// Update with the right and a wrong CAS.
	h, b = r.call(wire.OpGet, vbOf("alice"), keyBody("users", "alice"))
	cas := binary.LittleEndian.Uint64(b)
	upd := func(cas uint64, v string) wire.Status {
		body := wire.AppendStr8(nil, "users")
		body = wire.AppendStr8(body, "alice")
		body = wire.AppendU64(body, cas)
		body = wire.AppendU32(body, 0)
		body = append(body, v...)
		h, _ := r.call(wire.OpUpdate, vbOf("alice"), body)
		return h.Status
	}
	if st := upd(cas+1000, "x"); st != wire.StatusExists {
		t.Fatalf("update with a stale CAS: %v", st)
	}
	if st := upd(cas, "v2"); st != wire.StatusOK {
		t.Fatalf("update with the right CAS: %v", st)
	}
	if _, v := r.get("users", "alice"); v != "v2" {
		t.Fatalf("after update: %q", v)
	}
	h, b = r.call(wire.OpRemove, vbOf("alice"), keyBody("users", "alice"))
	if h.Status != wire.StatusOK || !bytes.Equal(b, []byte{1}) {
		t.Fatalf("remove: %v %v", h.Status, b)
	}
	if st, _ := r.get("users", "alice"); st != wire.StatusNotFound {
		t.Fatalf("get after remove: %v", st)
	}
}

func TestPutBatchAndSizes(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	body := wire.AppendStr8(nil, "batch")
	body = wire.AppendU32(body, 3)
	for i := range 3 {
		body = wire.AppendStr8(body, fmt.Sprintf("k%d", i))
		body = wire.AppendU32(body, 0)
		body = wire.AppendBytes32(body, []byte("value"))
	}
	h, b := r.call(wire.OpPutBatch, 0, body)
	if h.Status != wire.StatusOK || binary.LittleEndian.Uint32(b) != 3 {
		t.Fatalf("PutBatch: %v %v", h.Status, b)
	}
	h, b = r.call(wire.OpGetChannelSize, 0, wire.AppendStr8(nil, "batch"))
	d := wire.NewDecoder(b)
	if h.Status != wire.StatusOK || d.U8() != wire.KindKV || d.U64() != 3 || d.U64() != 3*(2+5) {
		t.Fatalf("GetChannelSize: %v %v", h.Status, b)
	}
	h, b = r.call(wire.OpGetChannels, 0, nil)
	d = wire.NewDecoder(b)
	if h.Status != wire.StatusOK || d.U32() != 1 || d.U8() != wire.KindKV || string(d.Bytes8()) != "batch" {
		t.Fatalf("GetChannels: %v %q", h.Status, b)
	}
	// A malformed batch stores nothing.
	bad := wire.AppendStr8(nil, "batch")
	bad = wire.AppendU32(bad, 2)
	bad = wire.AppendStr8(bad, "new")
	bad = wire.AppendU32(bad, 0)
	bad = wire.AppendBytes32(bad, []byte("v"))
	if h, _ := r.call(wire.OpPutBatch, 0, bad); h.Status != wire.StatusBadRequest {
		t.Fatalf("truncated batch: %v", h.Status)
	}
	if st, _ := r.get("batch", "new"); st != wire.StatusNotFound {
		t.Fatal("a record of a malformed batch was stored")
	}
	if h, _ := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "batch")); h.Status != wire.StatusOK {
		t.Fatalf("RemoveChannel: %v", h.Status)
	}
	h, b = r.call(wire.OpGetSize, 0, nil)
	if h.Status != wire.StatusOK || binary.LittleEndian.Uint64(b) != 0 {
		t.Fatalf("GetSize after RemoveChannel: %v %v", h.Status, b)
	}
}

// TestBadInput covers every malformed request of the issue: each gets its
// status and the connection keeps serving.
func TestBadInput(t *testing.T) {
	ts := startServer(t, Config{MaxValueSize: 1000})
	r := dialRaw(t, ts.addr)
	f := func(name string, op wire.Opcode, vb uint16, body []byte, want wire.Status) {
		t.Helper()
		h, msg := r.call(op, vb, body)
		if h.Status != want {
			t.Fatalf("%s: status %v (%s), want %v", name, h.Status, msg, want)
		}
	}
	f("unknown opcode", wire.Opcode(0xEE), 0, []byte("xyz"), wire.StatusUnsupported)
	f("bad channel name", wire.OpPut, vbOf("k"), putBody("bad name!", "k", "v", 0), wire.StatusBadChannelName)
	f("empty channel name", wire.OpGet, vbOf("k"), keyBody("", "k"), wire.StatusBadChannelName)
	f("empty key", wire.OpPut, 0, putBody("c", "", "v", 0), wire.StatusBadKey)
	f("value over the limit", wire.OpPut, vbOf("k"), putBody("c", "k", strings.Repeat("x", 1001), 0), wire.StatusValueTooBig)
	f("body far over the limit", wire.OpPut, vbOf("k"), putBody("c", "k", strings.Repeat("x", 100000), 0), wire.StatusValueTooBig)
	f("truncated body", wire.OpPut, 0, []byte{5, 'a'}, wire.StatusBadRequest)
	f("wrong vbucket", wire.OpPut, vbOf("k")+1, putBody("c", "k", "v", 0), wire.StatusBadRequest)
	f("trailing bytes", wire.OpGet, vbOf("k"), append(keyBody("c", "k"), 0), wire.StatusBadRequest)
	f("malformed stream control", wire.OpStreamControl, 0, nil, wire.StatusBadRequest)
	// A key over 250 bytes: str8 can carry 255.
	long := strings.Repeat("k", 251)
	f("key over the limit", wire.OpPut, vbOf(long), putBody("c", long, "v", 0), wire.StatusKeyTooBig)
	// Still serving.
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("after bad input: %v", st)
	}
}

func TestGarbageClosesOnlyThatConnection(t *testing.T) {
	ts := startServer(t, Config{})
	good := dialRaw(t, ts.addr)
	bad := dialRaw(t, ts.addr)
	bad.nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	h, msg := bad.read()
	if h.Status != wire.StatusBadFrame {
		t.Fatalf("garbage: %v %s", h.Status, msg)
	}
	if !bad.closed() {
		t.Fatal("the node kept a connection that sent garbage")
	}
	if st := good.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("other client after garbage: %v", st)
	}
}

func TestHugeBodyClaim(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	hb := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: wire.OpPut, ID: 9, BodyLen: 0xffffffff})
	r.nc.Write(hb)
	h, _ := r.read()
	if h.Status != wire.StatusFrameTooBig {
		t.Fatalf("4 GiB claim: %v", h.Status)
	}
	if !r.closed() {
		t.Fatal("connection kept after a 4 GiB claim")
	}
	if st := dialRaw(t, ts.addr).put("c", "k", "v"); st != wire.StatusOK {
		t.Fatal("node stopped serving")
	}
}

func TestTruncatedFrameThenClose(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	fr := frame(wire.OpPut, vbOf("k"), 1, putBody("c", "k", "value", 0))
	r.nc.Write(fr[:len(fr)-3])
	r.nc.Close()
	if st := dialRaw(t, ts.addr).put("c", "k2", "v"); st != wire.StatusOK {
		t.Fatal("node stopped serving")
	}
	if st, _ := dialRaw(t, ts.addr).get("c", "k"); st != wire.StatusNotFound {
		t.Fatal("a truncated Put was applied")
	}
}

func TestHalfFrameStallIsDropped(t *testing.T) {
	ts := startServer(t, Config{FrameTimeout: 300 * time.Millisecond})
	r := dialRaw(t, ts.addr)
	fr := frame(wire.OpPut, vbOf("k"), 1, putBody("c", "k", "value", 0))
	r.nc.Write(fr[:10]) // half a header
	other := dialRaw(t, ts.addr)
	if st := other.put("c", "k2", "v"); st != wire.StatusOK {
		t.Fatal("node stopped serving during a stall")
	}
	if !r.closed() {
		t.Fatal("a client stalled mid-frame was not dropped")
	}
	// An idle connection (no partial frame) is not dropped.
	time.Sleep(500 * time.Millisecond)
	if st := other.put("c", "k3", "v"); st != wire.StatusOK {
		t.Fatal("idle connection was dropped")
	}
}

// TestPipelineBatches sends many requests in one write and checks that
// they are answered in order, with far fewer writes than requests.
func TestPipelineBatches(t *testing.T) {
	ts := startServer(t, Config{NoEventLoop: true}) // the counts are of net.Conn calls (TestEventLoop for the loop)
	r := dialRaw(t, ts.addr)
	r.put("c", "warm", "v")
	const n = 200
	var buf []byte
	for i := 1; i <= n; i++ {
		k := fmt.Sprintf("key%d", i)
		buf = append(buf, frame(wire.OpPut, vbOf(k), uint32(1000+i), putBody("c", k, "value", 0))...)
	}
	w0, r0 := ts.writes.Load(), ts.reads.Load()
	r.nc.Write(buf)
	for i := 1; i <= n; i++ {
		h, _ := r.read()
		if h.ID != uint32(1000+i) || h.Status != wire.StatusOK {
			t.Fatalf("answer %d: id %d status %v", i, h.ID, h.Status)
		}
	}
	writes, reads := ts.writes.Load()-w0, ts.reads.Load()-r0
	t.Logf("%d pipelined requests: %d reads, %d writes on the node", n, reads, writes)
	if writes > n/10 || reads > n/10 {
		t.Fatalf("%d requests took %d reads and %d writes: not batched", n, reads, writes)
	}
}

func TestClientThatNeverReadsIsDropped(t *testing.T) {
	ts := startServer(t, Config{WriteTimeout: 300 * time.Millisecond, MaxPendingOut: 64 << 10})
	r := dialRaw(t, ts.addr)
	r.put("c", "big", strings.Repeat("x", 60000))
	if tc, ok := r.nc.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	// Send Gets of a 60 KB value without ever reading.
	req := frame(wire.OpGet, vbOf("big"), 1, keyBody("c", "big"))
	var buf []byte
	for range 200 {
		buf = append(buf, req...)
	}
	// Keep writing until the node drops us: writes then fail. A node that
	// buffered without bound would take them all.
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for sent := 0; err == nil; sent++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d requests (%d MB of answers unread) the node has not dropped the client", sent*200, sent*200*60/1000)
		}
		r.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, err = r.nc.Write(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = nil // the node stopped reading: fine, wait for it to drop us
		}
	}
	if st := dialRaw(t, ts.addr).put("c", "k", "v"); st != wire.StatusOK {
		t.Fatal("node stopped serving")
	}
}

func TestMaxConnections(t *testing.T) {
	ts := startServer(t, Config{MaxConnections: 2})
	a, b := dialRaw(t, ts.addr), dialRaw(t, ts.addr)
	a.put("c", "k", "v")
	b.put("c", "k", "v")
	c := dialRaw(t, ts.addr)
	h, msg := c.read()
	if h.Status != wire.StatusTooManyConnections || !strings.Contains(string(msg), "2") {
		t.Fatalf("third connection: %v %q", h.Status, msg)
	}
	if !c.closed() {
		t.Fatal("refused connection left open")
	}
	a.nc.Close()
	time.Sleep(100 * time.Millisecond)
	if st := dialRaw(t, ts.addr).put("c", "k", "v"); st != wire.StatusOK {
		t.Fatal("a slot freed by a close is not reusable")
	}
}

// TestManyIdleConnections opens 5000 idle connections; the node keeps
// serving.
func TestManyIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 5000 connections")
	}
	ts := startServer(t, Config{MaxConnections: 6000})
	const n = 5000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Skipf("could open only %d connections here: %v", i, err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.s.NumConnections() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := ts.s.NumConnections(); got < n {
		t.Fatalf("node counts %d connections, want %d", got, n)
	}
	r := dialRaw(t, ts.addr)
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("with 5000 idle connections: %v", st)
	}
	h, b := r.call(wire.OpGetNumConnections, 0, nil)
	if h.Status != wire.StatusOK || binary.LittleEndian.Uint64(b) < n {
		t.Fatalf("GetNumConnections: %v %d", h.Status, binary.LittleEndian.Uint64(b))
	}
}

func TestConcurrentClients(t *testing.T) {
	ts := startServer(t, Config{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := dialRaw(t, ts.addr)
			for i := range 200 {
				k := fmt.Sprintf("g%d-%d", g, i)
				if st := r.put("c", k, k); st != wire.StatusOK {
					t.Errorf("put: %v", st)
					return
				}
				if st, v := r.get("c", k); st != wire.StatusOK || v != k {
					t.Errorf("get %s: %v %q", k, st, v)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestShutdownFinishesInFlight(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	var buf []byte
	for i := 1; i <= 50; i++ {
		k := fmt.Sprintf("k%d", i)
		buf = append(buf, frame(wire.OpPut, vbOf(k), uint32(i), putBody("c", k, "v", 0))...)
	}
	r.nc.Write(buf)
	h, _ := r.read() // the node has the batch
	go ts.s.Shutdown(t.Context())
	answered := 1
	for answered < 50 && h.Status == wire.StatusOK {
		h, _ = r.read()
		answered++
	}
	if answered != 50 || h.Status != wire.StatusOK {
		t.Fatalf("%d of 50 requests answered before shutdown closed the connection (last %v)", answered, h.Status)
	}
	if !r.closed() {
		t.Fatal("connection not closed by shutdown")
	}
}
