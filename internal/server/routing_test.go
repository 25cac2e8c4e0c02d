package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/meta"
	"shoal/internal/queue"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// fakeMaps answers GetClusterMap with "map@REV" for the revision it is
// told, and counts the answers it built.
type fakeMaps struct {
	mu    sync.Mutex
	rev   uint64
	built int
	err   error
}

func (f *fakeMaps) set(rev uint64) {
	f.mu.Lock()
	f.rev = rev
	f.mu.Unlock()
}

func (f *fakeMaps) ClusterMap() ([]byte, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.built++
	return fmt.Appendf(nil, "map@%d", f.rev), f.rev, f.err
}
func (f *fakeMaps) Document() ([]byte, error)      { return []byte(`{}`), nil }
func (f *fakeMaps) Join([]byte) ([]byte, error)    { return nil, fmt.Errorf("no") }
func (f *fakeMaps) Propose([]byte) (uint64, error) { return 0, fmt.Errorf("no") }
func (f *fakeMaps) RemoveNode(string) error        { return fmt.Errorf("no") }
func (f *fakeMaps) builds() int                    { f.mu.Lock(); defer f.mu.Unlock(); return f.built }

// routed is a server with every engine and a fake cluster, and a routing
// table where node "n" is active for the vBuckets vb%3 == 0, replica for
// vb%3 == 1 and holds no copy of vb%3 == 2 (node "a" at 10.0.0.1:7400 is
// active for the others).
type routed struct {
	s    *Server
	addr string
	kv   *kv.Store
	q    *queue.Store
	log  *logstore.Store
	maps *fakeMaps
}

// roleOf is node n's state for vb in routedTable.
func roleOf(vb uint16) vbmap.State {
	switch vb % 3 {
	case 0:
		return vbmap.Active
	case 1:
		return vbmap.Replica
	}
	return vbmap.Dead
}

// routedTable is node "n"'s table at revision rev (see routed).
func routedTable(rev uint64) *vbmap.Table {
	chains := make([][]string, testVBuckets)
	for vb := range chains {
		switch roleOf(uint16(vb)) {
		case vbmap.Active:
			chains[vb] = []string{"n", "a"}
		case vbmap.Replica:
			chains[vb] = []string{"a", "n"}
		default:
			chains[vb] = []string{"a", "b"}
		}
	}
	return vbmap.NewTable("n", (*vbmap.Map)(nil).Next(rev, 1, chains), map[string]string{"a": "10.0.0.1:7400", "n": "10.0.0.2:7400"})
}

func startRouted(t testing.TB) *routed {
	t.Helper()
	store, err := kv.New(kv.Config{VBuckets: testVBuckets})
	if err != nil {
		t.Fatal(err)
	}
	qs, err := queue.Open(queue.Config{Dir: t.TempDir(), VBuckets: testVBuckets, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := logstore.Open(logstore.Config{Dir: t.TempDir(), VBuckets: testVBuckets, MaintainEvery: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rt := &routed{kv: store, q: qs, log: ls, maps: &fakeMaps{rev: 7}}
	rt.s = New(Config{VBuckets: testVBuckets, Logger: quietLogger(), NodeID: "n"}, Engines{KV: store, Queue: qs, Log: ls})
	rt.s.HandleCluster(rt.maps)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); rt.s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt.s.Shutdown(ctx)
		<-done
		store.Close()
		qs.Close()
		ls.Close()
	})
	return rt
}

// setTable applies routedTable(rev) to the server and to its engines'
// states, as a node does.
func (rt *routed) setTable(t testing.TB, rev uint64) {
	t.Helper()
	for vb := range uint16(testVBuckets) {
		st := roleOf(vb)
		for _, set := range []func(uint16, vbmap.State) error{rt.kv.SetState, rt.q.SetState, rt.log.SetState} {
			if err := set(vb, st); err != nil {
				t.Fatal(err)
			}
		}
	}
	rt.s.SetTable(routedTable(rev))
}

// keyIn returns a key of prefix whose vBucket has role st on node n.
func keyIn(prefix string, st vbmap.State) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if roleOf(vbOf(k)) == st {
			return k
		}
	}
}

