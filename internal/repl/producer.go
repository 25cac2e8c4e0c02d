package repl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/engine"
	"shoal/internal/stream"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// Bucket is one engine a producer serves and its failover logs. The
// bucket name is what a consumer asks for: "kv", "queue" or "log".
type Bucket struct {
	Name   string
	Engine engine.Engine
	Logs   *Logs
}

// ProducerConfig configures NewProducer.
type ProducerConfig struct {
	// Name is this node's name, told to consumers. Required.
	Name string
	// Buckets are the engines served. Required.
	Buckets []Bucket
	// IdleTimeout, if set, overrides stream.DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Spy, if set, is told about the traffic received from consumers.
	Spy stream.Spy
	// Table, if set, returns the node's current view of the vBucket map:
	// a stream request is then accepted only for a vBucket this node is
	// active for, from a consumer in that vBucket's chain or from a
	// standby (stream.FeatureStandby, which may stream every vBucket this
	// node is active for). Without it (tests, tools) every request is
	// checked against the failover log only.
	Table func() *vbmap.Table
	// SeqnoInterval overrides stream.DefaultSeqnoInterval (tests).
	SeqnoInterval time.Duration
	// Acks, if set, records the consumers' seqno acknowledgements and
	// samples the replication lag (acks.go).
	Acks *Acks
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Producer serves replication streams from a node's engines: one
// stream.Producer per bucket, whose Accept hook checks each request
// against the bucket's failover logs (Decide). The node's server hands it
// every connection whose first request is wire.OpStreamOpen.
type Producer struct {
	byName  map[string]*stream.Producer
	first   *stream.Producer
	buckets []Bucket
	table   func() *vbmap.Table
	acks    *Acks

	mu      sync.Mutex
	streams map[*handed]struct{} // the vBucket streams being served
}

// handed is what one vBucket stream has handed to the stream library.
type handed struct {
	eng     engine.Engine
	vb      uint16
	last    atomic.Uint64 // the highest mutation seqno
	markEnd atomic.Uint64 // the end of the last snapshot marker
	calls   atomic.Uint64 // markers and mutations, to tell a quiet stream
	seen    uint64        // calls at Drain's previous poll (Drain's own)
}

// NewProducer checks cfg and returns a producer.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if len(cfg.Buckets) == 0 {
		return nil, errors.New("repl: producer without buckets")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Producer{byName: make(map[string]*stream.Producer, len(cfg.Buckets)), streams: make(map[*handed]struct{}),
		buckets: cfg.Buckets, table: cfg.Table, acks: cfg.Acks}
	for _, b := range cfg.Buckets {
		if b.Engine == nil || b.Logs == nil {
			return nil, fmt.Errorf("repl: bucket %q without engine or failover logs", b.Name)
		}
		sp, err := stream.NewProducer(stream.ProducerConfig{
			Name:          cfg.Name,
			Engines:       func(name string) engine.Engine { return engineIf(name == b.Name, ascending{b.Engine, p, b.Name}) },
			Accept:        p.accept(b),
			OnApplied:     p.onApplied(b.Name),
			IdleTimeout:   cfg.IdleTimeout,
			SeqnoInterval: cfg.SeqnoInterval,
			Spy:           cfg.Spy,
			Logger:        cfg.Logger.With("bucket", b.Name),
		})
		if err != nil {
			return nil, err
		}
		if _, dup := p.byName[b.Name]; dup {
			return nil, fmt.Errorf("repl: bucket %q given twice", b.Name)
		}
		p.byName[b.Name] = sp
		if p.first == nil {
			p.first = sp
		}
	}
	return p, nil
}

func engineIf(ok bool, e engine.Engine) engine.Engine {
	if ok {
		return e
	}
	return nil
}

// ascending is an engine whose snapshot markers start after the previous
// marker's end (or after the stream's from seqno), and whose streams the
// producer tracks for Drain. The stream protocol wants markers ascending,
// start being the first seqno a snapshot may hold; the log engine marks
// each live mutation Snapshot(last, seqno) and the queue engine its first
// snapshot Snapshot(from, high), both starting at the seqno already sent.
// Raising start to it + 1 changes nothing else: every mutation that
// follows is above it.
type ascending struct {
	engine.Engine
	p      *Producer
	bucket string
}

