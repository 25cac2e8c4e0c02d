package server

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shoal/internal/queue"
	"shoal/internal/vfs"
	"shoal/internal/wire"
)

func pushBody(channels []string, key, value string) []byte {
	b := wire.AppendU8(nil, uint8(len(channels)))
	for _, ch := range channels {
		b = wire.AppendStr8(b, ch)
	}
	b = wire.AppendStr8(b, key)
	return append(b, value...)
}

func (r *raw) push(value string, channels ...string) wire.Status {
	r.t.Helper()
	h, _ := r.call(wire.OpPush, 0, pushBody(channels, "", value))
	return h.Status
}

// pushToConsumer pushes value to channel, which the stream with id
// consumes, and returns the stream's batch: the push's answer and the
// batch may come in either order (the stream's goroutine and the
// connection's reader both write to the connection).
func (r *raw) pushToConsumer(value, channel string, id uint32) []byte {
	r.t.Helper()
	pid := r.send(wire.OpPush, 0, pushBody([]string{channel}, "", value))
	var batch []byte
	for got := 0; got < 2; got++ {
		h, b := r.read()
		switch {
		case h.ID == pid && h.Status == wire.StatusOK:
		case h.ID == id && h.Status == wire.StatusOK:
			batch = b
		default:
			r.t.Fatalf("pushing to a consumer: answer %v", h)
		}
	}
	return batch
}

func (r *raw) pop(ch string) (wire.Status, string) {
	r.t.Helper()
	h, b := r.call(wire.OpPop, 0, wire.AppendStr8(nil, ch))
	return h.Status, string(b)
}

func consumeBody(ch, sub string, credit uint32) []byte {
	return wire.AppendU32(wire.AppendStr8(wire.AppendStr8(nil, ch), sub), credit)
}

// sendFrame writes one frame with the given flags and request id.
func (r *raw) sendFrame(op wire.Opcode, flags byte, id uint32, body []byte) {
	r.t.Helper()
	b := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, Flags: flags, ID: id, BodyLen: uint32(len(body))})
	if _, err := r.nc.Write(append(b, body...)); err != nil {
		r.t.Fatal(err)
	}
}

// batchValues decodes a Consume batch or Produce frame: u32 n, n × bytes32.
func batchValues(t *testing.T, body []byte) []string {
	t.Helper()
	d := wire.NewDecoder(body)
	n := d.U32()
	var out []string
	for range n {
		out = append(out, string(d.Bytes32()))
	}
	if d.Finish() != nil {
		t.Fatalf("malformed batch %q", body)
	}
	return out
}

func valuesBody(values ...string) []byte {
	b := wire.AppendU32(nil, uint32(len(values)))
	for _, v := range values {
		b = wire.AppendBytes32(b, []byte(v))
	}
	return b
}

// queueEntry is one entry of a Queues answer.
type queueEntry struct {
	channel, subscriber                                                string
	subscribed                                                         bool
	records, bytes, memRecords, memBytes, ofRecords, ofBytes, ringSize uint64
	fullness                                                           uint8
	consumers                                                          uint16
}

func (r *raw) queues() []queueEntry {
	r.t.Helper()
	h, b := r.call(wire.OpQueues, 0, nil)
	if h.Status != wire.StatusOK {
		r.t.Fatalf("Queues: %v %s", h.Status, b)
	}
	d := wire.NewDecoder(b)
	out := make([]queueEntry, d.U32())
	for i := range out {
		e := &out[i]
		e.channel, e.subscribed, e.subscriber = string(d.Bytes8()), d.U8() == 1, string(d.Bytes8())
		e.records, e.bytes, e.memRecords, e.memBytes = d.U64(), d.U64(), d.U64(), d.U64()
		e.ofRecords, e.ofBytes, e.ringSize = d.U64(), d.U64(), d.U64()
		e.fullness, e.consumers = d.U8(), d.U16()
	}
	if err := d.Finish(); err != nil {
		r.t.Fatalf("malformed Queues answer: %v", err)
	}
	return out
}

