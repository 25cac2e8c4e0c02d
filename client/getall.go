package client

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/cespare/xxhash/v2"

	"shoal/internal/wire"
)

// GetAllOption changes a GetAll.
type GetAllOption func(*getAllOptions)

type getAllOptions struct {
	keysOnly bool
	expiry   bool
	replicas bool
	filter   []byte
	after    []byte
}

// KeysOnly makes GetAll send keys without values.
func KeysOnly() GetAllOption { return func(o *getAllOptions) { o.keysOnly = true } }

// WithExpiry makes GetAll fill Record.Expiry (the external dumper keeps
// TTLs with it).
func WithExpiry() GetAllOption { return func(o *getAllOptions) { o.expiry = true } }

// WithReplicaCopies makes GetAll read the replica copies a node holds
// too, not only the vBuckets it is active for (for operators and tests
// comparing copies): a record then comes once per copy read, and a
// replica's copy may be stale.
func WithReplicaCopies() GetAllOption { return func(o *getAllOptions) { o.replicas = true } }

// ValueFilter makes GetAll send only records whose value contains sub.
func ValueFilter(sub []byte) GetAllOption {
	return func(o *getAllOptions) { o.filter = bytes.Clone(sub) }
}

// After starts GetAll after key, as returned by an earlier GetAll (the
// order is stable: vBucket, then the key's hash).
func After(key []byte) GetAllOption { return func(o *getAllOptions) { o.after = bytes.Clone(key) } }

// GetAll streams every record of a kv channel, in batches, flow-controlled.
// With routing every member active for some vBucket sends the records of
// those, and the client merges them in the order one node would send them
// all in: by vBucket, then by the xxhash64 of the key, then by key bytes.
// The order is stable, so a GetAll resumes after the last key received
// (per node, when a connection breaks; After for a new GetAll).
func (c *Client) GetAll(ctx context.Context, channel string, opts ...GetAllOption) *Stream[Record] {
	var o getAllOptions
	for _, fn := range opts {
		fn(&o)
	}
	nodes := []*node{c.kvNode()}
	if c.routes() != nil {
		nodes = c.members()
	}
	if len(nodes) == 1 {
		return c.getAllOf(ctx, nodes[0], channel, &o, false)
	}
	parts := make([]*Stream[Record], len(nodes))
	for i, n := range nodes {
		parts[i] = c.getAllOf(ctx, n, channel, &o, true)
	}
	return mergedBy(ctx, parts, func(a, b Record) bool {
		if va, vb := a.hash%uint64(a.vbs), b.hash%uint64(b.vbs); va != vb {
			return va < vb
		}
		if a.hash != b.hash {
			return a.hash < b.hash
		}
		return bytes.Compare(a.Key, b.Key) < 0
	})
}

// getAllOf is the GetAll stream of one node; ordered fills the records'
// sort key for mergedBy.
func (c *Client) getAllOf(ctx context.Context, n *node, channel string, o *getAllOptions, ordered bool) *Stream[Record] {
	s := newStream[Record](c, ctx, n, wire.OpGetAll)
	last := o.after
	var flags uint8
	if o.keysOnly {
		flags |= 1
	}
	if o.expiry {
		flags |= 2
	}
	if o.replicas {
		flags |= 4
	}
	s.request = func(b []byte, credit uint32) []byte {
		b = wire.AppendStr8(b, channel)
		b = wire.AppendU8(b, flags)
		b = wire.AppendU32(b, credit)
		b = wire.AppendBytes8(b, last)
		return wire.AppendBytes32(b, o.filter)
	}
	s.decode = func(body []byte, yield func(Record, error) bool) (bool, error) {
		d := wire.NewDecoder(body)
		n := d.U32()
		for i := uint32(0); i < n; i++ {
			key, cas := d.Bytes8(), d.U64()
			var expiry uint64
			if o.expiry {
				expiry = d.U64()
			}
			val := d.Bytes32()
			if d.Err() != nil {
				return false, fmt.Errorf("%w: malformed GetAll batch", ErrProtocol)
			}
			last = key
			r := Record{Key: key, CAS: cas, Expiry: int64(expiry)}
			if ordered {
				r.hash, r.vbs = xxhash.Sum64(key), max(s.n.vbuckets(), 1)
			}
			if !o.keysOnly {
				r.Value = val
			}
			if !yield(r, nil) {
				return false, nil
			}
		}
		return true, nil
	}
	return s
}

// MirrorEventType says what a MirrorEvent is.
type MirrorEventType uint8

