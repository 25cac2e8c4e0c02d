package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"time"

	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

func (s *Server) registerKV() {
	one, many := s.singleLimit(), s.batchLimit()
	s.handle(wire.OpPut, handler{loop: true, fn: (*conn).kvPut, limit: one})
	s.handle(wire.OpGet, handler{loop: true, fn: (*conn).kvGet})
	s.handle(wire.OpGetReplica, handler{loop: true, fn: (*conn).kvGetReplica})
	s.handle(wire.OpExists, handler{loop: true, fn: (*conn).kvExists})
	s.handle(wire.OpRemove, handler{loop: true, fn: (*conn).kvRemove})
	s.handle(wire.OpUpdate, handler{loop: true, fn: (*conn).kvUpdate, limit: one})
	s.handle(wire.OpExpire, handler{loop: true, fn: (*conn).kvExpire})
	s.handle(wire.OpTTL, handler{loop: true, fn: (*conn).kvTTL})
	s.handle(wire.OpPutBatch, handler{fn: (*conn).kvPutBatch, limit: many})
	s.handle(wire.OpGetAll, handler{fn: (*conn).kvGetAll})
	s.handle(wire.OpMirror, handler{fn: (*conn).kvMirror})
}

// kvStatus maps a kv engine error to a status.
func kvStatus(err error) wire.Status {
	switch {
	case errors.Is(err, kv.ErrNotFound):
		return wire.StatusNotFound
	case errors.Is(err, kv.ErrExists):
		return wire.StatusExists
	case errors.Is(err, kv.ErrBadKey):
		return wire.StatusBadKey
	case errors.Is(err, kv.ErrKeyTooBig):
		return wire.StatusKeyTooBig
	case errors.Is(err, kv.ErrValueTooBig):
		return wire.StatusValueTooBig
	case errors.Is(err, kv.ErrOutOfMemory):
		return wire.StatusOutOfMemory
	case errors.Is(err, kv.ErrClosed):
		return wire.StatusShuttingDown
	}
	return wire.StatusInternal
}

// checkChannel validates a channel name and, for a write, claims it as a
// kv channel. It returns the shared name string; "" with ok when a read
// names a channel that does not exist.
func (c *conn) checkChannel(h wire.Header, ch []byte, kind engine.Kind, write bool) (string, bool) {
	// A known channel needs no validation: its name was valid when claimed.
	if name, k, ok := c.s.eng.Catalog.Lookup(ch); ok {
		if k != kind {
			c.replyf(h, wire.StatusWrongKind, "channel %q is a %s channel", ch, k)
			return "", false
		}
		return name, true
	}
	if !wire.ValidChannel(ch) {
		c.replyf(h, wire.StatusBadChannelName, "bad channel name %q: use 1-255 of A-Z a-z 0-9 _ -", ch)
		return "", false
	}
	if write {
		return c.claimChannel(h, ch, kind)
	}
	return "", true
}

// checkKey validates a key against the header's vBucket and this node's
// route for it (checkRoute).
func (c *conn) checkKey(h wire.Header, key []byte, replica bool) bool {
	switch {
	case len(key) == 0:
		c.replyf(h, wire.StatusBadKey, "empty key")
		return false
	case len(key) > wire.MaxKeyLen:
		c.replyf(h, wire.StatusKeyTooBig, "key of %d bytes; the limit is %d", len(key), wire.MaxKeyLen)
		return false
	}
	vb := vbucket.Of(key, c.s.cfg.VBuckets)
	if h.VBucket != vb {
		c.replyf(h, wire.StatusBadRequest, "vbucket %d in the header, but the key belongs to vbucket %d of %d", h.VBucket, vb, c.s.cfg.VBuckets)
		return false
	}
	return c.checkRoute(h, vb, replica)
}

// checkRoute asks the node's routing table about vb: every request, read
// or write, needs this node to be vb's active; with replica (GetReplica) a
// replica copy does too (its answer may be stale). Otherwise it answers
// `not my vbucket` with the active's address, vb's epoch and the map's
// revision (and the map, when this connection has not had it).
func (c *conn) checkRoute(h wire.Header, vb uint16, replica bool) bool {
	st := c.s.state(vb)
	if (st == vbmap.Active && c.s.leased(c.now)) || (replica && st == vbmap.Replica) {
		return true
	}
	c.notMyVBucket(h, c.s.route(vb))
	return false
}

