package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// bufPool recycles request bodies.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

// maxPooledBuf bounds the buffers bufPool keeps. It was 64 KiB: a
// LogPutBatch of 16 records of 4 KiB is just over that, so every one was
// allocated afresh (and grown by doubling); pooling them and sizing the
// body once cut the client's CPU for such batches 2.3 times.
const maxPooledBuf = 1 << 20

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// WriteOption changes a write.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ttl           uint32
	durability    Durability // durability.go
	durabilitySet bool
	durTimeout    time.Duration
}

// WithTTL makes the record expire after d (rounded up to whole seconds).
func WithTTL(d time.Duration) WriteOption {
	return func(o *writeOptions) {
		if d > 0 {
			o.ttl = uint32((d + time.Second - 1) / time.Second)
		}
	}
}

func ttlOf(opts []WriteOption) uint32 {
	var o writeOptions
	for _, fn := range opts {
		fn(&o)
	}
	return o.ttl
}

func checkArgs(channel string, key []byte) error {
	if !wire.ValidChannelString(channel) {
		return fmt.Errorf("%w: %q: use 1-255 of A-Z a-z 0-9 _ -", ErrBadChannelName, channel)
	}
	if len(key) == 0 {
		return fmt.Errorf("%w: empty key", ErrBadKey)
	}
	if len(key) > wire.MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrKeyTooBig, len(key), wire.MaxKeyLen)
	}
	return nil
}

// reads are the single-key requests that change nothing: retried when
// their connection breaks.
var reads = routePolicy{retrySent: true}

// kvCall runs a single-key request: it routes by the key's vBucket (to its
// active by the map, or to the first node when the client does not route).
func (c *Client) kvCall(ctx context.Context, op wire.Opcode, channel string, key []byte, build func(b []byte) []byte) ([]byte, error) {
	return c.kvWrite(ctx, op, channel, key, writeOptions{}, build)
}

// kvWrite is kvCall with a write's options (its durability).
func (c *Client) kvWrite(ctx context.Context, op wire.Opcode, channel string, key []byte, wo writeOptions, build func(b []byte) []byte) ([]byte, error) {
	if err := checkArgs(channel, key); err != nil {
		return nil, err
	}
	rt := c.routes()
	var vb uint16
	if rt != nil {
		vb = vbucket.Of(key, rt.vbs)
	} else {
		n := c.kvNode()
		if n.vbuckets() == 0 {
			// Not connected yet: connect to learn the vBucket count.
			if _, err := n.conn(ctx); err != nil {
				return nil, err
			}
		}
		vb = vbucket.Of(key, n.vbuckets())
	}
	bp := getBuf()
	b := wire.AppendStr8((*bp)[:0], channel)
	b = wire.AppendBytes8(b, key)
	if build != nil {
		b = build(b)
	}
	*bp = b
	var pol routePolicy
	if op == wire.OpGet || op == wire.OpExists || op == wire.OpTTL {
		pol = reads
	}
	flags, prefix := wo.durablePrefix()
	if prefix != nil {
		b = append(prefix, b...)
		if _, ok := ctx.Deadline(); !ok {
			// The node answers within the durability timeout: wait for it.
			t := wo.durTimeout
			if t <= 0 {
				t = wire.DefaultDurableTimeout
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, max(c.o.timeout, t+2*time.Second))
			defer cancel()
		}
	}
	var r []byte
	var err error
	for attempt := 1; ; attempt++ {
		if rt != nil {
			res := c.routed(ctx, rt, vb, op, flags, b, pol)
			r, err = res.body, res.err
		} else {
			r, err = c.direct(ctx, op, vb, flags, b, pol)
		}
		if !errors.Is(err, ErrSyncWriteInProgress) || !retrySyncWrite(ctx, attempt) {
			break
		}
		rt = c.routes()
	}
	putBuf(bp)
	if prefix != nil {
		err = durableOutcome(err)
	}
	return r, err
}

// Put stores value under key in channel, replacing any value, and returns
// the record's new CAS.
func (c *Client) Put(ctx context.Context, channel string, key, value []byte, opts ...WriteOption) (uint64, error) {
	wo := c.writeOpts(opts)
	ttl := wo.ttl
	r, err := c.kvWrite(ctx, wire.OpPut, channel, key, wo, func(b []byte) []byte {
		return append(wire.AppendU32(b, ttl), value...)
	})
	if err != nil {
		return 0, err
	}
	return u64(r), nil
}