// Stream implements engine.Engine.
func (a ascending) Stream(ctx context.Context, vb uint16, from uint64, sink engine.Sink) error {
	h := &handed{eng: a.Engine, vb: vb}
	h.last.Store(from)
	h.markEnd.Store(from)
	a.p.mu.Lock()
	a.p.streams[h] = struct{}{}
	a.p.mu.Unlock()
	defer func() {
		a.p.mu.Lock()
		delete(a.p.streams, h)
		a.p.mu.Unlock()
	}()
	return a.Engine.Stream(ctx, vb, from, &ascendingSink{Sink: sink, h: h, end: from, acks: a.p.acks, bucket: a.bucket})
}

// ascendingSink raises marker starts above the previous end and records
// what was handed on.
type ascendingSink struct {
	engine.Sink
	h   *handed
	end uint64 // the previous marker's end, or the stream's from

	// Lag samples (Acks.Sample): live mutations only, each a snapshot of
	// its own, at most one per lagSampleEvery per stream.
	acks       *Acks
	bucket     string
	single     bool // the last marker holds one seqno
	lastSample time.Time
}

// Snapshot implements engine.Sink.
func (s *ascendingSink) Snapshot(start, end uint64) error {
	if start <= s.end && end > s.end {
		start = s.end + 1
	}
	s.end = max(s.end, end)
	s.single = start == end
	if err := s.Sink.Snapshot(start, end); err != nil {
		return err
	}
	s.h.markEnd.Store(s.end)
	s.h.calls.Add(1)
	return nil
}

// Mutation implements engine.Sink.
func (s *ascendingSink) Mutation(m *engine.Mutation) error {
	if err := s.Sink.Mutation(m); err != nil {
		return err
	}
	if m.Seqno > s.h.last.Load() {
		s.h.last.Store(m.Seqno)
	}
	s.h.calls.Add(1)
	if s.acks != nil && s.single && m.Seqno == s.end {
		if now := time.Now(); now.Sub(s.lastSample) >= lagSampleEvery {
			s.lastSample = now
			s.acks.Sample(s.bucket, m.VBucket, m.Seqno, now)
		}
	}
	return nil
}

// onApplied is the stream library's OnApplied hook of bucket.
func (p *Producer) onApplied(bucket string) func(stream.ConsumerInfo, uint16, uint64, uint64) {
	if p.acks == nil {
		return nil
	}
	return func(ci stream.ConsumerInfo, vb uint16, applied, persisted uint64) {
		p.acks.Note(bucket, ci.Name, vb, applied, persisted)
	}
}

// drainPoll is how often Drain looks at the streams.
const drainPoll = 10 * time.Millisecond

// Drain waits until every vBucket stream being served has been handed its
// engine's latest mutations, or ctx ends (its error is returned). Call it
// when nothing writes to the engines any more, before ending Serve's
// context: the stream library then sends what it was handed before it
// closes, and the consumers hold everything, so they resume after the
// restart instead of rolling back (the kv engine, restarted from a dump,
// rolls back any consumer behind its high seqno). A stream counts as done
// when it was handed a mutation at the high seqno, or a snapshot marker
// reaching it and nothing more for one poll (a queue snapshot whose last
// mutations were pops holds no mutation at its end).
func (p *Producer) Drain(ctx context.Context) error {
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		pending := 0
		p.mu.Lock()
		for h := range p.streams {
			high := h.eng.HighSeqno(h.vb)
			calls := h.calls.Load()
			quiet := calls == h.seen
			h.seen = calls
			if h.last.Load() < high && (h.markEnd.Load() < high || !quiet) {
				pending++
			}
		}
		p.mu.Unlock()
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d vbucket streams not drained: %w", pending, ctx.Err())
		case <-t.C:
		}
	}
}