// nmvb decodes a `not my vbucket` body: address, epoch, revision and the
// map bytes after them.
func nmvb(t *testing.T, b []byte) (addr string, epoch, rev uint64, m string) {
	t.Helper()
	d := wire.NewDecoder(b)
	addr, epoch, rev = string(d.Bytes8()), d.U64(), d.U64()
	if d.Err() != nil {
		t.Fatalf("malformed not my vbucket body %q", b)
	}
	return addr, epoch, rev, string(d.Rest())
}

// TestReadsNeedTheActive: Get and Exists are served for the vBuckets the
// node is active for only, GetReplica for its active and replica copies
// (saying which), and neither for a vBucket it holds no copy of.
func TestReadsNeedTheActive(t *testing.T) {
	rt := startRouted(t)
	r := dialRaw(t, rt.addr)
	keys := map[vbmap.State]string{vbmap.Active: keyIn("k", vbmap.Active), vbmap.Replica: keyIn("k", vbmap.Replica), vbmap.Dead: keyIn("k", vbmap.Dead)}
	for _, k := range keys { // a lone server holds everything
		if st := r.put("c", k, "v-"+k); st != wire.StatusOK {
			t.Fatal(st)
		}
	}
	rt.setTable(t, 7)
	for st, k := range keys {
		for _, op := range []wire.Opcode{wire.OpGet, wire.OpExists} {
			h, b := r.call(op, vbOf(k), keyBody("c", k))
			if st == vbmap.Active {
				if h.Status != wire.StatusOK {
					t.Errorf("%s of an active key: %v %q", op, h.Status, b)
				}
				continue
			}
			if h.Status != wire.StatusNotMyVBucket {
				t.Errorf("%s of a %v key: %v %q", op, st, h.Status, b)
				continue
			}
			if addr, _, rev, _ := nmvb(t, b); addr != "10.0.0.1:7400" || rev != 7 {
				t.Errorf("%s of a %v key: not my vbucket naming %s at revision %d", op, st, addr, rev)
			}
		}
		h, b := r.call(wire.OpGetReplica, vbOf(k), keyBody("c", k))
		switch st {
		case vbmap.Dead:
			if h.Status != wire.StatusNotMyVBucket {
				t.Errorf("GetReplica without a copy: %v %q", h.Status, b)
			}
		default:
			want := byte(wire.SourceActive)
			if st == vbmap.Replica {
				want = wire.SourceReplica
			}
			if h.Status != wire.StatusOK || len(b) < 9 || b[8] != want || string(b[9:]) != "v-"+k || binary.LittleEndian.Uint64(b) == 0 {
				t.Errorf("GetReplica of a %v key: %v %q", st, h.Status, b)
			}
		}
	}
	// A replica's missing key is not found; hostile bodies are refused.
	if h, _ := r.call(wire.OpGetReplica, vbOf(keys[vbmap.Replica]), keyBody("c", keys[vbmap.Replica]+"x")); h.Status != wire.StatusNotFound && h.Status != wire.StatusBadRequest {
		t.Errorf("GetReplica of a missing key: %v", h.Status)
	}
	if h, _ := r.call(wire.OpGetReplica, vbOf(keys[vbmap.Replica]), keyBody("nochannel", keys[vbmap.Replica])); h.Status != wire.StatusNotFound {
		t.Errorf("GetReplica in a missing channel: %v", h.Status)
	}
	for _, body := range [][]byte{nil, {1}, append(keyBody("c", keys[vbmap.Replica]), 0), {1, 'c', 0}} {
		if h, _ := r.call(wire.OpGetReplica, vbOf(keys[vbmap.Replica]), body); h.Status != wire.StatusBadRequest && h.Status != wire.StatusBadKey {
			t.Errorf("GetReplica of %q: %v", body, h.Status)
		}
	}
	if h, _ := r.call(wire.OpGetReplica, vbOf(keys[vbmap.Replica])+1, keyBody("c", keys[vbmap.Replica])); h.Status != wire.StatusBadRequest {
		t.Errorf("GetReplica with a wrong header vbucket: %v", h.Status)
	}
}

