package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"shoal/internal/engine"
	"shoal/internal/queue"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// maxProduces is how many Produce request ids a connection may have open.
const maxProduces = 1024

// doneCtx is an already cancelled context. A Push given it returns as soon
// as the record is stored; in journal mode with fsync always it then
// reports context.Canceled instead of waiting for the fsync, and the
// connection answers once Store.Sync has covered it (see ackWhenDurable).
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// queueConn is a connection's state for queue requests.
type queueConn struct {
	// Touched only by the reader goroutine.
	produces map[uint32]*produce // open Produce requests by id
	names    []string            // channel names of the Push being handled
	buf      []byte              // a popped value
	// Pushes without durability read in one batch, pushed together by
	// pushBatch: their headers, and their channel names, routing keys and
	// values copied into heldNames and arena.
	held      []heldPush
	heldNames []string
	arena     []byte
	pushes    []queue.BatchPush
	errs      []error
}

// heldPush is a Push waiting for pushBatch.
type heldPush struct {
	h          wire.Header
	names      [2]int // span of heldNames
	key, value [2]int // spans of arena
	vb         int    // FlagVBucket's, or -1
}

// durableAcks are the answers of every connection that wait for the
// journal's fsync, sent by one goroutine at a time (Server.ackLoop).
type durableAcks struct {
	mu      sync.Mutex
	pending []durableAck
	running bool
}

// produce is one open Produce request.
type produce struct {
	channels []string // nil once it failed: its remaining frames are ignored
	stored   uint64
	pending  bool // a push waits for the journal's fsync
}

// durableAck is an answer to send once the journal is on disk: empty for a
// Push, the stored count for a Produce.
type durableAck struct {
	c      *conn
	h      wire.Header
	stored uint64
	dur    connDurable // a durable push or pop then waits for its majority (durability.go)
	vb     uint16      // its vBucket
	answer []byte      // the body of its ok answer (a pop's value)
}

func (s *Server) registerQueue() {
	s.handle(wire.OpPush, handler{loop: true, fn: (*conn).queuePush, limit: s.singleLimit() + 255*256})
	s.handle(wire.OpPop, handler{loop: true, fn: (*conn).queuePop})
	s.handle(wire.OpConsume, handler{fn: (*conn).queueConsume})
	s.handle(wire.OpProduce, handler{fn: (*conn).queueProduce, limit: s.batchLimit()})
	s.handle(wire.OpQueues, handler{fn: (*conn).queueList})
	s.handle(wire.OpSubscribers, handler{fn: (*conn).queueSubscribers})
	s.handle(wire.OpUnsubscribe, handler{fn: (*conn).queueUnsubscribe, admin: true})
}

// queueStatus maps a queue engine error to a status.
func queueStatus(err error) wire.Status {
	switch {
	case errors.Is(err, queue.ErrEmpty):
		return wire.StatusEmpty
	case errors.Is(err, queue.ErrSubscribed):
		return wire.StatusSubscribed
	case errors.Is(err, queue.ErrChannelRemoved), errors.Is(err, queue.ErrUnsubscribed):
		return wire.StatusChannelRemoved
	case errors.Is(err, queue.ErrNoChannels), errors.Is(err, queue.ErrTooManyChannels), errors.Is(err, queue.ErrBadSubscriber):
		return wire.StatusBadRequest
	case errors.Is(err, queue.ErrBadChannelName):
		return wire.StatusBadChannelName
	case errors.Is(err, queue.ErrValueTooBig):
		return wire.StatusValueTooBig
	case errors.Is(err, queue.ErrNoSpace):
		return wire.StatusNoSpace
	case errors.Is(err, queue.ErrClosed):
		return wire.StatusShuttingDown
	}
	return wire.StatusInternal
}

// queueFail answers with the status of a queue engine error; errors
// without a status of their own are logged and carry their text.
func (c *conn) queueFail(h wire.Header, err error) {
	if errors.Is(err, engine.ErrNoActiveVBucket) || errors.Is(err, engine.ErrNotActive) { // the map changed since checkServing
		c.notMyVBucket(h, c.s.route(h.VBucket))
		return
	}
	st := queueStatus(err)
	if st == wire.StatusInternal {
		c.s.cfg.Logger.Error("request failed", "op", h.Opcode.String(), "err", err)
	}
	c.replyf(h, st, "%s", queueMessage(st, err))
}