// Get returns the value of key; ErrNotFound when there is none.
func (c *Client) Get(ctx context.Context, channel string, key []byte) ([]byte, error) {
	v, _, err := c.Gets(ctx, channel, key)
	return v, err
}

// Gets returns the value of key and its CAS, for Update.
func (c *Client) Gets(ctx context.Context, channel string, key []byte) ([]byte, uint64, error) {
	r, err := c.kvCall(ctx, wire.OpGet, channel, key, nil)
	if err != nil {
		return nil, 0, err
	}
	if len(r) < 8 {
		return nil, 0, fmt.Errorf("%w: short Get answer", ErrProtocol)
	}
	return r[8:], u64(r), nil
}

// ReplicaValue is the answer of GetReplica.
type ReplicaValue struct {
	Value []byte
	CAS   uint64
	// Replica is true when the value was read from a replica copy, which
	// may be stale (it lags its active by the replication delay); false
	// when the node that answered was the vBucket's active.
	Replica bool
	// Node is the address of the node that answered.
	Node string
}

// GetReplica reads key from a copy that may be stale: a replica of its
// vBucket (the replicas of the map's chain in turn), or its active when
// no replica answers. ErrNotFound when that copy has no value (a replica
// may not have received it yet). A client that does not route asks the
// first node, which answers from whichever copy it holds.
func (c *Client) GetReplica(ctx context.Context, channel string, key []byte) (ReplicaValue, error) {
	if err := checkArgs(channel, key); err != nil {
		return ReplicaValue{}, err
	}
	b := wire.AppendStr8(nil, channel)
	b = wire.AppendBytes8(b, key)
	rt := c.routes()
	if rt == nil {
		n := c.kvNode()
		if n.vbuckets() == 0 {
			if _, err := n.conn(ctx); err != nil {
				return ReplicaValue{}, err
			}
		}
		r, err := c.direct(ctx, wire.OpGetReplica, vbucket.Of(key, n.vbuckets()), 0, b, reads)
		if err != nil {
			return ReplicaValue{}, err
		}
		return decodeReplicaValue(n.addr, r)
	}
	vb := vbucket.Of(key, rt.vbs)
	var errs []error
	for _, id := range rt.m.VBuckets[vb].Chain[min(1, len(rt.m.VBuckets[vb].Chain)):] {
		mem, ok := rt.m.Node(id)
		if !ok || mem.Addr == "" {
			continue
		}
		n := c.r.pool(mem.Addr)
		r, err := c.do(ctx, n, wire.OpGetReplica, vb, b)
		switch {
		case err == nil:
			return decodeReplicaValue(n.addr, r)
		case errors.Is(err, ErrNotFound):
			return ReplicaValue{}, err
		case ctx.Err() != nil:
			return ReplicaValue{}, err
		}
		errs = append(errs, err) // unreachable, or no copy (the map changed): the next one
	}
	res := c.routed(ctx, rt, vb, wire.OpGetReplica, 0, b, reads)
	if res.err != nil {
		return ReplicaValue{}, errors.Join(append(errs, res.err)...)
	}
	return decodeReplicaValue(res.node.addr, res.body)
}

// decodeReplicaValue decodes a GetReplica answer: u64 cas, u8 source,
// value.
func decodeReplicaValue(addr string, r []byte) (ReplicaValue, error) {
	if len(r) < 9 || (r[8] != wire.SourceActive && r[8] != wire.SourceReplica) {
		return ReplicaValue{}, fmt.Errorf("%w: malformed GetReplica answer from %s", ErrProtocol, addr)
	}
	return ReplicaValue{Value: r[9:], CAS: u64(r), Replica: r[8] == wire.SourceReplica, Node: addr}, nil
}

// Exists reports whether key has a value.
func (c *Client) Exists(ctx context.Context, channel string, key []byte) (bool, error) {
	r, err := c.kvCall(ctx, wire.OpExists, channel, key, nil)
	if err != nil {
		return false, err
	}
	return len(r) == 1 && r[0] == 1, nil
}

// Remove deletes key and reports whether it had a value.
func (c *Client) Remove(ctx context.Context, channel string, key []byte, opts ...WriteOption) (bool, error) {
	r, err := c.kvWrite(ctx, wire.OpRemove, channel, key, c.writeOpts(opts), nil)
	if err != nil {
		return false, err
	}
	return len(r) == 1 && r[0] == 1, nil
}

