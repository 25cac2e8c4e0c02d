package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"shoal/client"
)

// Shoal is a shoal node (or cluster) spoken to through the client package.
// Every connection is a Client of its own with one connection, and a batch
// of P requests is P concurrent calls on it, which the client pipelines.
type Shoal struct {
	name string
	dial func(ctx context.Context) (*client.Client, error)
}

// NewShoal returns the shoal target named name (for results) whose
// connections dial opens. dial must return a Client with one connection
// (the default), so that the node sees the connections and pipeline depth
// of the run.
func NewShoal(name string, dial func(ctx context.Context) (*client.Client, error)) *Shoal {
	return &Shoal{name: name, dial: dial}
}

// String implements Target.
func (s *Shoal) String() string { return "shoal " + s.name }

// Open implements Target.
func (s *Shoal) Open(ctx context.Context, pipeline int) (Conn, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &shoalConn{c: c}, nil
}

// NodeCounts implements NodeCounter: the "requests" and "cpu_seconds" of
// every member's Info.
func (s *Shoal) NodeCounts(ctx context.Context) (map[string]NodeCount, error) {
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]NodeCount, len(info))
	for addr, m := range info {
		reqs, ok := m["requests"].(float64)
		if !ok {
			continue // a node of an older version
		}
		cpu, _ := m["cpu_seconds"].(float64)
		out[addr] = NodeCount{Requests: uint64(reqs), CPUSeconds: cpu}
	}
	return out, nil
}

// shoalConn is one Client.
type shoalConn struct {
	c *client.Client
	p *client.Pipeline
}

// Do implements Conn. A batch of single-record requests goes through a
// client Pipeline: one write, then every answer, as the RESP client does;
// ranges and drops run as concurrent calls. The client re-dials a broken
// connection by itself, so Do fails as a whole only for an operation the
// client cannot do.
func (s *shoalConn) Do(ctx context.Context, reqs []Request, out []Outcome) error {
	start := time.Now()
	if s.pipelined(ctx, reqs, out, start) {
		return nil
	}
	var wg sync.WaitGroup
	for i := 1; i < len(reqs); i++ {
		wg.Go(func() { out[i] = s.one(ctx, &reqs[i], start) })
	}
	out[0] = s.one(ctx, &reqs[0], start)
	wg.Wait()
	for _, o := range out {
		if errors.Is(o.Err, ErrUnsupported) {
			return o.Err
		}
	}
	return nil
}

// pipelined runs reqs through a Pipeline if every one of them can go in
// one; it reports whether it did.
func (s *shoalConn) pipelined(ctx context.Context, reqs []Request, out []Outcome, start time.Time) bool {
	if s.p == nil {
		s.p = s.c.Pipeline()
	}
	res := make([]*client.Result, len(reqs))
	for i := range reqs {
		q := &reqs[i]
		switch q.Op {
		case OpGet:
			res[i] = s.p.Get(q.Channel, q.Key)
		case OpSet:
			res[i] = s.p.Put(q.Channel, q.Key, q.Value)
		case OpPush:
			res[i] = s.p.Push([]string{q.Channel}, q.Value)
		case OpPop:
			res[i] = s.p.Pop(q.Channel)
		case OpAppend:
			ts := q.Time
			if ts == 0 {
				ts = time.Now().Unix()
			}
			res[i] = s.p.LogPut(q.Channel, uint64(ts), q.Value)
		default:
			s.p = nil // drop what was added
			return false
		}
	}
	err := s.p.Exec(ctx)
	lat := time.Since(start)
	for i, r := range res {
		o := Outcome{Latency: lat, Err: err}
		if err == nil {
			o.Err = r.Err
			if errors.Is(r.Err, client.ErrNotFound) || errors.Is(r.Err, client.ErrEmpty) {
				o.Miss, o.Err = true, nil
			}
		}
		out[i] = o
	}
	return true
}

// one runs one request.
func (s *shoalConn) one(ctx context.Context, q *Request, start time.Time) Outcome {
	var err error
	var miss bool
	switch q.Op {
	case OpGet:
		_, err = s.c.Get(ctx, q.Channel, q.Key)
		if errors.Is(err, client.ErrNotFound) {
			miss, err = true, nil
		}
	case OpSet:
		_, err = s.c.Put(ctx, q.Channel, q.Key, q.Value)
	case OpDrop:
		err = s.c.RemoveChannel(ctx, q.Channel)
	case OpPush:
		err = s.c.Push(ctx, []string{q.Channel}, q.Value)
	case OpPop:
		_, err = s.c.Pop(ctx, q.Channel)
		if errors.Is(err, client.ErrEmpty) {
			miss, err = true, nil
		}
	case OpAppend:
		ts := q.Time
		if ts == 0 {
			ts = time.Now().Unix()
		}
		err = s.c.LogPut(ctx, q.Channel, uint64(ts), q.Value)
	case OpRange:
		n := 0
		for _, rerr := range s.c.LogRange(ctx, q.Channel, uint64(q.Time), uint64(q.Time+int64(q.Count)-1)).All() {
			if rerr != nil {
				err = rerr
				break
			}
			n++
		}
		miss = err == nil && n == 0
	default:
		err = fmt.Errorf("%w: %s", ErrUnsupported, q.Op)
	}
	return Outcome{Latency: time.Since(start), Miss: miss, Err: err}
}

// Close implements Conn.
func (s *shoalConn) Close() error { return s.c.Close() }