// queueMessage is the message of an error answer: the engine's text
// without its package prefix, or nothing when the status says it all.
func queueMessage(st wire.Status, err error) string {
	msg := strings.TrimPrefix(err.Error(), "queue: ")
	if msg == st.String() {
		return ""
	}
	return msg
}

// channelList is a decoded, checked list of queue channel names (u8 n,
// n × str8), not yet claimed.
type channelList struct {
	d wire.Decoder // positioned at the first name
	n int
}

// queueChannels decodes a channel list and checks every name. It answers
// the request itself and returns false when the list is bad.
func (c *conn) queueChannels(h wire.Header, d *wire.Decoder) (channelList, bool) {
	n := int(d.U8())
	if d.Err() != nil || n == 0 {
		c.replyf(h, wire.StatusBadRequest, "%s names no channel: give 1 to %d", h.Opcode, wire.MaxPushChannels)
		return channelList{}, false
	}
	list := channelList{d: *d, n: n}
	for range n {
		ch := d.Bytes8()
		if d.Err() != nil {
			c.replyf(h, wire.StatusBadRequest, "malformed %s: the body ends inside its %d channel names", h.Opcode, n)
			return channelList{}, false
		}
		if _, ok := c.checkChannel(h, ch, engine.KindQueue, false); !ok {
			return channelList{}, false
		}
	}
	return list, true
}

// claim claims every name of the list as a queue channel and appends the
// names to dst. Checking the whole request before claiming anything means
// a refused request claims no channel. It answers the request itself and
// returns nil when a name became a channel of another kind meanwhile.
func (c *conn) claim(h wire.Header, list channelList, dst []string) []string {
	for range list.n {
		name, ok := c.checkChannel(h, list.d.Bytes8(), engine.KindQueue, true)
		if !ok {
			return nil
		}
		dst = append(dst, name)
	}
	return dst
}

// queuePush: u8 n, n × str8 channel, str8 routing key, value (rest) -> empty.
func (c *conn) queuePush(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	list, ok := c.queueChannels(h, &d)
	if !ok {
		return
	}
	key, val := d.Bytes8(), d.Rest()
	if d.Err() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Push: no routing key after the channels")
		return
	}
	if !c.needsVBucket(h, key) || !c.checkQueueWrite(h, key) {
		return
	}
	if !c.checkValue(h, val) {
		return
	}
	names := c.claim(h, list, c.q.names[:0])
	if names == nil {
		return
	}
	c.q.names = names[:0]
	if c.dur.level == wire.DurabilityNone {
		// Pushed with the others of its batch, in one go (pushBatch).
		a := c.q.arena
		hp := heldPush{h: h, names: [2]int{len(c.q.heldNames), len(c.q.heldNames) + len(names)}, vb: flagVBucket(h, key)}
		c.q.heldNames = append(c.q.heldNames, names...)
		hp.key = [2]int{len(a), len(a) + len(key)}
		a = append(a, key...)
		hp.value = [2]int{len(a), len(a) + len(val)}
		c.q.arena = append(a, val...)
		c.q.held = append(c.q.held, hp)
		return
	}
	c.pushBatch() // answers stay in order
	var err error
	if vb := flagVBucket(h, key); vb >= 0 {
		err = c.s.eng.Queue.PushVB(doneCtx, names, val, uint16(vb))
	} else {
		err = c.s.eng.Queue.Push(doneCtx, names, val, key)
	}
	vb := h.VBucket
	if len(key) > 0 {
		vb = vbucket.Of(key, c.s.cfg.VBuckets)
	}
	switch {
	case err == nil && c.dur.level == wire.DurabilityPersistMajority:
		// The journal's interval fsync has not covered it yet: the
		// active's copy is made durable first, as in fsync-always mode.
		c.ackWhenDurable(durableAck{h: h, dur: c.dur, vb: vb})
	case err == nil && c.dur.level != wire.DurabilityNone:
		c.waitDurable(h, vb, "queue", c.s.eng.Queue.HighSeqno(vb), c.dur, "", nil)
	case err == nil:
		c.reply(h, wire.StatusOK, nil)
	case errors.Is(err, context.Canceled) && c.dur.level != wire.DurabilityNone:
		c.ackWhenDurable(durableAck{h: h, dur: c.dur, vb: vb})
	case errors.Is(err, context.Canceled):
		c.ackWhenDurable(durableAck{h: h})
	default:
		c.queueFail(h, err)
	}
}

