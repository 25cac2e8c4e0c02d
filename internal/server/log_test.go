package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/vfs"
	"shoal/internal/wire"
)

// logServer is a server with a kv and a log engine; the log engine's files
// go through a disk quota and an fsync delay the test controls.
type logServer struct {
	*testServer
	log       *logstore.Store
	quota     *vfs.DiskQuota
	syncDelay atomic.Int64 // nanoseconds each fsync of a segment takes
}

func startLogServer(t testing.TB, cfg Config) *logServer {
	t.Helper()
	ls := &logServer{quota: vfs.NewDiskQuota(1 << 62)}
	fsys := vfs.Faulty(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, path string, n int) (int, error) {
		if op == vfs.OpSync && strings.HasSuffix(path, ".seg") {
			time.Sleep(time.Duration(ls.syncDelay.Load()))
		}
		return ls.quota.Inject(op, path, n)
	}))
	var err error
	ls.log, err = logstore.Open(logstore.Config{Dir: t.TempDir(), FS: fsys, VBuckets: testVBuckets,
		MaxValueSize: 1000, MaintainEvery: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	store, err := kv.New(kv.Config{VBuckets: testVBuckets})
	if err != nil {
		t.Fatal(err)
	}
	cfg.VBuckets, cfg.MaxValueSize, cfg.NodeID, cfg.Logger = testVBuckets, 1000, "log-node", quietLogger()
	ls.testServer = &testServer{kv: store, s: New(cfg, Engines{KV: store, Log: ls.log})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); ls.s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ls.s.Shutdown(ctx)
		<-done
		ls.log.Close()
		store.Close()
	})
	return ls
}

func logPutBody(ch string, ts uint64, key, val string) []byte {
	b := wire.AppendStr8(nil, ch)
	b = wire.AppendU64(b, ts)
	b = wire.AppendStr8(b, key)
	return append(b, val...)
}

type logRec struct {
	ts  uint64
	val string
}

func logBatchBody(ch, key string, recs ...logRec) []byte {
	b := wire.AppendStr8(nil, ch)
	b = wire.AppendStr8(b, key)
	b = wire.AppendU32(b, uint32(len(recs)))
	for _, r := range recs {
		b = wire.AppendU64(b, r.ts)
		b = wire.AppendBytes32(b, []byte(r.val))
	}
	return b
}

// rangeReq describes a LogRange request.
type rangeReq struct {
	ch          string
	from, to    uint64
	mode        uint8
	filter      string
	credit      uint32
	afterTs, at uint64
}

func (q rangeReq) body() []byte {
	b := wire.AppendStr8(nil, q.ch)
	b = wire.AppendU64(b, q.from)
	b = wire.AppendU64(b, q.to)
	b = wire.AppendU8(b, q.mode)
	b = wire.AppendBytes32(b, []byte(q.filter))
	b = wire.AppendU32(b, q.credit)
	b = wire.AppendU64(b, q.afterTs)
	return wire.AppendU64(b, q.at)
}

// logBatch is one decoded LogRange batch.
type logBatch struct {
	recs       []logRec
	posTs, pos uint64
}

func decodeLogBatch(t testing.TB, body []byte) logBatch {
	t.Helper()
	d := wire.NewDecoder(body)
	n := d.U32()
	var lb logBatch
	for range n {
		lb.recs = append(lb.recs, logRec{d.U64(), string(d.Bytes32())})
	}
	lb.posTs, lb.pos = d.U64(), d.U64()
	if err := d.Finish(); err != nil {
		t.Fatalf("malformed LogRange batch: %v", err)
	}
	return lb
}

// logRange runs a LogRange to its end and returns its batches and the
// final status.
func (r *raw) logRange(q rangeReq) ([]logBatch, wire.Status, string) {
	r.t.Helper()
	id := r.send(wire.OpLogRange, 0, q.body())
	var out []logBatch
	for {
		h, b := r.read()
		if h.ID != id {
			r.t.Fatalf("frame for id %d during a range of id %d", h.ID, id)
		}
		if h.Flags&wire.FlagMore == 0 {
			return out, h.Status, string(b)
		}
		out = append(out, decodeLogBatch(r.t, b))
	}
}

