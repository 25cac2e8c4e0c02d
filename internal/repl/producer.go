package repl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/engine"
	"shoal/internal/stream"
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
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Producer serves replication streams from a node's engines: one
// stream.Producer per bucket, whose Accept hook checks each request
// against the bucket's failover logs (Decide). The node's server hands it
// every connection whose first request is wire.OpStreamOpen.
type Producer struct {
	byName map[string]*stream.Producer
	first  *stream.Producer

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
	p := &Producer{byName: make(map[string]*stream.Producer, len(cfg.Buckets)), streams: make(map[*handed]struct{})}
	for _, b := range cfg.Buckets {
		if b.Engine == nil || b.Logs == nil {
			return nil, fmt.Errorf("repl: bucket %q without engine or failover logs", b.Name)
		}
		sp, err := stream.NewProducer(stream.ProducerConfig{
			Name:        cfg.Name,
			Engines:     func(name string) engine.Engine { return engineIf(name == b.Name, ascending{b.Engine, p}) },
			Accept:      accept(b),
			IdleTimeout: cfg.IdleTimeout,
			Spy:         cfg.Spy,
			Logger:      cfg.Logger.With("bucket", b.Name),
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
	p *Producer
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
	return a.Engine.Stream(ctx, vb, from, &ascendingSink{Sink: sink, h: h, end: from})
}

// ascendingSink raises marker starts above the previous end and records
// what was handed on.
type ascendingSink struct {
	engine.Sink
	h   *handed
	end uint64 // the previous marker's end, or the stream's from
}

// Snapshot implements engine.Sink.
func (s *ascendingSink) Snapshot(start, end uint64) error {
	if start <= s.end && end > s.end {
		start = s.end + 1
	}
	s.end = max(s.end, end)
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
	return nil
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

// accept is the Accept hook of bucket b: the DCP rules against its
// failover log.
func accept(b Bucket) func(stream.ConsumerInfo, stream.Request) ([]stream.FailoverEntry, error) {
	return func(_ stream.ConsumerInfo, req stream.Request) ([]stream.FailoverEntry, error) {
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
