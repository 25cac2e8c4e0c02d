package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"

	"shoal/internal/engine"
	"shoal/internal/logstore"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Log requests. An append waits for the log engine's group commit (with
// fsync=always, for the fsync), so it does not run on the connection's
// reader. The handler validates the request and copies the key and the
// values into the open group's slab; consecutive appends of the connection
// to one channel (with one routing key) are gathered into a group until
// the reader has handled everything that arrived together, and then a
// goroutine commits the group with one Append and answers each of its
// requests into the shared output buffer, with one write. Other requests
// of the connection are answered meanwhile, so an answer to an append may
// come after answers to later requests. The records of a group are stored
// in request order; appends of different groups in flight at once may be
// stored in any order.

// Bounds of the appends one connection may have in flight: a request
// weighs its body plus appendOverhead, and the reader stops reading while
// the weights would exceed appendBudget (at most 2048 small appends, or
// 64 MiB of values, wait at once).
const (
	appendOverhead = 32 << 10
	appendBudget   = 64 << 20
)

// A group is committed once it holds groupRecords records or groupBytes
// bytes of values, even if more appends follow.
const (
	groupRecords = 4096
	groupBytes   = 4 << 20
)

// appends holds a connection's group being gathered and counts and bounds
// its appends in flight. Only the reader touches open and sem's creation.
type appends struct {
	open *appendGroup
	sem  *semaphore.Weighted // created with the first append
	wg   sync.WaitGroup
}

// appendGroup is consecutive appends of one connection to one channel
// with one routing key (or one vBucket the client chose), committed by one
// Append.
type appendGroup struct {
	name    string
	key     []byte
	vb      int // the FlagVBucket vBucket; -1: none (the key's, or round-robin)
	recs    []logstore.Rec
	bytes   int
	weight  int64
	reqs    []appendReq
	persist bool   // a request is persist-majority: the group is fsynced
	slab    []byte // holds the key and the values of recs
}

// Groups are recycled with their slabs and slices once committed: the log
// engine does not keep the values of an Append after it returns (it copies
// what its streams send), so the next group can reuse the memory, and
// appends allocate nothing per request (the node's heap, and with it the
// garbage collector's work, stays small under a stream of appends).
var groups = sync.Pool{New: func() any { return new(appendGroup) }}

// A group's first slab is slabSize bytes, or a request's size if more;
// a full slab is followed by one twice its size. Slabs over maxPooledSlab
// are not kept for the next group.
const (
	slabSize      = 64 << 10
	maxPooledSlab = 1 << 20
)

// hold copies b into g's slab and returns the copy (capped: appending to
// it cannot overwrite what follows).
func (g *appendGroup) hold(b []byte) []byte {
	if len(g.slab)+len(b) > cap(g.slab) {
		// The values held so far stay where they are, kept by g.recs.
		g.slab = make([]byte, 0, max(slabSize, len(b), 2*cap(g.slab)))
	}
	n := len(g.slab)
	g.slab = append(g.slab, b...)
	return g.slab[n:len(g.slab):len(g.slab)]
}

// release returns a committed group to groups.
func (g *appendGroup) release() {
	clear(g.recs) // no references to slabs that will not be reused
	clear(g.reqs)
	slab := g.slab[:0]
	if cap(slab) > maxPooledSlab {
		slab = nil
	}
	*g = appendGroup{recs: g.recs[:0], reqs: g.reqs[:0], slab: slab}
	groups.Put(g)
}

// appendReq is one request of a group.
type appendReq struct {
	h     wire.Header
	start time.Time
	count uint32      // LogPutBatch: records stored, for the answer
	dur   connDurable // a durable append waits for its majority (durability.go)
}

func (s *Server) registerLog() {
	s.handle(wire.OpLogPut, handler{fn: (*conn).logPut, limit: s.singleLimit(), async: true})
	s.handle(wire.OpLogPutBatch, handler{fn: (*conn).logPutBatch, limit: s.batchLimit(), async: true})
	s.handle(wire.OpLogRange, handler{fn: (*conn).logRange})
}

// logStatus maps a log engine error to a status.
func logStatus(err error) wire.Status {
	switch {
	case errors.Is(err, logstore.ErrNoSpace), errors.Is(err, syscall.ENOSPC):
		return wire.StatusNoSpace
	case errors.Is(err, logstore.ErrBadRange):
		return wire.StatusBadRange
	case errors.Is(err, logstore.ErrBadFilter):
		return wire.StatusBadFilter
	case errors.Is(err, logstore.ErrValueTooBig):
		return wire.StatusValueTooBig
	case errors.Is(err, logstore.ErrBadChannel):
		return wire.StatusBadChannelName
	case errors.Is(err, logstore.ErrClosed):
		return wire.StatusShuttingDown
	}
	return wire.StatusInternal
}

