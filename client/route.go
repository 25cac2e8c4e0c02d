package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/wire"
)

// Routing by the vBucket map (docs/design.md §12).
//
// The router holds the map the client routes by, as a routeTable swapped
// atomically: a request costs one hash of its key and one index into the
// table. The map comes from GetClusterMap (at Dial, and whenever a node
// says the client's map is old), from the body of a `not my vbucket`, and
// is refreshed when a node announces a new revision on the MapNotify
// stream the router keeps open on one member.

// routeBackoff is the step of the linear backoff between the attempts of
// a routed request: 100 ms, 200 ms, ... up to maxRouteBackoff.
const (
	routeBackoff    = 100 * time.Millisecond
	maxRouteBackoff = time.Second
)

// While the map says a vBucket is frozen (a rebalance's takeover), or the
// node asked answered `not my vbucket` by a map older than the client's
// (it applies the client's in a moment), a routed request retries every
// 5 ms, 40 times, then every 50 ms: both end within tens of
// milliseconds, and a doubling wait would add as much again to them.
const (
	quickStep    = 5 * time.Millisecond
	quickTries   = 40
	maxQuickWait = 50 * time.Millisecond
)

// refreshTimeout bounds one refresh of the map (every node tried).
const refreshTimeout = 5 * time.Second

// routeTable is one map revision as the client routes by it.
type routeTable struct {
	m   *ClusterMap
	vbs int
	// actives[vb] is the pool of vb's active, nil when the vBucket has no
	// active (or its address is unknown).
	actives []*node
	// nodes are the members active for some vBucket, in id order: the
	// nodes of fan-out requests and of Pop.
	nodes []*node
	// all are every member with an address, in id order.
	all []*node
}

// router keeps the client's map and its pools of connections per member.
type router struct {
	c     *Client
	table atomic.Pointer[routeTable] // nil until a seed answers with a map

	mu       sync.Mutex
	pools    map[string]*node // by data address; the seeds' are theirs
	seeds    map[*node]bool
	inflight chan struct{} // closed when the refresh in flight ends
	lastDone time.Time     // when the last refresh ended
	pending  bool          // a seed said it is not in a cluster yet: try again later
	lastTry  time.Time     // of a late start (pending)
	watching bool
	stop     context.CancelFunc
	done     chan struct{} // closed when the MapNotify watcher ends
}

func newRouter(c *Client) *router {
	r := &router{c: c, pools: map[string]*node{}, seeds: map[*node]bool{}}
	for _, n := range c.seeds {
		if _, dup := r.pools[n.addr]; !dup {
			r.pools[n.addr] = n
		}
		r.seeds[n] = true
	}
	return r
}

// pool returns the connections to addr, created (not dialled) when new.
func (r *router) pool(addr string) *node {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.pools[addr]
	if n == nil {
		n = newNode(addr, &r.c.o)
		r.pools[addr] = n
	}
	return n
}

// start asks seed n, connected, for the map and starts routing by it. It
// returns false when n is in no cluster (a standby, an older node, a node
// waiting for its cluster to form) or cannot answer now.
func (r *router) start(ctx context.Context, n *node) bool {
	m, _, err := r.fetch(ctx, n, 0)
	if err != nil {
		if errors.Is(err, ErrBadRequest) { // not in a cluster yet
			r.mu.Lock()
			r.pending = true
			r.mu.Unlock()
		}
		return false
	}
	r.install(m, false)
	r.watch()
	return true
}

// lateStart tries again, at most every 500 ms, to find a map when the
// seeds were not in a cluster yet at Dial; it reports whether the client
// routes now.
func (r *router) lateStart(ctx context.Context) bool {
	if r.table.Load() != nil {
		return true
	}
	r.mu.Lock()
	if !r.pending || time.Since(r.lastTry) < 500*time.Millisecond {
		r.mu.Unlock()
		return false
	}
	r.lastTry = time.Now()
	r.mu.Unlock()
	for _, n := range r.c.seeds {
		if _, err := n.conn(ctx); err == nil && r.start(ctx, n) {
			return true
		}
	}
	return false
}