// checkServing refuses, with `not my vbucket`, a request that needs the
// node to be active for some vBucket when it is active for none.
func (c *conn) checkServing(h wire.Header) bool {
	if c.s.serving() && c.s.leased(c.now) {
		return true
	}
	c.notMyVBucket(h, c.s.route(h.VBucket))
	return false
}

// notMyVBucket answers `not my vbucket`: str8 active address, u64 epoch,
// u64 map revision, then, when this connection has not been sent the
// node's current map revision yet (GetClusterMap, an earlier `not my
// vbucket`, a MapNotify frame), the GetClusterMap answer: the client
// routes by it without asking again (Couchbase's dedupe).
func (c *conn) notMyVBucket(h wire.Header, r vbmap.Route) {
	var m []byte
	if cl := c.s.cluster; cl != nil && r.Revision > c.mapRev.Load() {
		if body, rev, err := cl.ClusterMap(); err == nil {
			m = body
			c.noteMapRev(rev)
		}
	}
	b, off := c.begin(h, wire.StatusNotMyVBucket, 0)
	b = wire.AppendStr8(b, r.ActiveAddr)
	b = wire.AppendU64(b, r.Epoch)
	b = wire.AppendU64(b, r.Revision)
	c.end(append(b, m...), off)
}

// fail answers with the status of an engine error. The status says it
// all for the known conditions; other errors carry their text.
func (c *conn) fail(h wire.Header, err error) {
	st := kvStatus(err)
	if st == wire.StatusInternal {
		c.s.cfg.Logger.Error("request failed", "op", h.Opcode.String(), "err", err)
		c.replyf(h, st, "%v", err)
		return
	}
	c.replyf(h, st, "")
}

// checkValue refuses a value over --max-value-size.
func (c *conn) checkValue(h wire.Header, val []byte) bool {
	if len(val) > c.s.cfg.MaxValueSize {
		c.replyf(h, wire.StatusValueTooBig, "value of %d bytes; the limit is %d", len(val), c.s.cfg.MaxValueSize)
		return false
	}
	return true
}

func ttlOf(sec uint32) time.Duration { return time.Duration(sec) * time.Second }

// kvPut: str8 channel, str8 key, u32 ttl seconds, value (rest) -> u64 cas.
func (c *conn) kvPut(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, key, ttl, val := d.Bytes8(), d.Bytes8(), d.U32(), d.Rest()
	if d.Err() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Put")
		return
	}
	if !c.checkKey(h, key, false) || !c.checkValue(h, val) {
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindKV, true)
	if !ok {
		return
	}
	cas, err := c.s.eng.KV.Put(name, key, val, ttlOf(ttl))
	if err != nil {
		c.fail(h, err)
		return
	}
	if c.dur.level != wire.DurabilityNone && c.holdAnswer(h, "kv", cas, inflightKey(ch, key), wire.AppendU64(nil, cas)) {
		return
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU64(b, cas), off)
}

// keyRequest decodes and checks the body of a single-key request (str8
// channel, str8 key): the key against the header's vBucket and this
// node's route for it (checkRoute: active, or with replica a replica copy
// too), the channel as a kv channel. name is "" for a channel that does
// not exist. It answers the request itself when ok is false.
func (c *conn) keyRequest(h wire.Header, body []byte, replica bool) (name string, key []byte, ok bool) {
	d := wire.NewDecoder(body)
	ch, key := d.Bytes8(), d.Bytes8()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed %s", h.Opcode)
		return "", nil, false
	}
	if !c.checkKey(h, key, replica) {
		return "", nil, false
	}
	name, ok = c.checkChannel(h, ch, engine.KindKV, false)
	return name, key, ok
}

// kvGet: str8 channel, str8 key -> u64 cas, value (rest).
func (c *conn) kvGet(h wire.Header, body []byte) {
	name, key, ok := c.keyRequest(h, body, false)
	if !ok {
		return
	}
	if name == "" {
		c.s.kvMisses.Add(1)
		c.reply(h, wire.StatusNotFound, nil)
		return
	}
	// The value is copied straight into the output buffer.
	b, off := c.begin(h, wire.StatusOK, 0)
	casAt := len(b)
	b = wire.AppendU64(b, 0)
	b, cas, err := c.s.eng.KV.Get(name, key, b)
	c.s.countRead(err)
	if err != nil {
		b = b[:casAt]
		wire.PatchStatus(b, off, kvStatus(err))
		if !errors.Is(err, kv.ErrNotFound) {
			b = appendf(b, "%v", err)
		}
	} else {
		binary.LittleEndian.PutUint64(b[casAt:], cas)
	}
	c.end(b, off)
}