// Update stores value under key only if the record's CAS is still cas
// (from Gets or an earlier write); otherwise it fails with ErrExists, or
// ErrNotFound if the record is gone. It returns the new CAS. The record
// keeps its expiry unless WithTTL gives a new one (Redis's SET ...
// KEEPTTL); Persist removes it.
func (c *Client) Update(ctx context.Context, channel string, key, value []byte, cas uint64, opts ...WriteOption) (uint64, error) {
	wo := c.writeOpts(opts)
	ttl := wo.ttl
	r, err := c.kvWrite(ctx, wire.OpUpdate, channel, key, wo, func(b []byte) []byte {
		b = wire.AppendU64(b, cas)
		return append(wire.AppendU32(b, ttl), value...)
	})
	if err != nil {
		return 0, err
	}
	return u64(r), nil
}

// Expire makes the record of key expire d from now (rounded up to whole
// seconds), keeping its value (Redis's EXPIRE); d must be positive. It is
// a write: the record gets a new CAS, which Expire returns. ErrNotFound
// when there is no record.
func (c *Client) Expire(ctx context.Context, channel string, key []byte, d time.Duration) (uint64, error) {
	if d <= 0 {
		return 0, fmt.Errorf("%w: Expire needs a positive duration (Persist clears the expiry)", ErrBadRequest)
	}
	return c.expire(ctx, channel, key, ttlOf([]WriteOption{WithTTL(d)}))
}

// Persist removes the expiry of key's record, keeping its value (Redis's
// PERSIST). It is a write: it returns the record's new CAS. ErrNotFound
// when there is no record.
func (c *Client) Persist(ctx context.Context, channel string, key []byte) (uint64, error) {
	return c.expire(ctx, channel, key, 0)
}

func (c *Client) expire(ctx context.Context, channel string, key []byte, ttl uint32) (uint64, error) {
	r, err := c.kvWrite(ctx, wire.OpExpire, channel, key, c.writeOpts(nil), func(b []byte) []byte { return wire.AppendU32(b, ttl) })
	if err != nil {
		return 0, err
	}
	if len(r) != 8 {
		return 0, fmt.Errorf("%w: malformed Expire answer", ErrProtocol)
	}
	return u64(r), nil
}

// Expiry is when a record expires, as TTL reports it.
type Expiry struct {
	// At is the time the record expires (whole seconds); zero when never.
	At time.Time
	// Left is the time left by the node's clock, 0 when the record never
	// expires.
	Left time.Duration
	// CAS is the record's CAS.
	CAS uint64
}

// Never reports whether the record has no expiry.
func (e Expiry) Never() bool { return e.At.IsZero() }

// TTL returns when key's record expires; ErrNotFound when there is no
// record.
func (c *Client) TTL(ctx context.Context, channel string, key []byte) (Expiry, error) {
	r, err := c.kvCall(ctx, wire.OpTTL, channel, key, nil)
	if err != nil {
		return Expiry{}, err
	}
	d := wire.NewDecoder(r)
	cas, at, left := d.U64(), d.U64(), d.U32()
	if d.Finish() != nil || at > math.MaxInt64 {
		return Expiry{}, fmt.Errorf("%w: malformed TTL answer", ErrProtocol)
	}
	e := Expiry{CAS: cas, Left: time.Duration(left) * time.Second}
	if at != 0 {
		e.At = time.Unix(int64(at), 0)
	}
	return e, nil
}

// Record is a key and value.
type Record struct {
	Key   []byte
	Value []byte
	// TTL, for PutBatch: the record expires after it (whole seconds); 0 = never.
	TTL time.Duration
	// CAS, from GetAll: the record's CAS.
	CAS uint64
	// Expiry, from GetAll with WithExpiry: when the record expires, in
	// unix seconds; 0 = never.
	Expiry int64

	hash uint64 // xxhash64 of Key, for merging the GetAll of several nodes
	vbs  int    // the vBucket count, with hash
}

