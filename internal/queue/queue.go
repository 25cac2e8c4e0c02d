package queue

import (
	"bytes"
	"context"
	"slices"
	"time"
)

// channel is a named queue channel. Without subscribers it has exactly one
// queue (subscriber ""), which Pop serves. The first subscription takes that
// queue over with its backlog; every further subscriber name gets a queue
// of its own, and every push goes to all of them.
type channel struct {
	name       string
	subscribed bool
	queues     []*queue
	ringSize   int64
	vbits      []uint64 // the vBuckets that ever held a record of the channel
	// removed: RemoveChannel removed the channel's records of the active
	// vBuckets, and it stays only for its copies of replica vBuckets until
	// their actives' removals arrive (then it goes).
	removed bool
}

func (c *channel) queue(subscriber string) *queue {
	for _, q := range c.queues {
		if q.subscriber == subscriber {
			return q
		}
	}
	return nil
}

func (c *channel) setVB(vb uint16) { c.vbits[vb/64] |= 1 << (vb % 64) }

func (c *channel) hasVB(vb uint16) bool { return c.vbits[vb/64]&(1<<(vb%64)) != 0 }

// holdsAny reports whether some vBucket may hold a record of c.
func (c *channel) holdsAny() bool {
	for _, w := range c.vbits {
		if w != 0 {
			return true
		}
	}
	return false
}

// queue is one FIFO of records: a memory ring holding the oldest ones and
// an overflow on disk holding the newer ones that did not fit. Once the
// overflow holds anything every push goes there, and pops refill the ring
// from the overflow's head, so order is strictly FIFO across both.
type queue struct {
	id         uint64
	ch         *channel
	subscriber string
	ring       ring
	of         overflow
	consumers  []*Consumer
	// activeAt is when a consumer last attached, took records or
	// detached (or the queue was made or loaded): with no consumer
	// attached, the queue has been idle since then.
	activeAt time.Time
}

// popItem is a record a pop is about to take.
type popItem struct {
	vb       uint16
	seqno    uint64 // push seqno
	popSeqno uint64
	vlen     int
	overflow bool   // read from the overflow (the ring had nothing to take)
	off      int    // in the ring: the item's offset
	pos      ofPos  // in the overflow: the record's position
	value    []byte // in the overflow past its head: a copy of the value
}

// qMark undoes a push into one queue.
type qMark struct {
	q      *queue
	toRing bool
	ring   ringMark
	of     ofMark
}

func (q *queue) records() int64 { return int64(q.ring.live) + q.of.records }

func (q *queue) push(vb uint16, seqno uint64, value []byte) (qMark, error) {
	if q.of.records == 0 && q.ring.fits(len(value)) {
		m := qMark{q: q, toRing: true, ring: q.ring.mark()}
		q.ring.push(vb, seqno, value)
		return m, nil
	}
	om, err := q.of.append(vb, seqno, value)
	return qMark{q: q, of: om}, err
}

func (m qMark) commit() {
	if !m.toRing {
		m.q.of.commit(m.of)
	}
}

func (m qMark) rollback() {
	if m.toRing {
		m.q.ring.rollback(m.ring)
	} else {
		m.q.of.rollback(m.of)
	}
}

// heads appends to dst the records a pop of up to maxBytes of values (at
// least one record) would take among those of vBuckets active selects:
// the ring's first such records, or, when the ring holds none, the
// overflow's first. Records of other vBuckets (a replica's copies, which
// only their active's pops remove) are stepped over: order among the
// records taken is FIFO as ever.
func (q *queue) heads(dst []popItem, maxBytes int, active func(vb uint16) bool) ([]popItem, error) {
	total, n := 0, len(dst)
	q.ring.skipRemoved()
	q.ring.each(func(off int, h itemHeader) bool {
		if !active(h.vb) {
			return true
		}
		if len(dst) > n && total+h.vlen > maxBytes {
			return false
		}
		total += h.vlen
		dst = append(dst, popItem{vb: h.vb, seqno: h.seqno, vlen: h.vlen, off: off})
		return true
	})
	if len(dst) > n || q.of.records == 0 {
		return dst, nil
	}
	r, err := q.of.peek()
	if err != nil || r == nil {
		return dst, err
	}
	if active(r.vb) {
		return append(dst, popItem{vb: r.vb, seqno: r.seqno, vlen: len(r.value), overflow: true, pos: r.pos}), nil
	}
	var found *popItem
	err = q.of.scan(func(r *ofRecord) bool {
		if !active(r.vb) {
			return true
		}
		found = &popItem{vb: r.vb, seqno: r.seqno, vlen: len(r.value), overflow: true, pos: r.pos, value: bytes.Clone(r.value)}
		return false
	})
	if err != nil || found == nil {
		return dst, err
	}
	return append(dst, *found), nil
}

