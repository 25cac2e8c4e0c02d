package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/queue"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// fakeReplication records the operator requests it is given.
type fakeReplication struct {
	mu       sync.Mutex
	actions  []uint8
	settings []ReplicaSettings
	promoted int
	forced   int
	vbuckets []bool
	err      error
}

func (f *fakeReplication) Replica(action uint8, s ReplicaSettings) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, action)
	f.settings = append(f.settings, s)
	return f.err
}

func (f *fakeReplication) Promote(force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.promoted++
	if force {
		f.forced++
	}
	return f.err
}

func (f *fakeReplication) Status(vbuckets bool) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vbuckets = append(f.vbuckets, vbuckets)
	return []byte(`{"ok":true}`), f.err
}

// standbyTable is the routing table of node "n" holding a replica of
// every vBucket of node "a" at 10.0.0.1:7400 (map revision 7).
func standbyTable() *vbmap.Table {
	chains := make([][]string, testVBuckets)
	for vb := range chains {
		chains[vb] = []string{"a", "n"}
	}
	return vbmap.NewTable("n", (*vbmap.Map)(nil).Next(7, 1, chains), map[string]string{"a": "10.0.0.1:7400"})
}

// startReplServer serves a kv and a queue store with r registered before
// Serve.
func startReplServer(t *testing.T, cfg Config, r Replication) (*Server, string) {
	t.Helper()
	store, err := kv.New(kv.Config{VBuckets: testVBuckets})
	if err != nil {
		t.Fatal(err)
	}
	qs, err := queue.Open(queue.Config{Dir: t.TempDir(), VBuckets: testVBuckets, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := logstore.Open(logstore.Config{Dir: t.TempDir(), VBuckets: testVBuckets, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.VBuckets, cfg.Logger, cfg.NodeID = testVBuckets, quietLogger(), "repl-node"
	s := New(cfg, Engines{KV: store, Queue: qs, Log: ls})
	s.HandleReplication(r)
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
		store.Close()
		qs.Close()
		ls.Close()
	})
	return s, ln.Addr().String()
}

func setBody(conns uint16, noop, idle uint32) []byte {
	b := wire.AppendU8(nil, ReplicaSet)
	b = wire.AppendU16(b, conns)
	b = wire.AppendU32(b, noop)
	return wire.AppendU32(b, idle)
}

func TestReplicationRequests(t *testing.T) {
	f := &fakeReplication{}
	_, addr := startReplServer(t, Config{}, f)
	r := dialRaw(t, addr)
	for _, tc := range []struct {
		name string
		op   wire.Opcode
		body []byte
		want wire.Status
	}{
		{"stop", wire.OpReplica, []byte{ReplicaStop}, wire.StatusOK},
		{"start", wire.OpReplica, []byte{ReplicaStart}, wire.StatusOK},
		{"set", wire.OpReplica, setBody(3, 200, 0), wire.StatusOK},
		{"set without settings", wire.OpReplica, []byte{ReplicaSet}, wire.StatusBadRequest},
		{"unknown action", wire.OpReplica, []byte{9}, wire.StatusBadRequest},
		{"empty", wire.OpReplica, nil, wire.StatusBadRequest},
		{"trailing bytes", wire.OpReplica, []byte{ReplicaStop, 0}, wire.StatusBadRequest},
		{"noop over a day", wire.OpReplica, setBody(1, maxReplicaMillis+1, 0), wire.StatusBadRequest},
		{"promote", wire.OpPromote, nil, wire.StatusOK},
		{"promote --force", wire.OpPromote, []byte{1}, wire.StatusOK},
		{"promote with unknown flags", wire.OpPromote, []byte{2}, wire.StatusBadRequest},
		{"promote with trailing bytes", wire.OpPromote, []byte{1, 0}, wire.StatusBadRequest},
		{"status", wire.OpStatus, nil, wire.StatusOK},
		{"status with vbuckets", wire.OpStatus, []byte{1}, wire.StatusOK},
		{"status with unknown flags", wire.OpStatus, []byte{2}, wire.StatusBadRequest},
	} {
		h, body := r.call(tc.op, 0, tc.body)
		if h.Status != tc.want {
			t.Errorf("%s: %v %q, want %v", tc.name, h.Status, body, tc.want)
		}
		if tc.op == wire.OpStatus && h.Status == wire.StatusOK && string(body) != `{"ok":true}` {
			t.Errorf("%s: body %q", tc.name, body)
		}
	}
	f.mu.Lock()
	if len(f.actions) != 3 || f.actions[2] != ReplicaSet || f.settings[2] != (ReplicaSettings{Connections: 3, NoopInterval: 200 * time.Millisecond}) ||
		f.promoted != 2 || f.forced != 1 || len(f.vbuckets) != 2 || f.vbuckets[0] || !f.vbuckets[1] {
		t.Fatalf("recorded %+v", f)
	}
	f.err = ErrNotStandby
	f.mu.Unlock()
	if h, body := r.call(wire.OpPromote, 0, nil); h.Status != wire.StatusBadRequest || string(body) != ErrNotStandby.Error() {
		t.Fatalf("promote of an active node: %v %q", h.Status, body)
	}
	f.mu.Lock()
	f.err = fmt.Errorf("%w: the active streams to it", ErrPromoteRefused)
	f.mu.Unlock()
	if h, body := r.call(wire.OpPromote, 0, nil); h.Status != wire.StatusRefused || string(body) != "promotion refused: the active streams to it" {
		t.Fatalf("a refused promotion: %v %q", h.Status, body)
	}
	f.mu.Lock()
	f.err = errors.New("disk on fire")
	f.mu.Unlock()
	if h, body := r.call(wire.OpReplica, 0, []byte{ReplicaStart}); h.Status != wire.StatusInternal || string(body) != "disk on fire" {
		t.Fatalf("a failing replica start: %v %q", h.Status, body)
	}
}

func TestReplicationRequestsNeedAdmin(t *testing.T) {
	_, addr := startReplServer(t, Config{Credentials: testCreds}, &fakeReplication{})
	app := dialRaw(t, addr)
	app.auth("app", testCreds["app"])
	for _, op := range []wire.Opcode{wire.OpReplica, wire.OpPromote} {
		if h, _ := app.call(op, 0, []byte{ReplicaStop}); h.Status != wire.StatusNotPermitted {
			t.Fatalf("%v as app: %v", op, h.Status)
		}
	}
	if h, _ := app.call(wire.OpStatus, 0, nil); h.Status != wire.StatusOK {
		t.Fatalf("status as app: %v", h.Status)
	}
	adm := dialRaw(t, addr)
	adm.auth("admin", testCreds["admin"])
	if h, _ := adm.call(wire.OpPromote, 0, nil); h.Status != wire.StatusOK {
		t.Fatalf("promote as admin: %v", h.Status)
	}
}

// TestStandbyRefusesWrites: a node active for no vBucket refuses every
// write, kv and queue, and every read, naming the active node (without a
// map: a standby is in no cluster); GetReplica reads its replica copy.
func TestStandbyRefusesWrites(t *testing.T) {
	s, addr := startReplServer(t, Config{}, &fakeReplication{})
	r := dialRaw(t, addr)
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("put while active: %v", st)
	}
	if h, _ := r.call(wire.OpPush, 0, pushBody([]string{"q"}, "", "v")); h.Status != wire.StatusOK {
		t.Fatalf("push while active: %v", h.Status)
	}
	s.SetTable(standbyTable())
	want := string(wire.AppendU64(wire.AppendU64(wire.AppendStr8(nil, "10.0.0.1:7400"), 1), 7))
	for _, tc := range []struct {
		name string
		op   wire.Opcode
		vb   uint16
		body []byte
	}{
		{"put", wire.OpPut, vbOf("k"), putBody("c", "k", "v", 0)},
		{"push", wire.OpPush, 0, pushBody([]string{"q"}, "", "v")},
		{"push with a key", wire.OpPush, 0, pushBody([]string{"q"}, "user-1", "v")},
		{"pop", wire.OpPop, 0, wire.AppendStr8(nil, "q")},
		{"consume", wire.OpConsume, 0, consumeBody("q", "", 0)},
		{"produce", wire.OpProduce, 0, append(wire.AppendStr8([]byte{1}, "q"), valuesBody("v")...)},
		{"remove channel", wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "c")},
		{"log put", wire.OpLogPut, 0, logPutBody("l", 1, "", "v")},
		{"log put with a key", wire.OpLogPut, vbOf("user-1"), logPutBody("l", 1, "user-1", "v")},
		{"log put batch", wire.OpLogPutBatch, 0, logBatchBody("l", "", logRec{1, "v"})},
	} {
		h, body := r.call(tc.op, tc.vb, tc.body)
		if h.Status != wire.StatusNotMyVBucket || string(body) != want {
			t.Errorf("%s on a standby: %v %q", tc.name, h.Status, body)
		}
	}
	// Reads need the active too; GetReplica reads the replica copy.
	if h, body := r.call(wire.OpGet, vbOf("k"), keyBody("c", "k")); h.Status != wire.StatusNotMyVBucket || string(body) != want {
		t.Fatalf("get on a standby: %v %q", h.Status, body)
	}
	if h, body := r.call(wire.OpGetReplica, vbOf("k"), keyBody("c", "k")); h.Status != wire.StatusOK || len(body) != 10 || body[8] != wire.SourceReplica || string(body[9:]) != "v" {
		t.Fatalf("GetReplica on a standby: %v %q", h.Status, body)
	}
	// A node with no copy of the vBucket does not serve its replica reads either.
	s.SetTable(vbmap.NewTable("x", standbyTable().Map(), map[string]string{"a": "10.0.0.1:7400"}))
	if h, body := r.call(wire.OpGetReplica, vbOf("k"), keyBody("c", "k")); h.Status != wire.StatusNotMyVBucket || string(body) != want {
		t.Fatalf("GetReplica on a node without a copy: %v %q", h.Status, body)
	}
	s.SetTable(nil)
	if h, _ := r.call(wire.OpPop, 0, wire.AppendStr8(nil, "q")); h.Status != wire.StatusOK {
		t.Fatalf("pop once active again: %v", h.Status)
	}
}

// TestShutdownLeavesTakenOverConnections: a connection handed to a
// takeover function belongs to it; Shutdown waits for it but does not
// break its reads (replication drains its streams meanwhile).
func TestShutdownLeavesTakenOverConnections(t *testing.T) {
	store, err := kv.New(kv.Config{VBuckets: testVBuckets})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := New(Config{VBuckets: testVBuckets, Logger: quietLogger(), NodeID: "n"}, Engines{KV: store})
	got := make(chan string, 4)
	s.HandleTakeover(wire.OpStreamOpen, func(nc net.Conn, _ wire.Header, _ []byte) {
		defer nc.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(nc, buf); err != nil {
			got <- "read failed: " + err.Error()
			return
		}
		got <- string(buf)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ln) }()
	r := dialRaw(t, ln.Addr().String())
	r.send(wire.OpStreamOpen, 0, []byte{1})
	time.Sleep(100 * time.Millisecond) // the connection is handed over
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	select {
	case g := <-got:
		t.Fatalf("the taken-over connection was disturbed by Shutdown: %s", g)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := r.nc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "hello" {
		t.Fatalf("the owner read %q", g)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-served
}