// TestNotMyVBucketCarriesTheMapOnce: a connection gets the map in its
// first `not my vbucket`, not in the next ones, and again once the node
// applies a new revision; a connection that was sent the revision by
// GetClusterMap or a MapNotify frame does not get it.
func TestNotMyVBucketCarriesTheMapOnce(t *testing.T) {
	rt := startRouted(t)
	rt.setTable(t, 7)
	k := keyIn("k", vbmap.Replica)
	get := func(r *raw) string {
		t.Helper()
		h, b := r.call(wire.OpGet, vbOf(k), keyBody("c", k))
		if h.Status != wire.StatusNotMyVBucket {
			t.Fatalf("get: %v", h.Status)
		}
		addr, epoch, rev, m := nmvb(t, b)
		if addr != "10.0.0.1:7400" || epoch != 1 || rev < 7 {
			t.Fatalf("not my vbucket %s epoch %d revision %d", addr, epoch, rev)
		}
		return m
	}
	r := dialRaw(t, rt.addr)
	if m := get(r); m != "map@7" {
		t.Fatalf("first not my vbucket: map %q", m)
	}
	for range 3 {
		if m := get(r); m != "" {
			t.Fatalf("a later not my vbucket: map %q", m)
		}
	}
	// A write refused the same way counts too.
	if h, b := r.call(wire.OpPut, vbOf(k), putBody("c", k, "v", 0)); h.Status != wire.StatusNotMyVBucket {
		t.Fatal(h.Status)
	} else if _, _, _, m := nmvb(t, b); m != "" {
		t.Fatalf("put after: map %q", m)
	}
	other := dialRaw(t, rt.addr)
	if m := get(other); m != "map@7" {
		t.Fatalf("another connection's first: %q", m)
	}
	// A new revision: each connection gets it once.
	rt.maps.set(9)
	rt.setTable(t, 9)
	if m := get(r); m != "map@9" {
		t.Fatalf("after revision 9: %q", m)
	}
	if m := get(r); m != "" {
		t.Fatalf("the second after revision 9: %q", m)
	}
	// GetClusterMap delivers the revision.
	fresh := dialRaw(t, rt.addr)
	if h, b := fresh.call(wire.OpGetClusterMap, 0, nil); h.Status != wire.StatusOK || string(b) != "map@9" {
		t.Fatalf("GetClusterMap: %v %q", h.Status, b)
	}
	if m := get(fresh); m != "" {
		t.Fatalf("not my vbucket after GetClusterMap: %q", m)
	}
	// Deduplicated answers do not build the map.
	if m := get(dialRaw(t, rt.addr)); m != "map@9" {
		t.Fatal(m)
	}
	before := rt.maps.builds()
	for range 5 {
		get(r)
	}
	if rt.maps.builds() != before {
		t.Fatalf("the map was built %d times for deduplicated answers", rt.maps.builds()-before)
	}
}

// TestGetClusterMapDedupe: a GetClusterMap that names the node's current
// revision (or a later one) is answered empty; an older one, or none, gets
// the map; any other body is refused.
func TestGetClusterMapDedupe(t *testing.T) {
	rt := startRouted(t)
	r := dialRaw(t, rt.addr)
	for _, c := range []struct {
		body []byte
		st   wire.Status
		want string
	}{
		{nil, wire.StatusOK, "map@7"},
		{wire.AppendU64(nil, 0), wire.StatusOK, "map@7"},
		{wire.AppendU64(nil, 6), wire.StatusOK, "map@7"},
		{wire.AppendU64(nil, 7), wire.StatusOK, ""},
		{wire.AppendU64(nil, 8), wire.StatusOK, ""},
		{[]byte{7, 0, 0}, wire.StatusBadRequest, ""},
		{append(wire.AppendU64(nil, 7), 0), wire.StatusBadRequest, ""},
	} {
		h, b := r.call(wire.OpGetClusterMap, 0, c.body)
		if h.Status != c.st || (c.st == wire.StatusOK && string(b) != c.want) {
			t.Errorf("GetClusterMap %x: %v %q, want %v %q", c.body, h.Status, b, c.st, c.want)
		}
	}
	rt.maps.mu.Lock()
	rt.maps.err = fmt.Errorf("%w: waiting for 2 more nodes", meta.ErrNotInitialized)
	rt.maps.mu.Unlock()
	if h, b := r.call(wire.OpGetClusterMap, 0, wire.AppendU64(nil, 7)); h.Status != wire.StatusBadRequest || !strings.Contains(string(b), "waiting") {
		t.Errorf("GetClusterMap before the cluster exists: %v %q", h.Status, b)
	}
}