// take pops the records heads returned, appending their values to dst:
// bare, or as wire bytes32 fields when framed is set. A record past the
// head (others' copies before it) is removed where it is.
func (q *queue) take(dst []byte, items []popItem, framed bool) []byte {
	for _, it := range items {
		if framed {
			dst = appendU32(dst, uint32(it.vlen))
		}
		switch {
		case it.overflow && it.value == nil: // the overflow's head
			dst = append(dst, q.of.head.value...)
			q.of.pop()
		case it.overflow:
			dst = append(dst, it.value...)
			q.of.removeAt(it.pos, it.vlen)
		default:
			h, ok := q.ring.first()
			if ok && q.ring.head == it.off {
				dst = q.ring.pop(dst)
				break
			}
			h = q.ring.header(it.off)
			dst = q.ring.appendValue(dst, it.off, h)
			q.ring.remove(it.off, h)
		}
	}
	return dst
}

// refill moves records from the overflow's head into the ring while they
// fit. It reports an overflow that cannot be read.
func (q *queue) refill() error {
	for q.of.records > 0 {
		r, err := q.of.peek()
		if err != nil || r == nil || !q.ring.fits(len(r.value)) {
			return err
		}
		q.ring.push(r.vb, r.seqno, r.value)
		q.of.pop()
	}
	return nil
}

// removeID removes the record pushed at seqno in vb, wherever it is.
func (q *queue) removeID(vb uint16, seqno uint64) (bool, error) {
	n, err := q.remove(func(v uint16, s uint64) bool { return v == vb && s == seqno }, true)
	return n > 0, err
}

// remove removes the records match selects (only the first one when first
// is set) and returns how many it removed.
func (q *queue) remove(match func(vb uint16, seqno uint64) bool, first bool) (int, error) {
	if first {
		// A pop normally takes the head: pop it for real.
		if h, ok := q.ring.first(); ok && match(h.vb, h.seqno) {
			q.ring.advance(h)
			return 1, nil
		}
		if q.ring.live == 0 && q.of.records > 0 {
			r, err := q.of.peek()
			if err != nil {
				return 0, err
			}
			if r != nil && match(r.vb, r.seqno) {
				q.of.pop()
				return 1, nil
			}
		}
	}
	n := 0
	q.ring.each(func(off int, h itemHeader) bool {
		if match(h.vb, h.seqno) {
			q.ring.remove(off, h)
			n++
		}
		return n == 0 || !first
	})
	if (n > 0 && first) || q.of.records == 0 {
		return n, nil
	}
	type hit struct {
		pos  ofPos
		vlen int
	}
	var hits []hit
	err := q.of.scan(func(r *ofRecord) bool {
		if match(r.vb, r.seqno) {
			hits = append(hits, hit{r.pos, len(r.value)})
		}
		return len(hits) == 0 || !first
	})
	for _, h := range hits {
		q.of.removeAt(h.pos, h.vlen)
	}
	return n + len(hits), err
}

// each calls fn for every record of the queue, oldest first, until fn
// returns false. value is valid only during the call.
func (q *queue) each(fn func(vb uint16, seqno uint64, value []byte) bool) error {
	var buf []byte
	more := true
	q.ring.each(func(off int, h itemHeader) bool {
		buf = q.ring.appendValue(buf[:0], off, h)
		more = fn(h.vb, h.seqno, buf)
		return more
	})
	if !more {
		return nil
	}
	return q.of.scan(func(r *ofRecord) bool { return fn(r.vb, r.seqno, r.value) })
}

func (q *queue) notify() {
	for _, c := range q.consumers {
		c.signal()
	}
}

// end detaches every consumer, which then fails with err.
func (q *queue) end(err error) {
	for _, c := range q.consumers {
		c.q, c.err = nil, err
		c.signal()
	}
	q.consumers = nil
}