func TestQueuePushPop(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	for i := range 3 {
		if st := r.push(fmt.Sprint("v", i), "jobs"); st != wire.StatusOK {
			t.Fatalf("push: %v", st)
		}
	}
	// One push to three channels, one of them named twice, with a routing key.
	h, msg := r.call(wire.OpPush, 0, pushBody([]string{"a", "b", "a"}, "user-42", "multi"))
	if h.Status != wire.StatusOK || len(msg) != 0 {
		t.Fatalf("push to three channels: %v %q", h.Status, msg)
	}
	for i := range 3 {
		if st, v := r.pop("jobs"); st != wire.StatusOK || v != fmt.Sprint("v", i) {
			t.Fatalf("pop %d: %v %q", i, st, v)
		}
	}
	if st, _ := r.pop("jobs"); st != wire.StatusEmpty {
		t.Fatalf("pop of an empty queue: %v", st)
	}
	if st, _ := r.pop("nosuchchannel"); st != wire.StatusEmpty {
		t.Fatalf("pop of an unknown channel: %v", st)
	}
	h, b := r.call(wire.OpGetChannelSize, 0, wire.AppendStr8(nil, "a"))
	d := wire.NewDecoder(b)
	if h.Status != wire.StatusOK || d.U8() != wire.KindQueue || d.U64() != 2 || d.U64() != 10 {
		t.Fatalf("GetChannelSize of a queue channel: %v %v", h.Status, b)
	}
	h, b = r.call(wire.OpGetChannels, 0, nil)
	d = wire.NewDecoder(b)
	if d.U32() != 3 {
		t.Fatalf("GetChannels: %v %q", h.Status, b)
	}
	for _, want := range []string{"a", "b", "jobs"} {
		if k, name := d.U8(), string(d.Bytes8()); k != wire.KindQueue || name != want {
			t.Fatalf("GetChannels entry: kind %d %q, want queue %q", k, name, want)
		}
	}
	h, b = r.call(wire.OpGetSize, 0, nil)
	if h.Status != wire.StatusOK || binary.LittleEndian.Uint64(b) != 3 {
		t.Fatalf("GetSize: %v %v", h.Status, b)
	}
	qs := r.queues()
	if len(qs) != 3 || qs[0].channel != "a" || qs[0].records != 2 || qs[0].bytes != 10 || qs[0].memRecords != 2 ||
		qs[0].ofRecords != 0 || qs[0].ringSize != queue.DefaultRingSize || qs[2].channel != "jobs" || qs[2].records != 0 {
		t.Fatalf("Queues: %+v", qs)
	}
	if h, _ := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "a")); h.Status != wire.StatusOK {
		t.Fatalf("RemoveChannel: %v", h.Status)
	}
	if st, _ := r.pop("a"); st != wire.StatusEmpty {
		t.Fatalf("pop after RemoveChannel: %v", st)
	}
	// The name is free again, for any kind.
	if st := r.put("a", "k", "v"); st != wire.StatusOK {
		t.Fatalf("kv put on a removed queue channel: %v", st)
	}
}