// TestMapNotify: the stream sends the node's revision at once, then one
// frame per new revision the node applies (not for a table of the same
// revision), until stopped; a connection it told a revision gets no map
// in `not my vbucket` for it.
func TestMapNotify(t *testing.T) {
	rt := startRouted(t)
	rt.setTable(t, 7)
	r := dialRaw(t, rt.addr)
	if h, _ := r.call(wire.OpMapNotify, 0, []byte{1}); h.Status != wire.StatusBadRequest {
		t.Fatalf("MapNotify with a body: %v", h.Status)
	}
	id := r.send(wire.OpMapNotify, 0, nil)
	next := func() (wire.Header, uint64) {
		t.Helper()
		h, b := r.read()
		if h.ID != id || h.Opcode != wire.OpMapNotify {
			t.Fatalf("frame %v", h)
		}
		if h.Flags&wire.FlagMore == 0 {
			return h, 0
		}
		if len(b) != 8 {
			t.Fatalf("notice of %d bytes", len(b))
		}
		return h, binary.LittleEndian.Uint64(b)
	}
	if _, rev := next(); rev != 7 {
		t.Fatalf("first notice %d", rev)
	}
	rt.s.SetTable(routedTable(7).Override(func(_ uint16, s vbmap.State) vbmap.State { return s })) // same revision
	rt.maps.set(9)
	rt.setTable(t, 9)
	if _, rev := next(); rev != 9 {
		t.Fatalf("notice after revision 9: %d", rev)
	}
	k := keyIn("k", vbmap.Replica)
	h, b := r.call(wire.OpGet, vbOf(k), keyBody("c", k))
	if _, _, rev, m := nmvb(t, b); h.Status != wire.StatusNotMyVBucket || rev != 9 || m != "" {
		t.Fatalf("not my vbucket after the notice: %v revision %d map %q", h.Status, rev, m)
	}
	rt.s.SetTable(nil) // a lone server: revision 0
	if _, rev := next(); rev != 0 {
		t.Fatalf("notice after the table was dropped: %d", rev)
	}
	r.sendFrame(wire.OpStreamControl, 0, id, []byte{wire.StreamStop})
	if h, _ := next(); h.Status != wire.StatusStopped {
		t.Fatalf("end after stop: %v", h.Status)
	}
}