func values(bs []logBatch) []string {
	var out []string
	for _, b := range bs {
		for _, r := range b.recs {
			out = append(out, fmt.Sprintf("%d:%s", r.ts, r.val))
		}
	}
	return out
}

func TestLogRequests(t *testing.T) {
	ls := startLogServer(t, Config{})
	r := dialRaw(t, ls.addr)
	put := func(ts uint64, v string) {
		t.Helper()
		if h, msg := r.call(wire.OpLogPut, 0, logPutBody("events", ts, "", v)); h.Status != wire.StatusOK || len(msg) != 0 {
			t.Fatalf("LogPut: %v %q", h.Status, msg)
		}
	}
	put(20, "b-first")
	put(10, "a")
	put(20, "b-second")
	h, b := r.call(wire.OpLogPutBatch, 0, logBatchBody("events", "", logRec{30, "c-error"}, logRec{20, "b-third"}, logRec{5, "z"}))
	if h.Status != wire.StatusOK || binary.LittleEndian.Uint32(b) != 3 {
		t.Fatalf("LogPutBatch: %v %q", h.Status, b)
	}
	// A routing key puts every record in its vBucket (carried in the header).
	h, b = r.call(wire.OpLogPut, vbOf("user-7"), logPutBody("events", 40, "user-7", "keyed"))
	if h.Status != wire.StatusOK {
		t.Fatalf("LogPut with a routing key: %v %s", h.Status, b)
	}

	want := []string{"5:z", "10:a", "20:b-first", "20:b-second", "20:b-third", "30:c-error", "40:keyed"}
	bs, st, msg := r.logRange(rangeReq{ch: "events", to: ^uint64(0)})
	if got := values(bs); st != wire.StatusOK || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("whole range: %v %s %v", st, msg, got)
	}
	if last := bs[len(bs)-1]; last.posTs != 40 || last.pos != 1 {
		t.Fatalf("position after the last batch: %d/%d", last.posTs, last.pos)
	}
	for _, c := range []struct {
		q    rangeReq
		want string
	}{
		{rangeReq{ch: "events", from: 10, to: 20}, "10:a 20:b-first 20:b-second 20:b-third"},
		{rangeReq{ch: "events", from: 20, to: 20, mode: 1, filter: "second"}, "20:b-second"},
		{rangeReq{ch: "events", to: 100, mode: 2, filter: "^b-(first|third)$"}, "20:b-first 20:b-third"},
		{rangeReq{ch: "events", to: 100, mode: 2, filter: "(?i)ERROR"}, "30:c-error"},
		{rangeReq{ch: "events", from: 11, to: 19}, ""},
		{rangeReq{ch: "nothing", to: 100}, ""},
	} {
		bs, st, msg := r.logRange(c.q)
		if got := strings.Join(values(bs), " "); st != wire.StatusOK || got != c.want {
			t.Fatalf("range %+v: %v %s %q, want %q", c.q, st, msg, got, c.want)
		}
	}

	// Channel-generic requests see the log channel.
	h, b = r.call(wire.OpGetChannelSize, 0, wire.AppendStr8(nil, "events"))
	d := wire.NewDecoder(b)
	if h.Status != wire.StatusOK || d.U8() != wire.KindLog || d.U64() != 7 || d.U64() != uint64(len("b-firstab-secondc-errorb-thirdzkeyed")) {
		t.Fatalf("GetChannelSize: %v %v", h.Status, b)
	}
	r.put("kvchan", "k", "v")
	h, b = r.call(wire.OpGetChannels, 0, nil)
	d = wire.NewDecoder(b)
	if h.Status != wire.StatusOK || d.U32() != 2 || d.U8() != wire.KindLog || string(d.Bytes8()) != "events" ||
		d.U8() != wire.KindKV || string(d.Bytes8()) != "kvchan" { // sorted by name
		t.Fatalf("GetChannels: %v %q", h.Status, b)
	}
	h, b = r.call(wire.OpGetSize, 0, nil)
	if h.Status != wire.StatusOK || binary.LittleEndian.Uint64(b) != 8 {
		t.Fatalf("GetSize: %v %v", h.Status, b)
	}
	h, b = r.call(wire.OpHello, 0, []byte{1, 't', 1, 0, 0, 0, 0, 0})
	d = wire.NewDecoder(b)
	d.Bytes8()
	d.Bytes8()
	d.U16()
	if f := d.U32(); h.Status != wire.StatusOK || f&FeatureLog == 0 || f&FeatureKV == 0 {
		t.Fatalf("Hello features %#x (%v)", f, h.Status)
	}
	if h, _ := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "events")); h.Status != wire.StatusOK {
		t.Fatalf("RemoveChannel: %v", h.Status)
	}
	if bs, st, _ := r.logRange(rangeReq{ch: "events", to: 100}); st != wire.StatusOK || len(bs) != 0 {
		t.Fatalf("range after RemoveChannel: %v %v", st, values(bs))
	}
	if _, ok := ls.log.ChannelSize("events"); ok {
		t.Fatal("the engine still has the removed channel")
	}
}