// Mirror event types.
const (
	MirrorPut          MirrorEventType = 1 // the record was written
	MirrorDelete       MirrorEventType = 2 // the record was removed or expired
	MirrorRefresh      MirrorEventType = 3 // a record of a full refresh
	MirrorRefreshEnd   MirrorEventType = 4 // the refresh is complete
	MirrorUpdatesLost  MirrorEventType = 5 // updates were dropped (this consumer was too slow); a refresh follows
	MirrorReconnecting MirrorEventType = 6 // the connection broke; a refresh follows
)

// String names the event type.
func (t MirrorEventType) String() string {
	switch t {
	case MirrorPut:
		return "put"
	case MirrorDelete:
		return "delete"
	case MirrorRefresh:
		return "refresh"
	case MirrorRefreshEnd:
		return "refresh-end"
	case MirrorUpdatesLost:
		return "updates-lost"
	case MirrorReconnecting:
		return "reconnecting"
	}
	return "unknown"
}

// MirrorEvent is one change of a mirrored channel.
type MirrorEvent struct {
	Type  MirrorEventType
	Key   []byte
	Value []byte
}

// MirrorOption changes a Mirror.
type MirrorOption func(*mirrorOptions)

type mirrorOptions struct{ refresh bool }

// InitialRefresh starts the Mirror with every record of the channel.
func InitialRefresh() MirrorOption { return func(o *mirrorOptions) { o.refresh = true } }

// Mirror streams the changes of a kv channel: puts, removes, and the
// removal of the channel (ErrChannelRemoved ends the stream). A consumer
// too slow to keep up gets MirrorUpdatesLost and then a full refresh; after
// a reconnect it gets MirrorReconnecting and a full refresh. With routing
// it mirrors every member active for some vBucket when it starts (each
// sends the changes of its active vBuckets), merged as they arrive; the
// initial refresh ends with one MirrorRefreshEnd, once every node's has
// come, while a later refresh (lost updates, a reconnect) is one node's
// and ends with that node's. A Mirror follows the members of the map it
// started with: after a map change, start a new one.
func (c *Client) Mirror(ctx context.Context, channel string, opts ...MirrorOption) *Stream[MirrorEvent] {
	var o mirrorOptions
	for _, fn := range opts {
		fn(&o)
	}
	nodes := []*node{c.kvNode()}
	if c.routes() != nil {
		nodes = c.members()
	}
	if len(nodes) == 1 {
		return c.mirrorOf(ctx, nodes[0], channel, o, nil)
	}
	// The first refresh's ends of all but the last node are held back.
	var mu sync.Mutex
	ends := 0
	holdEnd := func() bool {
		mu.Lock()
		defer mu.Unlock()
		ends++
		return ends < len(nodes)
	}
	parts := make([]*Stream[MirrorEvent], len(nodes))
	for i, n := range nodes {
		parts[i] = c.mirrorOf(ctx, n, channel, o, holdEnd)
	}
	return merged(ctx, parts)
}

// mirrorOf is the Mirror stream of node n. holdEnd, when set, is asked at
// the end of the stream's first refresh whether to hold its
// MirrorRefreshEnd back (another node's refresh is still running).
func (c *Client) mirrorOf(ctx context.Context, n *node, channel string, o mirrorOptions, holdEnd func() bool) *Stream[MirrorEvent] {
	s := newStream[MirrorEvent](c, ctx, n, wire.OpMirror)
	first := o.refresh && holdEnd != nil
	refresh := o.refresh
	pendingReconnect := false
	s.request = func(b []byte, credit uint32) []byte {
		b = wire.AppendStr8(b, channel)
		var flags uint8
		if refresh {
			flags = 1
		}
		b = wire.AppendU8(b, flags)
		return wire.AppendU32(b, credit)
	}
	s.reopened = func() { refresh, pendingReconnect = true, true }
	s.decode = func(body []byte, yield func(MirrorEvent, error) bool) (bool, error) {
		if pendingReconnect {
			pendingReconnect = false
			if !yield(MirrorEvent{Type: MirrorReconnecting}, nil) {
				return false, nil
			}
		}
		d := wire.NewDecoder(body)
		n := d.U32()
		for i := uint32(0); i < n; i++ {
			typ, key, val := d.U8(), d.Bytes8(), d.Bytes32()
			if d.Err() != nil {
				return false, fmt.Errorf("%w: malformed Mirror batch", ErrProtocol)
			}
			if first && MirrorEventType(typ) == MirrorRefreshEnd {
				first = false
				if holdEnd() {
					continue
				}
			}
			if !yield(MirrorEvent{Type: MirrorEventType(typ), Key: key, Value: val}, nil) {
				return false, nil
			}
		}
		return true, nil
	}
	return s
}