// TestFlagVBucket: a keyless Push, Produce, LogPut or LogPutBatch with
// FlagVBucket goes to the header's vBucket, which the node must be active
// for; a routing key must then agree with the header.
func TestFlagVBucket(t *testing.T) {
	rt := startRouted(t)
	rt.setTable(t, 7)
	r := dialRaw(t, rt.addr)
	call := func(op wire.Opcode, vb uint16, body []byte) (wire.Status, []byte) {
		t.Helper()
		r.id++
		b := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, Flags: wire.FlagVBucket, VBucket: vb, ID: r.id, BodyLen: uint32(len(body))})
		if _, err := r.nc.Write(append(b, body...)); err != nil {
			t.Fatal(err)
		}
		h, ans := r.read()
		if h.ID != r.id {
			t.Fatalf("answer %d to %d", h.ID, r.id)
		}
		return h.Status, ans
	}
	const active, replica = 3, 4 // 3 % 3 == 0, 4 % 3 == 1
	qBefore, lBefore := rt.q.HighSeqno(active), rt.log.HighSeqno(active)
	if st, b := call(wire.OpPush, active, pushBody([]string{"q"}, "", "v")); st != wire.StatusOK {
		t.Fatalf("push: %v %q", st, b)
	}
	if st, b := call(wire.OpProduce, active, append(wire.AppendStr8([]byte{1}, "q"), valuesBody("p1", "p2")...)); st != wire.StatusOK || binary.LittleEndian.Uint64(b) != 2 {
		t.Fatalf("produce: %v %q", st, b)
	}
	if got := rt.q.HighSeqno(active) - qBefore; got != 3 {
		t.Fatalf("queue vbucket %d took %d records, want 3", active, got)
	}
	if st, b := call(wire.OpLogPut, active, logPutBody("l", 1, "", "v")); st != wire.StatusOK {
		t.Fatalf("log put: %v %q", st, b)
	}
	if st, b := call(wire.OpLogPutBatch, active, logBatchBody("l", "", logRec{2, "a"}, logRec{3, "b"})); st != wire.StatusOK {
		t.Fatalf("log put batch: %v %q", st, b)
	}
	if got := rt.log.HighSeqno(active) - lBefore; got != 3 {
		t.Fatalf("log vbucket %d took %d records, want 3", active, got)
	}
	for _, c := range []struct {
		name string
		op   wire.Opcode
		body []byte
	}{
		{"push", wire.OpPush, pushBody([]string{"q"}, "", "v")},
		{"produce", wire.OpProduce, append(wire.AppendStr8([]byte{1}, "q"), valuesBody("p")...)},
		{"log put", wire.OpLogPut, logPutBody("l", 1, "", "v")},
		{"log put batch", wire.OpLogPutBatch, logBatchBody("l", "", logRec{1, "v"})},
	} {
		st, b := call(c.op, replica, c.body)
		if addr, _, rev, _ := nmvb(t, b); st != wire.StatusNotMyVBucket || addr != "10.0.0.1:7400" || rev != 7 {
			t.Errorf("%s to a replica vbucket: %v %q", c.name, st, b)
		}
		if st, _ := call(c.op, testVBuckets, c.body); st != wire.StatusBadRequest {
			t.Errorf("%s to vbucket %d of %d: %v", c.name, testVBuckets, testVBuckets, st)
		}
	}
	if rt.q.HighSeqno(replica) != 0 || rt.log.HighSeqno(replica) != 0 {
		t.Fatal("a refused write was stored")
	}
	// With a routing key the key decides, and the header must agree.
	key := keyIn("user-", vbmap.Active)
	if st, _ := call(wire.OpPush, vbOf(key), pushBody([]string{"q"}, key, "v")); st != wire.StatusOK {
		t.Fatalf("keyed push with its vbucket: %v", st)
	}
	if st, _ := call(wire.OpPush, vbOf(key)+3, pushBody([]string{"q"}, key, "v")); st != wire.StatusBadRequest {
		t.Fatalf("keyed push with another vbucket: %v", st)
	}
	if st, _ := call(wire.OpLogPut, vbOf(key)+3, logPutBody("l", 1, key, "v")); st != wire.StatusBadRequest {
		t.Fatalf("keyed log put with another vbucket: %v", st)
	}
	// Without the flag, the node's own round robin over its active vBuckets.
	for range testVBuckets {
		if h, _ := r.call(wire.OpPush, 0, pushBody([]string{"rr"}, "", "v")); h.Status != wire.StatusOK {
			t.Fatal(h.Status)
		}
	}
	for vb := range uint16(testVBuckets) {
		if roleOf(vb) != vbmap.Active && rt.q.HighSeqno(vb) != 0 {
			t.Fatalf("round robin pushed to vbucket %d, which is not active", vb)
		}
	}
}

