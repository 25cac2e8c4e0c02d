package client

import (
	"context"
	"fmt"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Pipeline collects requests and sends them to one node together, in one
// write, then waits for all their answers. It is the cheapest way for one
// goroutine to issue many requests; concurrent calls on a Client are
// pipelined too, but cost a goroutine each.
//
//	p := c.Pipeline()
//	a := p.Get("users", []byte("alice"))
//	b := p.Put("users", []byte("bob"), []byte("v"))
//	if err := p.Exec(ctx); err != nil { ... } // the connection failed
//	fmt.Println(a.Value, a.Err, b.CAS, b.Err)
//
// A Pipeline talks to the first node the client was given (the kv node),
// and does not retry: a request sent on a connection that broke fails with
// ErrDisconnected. It is not safe for concurrent use; after Exec it may be
// filled again (the results of the previous Exec stay valid).
type Pipeline struct {
	c     *Client
	reqs  []pipeReq
	buf   []byte // request bodies back to back
	calls []*call
}

type pipeReq struct {
	op       wire.Opcode
	vb       uint16
	from, to int // body in buf
	res      *Result
	err      error // refused before sending
}

// Result is the outcome of one request of a Pipeline, valid after Exec.
type Result struct {
	// Value: Get and Pop answers.
	Value []byte
	// CAS: Put and Get answers.
	CAS uint64
	// OK: Exists (the key exists) and Remove (a record was removed).
	OK bool
	// Err is the request's error (ErrNotFound, ErrEmpty, ...), or nil.
	Err error
}

// Pipeline returns an empty pipeline.
func (c *Client) Pipeline() *Pipeline { return &Pipeline{c: c} }

// Len is the number of requests waiting for Exec.
func (p *Pipeline) Len() int { return len(p.reqs) }

func (p *Pipeline) add(op wire.Opcode, vb uint16, build func(b []byte) []byte, err error) *Result {
	r := &Result{}
	from := len(p.buf)
	if err == nil {
		p.buf = build(p.buf)
	}
	p.reqs = append(p.reqs, pipeReq{op: op, vb: vb, from: from, to: len(p.buf), res: r, err: err})
	return r
}

func (p *Pipeline) kv(op wire.Opcode, channel string, key []byte, build func(b []byte) []byte) *Result {
	err := checkArgs(channel, key)
	var vb uint16
	if err == nil {
		if n := p.c.kvNode().vbuckets(); n > 0 {
			vb = vbucket.Of(key, n)
		}
	}
	return p.add(op, vb, func(b []byte) []byte {
		b = wire.AppendStr8(b, channel)
		b = wire.AppendBytes8(b, key)
		if build != nil {
			b = build(b)
		}
		return b
	}, err)
}

// Get adds a Get: Result.Value and CAS, or ErrNotFound.
func (p *Pipeline) Get(channel string, key []byte) *Result {
	return p.kv(wire.OpGet, channel, key, nil)
}

// Put adds a Put: Result.CAS.
func (p *Pipeline) Put(channel string, key, value []byte, opts ...WriteOption) *Result {
	ttl := ttlOf(opts)
	return p.kv(wire.OpPut, channel, key, func(b []byte) []byte {
		return append(wire.AppendU32(b, ttl), value...)
	})
}

// Exists adds an Exists: Result.OK.
func (p *Pipeline) Exists(channel string, key []byte) *Result {
	return p.kv(wire.OpExists, channel, key, nil)
}

// Remove adds a Remove: Result.OK says whether a record was removed.
func (p *Pipeline) Remove(channel string, key []byte) *Result {
	return p.kv(wire.OpRemove, channel, key, nil)
}

// Push adds a Push to channels.
func (p *Pipeline) Push(channels []string, value []byte) *Result {
	return p.add(wire.OpPush, 0, func(b []byte) []byte {
		b = appendChannels(b, channels)
		b = wire.AppendBytes8(b, nil)
		return append(b, value...)
	}, checkChannels(channels))
}

// Pop adds a Pop: Result.Value, or ErrEmpty.
func (p *Pipeline) Pop(channel string) *Result {
	var err error
	if !wire.ValidChannelString(channel) {
		err = fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	return p.add(wire.OpPop, 0, func(b []byte) []byte { return wire.AppendStr8(b, channel) }, err)
}

// LogPut adds an append of (ts, value) to a log channel.
func (p *Pipeline) LogPut(channel string, ts uint64, value []byte) *Result {
	var err error
	if !wire.ValidChannelString(channel) {
		err = fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	return p.add(wire.OpLogPut, 0, func(b []byte) []byte {
		b = wire.AppendStr8(b, channel)
		b = wire.AppendU64(b, ts)
		b = wire.AppendBytes8(b, nil)
		return append(b, value...)
	}, err)
}

// Exec sends every request added since the last Exec in one write and
// waits for their answers. It returns an error only when the requests could
// not be sent or the context ended; each request's own outcome is in its
// Result.
func (p *Pipeline) Exec(ctx context.Context) error {
	defer func() {
		p.reqs, p.buf = p.reqs[:0], p.buf[:0]
	}()
	if len(p.reqs) == 0 {
		return nil
	}
	if p.c.closed.Load() {
		return ErrClosed
	}
	ctx, cancel := p.c.ctx(ctx)
	defer cancel()
	n := p.c.kvNode()
	cn, err := n.conn(ctx)
	if err != nil {
		return err
	}
	// A request built before the node's vBucket count was known is routed now.
	for i := range p.reqs {
		q := &p.reqs[i]
		if q.err == nil && q.vb == 0 && (q.op == wire.OpGet || q.op == wire.OpPut || q.op == wire.OpExists || q.op == wire.OpRemove) {
			d := wire.NewDecoder(p.buf[q.from:q.to])
			d.Bytes8()
			q.vb = vbucket.Of(d.Bytes8(), cn.info.VBuckets)
		}
	}
	p.calls = p.calls[:0]
	ids, err := cn.sendMany(len(p.reqs), func(i int) (wire.Opcode, uint16, []byte, *call) {
		q := &p.reqs[i]
		if q.err != nil {
			return 0, 0, nil, nil
		}
		cl := callPool.Get().(*call)
		p.calls = append(p.calls, cl)
		return q.op, q.vb, p.buf[q.from:q.to], cl
	})
	if err != nil {
		for _, cl := range p.calls {
			callPool.Put(cl)
		}
		return err
	}
	k := 0
	for i := range p.reqs {
		q := &p.reqs[i]
		if q.err != nil {
			q.res.Err = q.err
			continue
		}
		cl := p.calls[k]
		k++
		select {
		case r := <-cl.ch:
			callPool.Put(cl)
			decodeResult(q.op, cn.addr, r, q.res)
		case <-ctx.Done():
			// Forget the calls still waiting (not pooled again: an answer
			// may still land in one); their answers are dropped.
			cn.mu.Lock()
			for _, id := range ids[k-1:] {
				delete(cn.calls, id)
			}
			cn.mu.Unlock()
			return ctx.Err()
		}
	}
	return nil
}

// decodeResult fills res from the answer r to a request op.
func decodeResult(op wire.Opcode, addr string, r result, res *Result) {
	if r.err != nil {
		res.Err = r.err
		return
	}
	if r.status != wire.StatusOK {
		res.Err = statusError(addr, r.status, r.body)
		return
	}
	switch op {
	case wire.OpGet:
		if len(r.body) < 8 {
			res.Err = fmt.Errorf("%w: short Get answer", ErrProtocol)
			return
		}
		res.CAS, res.Value = u64(r.body), r.body[8:]
	case wire.OpPut:
		res.CAS = u64(r.body)
	case wire.OpExists, wire.OpRemove:
		res.OK = len(r.body) == 1 && r.body[0] == 1
	case wire.OpPop:
		res.Value = r.body
	}
}