// fetch asks n for the map; have is the revision the client holds (0:
// none), so that n answers empty (current) when it has nothing newer.
func (r *router) fetch(ctx context.Context, n *node, have uint64) (m *ClusterMap, current bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	var body []byte
	if have > 0 {
		body = wire.AppendU64(nil, have)
	}
	b, err := r.c.do(ctx, n, wire.OpGetClusterMap, 0, body)
	if err != nil {
		return nil, false, err
	}
	if len(b) == 0 {
		if have == 0 {
			return nil, false, fmt.Errorf("%w: %s sent an empty map", ErrProtocol, n.addr)
		}
		return nil, true, nil
	}
	if m, err = decodeClusterMap(b); err != nil {
		return nil, false, fmt.Errorf("%w: GetClusterMap answer of %s: %w", ErrProtocol, n.addr, err)
	}
	return m, false, nil
}

// install makes m the map the client routes by, if it is newer than the
// current one (or, with same, of the same revision: its addresses may
// have changed). It reports whether it did.
func (r *router) install(m *ClusterMap, same bool) bool {
	if len(m.VBuckets) == 0 {
		return false
	}
	rt := &routeTable{m: m, vbs: len(m.VBuckets), actives: make([]*node, len(m.VBuckets))}
	// A seed the client is connected to is where its node is, whatever the
	// map says: a node restarted at a new address is recorded there only
	// once the cluster has committed the change.
	seedOf := map[string]*node{}
	for _, n := range r.c.seeds {
		if info := n.info.Load(); info != nil && info.NodeID != "" {
			seedOf[info.NodeID] = n
		}
	}
	byID := make(map[string]*node, len(m.Nodes))
	for _, mem := range m.Nodes {
		n := seedOf[mem.ID]
		if n == nil && mem.Addr != "" {
			n = r.pool(mem.Addr)
		}
		if n != nil {
			byID[mem.ID] = n
			rt.all = append(rt.all, n)
		}
	}
	holds := map[*node]bool{}
	for vb, v := range m.VBuckets {
		if n := byID[v.Active()]; n != nil {
			rt.actives[vb] = n
			holds[n] = true
		}
	}
	for _, n := range rt.all {
		if holds[n] {
			rt.nodes = append(rt.nodes, n)
		}
	}
	for {
		cur := r.table.Load()
		if cur != nil && (m.Revision < cur.m.Revision || (m.Revision == cur.m.Revision && !same)) {
			return false
		}
		if r.table.CompareAndSwap(cur, rt) {
			return true
		}
	}
}

// offer installs the map a `not my vbucket` carried, if it decodes.
func (r *router) offer(body []byte) bool {
	m, err := decodeClusterMap(body)
	return err == nil && r.install(m, false)
}

// minRefreshGap is the least time between two refreshes that are not
// urgent (a node that cannot be reached, a `not my vbucket` at the
// client's own revision): requests retrying meanwhile share the last one.
const minRefreshGap = 100 * time.Millisecond

// refresh fetches the map, from prefer first (the node that said the
// client's map is old), then from the other members and the seeds; full
// asks for it whole even when the revision is the client's (a member's
// address may change without a new revision). Concurrent refreshes share
// one; urgent ones (a node named a newer revision) do not wait for
// minRefreshGap.
func (r *router) refresh(ctx context.Context, prefer *node, full, urgent bool) {
	r.mu.Lock()
	if ch := r.inflight; ch != nil {
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	if !urgent && time.Since(r.lastDone) < minRefreshGap {
		r.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	r.inflight = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight, r.lastDone = nil, time.Now()
		r.mu.Unlock()
		close(ch)
	}()
	var have uint64
	var order []*node
	if prefer != nil {
		order = append(order, prefer)
	}
	if rt := r.table.Load(); rt != nil {
		if !full {
			have = rt.m.Revision
		}
		order = append(order, rt.all...)
	}
	order = append(order, r.c.seeds...)
	tried := map[*node]bool{}
	for _, n := range order {
		if tried[n] || ctx.Err() != nil {
			continue
		}
		tried[n] = true
		m, current, err := r.fetch(ctx, n, have)
		if err != nil {
			continue
		}
		if !current {
			r.install(m, full)
		}
		return
	}
}

// watch starts the MapNotify watcher, once.
func (r *router) watch() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watching || r.c.closed.Load() || r.c.o.noNotify {
		return
	}
	r.watching = true
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan struct{})
	go r.watchLoop(ctx)
}