// TestQueueBadInput covers the bad requests of the issue; each gets its
// status, stores nothing and the connection keeps serving.
func TestQueueBadInput(t *testing.T) {
	ts := startServerWith(t, Config{MaxValueSize: 64 << 10}, queue.Config{RingSize: 4 << 10})
	r := dialRaw(t, ts.addr)
	if st := r.put("kvchan", "k", "v"); st != wire.StatusOK {
		t.Fatal(st)
	}
	f := func(name string, op wire.Opcode, body []byte, want wire.Status) {
		t.Helper()
		h, msg := r.call(op, 0, body)
		if h.Status != want {
			t.Fatalf("%s: status %v (%s), want %v", name, h.Status, msg, want)
		}
	}
	f("empty channel list", wire.OpPush, pushBody(nil, "", "v"), wire.StatusBadRequest)
	f("empty body", wire.OpPush, nil, wire.StatusBadRequest)
	// 256 channels do not fit the count byte: a client that writes 256
	// as a u8 sends 0, which is refused.
	many := make([]string, 256)
	for i := range many {
		many[i] = fmt.Sprint("c", i)
	}
	f("256 channels", wire.OpPush, pushBody(many, "", "v"), wire.StatusBadRequest)
	f("count larger than the names", wire.OpPush, []byte{3, 1, 'a', 1, 'b'}, wire.StatusBadRequest)
	f("no routing key", wire.OpPush, []byte{1, 1, 'a'}, wire.StatusBadRequest)
	f("bad channel name", wire.OpPush, pushBody([]string{"fresh", "bad name"}, "", "v"), wire.StatusBadChannelName)
	f("kv channel", wire.OpPush, pushBody([]string{"fresh", "kvchan"}, "", "v"), wire.StatusWrongKind)
	f("value over --max-value-size", wire.OpPush, pushBody([]string{"fresh"}, "", strings.Repeat("x", 64<<10+1)), wire.StatusValueTooBig)
	f("body over the limit", wire.OpPush, pushBody([]string{"fresh"}, "", strings.Repeat("x", 200<<10)), wire.StatusValueTooBig)
	f("pop of a kv channel", wire.OpPop, wire.AppendStr8(nil, "kvchan"), wire.StatusWrongKind)
	f("pop with trailing bytes", wire.OpPop, append(wire.AppendStr8(nil, "fresh"), 0), wire.StatusBadRequest)
	f("pop of a bad name", wire.OpPop, wire.AppendStr8(nil, "bad name"), wire.StatusBadChannelName)
	f("consume of a kv channel", wire.OpConsume, consumeBody("kvchan", "", 0), wire.StatusWrongKind)
	f("consume with a bad subscriber", wire.OpConsume, consumeBody("fresh", "bad sub", 0), wire.StatusBadRequest)
	f("malformed consume", wire.OpConsume, wire.AppendStr8(nil, "fresh"), wire.StatusBadRequest)
	f("produce without channels", wire.OpProduce, append([]byte{0}, valuesBody("v")...), wire.StatusBadRequest)
	// Nothing was stored, and no channel was claimed by a refused push.
	if len(r.queues()) != 0 {
		t.Fatalf("queues after refused requests: %+v", r.queues())
	}
	if st := r.put("fresh", "k", "v"); st != wire.StatusOK {
		t.Fatalf("a refused push claimed the channel: %v", st)
	}
	// A record larger than the 4 KiB ring goes to the overflow, in order.
	big := strings.Repeat("B", 10<<10)
	for _, v := range []string{"small1", big, "small2"} {
		if st := r.push(v, "q"); st != wire.StatusOK {
			t.Fatalf("push of %d bytes: %v", len(v), st)
		}
	}
	if qs := r.queues(); len(qs) != 1 || qs[0].records != 3 || qs[0].ofRecords != 2 || qs[0].ringSize != 4<<10 {
		t.Fatalf("after a record larger than the ring: %+v", qs)
	}
	for _, want := range []string{"small1", big, "small2"} {
		if st, v := r.pop("q"); st != wire.StatusOK || v != want {
			t.Fatalf("pop: %v, %d bytes, want %d", st, len(v), len(want))
		}
	}
}

func TestPopOnSubscribedChannel(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	r.push("v", "s")
	id := r.send(wire.OpConsume, 0, consumeBody("s", "group", 0))
	h, b := r.read()
	if h.ID != id || h.Flags&wire.FlagMore == 0 || len(batchValues(t, b)) != 1 {
		t.Fatalf("consume: %v %q", h, b)
	}
	if st, _ := r.pop("s"); st != wire.StatusSubscribed {
		t.Fatalf("pop on a subscribed channel: %v", st)
	}
	// The subscription outlives the consumer: pops stay refused.
	r.sendFrame(wire.OpStreamControl, 0, id, []byte{wire.StreamStop})
	if h, _ := r.read(); h.ID != id || h.Status != wire.StatusStopped {
		t.Fatalf("end of the stopped consume: %v", h)
	}
	if st, _ := r.pop("s"); st != wire.StatusSubscribed {
		t.Fatalf("pop after the consumer left: %v", st)
	}
}

