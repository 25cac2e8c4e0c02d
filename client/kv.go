package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// WriteOption changes a write.
type WriteOption func(*writeOptions)

type writeOptions struct{ ttl uint32 }

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

// kvCall runs a single-key request: it routes by the key's vBucket.
func (c *Client) kvCall(ctx context.Context, op wire.Opcode, channel string, key []byte, build func(b []byte) []byte) ([]byte, error) {
	if err := checkArgs(channel, key); err != nil {
		return nil, err
	}
	n := c.kvNode()
	if n.vbuckets() == 0 {
		// Not connected yet: connect to learn the vBucket count.
		if _, err := n.conn(ctx); err != nil {
			return nil, err
		}
	}
	bp := getBuf()
	b := wire.AppendStr8((*bp)[:0], channel)
	b = wire.AppendBytes8(b, key)
	if build != nil {
		b = build(b)
	}
	*bp = b
	r, err := c.do(ctx, n, op, vbucket.Of(key, n.vbuckets()), b)
	putBuf(bp)
	return r, err
}

// Put stores value under key in channel, replacing any value, and returns
// the record's new CAS.
func (c *Client) Put(ctx context.Context, channel string, key, value []byte, opts ...WriteOption) (uint64, error) {
	ttl := ttlOf(opts)
	r, err := c.kvCall(ctx, wire.OpPut, channel, key, func(b []byte) []byte {
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
// vBucket, or its active when no replica answers. ErrNotFound when that
// copy has no value (a replica may not have received it yet).
func (c *Client) GetReplica(ctx context.Context, channel string, key []byte) (ReplicaValue, error) {
	if err := checkArgs(channel, key); err != nil {
		return ReplicaValue{}, err
	}
	n := c.kvNode()
	if n.vbuckets() == 0 {
		if _, err := n.conn(ctx); err != nil {
			return ReplicaValue{}, err
		}
	}
	b := wire.AppendStr8(nil, channel)
	b = wire.AppendBytes8(b, key)
	r, err := c.do(ctx, n, wire.OpGetReplica, vbucket.Of(key, n.vbuckets()), b)
	if err != nil {
		return ReplicaValue{}, err
	}
	return decodeReplicaValue(n.addr, r)
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
func (c *Client) Remove(ctx context.Context, channel string, key []byte) (bool, error) {
	r, err := c.kvCall(ctx, wire.OpRemove, channel, key, nil)
	if err != nil {
		return false, err
	}
	return len(r) == 1 && r[0] == 1, nil
}

// Update stores value under key only if the record's CAS is still cas
// (from Gets or an earlier write); otherwise it fails with ErrExists, or
// ErrNotFound if the record is gone. It returns the new CAS.
func (c *Client) Update(ctx context.Context, channel string, key, value []byte, cas uint64, opts ...WriteOption) (uint64, error) {
	ttl := ttlOf(opts)
	r, err := c.kvCall(ctx, wire.OpUpdate, channel, key, func(b []byte) []byte {
		b = wire.AppendU64(b, cas)
		return append(wire.AppendU32(b, ttl), value...)
	})
	if err != nil {
		return 0, err
	}
	return u64(r), nil
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
}

// PutBatch stores records in channel in one request and returns how many
// were stored: on an error, the records before the failing one are stored.
func (c *Client) PutBatch(ctx context.Context, channel string, recs []Record) (int, error) {
	if !wire.ValidChannelString(channel) {
		return 0, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	b := wire.AppendStr8(nil, channel)
	b = wire.AppendU32(b, uint32(len(recs)))
	for i, r := range recs {
		if len(r.Key) == 0 || len(r.Key) > wire.MaxKeyLen {
			return 0, fmt.Errorf("%w: record %d: key of %d bytes", ErrBadKey, i, len(r.Key))
		}
		b = wire.AppendBytes8(b, r.Key)
		b = wire.AppendU32(b, ttlOf([]WriteOption{WithTTL(r.TTL)}))
		b = wire.AppendBytes32(b, r.Value)
	}
	if len(b) > wire.MaxBody {
		return 0, fmt.Errorf("%w: the batch is %d bytes; split it below %d", ErrValueTooBig, len(b), wire.MaxBody)
	}
	r, err := c.do(ctx, c.kvNode(), wire.OpPutBatch, 0, b)
	if err != nil {
		return 0, err
	}
	if len(r) < 4 {
		return 0, fmt.Errorf("%w: short PutBatch answer", ErrProtocol)
	}
	return int(uint32(r[0]) | uint32(r[1])<<8 | uint32(r[2])<<16 | uint32(r[3])<<24), nil
}

// Channel is a channel and its kind ("kv", "queue" or "log").
type Channel struct {
	Name string
	Kind string
	Node string
}

// Channels lists the channels of every node.
func (c *Client) Channels(ctx context.Context) ([]Channel, error) {
	var out []Channel
	seen := map[string]bool{}
	for _, n := range c.nodes {
		r, err := c.do(ctx, n, wire.OpGetChannels, 0, nil)
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

// ChannelSize returns the size of channel summed over every node.
func (c *Client) ChannelSize(ctx context.Context, channel string) (Size, error) {
	if !wire.ValidChannelString(channel) {
		return Size{}, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	var s Size
	for _, n := range c.nodes {
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

// Size returns the records and bytes of every channel of every node.
func (c *Client) Size(ctx context.Context) (Size, error) {
	var s Size
	for _, n := range c.nodes {
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
// authentication on, it needs the admin credential.
func (c *Client) RemoveChannel(ctx context.Context, channel string) error {
	if !wire.ValidChannelString(channel) {
		return fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	for _, n := range c.nodes {
		if _, err := c.do(ctx, n, wire.OpRemoveChannel, 0, wire.AppendStr8(nil, channel)); err != nil {
			return err
		}
	}
	return nil
}

// NumConnections returns the open client connections of every node.
func (c *Client) NumConnections(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for _, n := range c.nodes {
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
	for _, n := range c.nodes {
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
