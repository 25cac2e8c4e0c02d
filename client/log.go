package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Log channels hold records (timestamp, value), several per timestamp,
// kept on disk by the nodes. Appends go round-robin: with routing over
// every vBucket of the cluster, each to its active; without, over the
// client's nodes (to the next node when one cannot be reached), as
// swarm's DLS client did. Reads ask every node. A node returns its
// records in timestamp order, equal timestamps in append order; a read
// over several nodes merges them in timestamp order as they stream (equal
// timestamps of different nodes in the order of the nodes).

// LogRecord is one record of a log channel.
type LogRecord struct {
	// Timestamp is the record's time, by convention unix seconds (the
	// nodes' retention compares it with their clock).
	Timestamp uint64
	Value     []byte
	// Node, in a record read, is the address of the node that holds it.
	Node string
}

// LogWriteOption changes a log append.
type LogWriteOption func(*logWriteOptions)

type logWriteOptions struct {
	key []byte
	dur writeOptions // durability.go
}

// RoutingKey puts the records in the vBucket of key instead of spreading
// them round-robin over the vBuckets.
func RoutingKey(key []byte) LogWriteOption {
	return func(o *logWriteOptions) { o.key = key }
}

func routingKeyOf(opts []LogWriteOption) ([]byte, error) {
	var o logWriteOptions
	for _, fn := range opts {
		fn(&o)
	}
	if len(o.key) > wire.MaxKeyLen {
		return nil, fmt.Errorf("%w: routing key of %d bytes, the limit is %d", ErrKeyTooBig, len(o.key), wire.MaxKeyLen)
	}
	return o.key, nil
}

// LogPut appends one record to a log channel, on the next node in turn
// (with routing: the active of the next vBucket, or of the routing key's).
// It returns once the node holds the record as durably as its
// --log-fsync says (with "always": fsynced).
func (c *Client) LogPut(ctx context.Context, channel string, ts uint64, value []byte, opts ...LogWriteOption) error {
	key, err := routingKeyOf(opts)
	if err != nil {
		return err
	}
	_, err = c.logAppend(ctx, wire.OpLogPut, channel, key, func(b []byte) []byte {
		b = wire.AppendStr8(b, channel)
		b = wire.AppendU64(b, ts)
		b = wire.AppendBytes8(b, key)
		return append(b, value...)
	}, opts...)
	return err
}

// LogPutBatch appends records to a log channel in one request, on the next
// node in turn: every record is stored, or none (the error says why). It
// returns the number stored. The records' Node is ignored.
func (c *Client) LogPutBatch(ctx context.Context, channel string, recs []LogRecord, opts ...LogWriteOption) (int, error) {
	key, err := routingKeyOf(opts)
	if err != nil {
		return 0, err
	}
	size := 1 + len(channel) + 1 + len(key) + 4
	for _, r := range recs {
		size += 12 + len(r.Value)
	}
	r, err := c.logAppend(ctx, wire.OpLogPutBatch, channel, key, func(b []byte) []byte {
		b = slices.Grow(b, size) // one allocation at most, not one per doubling
		b = wire.AppendStr8(b, channel)
		b = wire.AppendBytes8(b, key)
		b = wire.AppendU32(b, uint32(len(recs)))
		for _, r := range recs {
			b = wire.AppendU64(b, r.Timestamp)
			b = wire.AppendBytes32(b, r.Value)
		}
		return b
	}, opts...)
	if err != nil {
		return 0, err
	}
	if len(r) != 4 {
		return 0, fmt.Errorf("%w: malformed LogPutBatch answer", ErrProtocol)
	}
	return int(uint32(r[0]) | uint32(r[1])<<8 | uint32(r[2])<<16 | uint32(r[3])<<24), nil
}

// logAppend sends an append, whose body build appends, to the next node
// that can be reached. The header carries the routing key's vBucket.
func (c *Client) logAppend(ctx context.Context, op wire.Opcode, channel string, key []byte, build func(b []byte) []byte, opts ...LogWriteOption) ([]byte, error) {
	if !wire.ValidChannelString(channel) {
		return nil, fmt.Errorf("%w: %q: use 1-255 of A-Z a-z 0-9 _ -", ErrBadChannelName, channel)
	}
	var o logWriteOptions
	for _, fn := range opts {
		fn(&o)
	}
	if flags, prefix := o.dur.durablePrefix(); prefix != nil {
		b := build(nil)
		return c.durableSpreadAnswer(ctx, op, key, append(prefix, b...), flags, b)
	}
	if rt := c.routes(); rt != nil {
		bp := getBuf()
		b := build((*bp)[:0])
		*bp = b
		defer putBuf(bp)
		if len(b) > wire.MaxBody {
			return nil, fmt.Errorf("%w: the request is %d bytes; split it below %d", ErrValueTooBig, len(b), wire.MaxBody)
		}
		return c.spread(ctx, rt, op, key, b)
	}
	n, err := c.appendNode(ctx)
	if err != nil {
		return nil, err
	}
	var vb uint16
	if len(key) > 0 {
		vb = vbucket.Of(key, n.vbuckets())
	}
	bp := getBuf()
	b := build((*bp)[:0])
	*bp = b
	defer putBuf(bp)
	if len(b) > wire.MaxBody {
		return nil, fmt.Errorf("%w: the request is %d bytes; split it below %d", ErrValueTooBig, len(b), wire.MaxBody)
	}
	return c.do(ctx, n, op, vb, b)
}