// countRead counts a kv read as a hit or a miss.
func (s *Server) countRead(err error) {
	switch {
	case err == nil:
		s.kvHits.Add(1)
	case errors.Is(err, kv.ErrNotFound):
		s.kvMisses.Add(1)
	}
}

// kvGetReplica: str8 channel, str8 key -> u64 cas, u8 source (1 active, 2
// replica), value (rest). It reads the node's copy, active or replica: a
// replica's may be stale.
func (c *conn) kvGetReplica(h wire.Header, body []byte) {
	name, key, ok := c.keyRequest(h, body, true)
	if !ok {
		return
	}
	if name == "" {
		c.s.kvMisses.Add(1)
		c.reply(h, wire.StatusNotFound, nil)
		return
	}
	source := uint8(wire.SourceReplica)
	if c.s.state(h.VBucket) == vbmap.Active {
		source = wire.SourceActive
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	casAt := len(b)
	b = wire.AppendU64(b, 0)
	b = wire.AppendU8(b, source)
	b, cas, err := c.s.eng.KV.Get(name, key, b)
	c.s.countRead(err)
	if err != nil {
		b = b[:casAt]
		wire.PatchStatus(b, off, kvStatus(err))
		if !errors.Is(err, kv.ErrNotFound) {
			b = appendf(b, "%v", err)
		}
	} else {
		binary.LittleEndian.PutUint64(b[casAt:], cas)
	}
	c.end(b, off)
}

// kvExists: str8 channel, str8 key -> u8 exists.
func (c *conn) kvExists(h wire.Header, body []byte) {
	name, key, ok := c.keyRequest(h, body, false)
	if !ok {
		return
	}
	var v uint8
	if name != "" && c.s.eng.KV.Exists(name, key) {
		v = 1
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU8(b, v), off)
}

// kvRemove: str8 channel, str8 key -> u8 removed.
func (c *conn) kvRemove(h wire.Header, body []byte) {
	name, key, ok := c.keyRequest(h, body, false)
	if !ok {
		return
	}
	var v uint8
	if name != "" {
		removed, err := c.s.eng.KV.Remove(name, key)
		if err != nil {
			c.fail(h, err)
			return
		}
		if removed {
			v = 1
		}
	}
	// A removal's seqno is not returned: the vBucket's high seqno covers it.
	if c.dur.level != wire.DurabilityNone && c.holdAnswer(h, "kv", c.s.eng.KV.HighSeqno(h.VBucket), removeKey(name, key), []byte{v}) {
		return
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU8(b, v), off)
}

// kvUpdate: str8 channel, str8 key, u64 cas, u32 ttl, value (rest) -> u64 cas.
func (c *conn) kvUpdate(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, key, cas, ttl, val := d.Bytes8(), d.Bytes8(), d.U64(), d.U32(), d.Rest()
	if d.Err() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Update")
		return
	}
	if !c.checkKey(h, key, false) || !c.checkValue(h, val) {
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindKV, false)
	if !ok {
		return
	}
	if name == "" {
		c.reply(h, wire.StatusNotFound, nil)
		return
	}
	ncas, err := c.s.eng.KV.Update(name, key, val, cas, ttlOf(ttl))
	if err != nil {
		c.fail(h, err)
		return
	}
	if c.dur.level != wire.DurabilityNone && c.holdAnswer(h, "kv", ncas, inflightKey(ch, key), wire.AppendU64(nil, ncas)) {
		return
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU64(b, ncas), off)
}

// kvExpire: str8 channel, str8 key, u32 ttl seconds (0 = never) -> u64 cas.
func (c *conn) kvExpire(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, key, ttl := d.Bytes8(), d.Bytes8(), d.U32()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Expire")
		return
	}
	if !c.checkKey(h, key, false) {
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindKV, false)
	if !ok {
		return
	}
	if name == "" {
		c.reply(h, wire.StatusNotFound, nil)
		return
	}
	cas, err := c.s.eng.KV.Expire(name, key, ttlOf(ttl))
	if err != nil {
		c.fail(h, err)
		return
	}
	if c.dur.level != wire.DurabilityNone && c.holdAnswer(h, "kv", cas, inflightKey(ch, key), wire.AppendU64(nil, cas)) {
		return
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU64(b, cas), off)
}