func (q *queue) detach(c *Consumer, now time.Time) {
	q.consumers = slices.DeleteFunc(q.consumers, func(x *Consumer) bool { return x == c })
	q.activeAt = now
}

func (q *queue) stats() ChannelStats {
	st := ChannelStats{
		Name:            q.ch.name,
		Subscriber:      q.subscriber,
		Subscribed:      q.ch.subscribed,
		MemoryRecords:   int64(q.ring.live),
		MemoryBytes:     q.ring.liveBytes,
		OverflowRecords: q.of.records,
		OverflowBytes:   q.of.bytes,
		RingSize:        q.ring.limit,
		Fullness:        100 * float64(q.ring.used) / float64(q.ring.limit),
		Consumers:       len(q.consumers),
	}
	if len(q.consumers) == 0 {
		st.IdleSince = q.activeAt
	}
	st.Records = st.MemoryRecords + st.OverflowRecords
	st.Bytes = st.MemoryBytes + st.OverflowBytes
	return st
}

// ChannelStats describes one queue: a channel without subscribers, or one
// subscriber's queue of a channel that has subscribers.
type ChannelStats struct {
	Name       string // the channel
	Subscriber string // the subscriber name; "" when Subscribed is false
	Subscribed bool   // whether the channel has subscribers
	Records    int64  // records queued, memory and overflow
	Bytes      int64  // value bytes queued, memory and overflow

	MemoryRecords   int64 // records in the memory ring
	MemoryBytes     int64 // value bytes in the memory ring
	OverflowRecords int64 // records in the disk overflow
	OverflowBytes   int64 // value bytes in the disk overflow

	RingSize int64 // the ring's capacity in bytes
	// Fullness is the percentage of the ring in use, counting the 16-byte
	// record headers. It can exceed 100 only after a restart into a
	// smaller ring size.
	Fullness  float64
	Consumers int // consumers attached now
	// IdleSince is, when no consumer is attached, since when: the last
	// time one detached, took records or attached (or the queue was made,
	// or the store opened). Zero while a consumer is attached.
	IdleSince time.Time
}

// Consumer takes records from one subscriber queue of a channel. Consumers
// with the same subscriber name share (split) that queue. A Consumer pulls:
// the store never buffers records for it beyond the queue itself, so a
// consumer that stops asking costs nothing but the queue's growth, which
// overflows to disk as usual.
type Consumer struct {
	s     *Store
	q     *queue // nil once ended; guarded by s.mu
	err   error  // why it ended; guarded by s.mu
	ready chan struct{}
}

// Ready returns a channel that receives a value when records may be
// available or the consumer ended. After a receive, call Next until it
// returns ErrEmpty before waiting again.
func (c *Consumer) Ready() <-chan struct{} { return c.ready }

func (c *Consumer) signal() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// Next pops a batch from the queue (records of Active vBuckets only, as
// Pop) and appends it to dst as consecutive
// wire bytes32 fields (u32 length, then the value). The batch holds at
// least one record and, beyond the first, at most maxBytes of values. It
// returns the extended dst and the number of records, ErrEmpty when the
// queue is empty, ErrChannelRemoved once the channel was removed and
// ErrClosed once the consumer or the store was closed. In journal mode with
// FsyncInterval 0 it returns only after the pops are on disk.
func (c *Consumer) Next(dst []byte, maxBytes int) ([]byte, int, error) {
	s := c.s
	s.mu.Lock()
	if c.q == nil {
		err := c.err
		s.mu.Unlock()
		return dst, 0, err
	}
	dst, n, lsn, err := s.take(c.q, dst, maxBytes, true)
	if n > 0 {
		c.q.activeAt = s.cfg.Now()
	}
	s.mu.Unlock()
	if err != nil {
		return dst, 0, err
	}
	if n == 0 {
		return dst, 0, ErrEmpty
	}
	return dst, n, s.durable(context.Background(), lsn)
}

// Close detaches the consumer. The subscription itself stays: records keep
// arriving in the subscriber's queue.
func (c *Consumer) Close() {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.q != nil {
		c.q.detach(c, s.cfg.Now())
		c.q, c.err = nil, ErrClosed
	}
}