// pushBatch does the pushes queuePush held, in one Store.PushBatch, and
// answers them: the store then takes its lock once and writes their
// overflow records in one call per overflow. It runs before any other
// request of the connection is handled and before answers are sent, so
// answers keep their order and a push is answered only once done.
func (c *conn) pushBatch() {
	q := &c.q
	if len(q.held) == 0 {
		return
	}
	for _, hp := range q.held {
		q.pushes = append(q.pushes, queue.BatchPush{
			Channels: q.heldNames[hp.names[0]:hp.names[1]], VBucket: hp.vb,
			RoutingKey: q.arena[hp.key[0]:hp.key[1]], Value: q.arena[hp.value[0]:hp.value[1]],
		})
	}
	q.errs = c.s.eng.Queue.PushBatch(doneCtx, q.pushes, q.errs)
	for i, hp := range q.held {
		switch err := q.errs[i]; {
		case err == nil:
			c.reply(hp.h, wire.StatusOK, nil)
		case errors.Is(err, context.Canceled):
			c.ackWhenDurable(durableAck{h: hp.h})
		default:
			c.queueFail(hp.h, err)
		}
	}
	clear(q.heldNames)
	clear(q.pushes)
	clear(q.errs)
	q.held, q.heldNames, q.pushes, q.errs = q.held[:0], q.heldNames[:0], q.pushes[:0], q.errs[:0]
	if cap(q.arena) > 4<<20 {
		q.arena = nil
	}
	q.arena = q.arena[:0]
}

// queuePop: str8 channel -> value (rest).
func (c *conn) queuePop(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch := d.Bytes8()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Pop")
		return
	}
	if !c.checkServing(h) {
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindQueue, false)
	if !ok {
		return
	}
	if name == "" {
		c.reply(h, wire.StatusEmpty, nil)
		return
	}
	// The value goes through a buffer of the connection: in journal mode
	// Pop may wait for an fsync, which must not happen while holding the
	// output buffer that streams and acknowledgements also write to.
	v, vb, err := c.s.eng.Queue.PopVB(name, c.q.buf[:0])
	switch {
	case errors.Is(err, queue.ErrEmpty):
		c.reply(h, wire.StatusEmpty, nil)
	case err != nil:
		c.queueFail(h, err)
	case c.dur.level != wire.DurabilityNone:
		// A durable pop: answered, value included, once a majority of the
		// popped record's vBucket holds the pop (an ambiguous answer
		// carries the value too: the record is taken on the active).
		d := c.dur
		d.valueOnAmbiguous = true
		if d.level == wire.DurabilityPersistMajority {
			c.ackWhenDurable(durableAck{h: h, dur: d, vb: vb, answer: append([]byte(nil), v...)})
		} else {
			c.waitDurable(h, vb, "queue", c.s.eng.Queue.HighSeqno(vb), d, "", v)
		}
	default:
		c.reply(h, wire.StatusOK, v)
	}
	if cap(v) <= 1<<20 {
		c.q.buf = v[:0]
	} else {
		c.q.buf = nil
	}
}

// queueConsume: str8 channel, str8 subscriber, u32 credit -> stream of
// batches: u32 n, n × bytes32 value. It ends with StatusChannelRemoved when
// the channel is removed.
func (c *conn) queueConsume(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, sub, credit := d.Bytes8(), d.Bytes8(), d.U32()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Consume")
		return
	}
	if !c.checkServing(h) {
		return
	}
	if len(sub) > 0 && !wire.ValidChannel(sub) {
		c.replyf(h, wire.StatusBadRequest, "bad subscriber name %q: use 0-255 of A-Z a-z 0-9 _ -", sub)
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindQueue, true)
	if !ok {
		return
	}
	subscriber := string(sub)
	c.startStream(h, credit, func(st *stream) (wire.Status, string) {
		// Subscribe here, not on the reader: in journal mode it waits for
		// an fsync.
		cons, err := c.s.eng.Queue.Subscribe(name, subscriber)
		if err != nil {
			st := queueStatus(err)
			return st, queueMessage(st, err)
		}
		defer cons.Close()
		return c.consume(st, cons)
	})
}