// kvTTL: str8 channel, str8 key -> u64 cas, u64 expiry (unix seconds, 0 =
// never), u32 seconds left by this node's clock (0 when never).
func (c *conn) kvTTL(h wire.Header, body []byte) {
	name, key, ok := c.keyRequest(h, body, false)
	if !ok {
		return
	}
	if name == "" {
		c.reply(h, wire.StatusNotFound, nil)
		return
	}
	at, cas, err := c.s.eng.KV.Expiry(name, key)
	if err != nil {
		c.fail(h, err)
		return
	}
	var exp uint64
	var left uint32
	if !at.IsZero() {
		exp = uint64(at.Unix())
		if l := time.Until(at); l > 0 {
			left = uint32((l + time.Second - 1) / time.Second)
		}
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	b = wire.AppendU64(b, cas)
	b = wire.AppendU64(b, exp)
	c.end(wire.AppendU32(b, left), off)
}

// kvPutBatch: str8 channel, u32 count, count x (str8 key, u32 ttl, bytes32
// value) -> u32 stored. Records are stored in order; the first failure
// ends the batch with its status and a message naming the record.
func (c *conn) kvPutBatch(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, n := d.Bytes8(), d.U32()
	if d.Err() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed PutBatch")
		return
	}
	// Validate the whole batch before storing any of it.
	rest := d
	for i := uint32(0); i < n; i++ {
		key, _, _ := rest.Bytes8(), rest.U32(), rest.Bytes32()
		if rest.Err() != nil {
			c.replyf(h, wire.StatusBadRequest, "malformed PutBatch: record %d of %d", i, n)
			return
		}
		if len(key) == 0 {
			c.replyf(h, wire.StatusBadKey, "record %d: empty key", i)
			return
		}
		if !c.checkRoute(h, vbucket.Of(key, c.s.cfg.VBuckets), false) {
			return
		}
	}
	if rest.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed PutBatch: bytes after record %d", n)
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindKV, true)
	if !ok {
		return
	}
	for i := uint32(0); i < n; i++ {
		key, ttl, val := d.Bytes8(), d.U32(), d.Bytes32()
		if _, err := c.s.eng.KV.Put(name, key, val, ttlOf(ttl)); err != nil {
			c.replyf(h, kvStatus(err), "stored %d of %d records; record %d (key %q): %v", i, n, i, key, err)
			return
		}
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	c.end(wire.AppendU32(b, n), off)
}

// GetAll flags.
const (
	getAllKeysOnly = 1
	getAllExpiry   = 2 // each record carries its expiry (for the external dumper)
	getAllReplicas = 4 // the vBuckets the node holds a replica copy of too (stale)
)

// kvGetAll: str8 channel, u8 flags, u32 credit, str8 after (resume after
// this key; empty = from the start), bytes32 value filter -> stream of
// batches: u32 count, count x (str8 key, u64 cas, [u64 expiry unix seconds,
// 0 = never, with getAllExpiry], bytes32 value).
func (c *conn) kvGetAll(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, flags, credit, after, filter := d.Bytes8(), d.U8(), d.U32(), d.Bytes8(), d.Bytes32()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed GetAll")
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindKV, false)
	if !ok {
		return
	}
	after = bytes.Clone(after)
	filter = bytes.Clone(filter)
	keysOnly, expiry, replicas := flags&getAllKeysOnly != 0, flags&getAllExpiry != 0, flags&getAllReplicas != 0
	c.startStream(h, credit, func(st *stream) (wire.Status, string) {
		if name == "" {
			return wire.StatusOK, ""
		}
		var batch []byte
		var count uint32
		first := uint16(0)
		if len(after) > 0 {
			first = vbucket.Of(after, c.s.cfg.VBuckets)
		}
		for vb := int(first); vb < c.s.cfg.VBuckets; vb++ {
			if !c.s.serves(uint16(vb), replicas) {
				continue
			}
			var from []byte
			if vb == int(first) && len(after) > 0 {
				from = after
			}
			alive := true
			c.s.eng.KV.Scan(name, uint16(vb), from, func(r kv.Record) bool {
				if len(filter) > 0 && !bytes.Contains(r.Value, filter) {
					return true
				}
				batch = wire.AppendBytes8(batch, r.Key)
				batch = wire.AppendU64(batch, r.Seqno)
				if expiry {
					batch = wire.AppendU64(batch, uint64(r.Expiry))
				}
				if keysOnly {
					batch = wire.AppendU32(batch, 0)
				} else {
					batch = wire.AppendBytes32(batch, r.Value)
				}
				count++
				if len(batch) >= batchTarget {
					alive = flushBatch(st, &batch, &count)
				}
				return alive
			})
			if !alive || st.done() {
				return wire.StatusStopped, ""
			}
		}
		if !flushBatch(st, &batch, &count) {
			return wire.StatusStopped, ""
		}
		return wire.StatusOK, ""
	})
}