// logFail answers with the status of a log engine error and its text
// (without the engine's name for the condition, which the status says).
// An error without a status of its own (an I/O error) is logged too.
func (c *conn) logFail(h wire.Header, err error) {
	if errors.Is(err, engine.ErrNoActiveVBucket) || errors.Is(err, engine.ErrNotActive) { // the map changed since checkServing
		c.notMyVBucket(h, c.s.route(h.VBucket))
		return
	}
	st := logStatus(err)
	if st == wire.StatusInternal {
		c.s.cfg.Logger.Error("log request failed", "op", h.Opcode.String(), "err", err)
	}
	msg := err.Error()
	for _, e := range []error{logstore.ErrBadRange, logstore.ErrBadFilter, logstore.ErrValueTooBig, logstore.ErrBadChannel} {
		msg = strings.TrimPrefix(msg, e.Error()+": ")
	}
	c.replyf(h, st, "%s", msg)
}

// checkRoutingKey checks the header's vBucket against a routing key and
// this node's route for it. Without a key the records go to the header's
// vBucket with FlagVBucket (the node must be its active), else round-robin
// to the node's active vBuckets: it must have one (a standby has none).
func (c *conn) checkRoutingKey(h wire.Header, key []byte) bool {
	switch {
	case len(key) > 0:
		return c.checkKey(h, key, false)
	case h.Flags&wire.FlagVBucket != 0:
		return c.checkVBucket(h)
	}
	return c.checkServing(h)
}

// checkVBucket checks the header's vBucket of a FlagVBucket write: in
// range, and this node its active.
func (c *conn) checkVBucket(h wire.Header) bool {
	if int(h.VBucket) >= c.s.cfg.VBuckets {
		c.replyf(h, wire.StatusBadRequest, "vbucket %d in the header; the node has %d", h.VBucket, c.s.cfg.VBuckets)
		return false
	}
	return c.checkRoute(h, h.VBucket, false)
}

// flagVBucket is the vBucket a write goes to by FlagVBucket, -1 without
// the flag (or with a routing key, which decides).
func flagVBucket(h wire.Header, key []byte) int {
	if h.Flags&wire.FlagVBucket == 0 || len(key) > 0 {
		return -1
	}
	return int(h.VBucket)
}

// routingKey returns the key Append takes: nil for round-robin.
func routingKey(key []byte) []byte {
	if len(key) == 0 {
		return nil
	}
	return key
}

// logPut: str8 channel, u64 timestamp, str8 routing key, value (rest) ->
// empty.
func (c *conn) logPut(h wire.Header, body []byte) {
	start := time.Now()
	d := wire.NewDecoder(body)
	ch, ts, key, val := d.Bytes8(), d.U64(), d.Bytes8(), d.Rest()
	switch {
	case d.Err() != nil:
		c.replyf(h, wire.StatusBadRequest, "malformed LogPut")
	case !c.needsVBucket(h, key), !c.checkRoutingKey(h, key), !c.checkValue(h, val):
	default:
		name, ok := c.checkChannel(h, ch, engine.KindLog, true)
		if !ok {
			break
		}
		rec := [1]logstore.Rec{{Timestamp: ts, Value: val}}
		c.queueAppend(h, start, len(body), name, rec[:], key, flagVBucket(h, key), 0)
		return
	}
	c.s.requestDone(h.Opcode, start)
}

// logPutBatch: str8 channel, str8 routing key, u32 n, n x (u64 timestamp,
// bytes32 value) -> u32 stored. The batch is validated whole first and
// then stored whole or not at all.
func (c *conn) logPutBatch(h wire.Header, body []byte) {
	start := time.Now()
	if !c.parseLogPutBatch(h, body, start) {
		c.s.requestDone(h.Opcode, start)
	}
}