// consume sends the consumer's records while the stream has credit. Records
// are taken from the queue only when they can be sent at once, so the node
// holds nothing for a consumer that grants no credit.
func (c *conn) consume(st *stream, cons *queue.Consumer) (wire.Status, string) {
	var batch []byte
	for {
		if !st.wait() || !c.waitRoom() {
			return wire.StatusStopped, ""
		}
		st.mu.Lock()
		limit := int(min(st.credit, batchTarget))
		st.mu.Unlock()
		var n int
		var err error
		batch, n, err = cons.Next(append(batch[:0], 0, 0, 0, 0), limit)
		switch {
		case err == nil:
			putU32(batch, uint32(n))
			if !st.emit(batch) {
				return wire.StatusStopped, ""
			}
			if cap(batch) > 1<<20 {
				batch = nil
			}
		case errors.Is(err, queue.ErrEmpty):
			select {
			case <-cons.Ready():
			case <-st.ctx.Done():
				return wire.StatusStopped, ""
			case <-c.shutting:
				return wire.StatusShuttingDown, ""
			}
		case errors.Is(err, queue.ErrChannelRemoved):
			return wire.StatusChannelRemoved, "the channel was removed"
		case errors.Is(err, queue.ErrUnsubscribed):
			return wire.StatusChannelRemoved, "the subscriber was removed (unsubscribe)"
		default:
			st := queueStatus(err)
			if st == wire.StatusInternal {
				c.s.cfg.Logger.Error("consume failed", "err", err)
			}
			return st, queueMessage(st, err)
		}
	}
}

// emit appends one frame with body b without waiting for credit (the
// caller did, before taking what b holds out of the queue).
func (st *stream) emit(b []byte) bool {
	out, off := st.c.begin(st.h, wire.StatusOK, wire.FlagMore)
	out = append(out, b...)
	st.c.end(out, off)
	st.mu.Lock()
	st.credit -= int64(len(b))
	st.mu.Unlock()
	return st.c.flush()
}

func putU32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// queueProduce handles one frame of a Produce: the first starts with the
// channel list; every frame carries u32 k, k × bytes32 value; the last has
// FlagMore clear and is answered with u64 stored.
func (c *conn) queueProduce(h wire.Header, body []byte) {
	last := h.Flags&wire.FlagMore == 0
	p := c.q.produces[h.ID]
	if p != nil && p.channels == nil { // failed earlier: ignore up to the last frame
		if last {
			delete(c.q.produces, h.ID)
		}
		return
	}
	d := wire.NewDecoder(body)
	if h.Flags&wire.FlagVBucket != 0 && !c.checkVBucket(h) {
		if p != nil {
			p.channels = nil
		}
		c.produceRefused(h)
		return
	}
	if p == nil {
		if !c.checkServing(h) {
			c.produceRefused(h)
			return
		}
		if len(c.q.produces) >= maxProduces {
			c.replyf(h, wire.StatusBusy, "this connection has %d Produce requests open already", maxProduces)
			c.produceRefused(h)
			return
		}
		list, ok := c.queueChannels(h, &d)
		var names []string
		if ok {
			names = c.claim(h, list, nil)
		}
		if names == nil {
			c.produceRefused(h)
			return
		}
		p = &produce{channels: names}
		if c.q.produces == nil {
			c.q.produces = map[uint32]*produce{}
		}
		c.q.produces[h.ID] = p
	}
	if st, msg := c.produceValues(p, d, flagVBucket(h, nil)); st != wire.StatusOK {
		if st == wire.StatusNotMyVBucket { // the map changed since checkVBucket
			c.notMyVBucket(h, c.s.route(h.VBucket))
			c.produceRefused(h)
			return
		}
		if msg == "" {
			msg = st.String()
		}
		c.replyf(h, st, "%s; %d records of this Produce were stored before", msg, p.stored)
		c.produceRefused(h)
		return
	}
	if !last {
		return
	}
	delete(c.q.produces, h.ID)
	if p.pending {
		c.ackWhenDurable(durableAck{h: h, stored: p.stored})
		return
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU64(b, p.stored), off)
}