// close stops the watcher and closes the pools of the members (the
// seeds' are closed by the Client).
func (r *router) close() {
	r.mu.Lock()
	stop, done := r.stop, r.done
	r.watching = true // no watcher starts any more
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.pools {
		if !r.seeds[n] {
			n.close()
		}
	}
}

// watchLoop follows the MapNotify stream of one member at a time: when it
// breaks, it moves to the next member (after 100 ms, growing to 2 s while
// they keep failing).
func (r *router) watchLoop(ctx context.Context) {
	defer close(r.done)
	fails := 0
	for i := 0; ctx.Err() == nil; i++ {
		var n *node
		if rt := r.table.Load(); rt != nil && len(rt.all) > 0 {
			n = rt.all[i%len(rt.all)]
		} else {
			n = r.c.seeds[i%len(r.c.seeds)]
		}
		start := time.Now()
		r.follow(ctx, n)
		if time.Since(start) > 10*time.Second {
			fails = 0
		}
		fails++
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(fails)*100*time.Millisecond, 2*time.Second)):
		}
	}
}

// follow runs a MapNotify stream on n until it ends, refreshing the map
// whenever n announces a revision other than the client's.
func (r *router) follow(ctx context.Context, n *node) {
	cn, err := n.conn(ctx)
	if err != nil {
		return
	}
	q := &frameQueue{signal: make(chan struct{}, 1)}
	id, err := cn.send(wire.OpMapNotify, 0, 0, nil, nil, q, 0)
	if err != nil {
		return
	}
	defer func() {
		cn.control(id, wire.StreamStop, 0)
		cn.forget(id)
	}()
	var consumed uint32
	for {
		f, err := q.next(ctx)
		if err != nil || f.err != nil || f.flags&wire.FlagMore == 0 || len(f.body) != 8 {
			return
		}
		rev := u64(f.body)
		if rt := r.table.Load(); rt == nil || rt.m.Revision < rev {
			r.refresh(ctx, n, false, true)
		}
		if consumed += 8; consumed >= 64<<10 {
			cn.control(id, wire.StreamCredit, consumed)
			consumed = 0
		}
	}
}

// routePolicy says how a routed request treats a failure to reach a
// node.
type routePolicy struct {
	// retrySent retries a request whose connection broke after it was
	// sent (reads: they change nothing); otherwise the ErrDisconnected is
	// returned, since a write may or may not have been applied.
	retrySent bool
	// moveOn returns at once, with notStored set, when the node cannot be
	// reached (or is shutting down, out of space or busy), so that the
	// caller sends the request to another node (round-robin writes).
	moveOn bool
}

// routedResult is the outcome of one routed request.
type routedResult struct {
	body      []byte
	err       error
	node      *node
	notStored bool // moveOn: the node certainly did not take the request
}