// TestLogBadInput sends every bad log request of the issue: each gets its
// status, nothing of it is stored, and the connection keeps serving.
func TestLogBadInput(t *testing.T) {
	ls := startLogServer(t, Config{})
	r := dialRaw(t, ls.addr)
	r.put("kvchan", "k", "v")
	big := strings.Repeat("x", 1001)
	for _, c := range []struct {
		name string
		op   wire.Opcode
		vb   uint16
		body []byte
		want wire.Status
	}{
		{"from after to", wire.OpLogRange, 0, rangeReq{ch: "c", from: 2, to: 1}.body(), wire.StatusBadRange},
		{"bad regexp", wire.OpLogRange, 0, rangeReq{ch: "c", to: 1, mode: 2, filter: "a(b"}.body(), wire.StatusBadFilter},
		{"regexp over the limit", wire.OpLogRange, 0, rangeReq{ch: "c", to: 1, mode: 2, filter: strings.Repeat("a", logstore.MaxRegexpLen+1)}.body(), wire.StatusBadFilter},
		{"unknown filter mode", wire.OpLogRange, 0, rangeReq{ch: "c", to: 1, mode: 9}.body(), wire.StatusBadRequest},
		{"truncated range", wire.OpLogRange, 0, rangeReq{ch: "c", to: 1}.body()[:20], wire.StatusBadRequest},
		{"range of a kv channel", wire.OpLogRange, 0, rangeReq{ch: "kvchan", to: 1}.body(), wire.StatusWrongKind},
		{"value over the limit", wire.OpLogPut, 0, logPutBody("c", 1, "", big), wire.StatusValueTooBig},
		{"body far over the limit", wire.OpLogPut, 0, logPutBody("c", 1, "", strings.Repeat("x", 100000)), wire.StatusValueTooBig},
		{"batch record over the limit", wire.OpLogPutBatch, 0, logBatchBody("c", "", logRec{1, "ok"}, logRec{2, big}), wire.StatusValueTooBig},
		{"bad channel name", wire.OpLogPut, 0, logPutBody("bad name", 1, "", "v"), wire.StatusBadChannelName},
		{"put to a kv channel", wire.OpLogPut, 0, logPutBody("kvchan", 1, "", "v"), wire.StatusWrongKind},
		{"truncated put", wire.OpLogPut, 0, []byte{1, 'c', 0, 0}, wire.StatusBadRequest},
		{"routing key in another vbucket", wire.OpLogPut, vbOf("key") + 1, logPutBody("c", 1, "key", "v"), wire.StatusBadRequest},
		{"batch count beyond the body", wire.OpLogPutBatch, 0, append(wire.AppendStr8(wire.AppendStr8(nil, "c"), ""), 5, 0, 0, 0), wire.StatusBadRequest},
		{"batch claiming 4G records", wire.OpLogPutBatch, 0, append(wire.AppendStr8(wire.AppendStr8(nil, "c"), ""), 255, 255, 255, 255, 1, 2, 3), wire.StatusBadRequest},
		{"batch with a truncated record", wire.OpLogPutBatch, 0, logBatchBody("c", "", logRec{1, "ok"}, logRec{2, "cut"})[:40], wire.StatusBadRequest},
		{"batch with trailing bytes", wire.OpLogPutBatch, 0, append(logBatchBody("c", "", logRec{1, "ok"}), 0), wire.StatusBadRequest},
	} {
		h, msg := r.call(c.op, c.vb, c.body)
		if h.Status != c.want {
			t.Fatalf("%s: status %v (%s), want %v", c.name, h.Status, msg, c.want)
		}
	}
	if _, ok := ls.log.ChannelSize("c"); ok {
		t.Fatal("a refused request stored records")
	}
	if h, _ := r.call(wire.OpLogPut, 0, logPutBody("c", 1, "", "fine")); h.Status != wire.StatusOK {
		t.Fatalf("after bad input: %v", h.Status)
	}
}