// parseLogPutBatch validates a LogPutBatch and starts its append; it
// returns false when it answered the request itself.
func (c *conn) parseLogPutBatch(h wire.Header, body []byte, start time.Time) bool {
	d := wire.NewDecoder(body)
	ch, key, n := d.Bytes8(), d.Bytes8(), d.U32()
	if d.Err() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed LogPutBatch")
		return false
	}
	// Each record takes at least 12 bytes: a count the body cannot hold
	// is refused before anything is allocated for it.
	if uint64(n)*12 > uint64(d.Len()) {
		c.replyf(h, wire.StatusBadRequest, "malformed LogPutBatch: %d records cannot fit in %d bytes", n, d.Len())
		return false
	}
	if !c.needsVBucket(h, key) || !c.checkRoutingKey(h, key) {
		return false
	}
	// The records' values stay in the read buffer: queueAppend copies them.
	recs := c.logRecs[:0]
	for i := range n {
		ts, val := d.U64(), d.Bytes32()
		if d.Err() != nil {
			c.replyf(h, wire.StatusBadRequest, "malformed LogPutBatch: record %d of %d", i, n)
			return false
		}
		if len(val) > c.s.cfg.MaxValueSize {
			c.replyf(h, wire.StatusValueTooBig, "record %d: value of %d bytes; the limit is %d", i, len(val), c.s.cfg.MaxValueSize)
			return false
		}
		recs = append(recs, logstore.Rec{Timestamp: ts, Value: val})
	}
	if cap(recs) <= groupRecords { // no huge scratch kept for the connection
		c.logRecs = recs
	}
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed LogPutBatch: bytes after record %d", n)
		return false
	}
	name, ok := c.checkChannel(h, ch, engine.KindLog, true)
	if !ok {
		return false
	}
	c.queueAppend(h, start, len(body), name, recs, key, flagVBucket(h, key), n)
	return true
}

// queueAppend adds an append (request h, of size body bytes) to the
// connection's open group, committing the open group first if it is for
// another channel, key or vBucket (vb, -1 for none) or full. The key and
// the values may be in the read buffer: the group keeps copies. The reader
// blocks here while the connection's appends in flight are at their bound.
func (c *conn) queueAppend(h wire.Header, start time.Time, size int, name string, recs []logstore.Rec, key []byte, vb int, count uint32) {
	a := &c.appends
	if g := a.open; g != nil && (g.name != name || !bytes.Equal(g.key, key) || g.vb != vb) {
		c.commitAppends()
	}
	if a.sem == nil {
		a.sem = semaphore.NewWeighted(appendBudget)
	}
	weight := int64(min(size+appendOverhead, appendBudget))
	if !a.sem.TryAcquire(weight) {
		c.commitAppends() // never wait for room the open group holds
		if err := a.sem.Acquire(c.ctx, weight); err != nil {
			c.s.requestDone(h.Opcode, start) // the connection is closing
			return
		}
	}
	g := a.open
	if g == nil {
		g = groups.Get().(*appendGroup)
		g.name, g.vb = name, vb
		g.key = g.hold(key)
		a.open = g
	}
	for _, r := range recs {
		g.recs = append(g.recs, logstore.Rec{Timestamp: r.Timestamp, Value: g.hold(r.Value)})
		g.bytes += len(r.Value)
	}
	g.weight += weight
	g.reqs = append(g.reqs, appendReq{h: h, start: start, count: count, dur: c.dur})
	g.persist = g.persist || c.dur.level == wire.DurabilityPersistMajority
	if len(g.recs) >= groupRecords || g.bytes >= groupBytes {
		c.commitAppends()
	}
}

// commitAppends commits the open group, if any, in a goroutine that
// answers each of its requests once the group is durable. The reader
// calls it whenever it has handled everything that arrived together.
func (c *conn) commitAppends() {
	a := &c.appends
	g := a.open
	if g == nil {
		return
	}
	a.open = nil
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer a.sem.Release(g.weight)
		defer g.release()
		// Not c.ctx: a request the node has received is carried out even
		// if the connection closes meanwhile; shutdown waits for it.
		var err error
		if g.vb >= 0 {
			err = c.s.eng.Log.AppendVB(context.Background(), g.name, g.recs, uint16(g.vb))
		} else {
			err = c.s.eng.Log.Append(context.Background(), g.name, g.recs, routingKey(g.key))
		}
		if err == nil && g.persist {
			// In interval mode the append is written, not fsynced: a
			// persist-majority append makes the active's copy durable
			// before it waits for the replicas' (one fsync per group).
			if serr := c.s.eng.Log.Sync(); serr != nil {
				err = fmt.Errorf("appended, but the log could not be made durable: %w", serr)
			}
		}
		vb := uint16(g.vb) // the records' vBucket: named, or the routing key's
		if g.vb < 0 && len(g.key) > 0 {
			vb = vbucket.Of(g.key, c.s.cfg.VBuckets)
		}
		for _, r := range g.reqs {
			if err != nil {
				c.logFail(r.h, err)
			} else if r.dur.level != wire.DurabilityNone {
				var ans []byte
				if r.h.Opcode == wire.OpLogPutBatch {
					ans = wire.AppendU32(nil, r.count)
				}
				c.waitDurable(r.h, vb, "log", c.s.eng.Log.HighSeqno(vb), r.dur, "", ans)
			} else {
				b, off := c.begin(r.h, wire.StatusOK, 0)
				if r.h.Opcode == wire.OpLogPutBatch {
					b = wire.AppendU32(b, r.count)
				}
				c.end(b, off)
			}
			c.s.requestDone(r.h.Opcode, r.start)
		}
		c.flush()
	}()
}

