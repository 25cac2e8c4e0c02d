package server

import (
	"errors"
	"sync"
	"testing"
	"time"

	"shoal/internal/queue"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// fakeWaits is a DurableWait the test completes by hand.
type fakeWaits struct {
	mu       sync.Mutex
	pending  []func(error)
	seqnos   []uint64
	persist  []bool
	vbs      []uint16
	chains   [][]string
	canceled int
	arrived  chan struct{}
}

func (f *fakeWaits) wait(bucket string, vb uint16, seqno uint64, persist bool, chain []string, timeout time.Duration, done func(error)) func() {
	f.mu.Lock()
	f.pending = append(f.pending, done)
	f.seqnos = append(f.seqnos, seqno)
	f.persist = append(f.persist, persist)
	f.vbs = append(f.vbs, vb)
	f.chains = append(f.chains, chain)
	f.mu.Unlock()
	f.arrived <- struct{}{}
	return func() {
		f.mu.Lock()
		f.canceled++
		f.mu.Unlock()
		done(errors.New("canceled"))
	}
}

func (f *fakeWaits) next(t *testing.T) func(error) {
	t.Helper()
	select {
	case <-f.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("no durable wait registered")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	done := f.pending[0]
	f.pending = f.pending[1:]
	return done
}

// sendFlags writes one request with header flags and returns its id.
func (r *raw) sendFlags(op wire.Opcode, vb uint16, flags byte, body []byte) uint32 {
	r.t.Helper()
	r.id++
	b := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, Flags: flags, VBucket: vb, ID: r.id, BodyLen: uint32(len(body))})
	if _, err := r.nc.Write(append(b, body...)); err != nil {
		r.t.Fatal(err)
	}
	return r.id
}

func durable(body []byte) []byte {
	return append(wire.AppendDurablePrefix(nil, wire.DurabilityMajority, time.Second), body...)
}

// TestDurableAnswers: a durable write's answer waits for its wait to
// end (ok, or ambiguous); meanwhile its key is refused with sync write in
// progress and other keys are served; the connection's end cancels the
// waits; durable requests the node cannot wait for are refused.
func TestDurableAnswers(t *testing.T) {
	ts := startServer(t, Config{})
	chains := make([][]string, testVBuckets)
	for vb := range chains {
		chains[vb] = []string{"test-node", "b"}
	}
	ts.s.SetTable(vbmap.NewTable("test-node", (*vbmap.Map)(nil).Next(2, 1, chains), map[string]string{"test-node": ts.addr, "b": "10.0.0.1:7400"}))
	f := &fakeWaits{arrived: make(chan struct{}, 16)}
	ts.s.SetDurableWait(f.wait)
	r := dialRaw(t, ts.addr)

	id := r.sendFlags(wire.OpPut, vbOf("k"), wire.FlagDurable, durable(putBody("c", "k", "v1", 0)))
	done := f.next(t)
	if h, _ := r.call(wire.OpGet, vbOf("k"), keyBody("c", "k")); h.Status != wire.StatusSyncWriteInProgress {
		t.Fatalf("get of a key in flight: %v", h.Status)
	}
	if st := r.put("c", "k", "other"); st != wire.StatusSyncWriteInProgress {
		t.Fatalf("plain put of a key in flight: %v", st)
	}
	if st := r.put("c", "k2", "v"); st != wire.StatusOK {
		t.Fatalf("put of another key: %v", st)
	}
	done(nil)
	h, body := r.read()
	if h.ID != id || h.Status != wire.StatusOK || len(body) != 8 {
		t.Fatalf("durable put answered %v %q", h, body)
	}
	f.mu.Lock()
	chain, seqno := f.chains[0], f.seqnos[0]
	f.mu.Unlock()
	if len(chain) != 2 || seqno == 0 {
		t.Fatalf("waited for seqno %d on chain %v", seqno, chain)
	}
	if st, v := r.get("c", "k"); st != wire.StatusOK || v != "v1" {
		t.Fatalf("after the wait: %v %q", st, v)
	}

	r.sendFlags(wire.OpPut, vbOf("k"), wire.FlagDurable, durable(putBody("c", "k", "v2", 0)))
	f.next(t)(errors.New("timed out"))
	if h, _ := r.read(); h.Status != wire.StatusAmbiguous {
		t.Fatalf("a wait that failed: %v", h.Status)
	}

	for _, tt := range []struct {
		name  string
		op    wire.Opcode
		vb    uint16
		body  []byte
		want  wire.Status
		flags byte
	}{
		{"a durable get", wire.OpGet, vbOf("k"), durable(keyBody("c", "k")), wire.StatusBadRequest, wire.FlagDurable},
		{"persist-majority on kv", wire.OpPut, vbOf("k"), append(wire.AppendDurablePrefix(nil, wire.DurabilityPersistMajority, 0), putBody("c", "k", "v", 0)...), wire.StatusUnsupported, wire.FlagDurable},
		{"a short prefix", wire.OpPut, vbOf("k"), []byte{1, 0}, wire.StatusBadRequest, wire.FlagDurable},
		{"a durable push without its vbucket", wire.OpPush, 0, durable(append(wire.AppendBytes8(append([]byte{1}, wire.AppendStr8(nil, "q")...), nil), 'x')), wire.StatusBadRequest, wire.FlagDurable},
	} {
		r.sendFlags(tt.op, tt.vb, tt.flags, tt.body)
		h, msg := r.read()
		if h.Status != tt.want {
			t.Fatalf("%s: %v %s", tt.name, h.Status, msg)
		}
		t.Logf("%s: %v: %s", tt.name, h.Status, msg)
	}

	// The connection's end cancels its waits.
	r.sendFlags(wire.OpPut, vbOf("k"), wire.FlagDurable, durable(putBody("c", "k", "v3", 0)))
	f.next(t)
	r.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := f.canceled
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the wait was not cancelled when its connection closed")
		}
		time.Sleep(time.Millisecond)
	}
	// The key is free again.
	r2 := dialRaw(t, ts.addr)
	if st, v := r2.get("c", "k"); st != wire.StatusOK || v != "v3" {
		t.Fatalf("after the connection's end: %v %q", st, v)
	}
}