// TestLogDiskFull fills the disk: appends are refused with "no space",
// what was stored stays readable, and appends work again once there is
// room.
func TestLogDiskFull(t *testing.T) {
	ls := startLogServer(t, Config{})
	r := dialRaw(t, ls.addr)
	if h, _ := r.call(wire.OpLogPut, 0, logPutBody("full", 1, "", "stored-before")); h.Status != wire.StatusOK {
		t.Fatalf("first put: %v", h.Status)
	}
	ls.quota.SetLimit(ls.quota.Written() + 10) // less than one frame
	h, msg := r.call(wire.OpLogPut, 0, logPutBody("full", 2, "", "refused"))
	if h.Status != wire.StatusNoSpace || !strings.Contains(string(msg), "no space") {
		t.Fatalf("put on a full disk: %v %s", h.Status, msg)
	}
	h, _ = r.call(wire.OpLogPutBatch, 0, logBatchBody("full", "", logRec{3, "refused-1"}, logRec{4, "refused-2"}))
	if h.Status != wire.StatusNoSpace {
		t.Fatalf("batch on a full disk: %v", h.Status)
	}
	if bs, st, _ := r.logRange(rangeReq{ch: "full", to: 100}); st != wire.StatusOK || strings.Join(values(bs), " ") != "1:stored-before" {
		t.Fatalf("range on a full disk: %v %v", st, values(bs))
	}
	ls.quota.SetLimit(1 << 62)
	if h, _ := r.call(wire.OpLogPut, 0, logPutBody("full", 5, "", "after")); h.Status != wire.StatusOK {
		t.Fatalf("put after space came back: %v", h.Status)
	}
	if bs, _, _ := r.logRange(rangeReq{ch: "full", to: 100}); strings.Join(values(bs), " ") != "1:stored-before 5:after" {
		t.Fatalf("range after space came back: %v", values(bs))
	}
}

// TestLogRangeFlowAndResume reads a range with a small credit, granting
// more as batches arrive, then resumes from the position of a middle
// batch: the resumed read returns exactly the rest.
func TestLogRangeFlowAndResume(t *testing.T) {
	ls := startLogServer(t, Config{})
	r := dialRaw(t, ls.addr)
	var recs []logRec
	for i := range 3000 {
		recs = append(recs, logRec{uint64(i / 100), fmt.Sprintf("v%04d-%s", i, strings.Repeat("x", 100))})
	}
	if h, _ := r.call(wire.OpLogPutBatch, 0, logBatchBody("f", "", recs...)); h.Status != wire.StatusOK {
		t.Fatalf("batch: %v", h.Status)
	}
	id := r.send(wire.OpLogRange, 0, rangeReq{ch: "f", to: 1000, credit: 1}.body())
	var bs []logBatch
	for {
		h, b := r.read()
		if h.Flags&wire.FlagMore == 0 {
			if h.Status != wire.StatusOK {
				t.Fatalf("end of range: %v %s", h.Status, b)
			}
			break
		}
		bs = append(bs, decodeLogBatch(t, b))
		// One batch per grant: the first frame overshot credit 1 by its
		// length less one; giving back what arrived allows one more.
		r.nc.Write(frame(wire.OpStreamControl, 0, id, wire.AppendU32([]byte{wire.StreamCredit}, uint32(len(b)))))
	}
	all := values(bs)
	if len(bs) < 3 || len(all) != 3000 {
		t.Fatalf("%d batches, %d records", len(bs), len(all))
	}
	mid := bs[len(bs)/2]
	rest, st, _ := r.logRange(rangeReq{ch: "f", to: 1000, afterTs: mid.posTs, at: mid.pos})
	var before int
	for _, b := range bs[:len(bs)/2+1] {
		before += len(b.recs)
	}
	if got := values(rest); st != wire.StatusOK || strings.Join(got, " ") != strings.Join(all[before:], " ") {
		t.Fatalf("resumed from %d/%d: %d records, want %d", mid.posTs, mid.pos, len(got), len(all)-before)
	}
}