// getAll runs a GetAll with flags to its end and returns the keys.
func (r *raw) getAll(ch string, flags uint8) ([]string, wire.Status) {
	r.t.Helper()
	b := wire.AppendStr8(nil, ch)
	b = wire.AppendU8(b, flags)
	b = wire.AppendU32(b, 0)
	b = wire.AppendStr8(b, "")
	b = wire.AppendBytes32(b, nil)
	id := r.send(wire.OpGetAll, 0, b)
	var keys []string
	for {
		h, body := r.read()
		if h.ID != id {
			r.t.Fatalf("frame of id %d", h.ID)
		}
		if h.Flags&wire.FlagMore == 0 {
			slices.Sort(keys)
			return keys, h.Status
		}
		d := wire.NewDecoder(body)
		n := d.U32()
		for range n {
			k := d.Bytes8()
			d.U64()
			d.Bytes32()
			keys = append(keys, string(k))
		}
		if d.Finish() != nil {
			r.t.Fatal("malformed GetAll batch")
		}
	}
}

// TestScansAndSizesOfActives: GetAll, LogRange, Mirror's refresh and the
// kv sizes cover the vBuckets the node is active for; GetAll and
// LogRange with "replica copies too" add those it holds a replica of, and
// never the others.
func TestScansAndSizesOfActives(t *testing.T) {
	rt := startRouted(t)
	r := dialRaw(t, rt.addr)
	want := map[vbmap.State][]string{}
	var wantBytes int64
	for i := range 60 {
		k := fmt.Sprintf("key-%02d", i)
		if st := r.put("c", k, "v"); st != wire.StatusOK {
			t.Fatal(st)
		}
		st := roleOf(vbOf(k))
		want[st] = append(want[st], k)
		if st == vbmap.Active {
			wantBytes += int64(len(k) + 1)
		}
		if h, _ := r.call(wire.OpLogPut, vbOf(k), logPutBody("l", uint64(i), k, k)); h.Status != wire.StatusOK {
			t.Fatal(h.Status)
		}
	}
	rt.setTable(t, 7)
	actives := want[vbmap.Active]
	both := append(slices.Clone(actives), want[vbmap.Replica]...)
	slices.Sort(both)
	if keys, st := r.getAll("c", 0); st != wire.StatusOK || !slices.Equal(keys, actives) {
		t.Fatalf("GetAll: %v %v, want %v", st, keys, actives)
	}
	if keys, st := r.getAll("c", getAllReplicas); st != wire.StatusOK || !slices.Equal(keys, both) {
		t.Fatalf("GetAll with replicas: %v %v, want %v", st, keys, both)
	}
	rangeKeys := func(flags []byte) ([]string, wire.Status) {
		id := r.send(wire.OpLogRange, 0, append(rangeReq{ch: "l", to: 1000}.body(), flags...))
		var out []string
		for {
			h, b := r.read()
			if h.ID != id {
				t.Fatalf("frame of id %d", h.ID)
			}
			if h.Flags&wire.FlagMore == 0 {
				slices.Sort(out)
				return out, h.Status
			}
			for _, rec := range decodeLogBatch(t, b).recs {
				out = append(out, rec.val)
			}
		}
	}
	if keys, st := rangeKeys(nil); st != wire.StatusOK || !slices.Equal(keys, actives) {
		t.Fatalf("LogRange: %v %v, want %v", st, keys, actives)
	}
	if keys, st := rangeKeys([]byte{0}); st != wire.StatusOK || !slices.Equal(keys, actives) {
		t.Fatalf("LogRange with flags 0: %v %v", st, keys)
	}
	if keys, st := rangeKeys([]byte{rangeReplicas}); st != wire.StatusOK || !slices.Equal(keys, both) {
		t.Fatalf("LogRange with replicas: %v %v, want %v", st, keys, both)
	}
	for _, bad := range [][]byte{{2}, {1, 0}} {
		if _, st := rangeKeys(bad); st != wire.StatusBadRequest {
			t.Fatalf("LogRange with flags %x: %v", bad, st)
		}
	}
	// Sizes: the kv records of the active vBuckets.
	h, b := r.call(wire.OpGetChannelSize, 0, wire.AppendStr8(nil, "c"))
	d := wire.NewDecoder(b)
	if kind, recs, bytes := d.U8(), d.U64(), d.U64(); h.Status != wire.StatusOK || kind != wire.KindKV || recs != uint64(len(actives)) || int64(bytes) != wantBytes {
		t.Fatalf("GetChannelSize: %v kind %d, %d records %d bytes; want %d, %d", h.Status, kind, recs, bytes, len(actives), wantBytes)
	}
	// Mirror's refresh sends the active vBuckets' records; changes of
	// other vBuckets are not sent.
	mb := wire.AppendStr8(nil, "c")
	mb = wire.AppendU8(mb, mirrorFlagsRefresh)
	id := r.send(wire.OpMirror, 0, wire.AppendU32(mb, 0))
	var refreshed []string
	for done := false; !done; {
		h, b := r.read()
		if h.ID != id || h.Flags&wire.FlagMore == 0 {
			t.Fatalf("mirror frame %v %q", h, b)
		}
		d := wire.NewDecoder(b)
		n := d.U32()
		for range n {
			typ, k := d.U8(), string(d.Bytes8())
			d.Bytes32()
			switch typ {
			case MirrorRefresh:
				refreshed = append(refreshed, k)
			case MirrorRefreshEnd:
				done = true
			}
		}
	}
	slices.Sort(refreshed)
	if !slices.Equal(refreshed, actives) {
		t.Fatalf("mirror refresh %v, want %v", refreshed, actives)
	}
	// A replica's change (as replication applies it) is not mirrored here;
	// an active's is.
	rk, ak := want[vbmap.Replica][0], actives[0]
	w := dialRaw(t, rt.addr)
	if _, err := rt.kv.Put("c", []byte(rk), []byte("changed"), 0); err != nil { // the engine does not route
		t.Fatal(err)
	}
	if st := w.put("c", ak, "changed"); st != wire.StatusOK {
		t.Fatal(st)
	}
	h, b = r.read()
	if h.ID != id || !strings.Contains(string(b), ak) || strings.Contains(string(b), rk) {
		t.Fatalf("mirror change %q: want %s only", b, ak)
	}
}