// TestPersistMajorityPush: a persist-majority push is refused by a queue
// without a journal; with a journal fsynced every hour its wait is a
// persist one, registered only once the push is on the active's disk.
func TestPersistMajorityPush(t *testing.T) {
	persist := func(body []byte) []byte {
		return append(wire.AppendDurablePrefix(nil, wire.DurabilityPersistMajority, time.Second), body...)
	}
	chains := make([][]string, testVBuckets)
	for vb := range chains {
		chains[vb] = []string{"test-node", "b"}
	}
	setup := func(ts *testServer) *fakeWaits {
		ts.s.SetTable(vbmap.NewTable("test-node", (*vbmap.Map)(nil).Next(2, 1, chains), map[string]string{"test-node": ts.addr, "b": "10.0.0.1:7400"}))
		f := &fakeWaits{arrived: make(chan struct{}, 16)}
		ts.s.SetDurableWait(f.wait)
		return f
	}
	mem := startServer(t, Config{})
	setup(mem)
	r := dialRaw(t, mem.addr)
	r.sendFlags(wire.OpPush, vbOf("key"), wire.FlagDurable, persist(pushBody([]string{"q"}, "key", "x")))
	if h, msg := r.read(); h.Status != wire.StatusUnsupported {
		t.Fatalf("persist-majority push to a memory queue: %v %s", h.Status, msg)
	}

	jnl := startServerWith(t, Config{}, queue.Config{Durability: queue.DurabilityJournal, FsyncInterval: time.Hour})
	f := setup(jnl)
	r = dialRaw(t, jnl.addr)
	id := r.sendFlags(wire.OpPush, vbOf("key"), wire.FlagDurable, persist(pushBody([]string{"q"}, "key", "x")))
	done := f.next(t)
	if written, synced, _ := jnl.q.Marks(); synced != written {
		t.Fatalf("wait registered with the push not on disk: marks %d %d", written, synced)
	}
	f.mu.Lock()
	p := f.persist[0]
	f.mu.Unlock()
	if !p {
		t.Fatal("the wait of a persist-majority push is not a persist wait")
	}
	done(nil)
	if h, _ := r.read(); h.ID != id || h.Status != wire.StatusOK {
		t.Fatalf("persist-majority push answered %v", h)
	}
}

// TestDurablePop: a durable pop waits on the vBucket of the record it
// popped, answers its value once the wait ends, and an ambiguous answer
// carries the value too; persist-majority pops need a journal.
func TestDurablePop(t *testing.T) {
	ts := startServer(t, Config{})
	chains := make([][]string, testVBuckets)
	for vb := range chains {
		chains[vb] = []string{"test-node", "b"}
	}
	ts.s.SetTable(vbmap.NewTable("test-node", (*vbmap.Map)(nil).Next(2, 1, chains), map[string]string{"test-node": ts.addr, "b": "10.0.0.1:7400"}))
	f := &fakeWaits{arrived: make(chan struct{}, 16)}
	ts.s.SetDurableWait(f.wait)
	r := dialRaw(t, ts.addr)
	for _, v := range []string{"first", "second"} {
		if h, _ := r.call(wire.OpPush, vbOf("key"), pushBody([]string{"q"}, "key", v)); h.Status != wire.StatusOK {
			t.Fatalf("push: %v", h.Status)
		}
	}
	id := r.sendFlags(wire.OpPop, 0, wire.FlagDurable, durable(wire.AppendStr8(nil, "q")))
	f.next(t)(nil)
	if h, body := r.read(); h.ID != id || h.Status != wire.StatusOK || string(body) != "first" {
		t.Fatalf("durable pop answered %v %q", h.Status, body)
	}
	f.mu.Lock()
	vb := f.vbs[0]
	f.mu.Unlock()
	if vb != vbOf("key") {
		t.Fatalf("durable pop waited on vbucket %d, the record's is %d", vb, vbOf("key"))
	}
	r.sendFlags(wire.OpPop, 0, wire.FlagDurable, durable(wire.AppendStr8(nil, "q")))
	f.next(t)(errors.New("timed out"))
	if h, body := r.read(); h.Status != wire.StatusAmbiguous || string(body) != "second" {
		t.Fatalf("ambiguous durable pop answered %v %q", h.Status, body)
	}
	r.sendFlags(wire.OpPop, 0, wire.FlagDurable, append(wire.AppendDurablePrefix(nil, wire.DurabilityPersistMajority, 0), wire.AppendStr8(nil, "q")...))
	if h, _ := r.read(); h.Status != wire.StatusUnsupported {
		t.Fatalf("persist-majority pop without a journal: %v", h.Status)
	}
}