// Filter modes of LogRange.
const (
	filterNone      = 0
	filterSubstring = 1
	filterRegexp    = 2
)

// LogRange flags (an optional last byte of the request).
const (
	rangeReplicas = 1 // the vBuckets the node holds a replica copy of too (stale)
)

// logRange: str8 channel, u64 from, u64 to, u8 filter mode, bytes32
// filter, u32 credit, u64 resume timestamp, u64 resume count, [u8 flags]
// -> stream of batches: u32 n, n x (u64 timestamp, bytes32 value), then
// the position after the batch (u64 timestamp, u64 count). The records
// are those of the vBuckets the node is active for (and, with flag
// rangeReplicas, those it holds a replica copy of).
func (c *conn) logRange(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch, from, to, mode, fsrc, credit := d.Bytes8(), d.U64(), d.U64(), d.U8(), d.Bytes32(), d.U32()
	after := logstore.Position{Timestamp: d.U64(), Count: d.U64()}
	var flags uint8
	if d.Len() > 0 {
		flags = d.U8()
	}
	if d.Finish() != nil || flags&^rangeReplicas != 0 {
		c.replyf(h, wire.StatusBadRequest, "malformed LogRange")
		return
	}
	if from > to {
		c.replyf(h, wire.StatusBadRange, "from %d is after to %d", from, to)
		return
	}
	var filter logstore.Filter
	switch mode {
	case filterNone:
	case filterSubstring:
		filter = logstore.Substring(string(fsrc))
	case filterRegexp:
		var err error
		if filter, err = logstore.Regexp(string(fsrc)); err != nil {
			c.logFail(h, err)
			return
		}
	default:
		c.replyf(h, wire.StatusBadRequest, "unknown filter mode %d", mode)
		return
	}
	name, ok := c.checkChannel(h, ch, engine.KindLog, false)
	if !ok {
		return
	}
	if c.s.table.Load() != nil { // a lone server serves every vBucket
		replicas := flags&rangeReplicas != 0
		filter = filter.InVBuckets(func(vb uint16) bool { return c.s.serves(vb, replicas) })
	}
	var it *logstore.Iterator
	if name != "" {
		var err error
		if it, err = c.s.eng.Log.Range(name, from, to, filter, after); err != nil {
			c.logFail(h, err)
			return
		}
	}
	c.startStream(h, credit, func(st *stream) (wire.Status, string) {
		if it == nil {
			return wire.StatusOK, ""
		}
		defer it.Close()
		for {
			recs, err := it.Next(batchTarget)
			if err != nil {
				if st.done() {
					return wire.StatusStopped, ""
				}
				c.s.cfg.Logger.Warn("log range read failed", "channel", name, "err", err)
				return logStatus(err), fmt.Sprintf("%v", err)
			}
			if recs == nil {
				return wire.StatusOK, ""
			}
			pos := it.Position()
			ok := st.send(func(b []byte) []byte {
				b = wire.AppendU32(b, uint32(len(recs)))
				for i := range recs {
					b = wire.AppendU64(b, recs[i].Timestamp)
					b = wire.AppendBytes32(b, recs[i].Value)
				}
				b = wire.AppendU64(b, pos.Timestamp)
				return wire.AppendU64(b, pos.Count)
			})
			if !ok {
				return wire.StatusStopped, ""
			}
		}
	})
}

// logChannelSizes adds the log channels to out.
func (s *Server) logChannelSizes(out []ChannelSize) []ChannelSize {
	if s.eng.Log == nil {
		return out
	}
	for _, cs := range s.eng.Log.Channels() {
		out = append(out, ChannelSize{Name: cs.Name, Kind: engine.KindLog, Records: int64(cs.Records), Bytes: int64(cs.Bytes)})
	}
	return out
}

// logChannelSize returns the records and value bytes of log channel name.
func (s *Server) logChannelSize(name string) (records, bytes int64) {
	if s.eng.Log == nil {
		return 0, 0
	}
	cs, _ := s.eng.Log.ChannelSize(name)
	return int64(cs.Records), int64(cs.Bytes)
}

// removeLogChannel removes log channel name, answering an engine failure
// itself; it returns false then.
func (c *conn) removeLogChannel(h wire.Header, name string) bool {
	if c.s.eng.Log == nil {
		return true
	}
	if err := c.s.eng.Log.RemoveChannel(name); err != nil {
		c.logFail(h, err)
		return false
	}
	return true
}