// TestConsumeWithoutCredit: a consumer that grants no more credit gets
// one batch; the node takes nothing more out of the queue, which keeps
// the records (overflowing to disk) until credit comes.
func TestConsumeWithoutCredit(t *testing.T) {
	ts := startServerWith(t, Config{}, queue.Config{RingSize: 16 << 10})
	r := dialRaw(t, ts.addr)
	const n = 2000
	value := strings.Repeat("v", 100)
	for i := range n {
		if st := r.push(fmt.Sprintf("%04d%s", i, value), "c"); st != wire.StatusOK {
			t.Fatal(st)
		}
	}
	id := r.send(wire.OpConsume, 0, consumeBody("c", "", 1))
	h, b := r.read()
	got := batchValues(t, b)
	if h.ID != id || len(got) != 1 || got[0][:4] != "0000" {
		t.Fatalf("first batch with 1 byte of credit: %v, %d values", h, len(got))
	}
	time.Sleep(100 * time.Millisecond)
	qs := r.queues()
	if len(qs) != 1 || qs[0].records != n-1 || qs[0].consumers != 1 || qs[0].ofRecords == 0 {
		t.Fatalf("the node took records it cannot send: %+v", qs)
	}
	// Suspend, then grant credit: nothing until resume.
	r.sendFrame(wire.OpStreamControl, 0, id, []byte{wire.StreamSuspend})
	r.sendFrame(wire.OpStreamControl, 0, id, wire.AppendU32([]byte{wire.StreamCredit}, 1<<30))
	if h, _ := r.call(wire.OpNoop, 0, nil); h.Opcode != wire.OpNoop {
		t.Fatalf("a suspended consume sent %v", h)
	}
	time.Sleep(50 * time.Millisecond)
	if qs := r.queues(); qs[0].records != n-1 {
		t.Fatalf("a suspended consume took records: %+v", qs)
	}
	r.sendFrame(wire.OpStreamControl, 0, id, []byte{wire.StreamResume})
	next := 1
	for next < n {
		h, b := r.read()
		if h.ID != id || h.Status != wire.StatusOK || h.Flags&wire.FlagMore == 0 {
			t.Fatalf("consume frame: %v %s", h, b)
		}
		for _, v := range batchValues(t, b) {
			if v[:4] != fmt.Sprintf("%04d", next) {
				t.Fatalf("record %q, want number %d", v[:4], next)
			}
			next++
		}
	}
	if b := r.pushToConsumer("late", "c", id); len(batchValues(t, b)) != 1 {
		t.Fatal("a live push did not reach the consumer")
	}
	// Stop while the consumer waits for records.
	r.sendFrame(wire.OpStreamControl, 0, id, []byte{wire.StreamStop})
	if h, _ := r.read(); h.ID != id || h.Status != wire.StatusStopped || h.Flags&wire.FlagMore != 0 {
		t.Fatalf("end after stop: %v", h)
	}
}

func TestConsumeEndsWhenChannelRemoved(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	id := r.send(wire.OpConsume, 0, consumeBody("gone", "sub", 0))
	time.Sleep(50 * time.Millisecond) // let the stream subscribe
	if b := r.pushToConsumer("v", "gone", id); len(batchValues(t, b)) != 1 {
		t.Fatal("consume: the push did not reach the consumer")
	}
	rid := r.send(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "gone"))
	seen := map[uint32]wire.Status{}
	for len(seen) < 2 {
		h, _ := r.read()
		seen[h.ID] = h.Status
	}
	if seen[rid] != wire.StatusOK || seen[id] != wire.StatusChannelRemoved {
		t.Fatalf("statuses after RemoveChannel: %v", seen)
	}
}