// PutBatch stores records in channel and returns how many were stored.
// Without routing it is one request, and on an error the records before
// the failing one are stored. With routing the batch is split by the
// active node of each record's vBucket, one request per node sent
// together: each node's part is stored in order, the count is the sum,
// and on an error the other nodes' parts may be stored. A part a node
// refuses with `not my vbucket` stored nothing, and is split again by the
// new map and sent again, within ctx.
func (c *Client) PutBatch(ctx context.Context, channel string, recs []Record) (int, error) {
	if !wire.ValidChannelString(channel) {
		return 0, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	for i, r := range recs {
		if len(r.Key) == 0 || len(r.Key) > wire.MaxKeyLen {
			return 0, fmt.Errorf("%w: record %d: key of %d bytes", ErrBadKey, i, len(r.Key))
		}
	}
	if rt := c.routes(); rt != nil {
		return c.putBatchRouted(ctx, rt, channel, recs)
	}
	b, err := putBatchBody(channel, recs)
	if err != nil {
		return 0, err
	}
	r, err := c.do(ctx, c.kvNode(), wire.OpPutBatch, 0, b)
	if err != nil {
		return 0, err
	}
	return putBatchStored(r)
}

// putBatchBody is the body of a PutBatch of recs.
func putBatchBody(channel string, recs []Record) ([]byte, error) {
	b := wire.AppendStr8(nil, channel)
	b = wire.AppendU32(b, uint32(len(recs)))
	for _, r := range recs {
		b = wire.AppendBytes8(b, r.Key)
		b = wire.AppendU32(b, ttlOf([]WriteOption{WithTTL(r.TTL)}))
		b = wire.AppendBytes32(b, r.Value)
	}
	if len(b) > wire.MaxBody {
		return nil, fmt.Errorf("%w: the batch is %d bytes; split it below %d", ErrValueTooBig, len(b), wire.MaxBody)
	}
	return b, nil
}

func putBatchStored(r []byte) (int, error) {
	if len(r) < 4 {
		return 0, fmt.Errorf("%w: short PutBatch answer", ErrProtocol)
	}
	return int(uint32(r[0]) | uint32(r[1])<<8 | uint32(r[2])<<16 | uint32(r[3])<<24), nil
}

// putBatchRouted is PutBatch split by the active of each record.
func (c *Client) putBatchRouted(ctx context.Context, rt *routeTable, channel string, recs []Record) (int, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	stored := 0
	pending := recs
	for attempt := 1; len(pending) > 0; attempt++ {
		groups := map[*node][]Record{}
		var noActive []Record
		for _, r := range pending {
			n := rt.actives[vbucket.Of(r.Key, rt.vbs)]
			if n == nil {
				noActive = append(noActive, r)
				continue
			}
			groups[n] = append(groups[n], r)
		}
		type part struct {
			recs   []Record
			stored int
			err    error
		}
		parts := make([]part, 0, len(groups))
		for _, g := range groups {
			parts = append(parts, part{recs: g})
		}
		var wg sync.WaitGroup
		i := 0
		for n := range groups {
			p := &parts[i]
			i++
			wg.Go(func() {
				b, err := putBatchBody(channel, p.recs)
				if err == nil {
					var r []byte
					if r, err = c.do(ctx, n, wire.OpPutBatch, 0, b); err == nil {
						p.stored, err = putBatchStored(r)
					}
				}
				p.err = err
			})
		}
		wg.Wait()
		pending = noActive
		var last error
		for _, p := range parts {
			stored += p.stored
			var e *Error
			switch {
			case p.err == nil:
			case errors.As(p.err, &e) && e.Status == uint16(wire.StatusNotMyVBucket):
				// The part was refused whole: split it again by the new map.
				pending = append(pending, p.recs...)
				last = p.err
				if len(e.mapBody) == 0 || !c.r.offer(e.mapBody) {
					c.r.refresh(ctx, nil, false, true)
				}
			default:
				return stored, p.err
			}
		}
		if len(pending) == 0 {
			break
		}
		if last == nil {
			last = unavailable(vbucket.Of(pending[0].Key, rt.vbs), "", fmt.Sprintf("map revision %d has no active node for it", rt.m.Revision))
			c.r.refresh(ctx, nil, true, false)
		}
		wait := min(time.Duration(attempt)*routeBackoff, maxRouteBackoff)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return stored, last
		}
		select {
		case <-ctx.Done():
			return stored, last
		case <-time.After(wait):
		}
		rt = c.routes()
	}
	return stored, nil
}

// Channel is a channel and its kind ("kv", "queue" or "log").
type Channel struct {
	Name string
	Kind string
	Node string
}