// appendNode returns the next node in turn that is connected or can be
// connected now. An append is sent to one node only: once sent, a broken
// connection is reported (ErrDisconnected), not retried elsewhere, since
// the node may have stored it.
func (c *Client) appendNode(ctx context.Context) (*node, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	var errs []error
	for range c.seeds {
		n := c.seeds[int(c.rr.Add(1)-1)%len(c.seeds)]
		_, err := n.conn(ctx)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, ErrDisconnected) {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// RangeOption changes a LogRange.
type RangeOption func(*rangeOptions)

type rangeOptions struct {
	mode     uint8 // filter mode of the LogRange request
	filter   string
	replicas bool
}

// Filter modes of LogRange (docs/protocol.md §4.5).
const (
	filterSubstring = 1
	filterRegexp    = 2
)

// FilterSubstring makes LogRange return only the records whose value
// contains sub.
func FilterSubstring(sub string) RangeOption {
	return func(o *rangeOptions) { o.mode, o.filter = filterSubstring, sub }
}

// FilterRegexp makes LogRange return only the records whose value matches
// the regular expression expr (RE2 syntax, evaluated by the node; "(?i)"
// for case-insensitive). A node refuses an expression that does not
// compile with ErrBadFilter.
func FilterRegexp(expr string) RangeOption {
	return func(o *rangeOptions) { o.mode, o.filter = filterRegexp, expr }
}

// RangeWithReplicaCopies makes LogRange read the replica copies a node
// holds too, not only the vBuckets it is active for (for operators and
// tests comparing copies): a record then comes once per copy read, and a
// replica's copy may be stale.
func RangeWithReplicaCopies() RangeOption { return func(o *rangeOptions) { o.replicas = true } }

// LogRange streams the records of a log channel with timestamps in [from,
// to] from every node (with routing: every member active for some
// vBucket, each answering for those), merged in timestamp order as they
// stream (a k-way merge: equal timestamps of one node in append order, of
// different nodes in the order of the nodes), each tagged with its node's
// address. Each node's stream is flow-controlled; if a connection breaks
// it reconnects and resumes after the last batch received, so no record
// is repeated or missed. A node that stays unreachable holds the stream
// (reconnecting with backoff) until ctx ends. from > to fails with
// ErrBadRange.
func (c *Client) LogRange(ctx context.Context, channel string, from, to uint64, opts ...RangeOption) *Stream[LogRecord] {
	var o rangeOptions
	for _, fn := range opts {
		fn(&o)
	}
	nodes := c.members()
	parts := make([]*Stream[LogRecord], len(nodes))
	for i, n := range nodes {
		parts[i] = c.logRangeOf(ctx, n, channel, from, to, &o)
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return mergedBy(ctx, parts, func(a, b LogRecord) bool { return a.Timestamp < b.Timestamp })
}

// logRangeOf is the LogRange stream of one node.
func (c *Client) logRangeOf(ctx context.Context, n *node, channel string, from, to uint64, o *rangeOptions) *Stream[LogRecord] {
	s := newStream[LogRecord](c, ctx, n, wire.OpLogRange)
	var posTs, posCount uint64 // where the node's read resumes
	s.request = func(b []byte, credit uint32) []byte {
		b = wire.AppendStr8(b, channel)
		b = wire.AppendU64(b, from)
		b = wire.AppendU64(b, to)
		b = wire.AppendU8(b, o.mode)
		b = wire.AppendBytes32(b, []byte(o.filter))
		b = wire.AppendU32(b, credit)
		b = wire.AppendU64(b, posTs)
		b = wire.AppendU64(b, posCount)
		if o.replicas {
			b = wire.AppendU8(b, 1) // flags: replica copies too
		}
		return b
	}
	s.decode = func(body []byte, yield func(LogRecord, error) bool) (bool, error) {
		d := wire.NewDecoder(body)
		n := d.U32()
		if uint64(n)*12 > uint64(d.Len()) {
			return false, fmt.Errorf("%w: LogRange batch of %d records in %d bytes", ErrProtocol, n, len(body))
		}
		recs := make([]LogRecord, n)
		for i := range recs {
			recs[i] = LogRecord{Timestamp: d.U64(), Value: d.Bytes32(), Node: s.n.addr}
		}
		ts, count := d.U64(), d.U64()
		if d.Finish() != nil {
			return false, fmt.Errorf("%w: malformed LogRange batch", ErrProtocol)
		}
		posTs, posCount = ts, count
		for _, r := range recs {
			if !yield(r, nil) {
				return false, nil
			}
		}
		return true, nil
	}
	return s
}

// LogAll streams every record of a log channel: LogRange over all
// timestamps.
func (c *Client) LogAll(ctx context.Context, channel string, opts ...RangeOption) *Stream[LogRecord] {
	return c.LogRange(ctx, channel, 0, math.MaxUint64, opts...)
}