// TestLogAppendsDoNotBlockTheConnection makes every fsync take 300 ms: a
// request pipelined behind an append is answered before the append, and
// appends pipelined together share one fsync.
func TestLogAppendsDoNotBlockTheConnection(t *testing.T) {
	ls := startLogServer(t, Config{})
	r := dialRaw(t, ls.addr)
	if h, _ := r.call(wire.OpLogPut, 0, logPutBody("slow", 1, "", "first")); h.Status != wire.StatusOK {
		t.Fatal(h.Status)
	}
	ls.syncDelay.Store(int64(300 * time.Millisecond))
	fsyncs := ls.log.Stats().Fsyncs
	var buf []byte
	for i := 1; i <= 20; i++ {
		buf = append(buf, frame(wire.OpLogPut, 0, uint32(i), logPutBody("slow", 2, "", fmt.Sprint("v", i)))...)
	}
	buf = append(buf, frame(wire.OpNoop, 0, 100, nil)...)
	start := time.Now()
	r.nc.Write(buf)
	h, _ := r.read()
	if h.ID != 100 || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("first answer: id %d after %v; want the Noop before the appends' fsync", h.ID, time.Since(start))
	}
	for range 20 {
		if h, msg := r.read(); h.Status != wire.StatusOK || h.ID > 20 {
			t.Fatalf("append answer: %v %v %s", h.ID, h.Status, msg)
		}
	}
	if n := ls.log.Stats().Fsyncs - fsyncs; n > 4 {
		t.Fatalf("20 pipelined appends took %d fsyncs; group commit should share them", n)
	}
}

// TestLogShutdownWaitsForAppends shuts the server down while appends wait
// for a slow fsync: every one is answered before the connection closes.
func TestLogShutdownWaitsForAppends(t *testing.T) {
	ls := startLogServer(t, Config{})
	r := dialRaw(t, ls.addr)
	ls.syncDelay.Store(int64(200 * time.Millisecond))
	var buf []byte
	for i := 1; i <= 30; i++ {
		buf = append(buf, frame(wire.OpLogPut, 0, uint32(i), logPutBody("sd", 1, "", fmt.Sprint("v", i)))...)
	}
	buf = append(buf, frame(wire.OpNoop, 0, 100, nil)...)
	r.nc.Write(buf)
	if h, _ := r.read(); h.ID != 100 {
		t.Fatalf("first answer %d, want the Noop", h.ID)
	}
	go ls.s.Shutdown(t.Context())
	for range 30 {
		if h, msg := r.read(); h.Status != wire.StatusOK {
			t.Fatalf("append answered %v %s during shutdown", h.Status, msg)
		}
	}
	if !r.closed() {
		t.Fatal("connection not closed by shutdown")
	}
	if cs, _ := ls.log.ChannelSize("sd"); cs.Records != 30 {
		t.Fatalf("%d records stored", cs.Records)
	}
}