// produceValues checks a frame's values (u32 k, k × bytes32), then pushes
// them in order, to vBucket vb (FlagVBucket) or round-robin (-1). It
// returns the status of the first failure.
func (c *conn) produceValues(p *produce, d wire.Decoder, vb int) (wire.Status, string) {
	k := d.U32()
	check := d
	for i := range k {
		v := check.Bytes32()
		if check.Err() != nil {
			return wire.StatusBadRequest, fmt.Sprintf("malformed Produce frame: value %d of %d", i, k)
		}
		if len(v) > c.s.cfg.MaxValueSize {
			return wire.StatusValueTooBig, fmt.Sprintf("value %d of the frame has %d bytes; the limit is %d", i, len(v), c.s.cfg.MaxValueSize)
		}
	}
	if check.Finish() != nil {
		return wire.StatusBadRequest, fmt.Sprintf("malformed Produce frame: bytes after its %d values", k)
	}
	for range k {
		var err error
		if vb >= 0 {
			err = c.s.eng.Queue.PushVB(doneCtx, p.channels, d.Bytes32(), uint16(vb))
		} else {
			err = c.s.eng.Queue.Push(doneCtx, p.channels, d.Bytes32(), nil)
		}
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled):
			p.pending = true
		case errors.Is(err, engine.ErrNotActive):
			return wire.StatusNotMyVBucket, err.Error()
		default:
			st := queueStatus(err)
			if st == wire.StatusInternal {
				c.s.cfg.Logger.Error("produce failed", "err", err)
			}
			return st, queueMessage(st, err)
		}
		p.stored++
	}
	return wire.StatusOK, ""
}

// produceRefused records that the Produce of h was answered with an error:
// its frames are ignored up to the last one.
func (c *conn) produceRefused(h wire.Header) {
	if h.Flags&wire.FlagMore == 0 {
		delete(c.q.produces, h.ID)
		return
	}
	if c.q.produces == nil {
		c.q.produces = map[uint32]*produce{}
	}
	if p := c.q.produces[h.ID]; p != nil {
		p.channels = nil
	} else if len(c.q.produces) < 2*maxProduces { // failed ones cost a map entry each
		c.q.produces[h.ID] = &produce{}
	}
}

// ackWhenDurable answers a stored Push or Produce once the journal has been
// fsynced past it. The reader goes on meanwhile. One goroutine per server
// (started on demand) calls Store.Sync for every answer waiting when it
// starts, then sends them: the pushes of every connection that arrive
// during an fsync share the next one (group commit). The connection does
// not finish before its answers are sent.
func (c *conn) ackWhenDurable(a durableAck) {
	a.c = c
	c.swg.Add(1)
	g := &c.s.acks
	g.mu.Lock()
	g.pending = append(g.pending, a)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go c.s.ackLoop()
	}
}

// ackLoop syncs the journal and sends the answers that wait for it, until
// none is left.
func (s *Server) ackLoop() {
	g := &s.acks
	var batch []durableAck
	for {
		g.mu.Lock()
		batch, g.pending = g.pending, batch[:0]
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		err := s.eng.Queue.Sync() // covers every push appended before its call
		counts := map[*conn]int{}
		for _, a := range batch {
			c := a.c
			switch {
			case err != nil:
				c.queueFail(a.h, fmt.Errorf("stored, but the journal could not be made durable: %w", err))
			case a.dur.level != wire.DurabilityNone:
				c.waitDurable(a.h, a.vb, "queue", s.eng.Queue.HighSeqno(a.vb), a.dur, "", a.answer)
			case a.h.Opcode == wire.OpProduce:
				b, off := c.begin(a.h, wire.StatusOK, 0)
				c.end(wire.AppendU64(b, a.stored), off)
			default:
				c.reply(a.h, wire.StatusOK, nil)
			}
			counts[c]++
		}
		clear(batch) // drop the connections
		// Each connection writes in a goroutine of its own: a client that
		// does not read must not hold up the others' answers.
		for c, n := range counts {
			go func() {
				c.flush()
				c.swg.Add(-n)
			}()
		}
	}
}