func TestProduce(t *testing.T) {
	ts := startServerWith(t, Config{MaxValueSize: 1000}, queue.Config{})
	r := dialRaw(t, ts.addr)
	first := append([]byte{2, 2, 'p', '1', 2, 'p', '2'}, valuesBody("a", "b")...)
	r.sendFrame(wire.OpProduce, wire.FlagMore, 7, first)
	r.sendFrame(wire.OpProduce, wire.FlagMore, 7, valuesBody("c", "", "d"))
	r.sendFrame(wire.OpProduce, 0, 7, valuesBody())
	h, b := r.read()
	if h.ID != 7 || h.Status != wire.StatusOK || binary.LittleEndian.Uint64(b) != 5 {
		t.Fatalf("produce answer: %v %v", h, b)
	}
	for _, ch := range []string{"p1", "p2"} {
		for _, want := range []string{"a", "b", "c", "", "d"} {
			if st, v := r.pop(ch); st != wire.StatusOK || v != want {
				t.Fatalf("pop %s: %v %q, want %q", ch, st, v, want)
			}
		}
	}
	// A failure is answered at once; the rest of that id is ignored.
	chans := []byte{1, 2, 'p', '3'}
	r.sendFrame(wire.OpProduce, wire.FlagMore, 8, append(chans, valuesBody("ok")...))
	r.sendFrame(wire.OpProduce, wire.FlagMore, 8, valuesBody("fine", strings.Repeat("x", 1001)))
	h, b = r.read()
	if h.ID != 8 || h.Status != wire.StatusValueTooBig || !strings.Contains(string(b), "1 records of this Produce were stored") {
		t.Fatalf("produce with a value too big: %v %s", h, b)
	}
	r.sendFrame(wire.OpProduce, wire.FlagMore, 8, valuesBody("ignored"))
	r.sendFrame(wire.OpProduce, 0, 8, valuesBody("ignored too"))
	if h, _ := r.call(wire.OpNoop, 0, nil); h.Opcode != wire.OpNoop {
		t.Fatalf("a failed produce was answered twice: %v", h)
	}
	if st, v := r.pop("p3"); st != wire.StatusOK || v != "ok" {
		t.Fatalf("pop p3: %v %q", st, v)
	}
	if st, _ := r.pop("p3"); st != wire.StatusEmpty {
		t.Fatalf("a frame with a bad value was partly stored: %v", st)
	}
	// A malformed first frame, and one over the batch limit mid-stream.
	r.sendFrame(wire.OpProduce, 0, 9, []byte{1, 2, 'p'})
	if h, _ := r.read(); h.ID != 9 || h.Status != wire.StatusBadRequest {
		t.Fatalf("malformed produce: %v", h)
	}
	r.sendFrame(wire.OpProduce, wire.FlagMore, 10, append(chans, valuesBody()...))
	r.sendFrame(wire.OpProduce, wire.FlagMore, 10, make([]byte, 17<<20))
	if h, _ := r.read(); h.ID != 10 || h.Status != wire.StatusValueTooBig {
		t.Fatalf("produce frame over the limit: %v", h)
	}
	r.sendFrame(wire.OpProduce, 0, 10, valuesBody("ignored"))
	if h, _ := r.call(wire.OpNoop, 0, nil); h.Opcode != wire.OpNoop {
		t.Fatalf("a refused produce was answered twice: %v", h)
	}
}

// syncCounter counts fsyncs of the journal.
type syncCounter struct{ n atomic.Int64 }

func (s *syncCounter) Inject(op vfs.Op, path string, n int) (int, error) {
	if op == vfs.OpSync && strings.HasSuffix(path, ".jnl") {
		s.n.Add(1)
	}
	return n, nil
}