// FuzzLogConnection feeds arbitrary bytes, seeded with log requests, to a
// server with a log engine: it answers or closes, never panics, and keeps
// serving.
func FuzzLogConnection(f *testing.F) {
	f.Add(frame(wire.OpLogPut, 0, 1, logPutBody("c", 1, "", "v")))
	f.Add(frame(wire.OpLogPutBatch, 0, 2, logBatchBody("c", "k", logRec{1, "a"}, logRec{2, "b"})))
	f.Add(frame(wire.OpLogRange, 0, 3, rangeReq{ch: "c", to: 10, mode: 2, filter: "a|b"}.body()))
	f.Add(frame(wire.OpLogRange, 0, 4, rangeReq{ch: "c", to: 10, mode: 1, filter: "a", credit: 1, afterTs: 1, at: 1}.body()))
	ls := startLogServer(f, Config{FrameTimeout: 200 * time.Millisecond})
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", ls.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(data)
		nc.(*net.TCPConn).CloseWrite()
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64<<10)
		for {
			if _, err := nc.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("node did not close the connection after input %q", data)
				}
				break
			}
		}
		r := dialRaw(t, ls.addr)
		if h, _ := r.call(wire.OpLogPut, 0, logPutBody("alive", 1, "", "v")); h.Status != wire.StatusOK {
			t.Fatalf("node not serving after input %q: %v", data, h.Status)
		}
		r.nc.Close()
	})
}

// TestLogAppendsRecycleGroups appends from several connections at once,
// each writing many pipelined LogPuts and LogPutBatches to alternating
// channels (so that every read batch holds several groups, some larger
// than a slab), and reads every record back: a group's memory is reused
// only after its records are stored, never while another group uses it.
func TestLogAppendsRecycleGroups(t *testing.T) {
	ls := startLogServer(t, Config{})
	const conns, rounds, perBatch = 4, 30, 200
	want := map[string]map[string]bool{"even": {}, "odd": {}}
	value := func(c, round, i int) string {
		n := (c*97 + round*31 + i*13) % 900 // batches over the read buffer's size
		if round%3 == 0 {
			n %= 40 // batches within it
		}
		return fmt.Sprintf("c%d-r%d-i%d-", c, round, i) + strings.Repeat(string(rune('a'+(c+round+i)%26)), n)
	}
	var frames [conns][]byte
	var requests [conns]int
	for c := range conns {
		r := &raw{}
		for round := range rounds {
			ch := [2]string{"even", "odd"}[round%2]
			var recs []logRec
			for i := range perBatch {
				v := value(c, round, i)
				recs = append(recs, logRec{uint64(round + 1), v})
				want[ch][fmt.Sprintf("%d:%s", round+1, v)] = true
			}
			r.id++
			frames[c] = append(frames[c], frame(wire.OpLogPutBatch, 0, r.id, logBatchBody(ch, "", recs...))...)
			v := value(c, round, perBatch)
			want[ch][fmt.Sprintf("%d:%s", round+1, v)] = true
			r.id++
			frames[c] = append(frames[c], frame(wire.OpLogPut, 0, r.id, logPutBody(ch, uint64(round+1), "", v))...)
		}
		requests[c] = int(r.id)
	}
	errs := make(chan error, conns)
	for c := range conns {
		r := dialRaw(t, ls.addr)
		go func() {
			if _, err := r.nc.Write(frames[c]); err != nil {
				errs <- err
				return
			}
			r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			for range requests[c] {
				var hb [wire.HeaderLen]byte
				if _, err := io.ReadFull(r.br, hb[:]); err != nil {
					errs <- err
					return
				}
				h, _ := wire.ParseHeader(hb[:])
				body := make([]byte, h.BodyLen)
				if _, err := io.ReadFull(r.br, body); err != nil {
					errs <- err
					return
				}
				if h.Status != wire.StatusOK {
					errs <- fmt.Errorf("append %d: %v %s", h.ID, h.Status, body)
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	r := dialRaw(t, ls.addr)
	for ch, w := range want {
		bs, st, msg := r.logRange(rangeReq{ch: ch, to: ^uint64(0), credit: 1 << 30})
		got := values(bs)
		if st != wire.StatusOK || len(got) != len(w) {
			t.Fatalf("channel %s: %v %s, %d records, want %d", ch, st, msg, len(got), len(w))
		}
		for _, v := range got {
			if !w[v] {
				t.Fatalf("channel %s holds a record that was not appended (reused memory?): %.60q", ch, v)
			}
			delete(w, v)
		}
	}
}
