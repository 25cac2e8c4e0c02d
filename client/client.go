// Package client is the Go client of shoal nodes.
//
//	c, err := client.Dial(ctx, "10.0.0.1:7400,10.0.0.2:7400")
//	if err != nil { ... }
//	defer c.Close()
//	c.Put(ctx, "users", []byte("alice"), []byte(`{"age":31}`))
//	v, err := c.Get(ctx, "users", []byte("alice"))
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// A Client is safe for concurrent use and meant to be shared: concurrent
// calls are pipelined over its connections (many requests in flight, sent
// together), which is how one connection reaches high throughput. Every
// call takes a context. A broken connection is re-dialled on the next call,
// with backoff while the node stays unreachable; streams (GetAll, Mirror,
// Consume) resume by themselves where they were.
//
// # Routing
//
// The addresses given to Dial are seeds: the client fetches the cluster's
// vBucket map from the first one that answers and from then on talks to
// every member, with connections of its own per member (dialled when
// first needed). A key's request goes to the active node of its vBucket,
// xxhash64(key) mod V (docs/protocol.md §2). A node that answers `not my
// vbucket` (the map changed: a failover) sends the new map along, or the
// client fetches it, and the request is retried on the new active, with
// 100 ms linear backoff, within the call's context; then the call fails
// with ErrNotMyVBucket or ErrUnavailable (an *Error naming the node and
// the vBucket). The client also follows the map a node announces on a
// MapNotify stream, without a request in flight.
//
// Queue pushes and log appends without a routing key go round-robin over
// every vBucket of the cluster, each to its active; Pop tries the nodes in
// turn; scans (GetAll, LogRange, Mirror, Consume) and sizes ask every node,
// each of which answers for the vBuckets it is active for, and merge
// (GetAll and LogRange in their order: keys by vBucket and hash, records
// by timestamp). Seeds that are in no cluster (a standby, an older node)
// are spoken to as they are, without routing; WithNoRouting does that on
// purpose.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/wire"
)

// Option configures a Client.
type Option func(*options)

type options struct {
	noRouting   bool
	noNotify    bool // tests: no MapNotify watcher (export_test.go)
	name        string
	user        string
	secret      []byte
	tls         *tls.Config
	dialTimeout time.Duration
	timeout     time.Duration
	conns       int
	window      uint32
	durability  Durability    // WithDefaultDurability
	durTimeout  time.Duration // WithDefaultDurability
}

// WithAuth authenticates as user with secret (the bytes of the hex secret
// in the node's credentials file).
func WithAuth(user string, secret []byte) Option {
	return func(o *options) { o.user, o.secret = user, secret }
}

// WithTLS connects with TLS.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithDialTimeout bounds each connection attempt (default 5s).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithTimeout bounds every call whose context has no deadline (default
// 30s; 0 leaves such calls unbounded).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithConnections opens n connections per node (default 1). One
// connection already pipelines; more help only when one core cannot keep
// up with the encoding of the requests.
func WithConnections(n int) Option { return func(o *options) { o.conns = max(1, n) } }

// WithClientName names the client in the node's logs (default "shoal-go").
func WithClientName(name string) Option { return func(o *options) { o.name = name } }

// WithStreamWindow sets the credit, in bytes, streams grant the node
// (default 1 MiB): how much a stream may have in flight.
func WithStreamWindow(n uint32) Option { return func(o *options) { o.window = n } }

// WithNoRouting makes the client talk to the nodes given to Dial only,
// as it does with nodes that are in no cluster: kv requests and streams
// go to the first, queue and log requests round-robin over all of them,
// and `not my vbucket` is returned at once (for tools checking one node,
// and tests of fencing).
func WithNoRouting() Option { return func(o *options) { o.noRouting = true } }

// Client talks to one or more nodes.
type Client struct {
	o      options
	seeds  []*node       // the nodes given to Dial, in order
	r      *router       // nil with WithNoRouting
	rr     atomic.Uint32 // round robin over nodes
	pushRR atomic.Uint32 // round robin of pushes over vBuckets
	logRR  atomic.Uint32 // round robin of appends over vBuckets
	closed atomic.Bool
}

// Dial connects to the nodes in addr, a comma-separated list of host:port
// (seeds: see Routing). It fetches the vBucket map from the first seed
// that answers; when no seed is in a cluster it talks to all of them
// directly. It fails only if no node can be reached, or if a node refuses
// the credentials.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	o := options{name: "shoal-go", dialTimeout: 5 * time.Second, timeout: 30 * time.Second, conns: 1, window: 1 << 20}
	for _, fn := range opts {
		fn(&o)
	}
	c := &Client{o: o}
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.seeds = append(c.seeds, newNode(a, &c.o))
		}
	}
	c.rr.Store(rand.Uint32()) // short-lived clients (CLI runs) spread too
	c.pushRR.Store(rand.Uint32())
	c.logRR.Store(rand.Uint32())
	if len(c.seeds) == 0 {
		return nil, errors.New("client: no node address given")
	}
	if !o.noRouting {
		c.r = newRouter(c)
	}
	var errs []error
	for _, n := range c.seeds {
		_, err := n.conn(ctx)
		if err == nil {
			if c.r != nil && c.r.start(ctx, n) {
				return c, nil // routing: the other seeds are dialled when needed
			}
			continue
		}
		if fatalDialError(err) {
			c.Close()
			return nil, err
		}
		errs = append(errs, err)
	}
	if len(errs) == len(c.seeds) {
		c.Close()
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// fatalDialError reports whether a failed dial is one that trying again,
// or another node, will not mend.
func fatalDialError(err error) bool {
	return errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrAuthRequired) || errors.Is(err, ErrTooManyConnections) || errors.Is(err, ErrProtocol)
}