// routed runs a request of vBucket vb on vb's active by the current map.
// On `not my vbucket` it installs the map the node sent, or fetches one,
// and tries again: at once when the map names another active, after a
// few milliseconds while the map says a takeover froze vb, else after
// 100 ms, 200 ms, ... (at most 1 s), until ctx ends; then it returns the
// last `not my vbucket`, or ErrUnavailable when the vBucket has no
// reachable active. rt is the table to start with.
func (c *Client) routed(ctx context.Context, rt *routeTable, vb uint16, op wire.Opcode, flags byte, body []byte, pol routePolicy) routedResult {
	if c.closed.Load() {
		return routedResult{err: ErrClosed}
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	var last error
	quick := 0
	for attempt := 1; ; attempt++ {
		behind := false // the node answered by a map older than the client's
		n := rt.actives[vb]
		if n == nil {
			last = unavailable(vb, "", fmt.Sprintf("map revision %d has no active node for it", rt.m.Revision))
		} else {
			cn, err := n.conn(ctx)
			if err == nil {
				var b []byte
				if b, err = cn.doFlags(ctx, op, vb, flags, body); err == nil {
					return routedResult{body: b, node: n}
				}
				var stop bool
				if last, stop = c.answerFailed(ctx, rt, vb, n, err, pol); stop {
					return routedResult{err: last, node: n, notStored: pol.moveOn && last == err && isNotStored(err)}
				}
				var e *Error
				behind = errors.As(last, &e) && e.Status == uint16(wire.StatusNotMyVBucket) && e.Revision < rt.m.Revision
			} else {
				switch {
				case ctx.Err() != nil:
				case !errors.Is(err, ErrDisconnected):
					return routedResult{err: err, node: n} // credentials, too many connections...
				case pol.moveOn:
					return routedResult{err: err, node: n, notStored: true}
				}
				last = unavailable(vb, n.addr, err.Error())
				c.r.refresh(ctx, nil, true, false)
			}
		}
		next := c.routes()
		moved := next != rt && next.actives[vb] != n
		rt = next
		if ctx.Err() != nil {
			return routedResult{err: last, node: n}
		}
		if moved && attempt < 8 {
			continue // the new map names another active: try it at once
		}
		wait := min(time.Duration(attempt)*routeBackoff, maxRouteBackoff)
		if behind || (int(vb) < len(rt.m.VBuckets) && rt.m.VBuckets[vb].Frozen) {
			// A rebalance's takeover (the new active is named within
			// milliseconds), or a node about to apply the client's map
			// (the new active of a takeover, just after the old one):
			// such waits are short, and not failed attempts.
			quick++
			attempt--
			wait = quickStep
			if quick > quickTries {
				wait = maxQuickWait
			}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return routedResult{err: last, node: n}
		}
		select {
		case <-ctx.Done():
			return routedResult{err: last, node: n}
		case <-time.After(wait):
		}
	}
}

// isNotStored reports whether a node's answer says it certainly did not
// take a write that another node may take instead.
func isNotStored(err error) bool {
	return errors.Is(err, ErrShuttingDown) || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrBusy)
}

// answerFailed handles a routed request that node n answered with err (or
// whose connection broke after it was sent): a `not my vbucket` installs
// the map it carried, or fetches one, and the request is tried again
// (stop false, last the error to return if it is the last try); any other
// error ends the request (stop true, last = err), but a broken connection
// under retrySent is retried. It is apart from routed so that the answers
// without an error allocate nothing.
func (c *Client) answerFailed(ctx context.Context, rt *routeTable, vb uint16, n *node, err error, pol routePolicy) (last error, stop bool) {
	var e *Error
	switch {
	case errors.As(err, &e) && e.Status == uint16(wire.StatusNotMyVBucket):
		e.VBucket = int(vb)
		switch {
		case len(e.mapBody) > 0 && c.r.offer(e.mapBody):
		case e.Revision > rt.m.Revision:
			c.r.refresh(ctx, n, false, true)
		case e.Revision < rt.m.Revision:
			// The node is behind the client's map: it applies it soon.
		default: // the same revision (the node is still applying it), or an older node
			c.r.refresh(ctx, n, false, false)
		}
		return e, false
	case errors.Is(err, ErrDisconnected) && pol.retrySent:
		c.r.refresh(ctx, nil, true, false)
		return unavailable(vb, n.addr, err.Error()), false
	}
	return err, true
}

// unavailable is the ErrUnavailable of vBucket vb (addr: the node that
// could not be reached, "" when there is none).
func unavailable(vb uint16, addr, why string) *Error {
	return &Error{Node: addr, VBucket: int(vb), Message: why, unavailable: true}
}

// direct runs a request on the seed node when the client does not route;
// if the node answers `not my vbucket` and the seeds were not in a
// cluster yet at Dial, the client looks for a map again and, once it
// routes, sends the request by the map.
func (c *Client) direct(ctx context.Context, op wire.Opcode, vb uint16, flags byte, body []byte, pol routePolicy) ([]byte, error) {
	n := c.kvNode()
	b, err := c.doFlags(ctx, n, op, vb, flags, body)
	if c.r != nil && errors.Is(err, ErrNotMyVBucket) && c.r.lateStart(ctx) {
		res := c.routed(ctx, c.routes(), vb, op, flags, body, pol)
		return res.body, res.err
	}
	return b, err
}

// RoutingMap returns the map the client routes by, nil when it does not
// route (WithNoRouting, or seeds in no cluster). Do not modify it.
func (c *Client) RoutingMap() *ClusterMap {
	if rt := c.routes(); rt != nil {
		return rt.m
	}
	return nil
}