// accept is the Accept hook of bucket b: the chain check (when the node
// has a map), then the DCP rules against its failover log.
func (p *Producer) accept(b Bucket) func(stream.ConsumerInfo, stream.Request) ([]stream.FailoverEntry, error) {
	return func(ci stream.ConsumerInfo, req stream.Request) ([]stream.FailoverEntry, error) {
		if p.table != nil {
			if err := CheckChain(p.table(), ci, req.VBucket); err != nil {
				return nil, err
			}
		}
		high := b.Engine.HighSeqno(req.VBucket)
		log := b.Logs.Ensure(req.VBucket, high)
		if log == nil {
			return nil, fmt.Errorf("no vbucket %d", req.VBucket)
		}
		if to, ok := Decide(log, high, req); !ok {
			return nil, &stream.RollbackError{Seqno: to}
		}
		return log, nil
	}
}

// ErrNotInChain is wrapped by the chain check's refusals.
var ErrNotInChain = errors.New("repl: not in the vbucket's chain")

// CheckChain returns nil when a producer whose view of the map is t may
// stream vb to consumer c: it is vb's active (frozen by a takeover or
// not: the takeover drains through these streams), and c is in vb's
// chain, a pending copy of it, or a standby. Consumers retry refused requests; the answer names the map
// revision, so a consumer whose map is older can tell.
func CheckChain(t *vbmap.Table, c stream.ConsumerInfo, vb uint16) error {
	if t == nil {
		return fmt.Errorf("%w: this node has no vbucket map yet", ErrNotInChain)
	}
	m := t.Map()
	if int(vb) >= m.Len() {
		return fmt.Errorf("%w: no vbucket %d", ErrNotInChain, vb)
	}
	v := m.VBuckets[vb]
	if t.State(vb) != vbmap.Active && !(v.Frozen && v.Active() == t.Self()) {
		return fmt.Errorf("%w: node %s is not the active of vbucket %d (map revision %d, epoch %d: active %q)",
			ErrNotInChain, t.Self(), vb, m.Revision, v.Epoch, v.Active())
	}
	if c.Features&stream.FeatureStandby != 0 || slices.Contains(v.Chain[1:], c.Name) || slices.Contains(v.Pending, c.Name) {
		return nil
	}
	return fmt.Errorf("%w: consumer %s is not in the chain %v of vbucket %d (map revision %d, epoch %d)",
		ErrNotInChain, c.Name, v.Chain, vb, m.Revision, v.Epoch)
}

// ConsumerStatus is the producer's view of one stream connection it
// serves: whom, and per vBucket what it sent, what was acknowledged and
// how far behind the consumer is.
type ConsumerStatus struct {
	Consumer string `json:"consumer"`
	Bucket   string `json:"bucket"`
	Conn     int    `json:"conn"`
	Remote   string `json:"remote"`
	Standby  bool   `json:"standby,omitempty"`
	Streams  int    `json:"streams"`
	// CaughtUp counts the streams whose consumer acknowledged the
	// engine's high seqno.
	CaughtUp int `json:"caught_up"`
	// LagSeqnos and LagBytes sum the streams' lags.
	LagSeqnos uint64 `json:"lag_seqnos"`
	LagBytes  int64  `json:"lag_bytes"`
	// PerVBucket: with Status(true) only.
	PerVBucket []ServedStatus `json:"per_vbucket,omitempty"`
}

// ServedStatus is the producer's view of one vBucket stream.
type ServedStatus struct {
	VBucket uint16 `json:"vbucket"`
	// High is the engine's high seqno; Sent the highest seqno handed to
	// the connection; Acked the highest the consumer acknowledged (its
	// handler applied it).
	High  uint64 `json:"high"`
	Sent  uint64 `json:"sent"`
	Acked uint64 `json:"acked"`
	// LagSeqnos is High - Acked (0 when not below); LagBytes the bytes of
	// the stream's messages queued or sent and not acknowledged.
	LagSeqnos uint64 `json:"lag_seqnos"`
	LagBytes  int64  `json:"lag_bytes"`
}