// FuzzRoutedConnection feeds arbitrary bytes to a connection of a server
// with a routing table and the cluster requests: `not my vbucket` with
// and without the map, GetClusterMap bodies, MapNotify, FlagVBucket
// writes and GetReplica. The node answers or closes without panicking and
// goes on serving.
func FuzzRoutedConnection(f *testing.F) {
	k := keyIn("k", vbmap.Replica)
	f.Add(frame(wire.OpGet, vbOf(k), 1, keyBody("c", k)))
	f.Add(frame(wire.OpGetReplica, vbOf(k), 2, keyBody("c", k)))
	f.Add(frame(wire.OpGetClusterMap, 0, 3, wire.AppendU64(nil, 7)))
	f.Add(frame(wire.OpMapNotify, 0, 4, nil))
	f.Add(append(wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: wire.OpLogPut, Flags: wire.FlagVBucket, VBucket: 3, ID: 5, BodyLen: uint32(len(logPutBody("l", 1, "", "v")))}), logPutBody("l", 1, "", "v")...))
	f.Add(frame(wire.OpLogRange, 0, 6, append(rangeReq{ch: "l", to: 9}.body(), 1)))
	rt := startRouted(f)
	rt.setTable(f, 7)
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", rt.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(data)
		nc.(*net.TCPConn).CloseWrite()
		// A MapNotify stream never ends by itself: read what comes for a
		// while, then close.
		nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		io.Copy(io.Discard, nc)
		nc.Close()
		r := dialRaw(t, rt.addr)
		if h, _ := r.call(wire.OpGetClusterMap, 0, nil); h.Status != wire.StatusOK {
			t.Fatalf("node not serving after input %q: %v", data, h.Status)
		}
		r.nc.Close()
	})
}