// Channels lists the channels of every node: the union of their answers.
// In a cluster every member knows every channel, so a member that cannot
// be reached is skipped as long as another one answered.
func (c *Client) Channels(ctx context.Context) ([]Channel, error) {
	var out []Channel
	seen := map[string]bool{}
	var down []error
	nodes := c.members()
	for _, n := range nodes {
		r, err := c.do(ctx, n, wire.OpGetChannels, 0, nil)
		if err != nil && c.routes() != nil && errors.Is(err, ErrDisconnected) && ctx.Err() == nil {
			down = append(down, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		d := wire.NewDecoder(r)
		count := d.U32()
		for i := uint32(0); i < count && d.Err() == nil; i++ {
			k, name := d.U8(), string(d.Bytes8())
			if !seen[name] {
				seen[name] = true
				out = append(out, Channel{Name: name, Kind: kindName(k), Node: n.addr})
			}
		}
		if d.Err() != nil {
			return nil, fmt.Errorf("%w: malformed GetChannels answer from %s", ErrProtocol, n.addr)
		}
	}
	if len(down) == len(nodes) {
		return nil, errors.Join(down...)
	}
	return out, nil
}

func kindName(k uint8) string {
	switch k {
	case wire.KindKV:
		return "kv"
	case wire.KindQueue:
		return "queue"
	case wire.KindLog:
		return "log"
	}
	return ""
}

// Size is a record count and the bytes of their keys and values.
type Size struct {
	Kind    string // for a channel: its kind, "" if it does not exist
	Records int64
	Bytes   int64
}

// ChannelSize returns the size of channel summed over every node. A node
// counts the kv records of the vBuckets it is active for; queue and log
// records it counts all, replica copies too (docs/protocol.md §4.2).
func (c *Client) ChannelSize(ctx context.Context, channel string) (Size, error) {
	if !wire.ValidChannelString(channel) {
		return Size{}, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	var s Size
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpGetChannelSize, 0, wire.AppendStr8(nil, channel))
		if err != nil {
			return Size{}, err
		}
		d := wire.NewDecoder(r)
		k, recs, bytes := d.U8(), d.U64(), d.U64()
		if d.Err() != nil {
			return Size{}, fmt.Errorf("%w: malformed GetChannelSize answer", ErrProtocol)
		}
		if k != 0 {
			s.Kind = kindName(k)
		}
		s.Records += int64(recs)
		s.Bytes += int64(bytes)
	}
	return s, nil
}

// Size returns the records and bytes of every channel of every node,
// counted as ChannelSize counts them.
func (c *Client) Size(ctx context.Context) (Size, error) {
	var s Size
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpGetSize, 0, nil)
		if err != nil {
			return Size{}, err
		}
		d := wire.NewDecoder(r)
		recs, bytes := d.U64(), d.U64()
		if d.Err() != nil {
			return Size{}, fmt.Errorf("%w: malformed GetSize answer", ErrProtocol)
		}
		s.Records += int64(recs)
		s.Bytes += int64(bytes)
	}
	return s, nil
}

// RemoveChannel removes channel and all its records from every node. With
// authentication on, it needs the admin credential. In a cluster one
// member removes it everywhere (the first that takes the request); a
// client that does not route asks every node it was given.
func (c *Client) RemoveChannel(ctx context.Context, channel string) error {
	if !wire.ValidChannelString(channel) {
		return fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	if rt := c.routes(); rt != nil {
		var errs []error
		for _, n := range c.members() {
			_, err := c.do(ctx, n, wire.OpRemoveChannel, 0, wire.AppendStr8(nil, channel))
			if err == nil || !errors.Is(err, ErrDisconnected) || ctx.Err() != nil {
				return err
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	for _, n := range c.seeds {
		if _, err := c.do(ctx, n, wire.OpRemoveChannel, 0, wire.AppendStr8(nil, channel)); err != nil {
			return err
		}
	}
	return nil
}

// NumConnections returns the open client connections of every node.
func (c *Client) NumConnections(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpGetNumConnections, 0, nil)
		if err != nil {
			return nil, err
		}
		out[n.addr] = int64(u64(r))
	}
	return out, nil
}

// Info returns what each node reports about itself (node id, version,
// uptime, memory, ...), keyed by address.
func (c *Client) Info(ctx context.Context) (map[string]map[string]any, error) {
	out := map[string]map[string]any{}
	for _, n := range c.members() {
		r, err := c.do(ctx, n, wire.OpInfo, 0, nil)
		if err != nil {
			return nil, err
		}
		m := map[string]any{}
		if err := json.Unmarshal(r, &m); err != nil {
			return nil, fmt.Errorf("%w: Info answer from %s: %w", ErrProtocol, n.addr, err)
		}
		out[n.addr] = m
	}
	return out, nil
}

func u64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
