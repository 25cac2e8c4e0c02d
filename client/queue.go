package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Queue requests are spread over the nodes: with routing a Push goes to
// the active of the next vBucket round-robin over every vBucket of the
// cluster (or of its routing key's); without, to the next node the client
// was given. Pop starts at the next node round-robin and moves on to the
// others (see each), Consume reads from all of them, a Producer writes to
// one.

// PushOption changes a Push.
type PushOption func(*pushOptions)

type pushOptions struct {
	routingKey []byte
	dur        writeOptions // durability.go
}

// PopOption is an option of Pop.
type PopOption func(*popOptions)

type popOptions struct {
	dur writeOptions // durability.go
}

// WithPopDurability makes a Pop durable at level d (Majority, or
// PersistMajority on nodes whose queues keep a journal): it is answered
// once a majority of the popped record's vBucket holds the pop
// (ErrAmbiguous, with the value, after timeout; 0: the node's 10 s).
func WithPopDurability(d Durability, timeout time.Duration) PopOption {
	return func(o *popOptions) { o.dur = writeOptions{durability: d, durabilitySet: true, durTimeout: timeout} }
}

// WithRoutingKey makes the node put the record in the vBucket of key (as a
// kv key would be) instead of picking one round-robin.
func WithRoutingKey(key []byte) PushOption {
	return func(o *pushOptions) { o.routingKey = key }
}

// checkChannels validates a list of 1..255 channel names.
func checkChannels(channels []string) error {
	if len(channels) == 0 || len(channels) > wire.MaxPushChannels {
		return fmt.Errorf("%w: %d channels; give 1 to %d", ErrBadRequest, len(channels), wire.MaxPushChannels)
	}
	for _, ch := range channels {
		if !wire.ValidChannelString(ch) {
			return fmt.Errorf("%w: %q: use 1-255 of A-Z a-z 0-9 _ -", ErrBadChannelName, ch)
		}
	}
	return nil
}

func appendChannels(b []byte, channels []string) []byte {
	b = wire.AppendU8(b, uint8(len(channels)))
	for _, ch := range channels {
		b = wire.AppendStr8(b, ch)
	}
	return b
}

// start returns the index in a list of n nodes that a round-robin request
// begins with.
func (c *Client) start(n int) int { return int((c.rr.Add(1) - 1) % uint32(n)) }

// nextVB returns the next vBucket of the round robin of op (pushes and
// appends have one each) whose active is not one of skip; ok is false
// when there is none.
func (c *Client) nextVB(rt *routeTable, op wire.Opcode, skip []*node) (vb uint16, ok bool) {
	rr := &c.pushRR
	if op == wire.OpLogPut || op == wire.OpLogPutBatch {
		rr = &c.logRR
	}
	start := rr.Add(1) - 1
	for i := range uint32(rt.vbs) {
		v := uint16((start + i) % uint32(rt.vbs))
		if n := rt.actives[v]; n != nil && !slices.Contains(skip, n) {
			return v, true
		}
	}
	return 0, false
}

// spread runs a write of records without a key (a push, a log append) on
// the active of the next vBucket round-robin, with FlagVBucket: the
// records go to that vBucket. When that node certainly did not take it
// (it cannot be reached, is shutting down, out of space or busy), the
// write goes to the next vBucket whose active is another node, until
// every node was tried. With a routing key, the key's vBucket takes it,
// retried as every routed request is.
func (c *Client) spread(ctx context.Context, rt *routeTable, op wire.Opcode, key, body []byte) ([]byte, error) {
	return c.spreadFlags(ctx, rt, op, key, body, 0)
}

// spreadFlags is spread with more header flags (wire.FlagDurable).
func (c *Client) spreadFlags(ctx context.Context, rt *routeTable, op wire.Opcode, key, body []byte, flags byte) ([]byte, error) {
	if len(key) > 0 {
		res := c.routed(ctx, rt, vbucket.Of(key, rt.vbs), op, wire.FlagVBucket|flags, body, routePolicy{})
		return res.body, res.err
	}
	var tried []*node
	var errs []error
	for {
		vb, ok := c.nextVB(rt, op, tried)
		if !ok {
			if len(errs) == 0 {
				return nil, unavailable(0, "", fmt.Sprintf("map revision %d has no active node", rt.m.Revision))
			}
			return nil, errors.Join(errs...)
		}
		res := c.routed(ctx, rt, vb, op, wire.FlagVBucket|flags, body, routePolicy{moveOn: true})
		if !res.notStored || ctx.Err() != nil {
			return res.body, res.err
		}
		tried = append(tried, res.node)
		errs = append(errs, res.err)
		rt = c.routes()
	}
}