// Close closes every connection. Calls in flight fail with ErrDisconnected.
func (c *Client) Close() error {
	if c == nil || c.closed.Swap(true) {
		return nil
	}
	if c.r != nil {
		c.r.close()
	}
	for _, n := range c.seeds {
		n.close()
	}
	return nil
}

// Nodes returns the addresses the client was given.
func (c *Client) Nodes() []string {
	out := make([]string, len(c.seeds))
	for i, n := range c.seeds {
		out[i] = n.addr
	}
	return out
}

// kvNode is the node of requests for one node (operator requests, and
// every kv request when the client does not route): the first seed.
func (c *Client) kvNode() *node { return c.seeds[0] }

// routes returns the routing table, nil when the client does not route
// (WithNoRouting, or seeds in no cluster).
func (c *Client) routes() *routeTable {
	if c.r == nil {
		return nil
	}
	return c.r.table.Load()
}

// members returns the nodes that requests for every node go to: the
// members that are active for some vBucket when routing, else the seeds.
func (c *Client) members() []*node {
	if rt := c.routes(); rt != nil && len(rt.nodes) > 0 {
		return rt.nodes
	}
	return c.seeds
}

func (c *Client) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.o.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.o.timeout)
}

// do runs one request on node n.
func (c *Client) do(ctx context.Context, n *node, op wire.Opcode, vb uint16, body []byte) ([]byte, error) {
	return c.doFlags(ctx, n, op, vb, 0, body)
}

// doFlags is do with header flags.
func (c *Client) doFlags(ctx context.Context, n *node, op wire.Opcode, vb uint16, flags byte, body []byte) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	cn, err := n.conn(ctx)
	if err != nil {
		return nil, err
	}
	return cn.doFlags(ctx, op, vb, flags, body)
}

// vbuckets returns the vBucket count of node n (from its handshake).
func (n *node) vbuckets() int {
	if i := n.info.Load(); i != nil {
		return i.VBuckets
	}
	return 0
}

// node is one node's connections.
type node struct {
	addr  string
	o     *options
	slots []*slot
	rr    atomic.Uint32
	info  atomic.Pointer[NodeInfo]
}

// slot is one connection to a node, re-dialled when broken.
type slot struct {
	mu       sync.Mutex
	c        atomic.Pointer[conn]
	failures int
	retryAt  time.Time
	lastErr  error
}

func newNode(addr string, o *options) *node {
	n := &node{addr: addr, o: o}
	for range o.conns {
		n.slots = append(n.slots, &slot{})
	}
	return n
}

// conn returns a healthy connection, dialling if needed. While the node is
// unreachable it answers ErrDisconnected at once until the backoff (10 ms
// doubling to 2.5 s, with jitter) allows another attempt.
func (n *node) conn(ctx context.Context) (*conn, error) {
	s := n.slots[int(n.rr.Add(1))%len(n.slots)]
	if c := s.c.Load(); c != nil && c.broken() == nil {
		return c, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.c.Load(); c != nil && c.broken() == nil {
		return c, nil
	}
	if wait := time.Until(s.retryAt); wait > 0 {
		return nil, fmt.Errorf("%w: %s unreachable, next attempt in %v: %w", ErrDisconnected, n.addr, wait.Round(time.Millisecond), s.lastErr)
	}
	c, err := dialConn(ctx, n.addr, n.o)
	if err != nil {
		s.failures++
		s.retryAt = time.Now().Add(backoff(s.failures))
		s.lastErr = err
		return nil, err
	}
	s.failures = 0
	s.c.Store(c)
	info := c.info
	n.info.Store(&info)
	return c, nil
}

// retryIn returns how long until the next dial attempt may be made.
func (n *node) retryIn() time.Duration {
	var least time.Duration = -1
	for _, s := range n.slots {
		s.mu.Lock()
		w := time.Until(s.retryAt)
		s.mu.Unlock()
		if least < 0 || w < least {
			least = w
		}
	}
	return max(least, 0)
}

func (n *node) close() {
	for _, s := range n.slots {
		if c := s.c.Load(); c != nil {
			c.close(ErrClosed)
		}
	}
}

// backoff is the wait after the given number of consecutive failed dials:
// 10 ms doubling to 2.5 s, ±20% jitter.
func backoff(failures int) time.Duration {
	d := 10 * time.Millisecond << min(failures-1, 8)
	d = min(d, 2500*time.Millisecond)
	j := time.Duration(rand.Int64N(int64(d)/5*2+1)) - d/5
	return d + j
}
