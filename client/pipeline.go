package client

import (
	"context"
	"fmt"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Pipeline collects requests and sends them together, one write per node,
// then waits for all their answers. It is the cheapest way for one
// goroutine to issue many requests; concurrent calls on a Client are
// pipelined too, but cost a goroutine each.
//
//	p := c.Pipeline()
//	a := p.Get("users", []byte("alice"))
//	b := p.Put("users", []byte("bob"), []byte("v"))
//	if err := p.Exec(ctx); err != nil { ... } // the connection failed
//	fmt.Println(a.Value, a.Err, b.CAS, b.Err)
//
// With routing each request goes to the node the map names (a key's
// active; a push or append to the active of the next vBucket round-robin;
// a pop to the next node), and a request a node refused with `not my
// vbucket`, or that could not be sent because its node was unreachable, is
// sent again by itself as the Client's own calls are (map refreshed, 100 ms
// linear backoff). Without routing a Pipeline talks to the first node the
// client was given. A request sent on a connection that broke fails with
// ErrDisconnected and is not sent again. A Pipeline is not safe for
// concurrent use; after Exec it may be filled again (the results of the
// previous Exec stay valid).
type Pipeline struct {
	c     *Client
	reqs  []pipeReq
	buf   []byte // request bodies back to back
	calls []*call
}

type pipeReq struct {
	op       wire.Opcode
	vb       uint16
	flags    byte
	from, to int // body in buf
	res      *Result
	err      error // refused before sending
	n        *node // Exec: the node it goes to
	cn       *conn // Exec: the connection it was sent on (nil: not sent)
	id       uint32
	cl       *call
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
	// The vBucket is found by Exec, by the map or the node's count.
	return p.add(op, 0, func(b []byte) []byte {
		b = wire.AppendStr8(b, channel)
		b = wire.AppendBytes8(b, key)
		if build != nil {
			b = build(b)
		}
		return b
	}, checkArgs(channel, key))
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

// Exec sends every request added since the last Exec, one write per node,
// and waits for their answers. It returns an error only when the requests
// could not be sent or the context ended; each request's own outcome is
// in its Result.
func (p *Pipeline) Exec(ctx context.Context) error {
	defer func() {
		for i := range p.reqs {
			p.reqs[i] = pipeReq{}
		}
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
	rt := p.c.routes()
	if rt == nil {
		n := p.c.kvNode()
		cn, err := n.conn(ctx)
		if err != nil {
			return err
		}
		for i := range p.reqs {
			p.reqs[i].n = n
			if p.reqs[i].isKV() {
				p.reqs[i].vb = vbucket.Of(p.key(i), cn.info.VBuckets)
			}
		}
	} else {
		for i := range p.reqs {
			p.route(rt, i)
		}
	}
	// One batch per node, in the order the nodes first appear.
	var order []*node
	seen := map[*node]bool{}
	for i := range p.reqs {
		if n := p.reqs[i].n; n != nil && p.reqs[i].err == nil && !seen[n] {
			seen[n] = true
			order = append(order, n)
		}
	}
	for _, n := range order {
		cn, err := n.conn(ctx)
		if err != nil {
			if rt == nil {
				return err
			}
			continue // not sent: sent again by itself below
		}
		var idx []int
		for i := range p.reqs {
			if p.reqs[i].n == n && p.reqs[i].err == nil {
				idx = append(idx, i)
			}
		}
		ids, err := cn.sendMany(len(idx), func(k int) (wire.Opcode, uint16, byte, []byte, *call) {
			q := &p.reqs[idx[k]]
			q.cl = callPool.Get().(*call)
			return q.op, q.vb, q.flags, p.buf[q.from:q.to], q.cl
		})
		if err != nil {
			for _, i := range idx {
				callPool.Put(p.reqs[i].cl)
				p.reqs[i].cl = nil
			}
			if rt == nil {
				return err
			}
			continue
		}
		for k, i := range idx {
			p.reqs[i].cn, p.reqs[i].id = cn, ids[k]
		}
	}
	var again []int
	for i := range p.reqs {
		q := &p.reqs[i]
		switch {
		case q.err != nil:
			q.res.Err = q.err
			continue
		case q.cn == nil:
			again = append(again, i)
			continue
		}
		select {
		case r := <-q.cl.ch:
			callPool.Put(q.cl)
			q.cl = nil
			if rt != nil && r.err == nil && r.status == wire.StatusNotMyVBucket {
				if e, ok := statusError(q.cn.addr, r.status, r.body).(*Error); ok && len(e.mapBody) > 0 {
					p.c.r.offer(e.mapBody)
				}
				again = append(again, i)
				continue
			}
			decodeResult(q.op, q.cn.addr, r, q.res)
		case <-ctx.Done():
			// Forget the calls still waiting (not pooled again: an answer
			// may still land in one); their answers are dropped.
			for j := i; j < len(p.reqs); j++ {
				if w := &p.reqs[j]; w.cn != nil && w.cl != nil {
					w.cn.mu.Lock()
					delete(w.cn.calls, w.id)
					w.cn.mu.Unlock()
				}
			}
			return ctx.Err()
		}
	}
	for _, i := range again {
		p.resend(ctx, &p.reqs[i])
	}
	return nil
}

// isKV reports whether q is a single-key request, routed by its key.
func (q *pipeReq) isKV() bool {
	switch q.op {
	case wire.OpGet, wire.OpPut, wire.OpExists, wire.OpRemove:
		return true
	}
	return false
}

// key returns the key in the body of request i (str8 channel, str8 key).
func (p *Pipeline) key(i int) []byte {
	q := &p.reqs[i]
	d := wire.NewDecoder(p.buf[q.from:q.to])
	d.Bytes8()
	return d.Bytes8()
}

// route picks the node of request i by the map rt.
func (p *Pipeline) route(rt *routeTable, i int) {
	q := &p.reqs[i]
	if q.err != nil {
		return
	}
	switch {
	case q.isKV():
		q.vb = vbucket.Of(p.key(i), rt.vbs)
		q.n = rt.actives[q.vb]
	case q.op == wire.OpPop:
		if len(rt.nodes) > 0 {
			q.n = rt.nodes[p.c.start(len(rt.nodes))]
		}
	default: // a push or an append: the active of the next vBucket
		if vb, ok := p.c.nextVB(rt, q.op, nil); ok {
			q.vb, q.flags, q.n = vb, wire.FlagVBucket, rt.actives[vb]
		}
	}
}

// resend runs q by itself, as the Client's calls run, after a `not my
// vbucket` or a node that could not be reached.
func (p *Pipeline) resend(ctx context.Context, q *pipeReq) {
	body := p.buf[q.from:q.to]
	if q.op == wire.OpPop {
		d := wire.NewDecoder(body)
		v, err := p.c.Pop(ctx, string(d.Bytes8()))
		q.res.Value, q.res.Err = v, err
		return
	}
	rt := p.c.routes()
	var pol routePolicy
	if q.op == wire.OpGet || q.op == wire.OpExists {
		pol = reads
	}
	var b []byte
	var err error
	if q.isKV() {
		res := p.c.routed(ctx, rt, q.vb, q.op, 0, body, pol)
		b, err = res.body, res.err
		if res.node != nil {
			decodeResult(q.op, res.node.addr, result{status: wire.StatusOK, body: b}, q.res)
		}
	} else {
		b, err = p.c.spread(ctx, rt, q.op, nil, body)
		decodeResult(q.op, "", result{status: wire.StatusOK, body: b}, q.res)
	}
	if err != nil {
		*q.res = Result{Err: err}
	}
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