// Status describes the stream connections served, per consumer and
// bucket; with vbuckets, every stream of each.
func (p *Producer) Status(vbuckets bool) []ConsumerStatus {
	var out []ConsumerStatus
	for _, b := range p.buckets {
		for _, cs := range p.byName[b.Name].Status() {
			st := ConsumerStatus{Consumer: cs.Consumer, Bucket: cs.Bucket, Conn: cs.Conn, Remote: cs.Remote,
				Standby: cs.Features&stream.FeatureStandby != 0}
			for _, s := range cs.Streams {
				if s.Ended {
					continue
				}
				high := b.Engine.HighSeqno(s.VBucket)
				// A consumer with the acks feature says what it applied at once
				// (its applied messages); the byte acknowledgements come later.
				v := ServedStatus{VBucket: s.VBucket, High: high, Sent: s.Sent, Acked: max(s.Acked, s.Applied), LagBytes: s.UnackedBytes}
				if high > s.Acked {
					v.LagSeqnos = high - s.Acked
				} else {
					st.CaughtUp++
				}
				st.Streams++
				st.LagSeqnos += v.LagSeqnos
				st.LagBytes += v.LagBytes
				if vbuckets {
					st.PerVBucket = append(st.PerVBucket, v)
				}
			}
			out = append(out, st)
		}
	}
	return out
}

// Serve runs one stream connection (see stream.Producer.Serve): it reads
// the bucket named by the open frame's body and hands the connection to
// that bucket's producer. A body it cannot read, or an unknown bucket,
// goes to any producer, which answers it with the error.
func (p *Producer) Serve(ctx context.Context, conn net.Conn, h wire.Header, body []byte) error {
	sp := p.byName[openBucket(body)]
	if sp == nil {
		sp = p.first
	}
	return sp.Serve(ctx, conn, h, body)
}

// openBucket returns the bucket an OpStreamOpen body names (version u8,
// consumer str8, bucket str8, ...; docs/protocol.md), or "".
func openBucket(body []byte) string {
	d := wire.NewDecoder(body)
	d.U8()
	d.Bytes8()
	b := d.Bytes8()
	if d.Err() != nil {
		return ""
	}
	return string(b)
}

// Copy is what a producer knows of one consumer's copy of a vBucket:
// per bucket (in the producer's order) the highest seqno it applied, and
// the bytes streamed to it by the open streams.
type Copy struct {
	Applied []uint64 `json:"applied"`
	Bytes   int64    `json:"bytes"`
	// Streaming: every bucket has a stream of the vBucket open to it.
	Streaming bool `json:"streaming"`
}

// Copies returns, for each vBucket of want, what the producer knows of
// the copies of the consumers want names (a rebalance's progress and
// drain). A consumer without an open stream of a bucket counts as having
// applied nothing of it.
func (p *Producer) Copies(want map[uint16][]string) map[uint16]map[string]*Copy {
	out := make(map[uint16]map[string]*Copy, len(want))
	streams := make(map[uint16]map[string]int, len(want))
	for vb, names := range want {
		out[vb] = make(map[string]*Copy, len(names))
		streams[vb] = map[string]int{}
		for _, n := range names {
			out[vb][n] = &Copy{Applied: make([]uint64, len(p.buckets))}
		}
	}
	for bi, b := range p.buckets {
		for _, cs := range p.byName[b.Name].Status() {
			for _, s := range cs.Streams {
				c := out[s.VBucket][cs.Consumer]
				if c == nil || s.Ended {
					continue
				}
				c.Applied[bi] = max(c.Applied[bi], s.Applied, s.Acked)
				c.Bytes += s.Bytes
				streams[s.VBucket][cs.Consumer]++
			}
		}
	}
	for vb, cs := range out {
		for n, c := range cs {
			c.Streaming = streams[vb][n] >= len(p.buckets)
		}
	}
	return out
}

// Streaming reports whether some consumer has a stream of vb open, in
// any bucket: a node keeps a copy that is still streamed from (a
// consumer that has not applied the map that moved the vBucket away
// reads it, and dropping it would end its stream with a rollback).
func (p *Producer) Streaming(vb uint16) bool {
	for _, b := range p.buckets {
		for _, cs := range p.byName[b.Name].Status() {
			for _, s := range cs.Streams {
				if s.VBucket == vb && !s.Ended {
					return true
				}
			}
		}
	}
	return false
}

// Buckets returns the names of the producer's buckets, in its order.
func (p *Producer) Buckets() []string {
	out := make([]string, len(p.buckets))
	for i, b := range p.buckets {
		out[i] = b.Name
	}
	return out
}