// Mirror event types.
const (
	MirrorPut          = 1 // key, value: the record was written
	MirrorDelete       = 2 // key: the record was removed or expired
	MirrorRefresh      = 3 // key, value: a record of a full refresh
	MirrorRefreshEnd   = 4 // the refresh is complete
	MirrorUpdatesLost  = 5 // the node dropped updates for this consumer; a refresh follows
	mirrorFlagsRefresh = 1 // request flag: start with a full refresh
)

// kvMirror: str8 channel, u8 flags, u32 credit -> stream of batches:
// u32 count, count x (u8 type, str8 key, bytes32 value). The stream ends
// with StatusChannelRemoved when the channel is removed.
func (c *conn) kvMirror(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, flags, credit := d.Bytes8(), d.U8(), d.U32()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed Mirror")
		return
	}
	if _, ok := c.checkChannel(h, ch, engine.KindKV, false); !ok {
		return
	}
	// A Mirror may start before the channel's first write: claim it so the
	// watcher and later writers agree on the name.
	name, ok := c.claimChannel(h, ch, engine.KindKV)
	if !ok {
		return
	}
	w := c.s.eng.KV.Watch(name, 0)
	c.startStream(h, credit, func(st *stream) (wire.Status, string) {
		defer w.Close()
		var batch []byte
		var count uint32
		add := func(typ uint8, key, value []byte) bool {
			batch = wire.AppendU8(batch, typ)
			batch = wire.AppendBytes8(batch, key)
			batch = wire.AppendBytes32(batch, value)
			count++
			if len(batch) >= batchTarget {
				return flushBatch(st, &batch, &count)
			}
			return true
		}
		refresh := func() bool {
			for vb := 0; vb < c.s.cfg.VBuckets; vb++ {
				if !c.s.serves(uint16(vb), false) {
					continue
				}
				alive := true
				c.s.eng.KV.Scan(name, uint16(vb), nil, func(r kv.Record) bool {
					alive = add(MirrorRefresh, r.Key, r.Value)
					return alive
				})
				if !alive {
					return false
				}
			}
			return add(MirrorRefreshEnd, nil, nil) && flushBatch(st, &batch, &count)
		}
		if flags&mirrorFlagsRefresh != 0 && !refresh() {
			return wire.StatusStopped, ""
		}
		var evs []kv.Event
		for {
			select {
			case <-st.ctx.Done():
				return wire.StatusStopped, ""
			case <-c.shutting:
				return wire.StatusShuttingDown, ""
			case <-w.Ready():
			}
			var lost bool
			evs, lost = w.Drain(evs[:0])
			for _, ev := range evs {
				var ok bool
				if (ev.Op == kv.EventPut || ev.Op == kv.EventDelete) && !c.s.serves(vbucket.Of(ev.Key, c.s.cfg.VBuckets), false) {
					continue // another node mirrors that vBucket
				}
				switch ev.Op {
				case kv.EventPut:
					ok = add(MirrorPut, ev.Key, ev.Value)
				case kv.EventDelete:
					ok = add(MirrorDelete, ev.Key, nil)
				case kv.EventChannelRemoved:
					if !flushBatch(st, &batch, &count) {
						return wire.StatusStopped, ""
					}
					return wire.StatusChannelRemoved, "channel " + name + " was removed"
				default:
					ok = true
				}
				if !ok {
					return wire.StatusStopped, ""
				}
			}
			if lost {
				if !add(MirrorUpdatesLost, nil, nil) || !refresh() {
					return wire.StatusStopped, ""
				}
			}
			if !flushBatch(st, &batch, &count) {
				return wire.StatusStopped, ""
			}
		}
	})
}

// flushBatch sends a batch of count entries, if any.
func flushBatch(st *stream, batch *[]byte, count *uint32) bool {
	if *count == 0 {
		return true
	}
	ok := st.send(func(b []byte) []byte {
		b = wire.AppendU32(b, *count)
		return append(b, *batch...)
	})
	*batch, *count = (*batch)[:0], 0
	return ok
}