// try runs one request on node n. sent is false when the request certainly
// did not reach the node (no connection could be had).
func (c *Client) try(ctx context.Context, n *node, op wire.Opcode, body []byte) (r []byte, sent bool, err error) {
	return c.tryFlags(ctx, n, op, 0, body)
}

// tryFlags is try with header flags (wire.FlagDurable).
func (c *Client) tryFlags(ctx context.Context, n *node, op wire.Opcode, flags byte, body []byte) (r []byte, sent bool, err error) {
	if c.closed.Load() {
		return nil, false, ErrClosed
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	cn, err := n.conn(ctx)
	if err != nil {
		return nil, false, err
	}
	r, err = cn.doFlags(ctx, op, 0, flags, body)
	return r, true, err
}

// Push stores value in every channel named (1 to 255 of them) on one node:
// with routing the active of the next vBucket round-robin (or of the
// routing key's vBucket), without the next node round-robin. It is
// acknowledged when the node holds it in every channel (durable as the
// node's --queue-durability says). When a node cannot be reached, or
// answers that it is shutting down, out of disk space or busy, the value
// was not stored there and Push tries the next node; it fails when every
// node did. ErrDisconnected after the request went out means the value may
// or may not be stored: Push then does not retry elsewhere, so as not to
// store it twice.
func (c *Client) Push(ctx context.Context, channels []string, value []byte, opts ...PushOption) error {
	if err := checkChannels(channels); err != nil {
		return err
	}
	var o pushOptions
	for _, fn := range opts {
		fn(&o)
	}
	if len(o.routingKey) > wire.MaxKeyLen {
		return fmt.Errorf("%w: routing key of %d bytes, the limit is %d", ErrKeyTooBig, len(o.routingKey), wire.MaxKeyLen)
	}
	bp := getBuf()
	b := appendChannels((*bp)[:0], channels)
	b = wire.AppendBytes8(b, o.routingKey)
	b = append(b, value...)
	*bp = b
	defer putBuf(bp)
	if flags, prefix := o.dur.durablePrefix(); prefix != nil {
		return c.durableSpread(ctx, wire.OpPush, o.routingKey, append(prefix, b...), flags, b)
	}
	if rt := c.routes(); rt != nil {
		_, err := c.spread(ctx, rt, wire.OpPush, o.routingKey, b)
		return err
	}
	var errs []error
	first := c.start(len(c.seeds))
	for i := range c.seeds {
		_, sent, err := c.try(ctx, c.seeds[(first+i)%len(c.seeds)], wire.OpPush, b)
		if err == nil {
			return nil
		}
		if !notStored(err, sent) || ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// notStored reports whether a failed Push certainly stored nothing, so that
// it may go to another node.
func notStored(err error, sent bool) bool {
	return !sent || isNotStored(err)
}

// Pop removes and returns the oldest record of channel from one node,
// starting with the next one round-robin (with routing: of the members
// active for some vBucket) and moving on while a node's queue is empty or
// the node is down. It returns ErrEmpty only when every node answered
// that it was empty; otherwise the errors of the nodes that did not
// (ErrDisconnected for one that is down, ErrSubscribed where the channel
// has subscribers), joined. A member that is active for no vBucket any
// more (it answers `not my vbucket`: the map changed) is skipped and the
// map fetched again.
//
// WithPopDurability makes the pop durable: answered once a majority of the
// popped record's vBucket holds the pop, so that a failover does not give
// the record again (at most once for acknowledged durable pops). An
// ambiguous durable pop returns the value with ErrAmbiguous: the record
// was taken on the active, and may be popped again after a failover. One
// whose answer is lost (the node died, ctx ended) returns ErrAmbiguous
// without a value: if the pop reached a majority, the record is gone.
func (c *Client) Pop(ctx context.Context, channel string, opts ...PopOption) ([]byte, error) {
	if !wire.ValidChannelString(channel) {
		return nil, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	var o popOptions
	for _, fn := range opts {
		fn(&o)
	}
	body := wire.AppendStr8(nil, channel)
	flags, prefix := o.dur.durablePrefix()
	if prefix != nil {
		body = append(prefix, body...)
	}
	var errs []error
	nodes := c.members()
	first := c.start(len(nodes))
	for i := range nodes {
		n := nodes[(first+i)%len(nodes)]
		v, sent, err := c.tryFlags(ctx, n, wire.OpPop, flags, body)
		switch {
		case err == nil:
			return v, nil
		case prefix != nil && errors.Is(err, ErrAmbiguous):
			return v, fmt.Errorf("%w: pop from %s: taken on the active, not acknowledged by a majority of its vbucket's chain in time; it may be popped again after a failover", ErrAmbiguous, n.addr)
		case prefix != nil && sent && durableOutcome(err) != err:
			return nil, durableOutcome(err) // it may have been popped: never pop elsewhere too
		case ctx.Err() != nil:
			return nil, err
		case errors.Is(err, ErrEmpty):
		case errors.Is(err, ErrNotMyVBucket) && c.routes() != nil:
			c.r.refresh(ctx, nil, false, false)
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: channel %q on %d node(s)", ErrEmpty, channel, len(nodes))
	}
	return nil, errors.Join(errs...)
}

// Consume subscribes as subscriber (0..255 bytes of [A-Za-z0-9_-]; "" is a
// name too) to channel on every node and streams the records of all of
// them, merged as they arrive (each node's in its order). The first
// subscriber of a channel takes over the records already queued; every
// further subscriber name gets every record pushed from then on; Consume
// streams sharing a subscriber name split the records. Pop is refused on a
// channel with subscribers.
//
// The stream is flow-controlled (WithStreamWindow): a node takes records
// out of the queue only when it may send them. It reconnects to a node
// that went away or restarted and goes on; records a node had sent when
// the connection broke are lost (at most once). It ends when the channel
// is removed (ErrChannelRemoved), on Stop or when ctx is done. The values
// yielded stay valid after the loop body.
func (c *Client) Consume(ctx context.Context, channel, subscriber string) *Stream[[]byte] {
	nodes := c.members()
	parts := make([]*Stream[[]byte], len(nodes))
	for i, n := range nodes {
		s := newStream[[]byte](c, ctx, n, wire.OpConsume)
		s.request = func(b []byte, credit uint32) []byte {
			b = wire.AppendStr8(b, channel)
			b = wire.AppendStr8(b, subscriber)
			return wire.AppendU32(b, credit)
		}
		s.decode = decodeValues
		s.resumeOnShutdown = true
		parts[i] = s
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return merged(ctx, parts)
}

// decodeValues yields the values of a Consume batch: u32 n, n × bytes32.
func decodeValues(body []byte, yield func([]byte, error) bool) (bool, error) {
	d := wire.NewDecoder(body)
	n := d.U32()
	for range n {
		v := d.Bytes32()
		if d.Err() != nil {
			return false, fmt.Errorf("%w: malformed Consume batch", ErrProtocol)
		}
		if !yield(v, nil) {
			return false, nil
		}
	}
	return true, nil
}

// produceFrame is the value bytes a Producer collects before it sends a
// frame.
const produceFrame = 64 << 10

// Producer streams values to a list of channels on one node (Produce).
// Values are sent in frames of about 64 KiB as they are given and stored
// in the order of the Send calls; the node acknowledges once, on Close,
// with the number stored. A Producer is safe for concurrent use.
type Producer struct {
	c     *Client
	ctx   context.Context
	cn    *conn
	res   *call // receives the node's one answer
	lists []byte

	mu      sync.Mutex
	id      uint32 // 0 until the first frame is sent
	buf     []byte // values of the next frame
	count   uint32
	err     error
	stopped bool
}

// Produce opens a Producer to channels (1 to 255) on one node: the next one
// round-robin that can be reached (with routing: the active of the next
// vBucket round-robin; that node spreads the records over the vBuckets it
// is active for). Nothing is sent until the first frame fills or Close.
func (c *Client) Produce(ctx context.Context, channels []string) (*Producer, error) {
	if err := checkChannels(channels); err != nil {
		return nil, err
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	var errs []error
	nodes := c.seeds
	if rt := c.routes(); rt != nil {
		nodes = nil
		for len(nodes) < len(rt.nodes) {
			vb, ok := c.nextVB(rt, wire.OpProduce, nodes)
			if !ok {
				break
			}
			nodes = append(nodes, rt.actives[vb])
		}
	}
	first := c.start(len(nodes))
	for i := range nodes {
		cn, err := nodes[(first+i)%len(nodes)].conn(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return &Producer{c: c, ctx: ctx, cn: cn, res: &call{ch: make(chan result, 1)}, lists: appendChannels(nil, channels)}, nil
	}
	return nil, errors.Join(errs...)
}

// Node returns the address of the node the Producer writes to.
func (p *Producer) Node() string { return p.cn.addr }

// Send queues value to be pushed to the Producer's channels; it may write
// a frame. An error means the Produce failed: the node answered an error
// (its message says how many values it stored) or the connection broke
// (how many were stored is unknown); later calls return the same error.
func (p *Producer) Send(value []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.failed(); err != nil {
		return err
	}
	if len(value) > wire.MaxValueLen {
		p.err = fmt.Errorf("%w: value of %d bytes", ErrValueTooBig, len(value))
		return p.err
	}
	if size := len(p.buf) + 4 + len(value); size > produceFrame && (p.count > 0 || p.id == 0) {
		if err := p.flush(true); err != nil {
			return err
		}
	}
	p.buf = wire.AppendBytes32(p.buf, value)
	p.count++
	if len(p.buf) >= produceFrame {
		return p.flush(true)
	}
	return nil
}

// failed returns the error that ended the Produce, if any: an early answer
// of the node is one.
func (p *Producer) failed() error {
	if p.err != nil {
		return p.err
	}
	if p.stopped {
		return fmt.Errorf("%w: the Producer is closed", ErrClosed)
	}
	select {
	case r := <-p.res.ch:
		p.err = answerError(p.cn.addr, r)
		if p.err == nil {
			p.err = fmt.Errorf("%w: %s answered a Produce before its last frame", ErrProtocol, p.cn.addr)
		}
	default:
	}
	return p.err
}

// answerError turns an answer into its error (nil for ok).
func answerError(addr string, r result) error {
	if r.err != nil {
		return r.err
	}
	if r.status != wire.StatusOK {
		return statusError(addr, r.status, r.body)
	}
	return nil
}

// flush sends the collected values as one frame.
func (p *Producer) flush(more bool) error {
	var body []byte
	if p.id == 0 {
		body = append(body, p.lists...)
	}
	body = wire.AppendU32(body, p.count)
	body = append(body, p.buf...)
	var flags byte
	if more {
		flags = wire.FlagMore
	}
	var cl *call
	if p.id == 0 {
		cl = p.res
	}
	id, err := p.cn.send(wire.OpProduce, 0, flags, body, cl, nil, p.id)
	if err != nil {
		p.err = err
		return err
	}
	p.id = id
	p.buf, p.count = p.buf[:0], 0
	return nil
}

// Close sends what is left and waits for the node's answer: the number of
// values stored in every channel. After an error, how many were stored is
// in the error's message.
func (p *Producer) Close() (uint64, error) {
	p.mu.Lock()
	if err := p.failed(); err != nil {
		p.mu.Unlock()
		return 0, err
	}
	err := p.flush(false)
	p.stopped = true
	p.mu.Unlock()
	if err != nil {
		return 0, err
	}
	ctx, cancel := p.c.ctx(p.ctx)
	defer cancel()
	select {
	case r := <-p.res.ch:
		if err := answerError(p.cn.addr, r); err != nil {
			return 0, err
		}
		if len(r.body) != 8 {
			return 0, fmt.Errorf("%w: Produce answer of %d bytes", ErrProtocol, len(r.body))
		}
		return u64(r.body), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// QueueStats describes one queue of a node: a channel without
// subscribers, or one subscriber's queue of a channel.
type QueueStats struct {
	Node       string // the node's address
	Channel    string
	Subscribed bool   // the channel has subscribers
	Subscriber string // this queue's subscriber name, when Subscribed
	Records    int64  // records queued, in memory and overflow
	Bytes      int64  // value bytes queued

	MemoryRecords   int64 // in the memory ring
	MemoryBytes     int64
	OverflowRecords int64 // in the disk overflow
	OverflowBytes   int64

	RingSize  int64 // the ring's capacity in bytes
	Fullness  int   // percent of the ring in use, record headers included
	Consumers int   // Consume streams attached now
}

// Queues lists the queues of every node, node by node (in the order the
// client was given them, or by member id), each sorted by channel.
func (c *Client) Queues(ctx context.Context) ([]QueueStats, error) {
	var out []QueueStats
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpQueues, 0, nil)
		if err != nil {
			return nil, err
		}
		d := wire.NewDecoder(r)
		count := d.U32()
		for i := uint32(0); i < count && d.Err() == nil; i++ {
			q := QueueStats{Node: n.addr, Channel: string(d.Bytes8()), Subscribed: d.U8() == 1, Subscriber: string(d.Bytes8())}
			for _, f := range []*int64{&q.Records, &q.Bytes, &q.MemoryRecords, &q.MemoryBytes, &q.OverflowRecords, &q.OverflowBytes, &q.RingSize} {
				*f = int64(d.U64())
			}
			q.Fullness, q.Consumers = int(d.U8()), int(d.U16())
			out = append(out, q)
		}
		if d.Finish() != nil {
			return nil, fmt.Errorf("%w: malformed Queues answer from %s", ErrProtocol, n.addr)
		}
	}
	return out, nil
}

// Subscriber is one subscriber of a queue channel, summed over the nodes.
type Subscriber struct {
	Name      string // the subscriber name ("" is a name too)
	Records   int64  // records waiting in its queue
	Bytes     int64  // value bytes waiting
	Consumers int    // Consume streams attached now
	// Idle is how long no consumer has been attached (on any node; the
	// shortest of the nodes' idle times), 0 while one is.
	Idle time.Duration
}

// Subscribers lists the subscribers of a queue channel, in subscription
// order, summed over every node; none when it has none (or there is no
// such channel).
func (c *Client) Subscribers(ctx context.Context, channel string) ([]Subscriber, error) {
	if !wire.ValidChannelString(channel) {
		return nil, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	var out []Subscriber
	at := map[string]int{}
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpSubscribers, 0, wire.AppendStr8(nil, channel))
		if err != nil {
			return nil, err
		}
		d := wire.NewDecoder(r)
		count := d.U32()
		for i := uint32(0); i < count && d.Err() == nil; i++ {
			s := Subscriber{Name: string(d.Bytes8()), Records: int64(d.U64()), Bytes: int64(d.U64()), Consumers: int(d.U16())}
			s.Idle = time.Duration(d.U64()) * time.Millisecond
			j, ok := at[s.Name]
			if !ok {
				at[s.Name] = len(out)
				out = append(out, s)
				continue
			}
			o := &out[j]
			o.Records += s.Records
			o.Bytes += s.Bytes
			o.Consumers += s.Consumers
			if o.Consumers > 0 {
				o.Idle = 0
			} else {
				o.Idle = min(o.Idle, s.Idle)
			}
		}
		if d.Finish() != nil {
			return nil, fmt.Errorf("%w: malformed Subscribers answer from %s", ErrProtocol, n.addr)
		}
	}
	return out, nil
}

// Unsubscribe removes subscriber from a queue channel on every node and
// reports whether it existed: its Consume streams end with
// ErrChannelRemoved. While other subscribers remain, its queue and the
// records in it are dropped; the last subscriber's queue, records
// included, becomes the channel's plain queue again, which Pop serves.
// Needs the admin credential when the node has auth on.
func (c *Client) Unsubscribe(ctx context.Context, channel, subscriber string) (bool, error) {
	if !wire.ValidChannelString(channel) {
		return false, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	if len(subscriber) > 255 {
		return false, fmt.Errorf("%w: subscriber name of %d bytes", ErrBadRequest, len(subscriber))
	}
	body := wire.AppendStr8(wire.AppendStr8(nil, channel), subscriber)
	removed := false
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpUnsubscribe, 0, body)
		if errors.Is(err, ErrNotMyVBucket) {
			continue // a member active for no vBucket holds no queue
		}
		if err != nil {
			return removed, err
		}
		if len(r) != 1 {
			return removed, fmt.Errorf("%w: malformed Unsubscribe answer from %s", ErrProtocol, n.addr)
		}
		removed = removed || r[0] == 1
	}
	return removed, nil
}