// queueList: -> u32 n, n × (str8 channel, u8 subscribed, str8 subscriber,
// u64 records, u64 bytes, u64 memory records, u64 memory bytes, u64
// overflow records, u64 overflow bytes, u64 ring size, u8 fullness %, u16
// consumers).
func (c *conn) queueList(h wire.Header, _ []byte) {
	list := c.s.eng.Queue.Channels()
	b, off := c.begin(h, wire.StatusOK, 0)
	countAt := len(b)
	b = wire.AppendU32(b, 0)
	n := 0
	for _, q := range list {
		if len(b)-off+2*256+8*8+3 > wire.MaxBody {
			break
		}
		sub := uint8(0)
		if q.Subscribed {
			sub = 1
		}
		b = wire.AppendStr8(b, q.Name)
		b = wire.AppendU8(b, sub)
		b = wire.AppendStr8(b, q.Subscriber)
		for _, v := range []int64{q.Records, q.Bytes, q.MemoryRecords, q.MemoryBytes, q.OverflowRecords, q.OverflowBytes, q.RingSize} {
			b = wire.AppendU64(b, uint64(v))
		}
		b = wire.AppendU8(b, uint8(min(math.Round(q.Fullness), 255)))
		b = wire.AppendU16(b, uint16(min(q.Consumers, math.MaxUint16)))
		n++
	}
	putU32(b[countAt:], uint32(n))
	c.end(b, off)
}

// queueSubscribers: str8 channel -> u32 n, n x (str8 subscriber, u64
// records, u64 bytes, u16 consumers, u64 idle ms: since when no consumer
// is attached, 0 while one is).
func (c *conn) queueSubscribers(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch := d.Bytes8()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Subscribers")
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindQueue, false)
	if !ok {
		return
	}
	var list []queue.ChannelStats
	if name != "" {
		list = c.s.eng.Queue.Subscribers(name)
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	countAt := len(b)
	b = wire.AppendU32(b, 0)
	n := 0
	for _, q := range list {
		if len(b)-off+256+8*3+2 > wire.MaxBody {
			break
		}
		var idle uint64
		if !q.IdleSince.IsZero() {
			idle = uint64(max(c.now.Sub(q.IdleSince).Milliseconds(), 1))
		}
		b = wire.AppendStr8(b, q.Subscriber)
		b = wire.AppendU64(b, uint64(q.Records))
		b = wire.AppendU64(b, uint64(q.Bytes))
		b = wire.AppendU16(b, uint16(min(q.Consumers, math.MaxUint16)))
		b = wire.AppendU64(b, idle)
		n++
	}
	putU32(b[countAt:], uint32(n))
	c.end(b, off)
}

// queueUnsubscribe: str8 channel, str8 subscriber -> u8 removed.
func (c *conn) queueUnsubscribe(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, sub := d.Bytes8(), d.Bytes8()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Unsubscribe")
		return
	}
	if !c.checkServing(h) {
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindQueue, false)
	if !ok {
		return
	}
	var removed uint8
	if name != "" {
		ok, err := c.s.eng.Queue.Unsubscribe(name, string(sub))
		if err != nil {
			c.queueFail(h, err)
			return
		}
		if ok {
			removed = 1
			c.s.cfg.Logger.Info("subscriber removed", "channel", name, "subscriber", string(sub), "by", c.user, "remote", c.nc.RemoteAddr())
		}
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU8(b, removed), off)
}

// queueChannelSizes sums the queues of each channel.
func queueChannelSizes(list []queue.ChannelStats) []ChannelSize {
	var out []ChannelSize
	for _, q := range list {
		if len(out) > 0 && out[len(out)-1].Name == q.Name {
			out[len(out)-1].Records += q.Records
			out[len(out)-1].Bytes += q.Bytes
			continue
		}
		out = append(out, ChannelSize{Name: q.Name, Kind: engine.KindQueue, Records: q.Records, Bytes: q.Bytes})
	}
	return out
}

// queueChannelSize returns the records and bytes of a queue channel, every
// subscriber queue counted.
func queueChannelSize(s *queue.Store, name string) (records, bytes int64) {
	for _, q := range s.Channels() {
		if q.Name == name {
			records += q.Records
			bytes += q.Bytes
		}
	}
	return records, bytes
}