// TestJournalPushesShareFsyncs sends 300 pushes at once on one connection
// to a journal store that fsyncs before every answer: they are all
// acknowledged with far fewer fsyncs, and stored in order.
func TestJournalPushesShareFsyncs(t *testing.T) {
	syncs := &syncCounter{}
	ts := startServerWith(t, Config{}, queue.Config{Durability: queue.DurabilityJournal, FS: vfs.Faulty(vfs.Default, syncs)})
	r := dialRaw(t, ts.addr)
	const n = 300
	var batch []byte
	for i := range n {
		batch = append(batch, frame(wire.OpPush, 0, uint32(i+1), pushBody([]string{"j"}, "", fmt.Sprint(i)))...)
	}
	before := syncs.n.Load()
	if _, err := r.nc.Write(batch); err != nil {
		t.Fatal(err)
	}
	for range n {
		if h, b := r.read(); h.Status != wire.StatusOK {
			t.Fatalf("push %d: %v %s", h.ID, h.Status, b)
		}
	}
	if got := syncs.n.Load() - before; got == 0 || got > n/5 {
		t.Fatalf("%d fsyncs for %d pipelined pushes", got, n)
	}
	for i := range n {
		if st, v := r.pop("j"); st != wire.StatusOK || v != fmt.Sprint(i) {
			t.Fatalf("pop %d: %v %q", i, st, v)
		}
	}
}

// TestQueueDiskFull fills the disk under the overflow: pushes are refused
// with "no space", pops keep working and return every stored record.
func TestQueueDiskFull(t *testing.T) {
	quota := vfs.NewDiskQuota(1 << 62)
	ts := startServerWith(t, Config{}, queue.Config{RingSize: 4 << 10, FS: vfs.Faulty(vfs.Default, quota)})
	r := dialRaw(t, ts.addr)
	quota.SetLimit(quota.Written() + 32<<10)
	stored := 0
	var st wire.Status
	for ; stored < 10000; stored++ {
		if st = r.push(fmt.Sprintf("%05d%s", stored, strings.Repeat("x", 95)), "full", "full2"); st != wire.StatusOK {
			break
		}
	}
	if st != wire.StatusNoSpace {
		t.Fatalf("push on a full disk: %v after %d", st, stored)
	}
	for _, ch := range []string{"full", "full2"} {
		for i := range stored {
			if st, v := r.pop(ch); st != wire.StatusOK || v[:5] != fmt.Sprintf("%05d", i) {
				t.Fatalf("pop %d of %s after the disk filled: %v %.5q", i, ch, st, v)
			}
		}
		if st, _ := r.pop(ch); st != wire.StatusEmpty {
			t.Fatalf("a refused push left a record in %s: %v", ch, st)
		}
	}
}

// TestQueuePipelinedPushes sends many pushes (past a small ring, into the
// overflow) and pops in single writes: the pushes of a read batch are
// stored together (Store.PushBatch), answered in order, and a pop in the
// same write sees the pushes before it.
func TestQueuePipelinedPushes(t *testing.T) {
	ts := startServerWith(t, Config{}, queue.Config{RingSize: 4 << 10})
	r := dialRaw(t, ts.addr)
	var want []string
	for round := range 20 {
		var out []byte
		var ids []uint32
		for i := range 50 {
			v := fmt.Sprintf("%02d-%02d-%s", round, i, strings.Repeat("x", 90))
			want = append(want, v)
			r.id++
			ids = append(ids, r.id)
			out = append(out, frame(wire.OpPush, 0, r.id, pushBody([]string{"pipe", "pipe2"}, "", v))...)
		}
		r.id++
		ids = append(ids, r.id)
		out = append(out, frame(wire.OpPop, 0, r.id, wire.AppendStr8(nil, "pipe"))...)
		if _, err := r.nc.Write(out); err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			h, b := r.read()
			if h.ID != id || h.Status != wire.StatusOK {
				t.Fatalf("round %d answer %d: %v, want id %d ok", round, i, h, id)
			}
			if h.Opcode == wire.OpPop && string(b) != want[round] {
				t.Fatalf("round %d: popped %.8q, want %.8q", round, b, want[round])
			}
		}
	}
	for _, ch := range []string{"pipe", "pipe2"} {
		skip := 0
		if ch == "pipe" {
			skip = 20
		}
		for i, v := range want[skip:] {
			if st, got := r.pop(ch); st != wire.StatusOK || got != v {
				t.Fatalf("pop %d of %s: %v %.8q, want %.8q", i, ch, st, got, v)
			}
		}
	}
}
