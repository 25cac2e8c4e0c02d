package meta

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// ErrStreamClosed is returned by a closed StreamLayer. It wraps
// net.ErrClosed.
var ErrStreamClosed = fmt.Errorf("meta: raft stream layer closed: %w", net.ErrClosed)

// DefaultDialTimeout bounds StreamLayer.Dial when raft passes no timeout.
const DefaultDialTimeout = 10 * time.Second

// DialFunc connects to the data port at addr and returns the connection
// ready for raft's bytes: the node's dialer does TCP, TLS, HELLO/AUTH and
// the RaftOpen request. It must give up when ctx is done.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// StreamLayer is raft's stream layer on the node's data port. The node's
// server hands it the connections whose first request was RaftOpen
// (Deliver); raft's NetworkTransport takes them with Accept. Outgoing
// connections go through the DialFunc.
//
// Close closes every connection that went through the layer, both ways:
// raft's NetworkTransport.Close closes its stream layer but neither its
// pooled connections nor the inbound ones its handlers read, so without
// this their goroutines, and the peers' handlers, would outlive it.
type StreamLayer struct {
	addr   dataAddr
	dial   DialFunc
	conns  chan net.Conn
	ctx    context.Context // done at Close; parent of every Dial's context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	live   map[*layerConn]struct{}
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer returns a stream layer whose Addr is advertise, the
// node's data address as its peers dial it ("host:port"), and that dials
// with dial.
func NewStreamLayer(advertise string, dial DialFunc) *StreamLayer {
	ctx, cancel := context.WithCancel(context.Background())
	return &StreamLayer{
		addr:   dataAddr(advertise),
		dial:   dial,
		conns:  make(chan net.Conn),
		ctx:    ctx,
		cancel: cancel,
		live:   make(map[*layerConn]struct{}),
	}
}

// Deliver hands conn, positioned after the RaftOpen request, to raft. It
// waits until raft accepts it or the layer is closed; on a closed layer it
// closes conn and returns an error wrapping ErrStreamClosed.
func (s *StreamLayer) Deliver(conn net.Conn) error {
	if conn == nil {
		return errors.New("meta: raft stream layer: Deliver of a nil connection")
	}
	select {
	case <-s.ctx.Done():
	default:
		select {
		case s.conns <- conn:
			return nil
		case <-s.ctx.Done():
		}
	}
	_ = conn.Close()
	return fmt.Errorf("meta: deliver connection from %s: %w", conn.RemoteAddr(), ErrStreamClosed)
}

// Accept returns the next delivered connection. After Close it returns an
// error wrapping ErrStreamClosed (and net.ErrClosed); raft's listen loop
// then stops, as its transport is shut down first.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case <-s.ctx.Done():
		return nil, ErrStreamClosed
	default:
	}
	select {
	case c := <-s.conns:
		return s.track(c)
	case <-s.ctx.Done():
		return nil, ErrStreamClosed
	}
}

// Close stops Accept, Deliver and Dial, and closes every connection that
// went through the layer. It always returns nil.
func (s *StreamLayer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	live := s.live
	s.live = nil
	s.mu.Unlock()
	s.cancel()
	for c := range live {
		_ = c.Conn.Close()
	}
	return nil
}

// Addr returns the advertised data address.
func (s *StreamLayer) Addr() net.Addr { return s.addr }

// Dial connects to a peer through the DialFunc, within timeout
// (DefaultDialTimeout if zero) and until the layer is closed.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	conn, err := s.dial(ctx, string(address))
	if err != nil {
		if s.ctx.Err() != nil {
			err = errors.Join(err, ErrStreamClosed)
		}
		return nil, fmt.Errorf("meta: raft dial %s: %w", address, err)
	}
	if conn == nil {
		return nil, fmt.Errorf("meta: raft dial %s: the dialer returned no connection and no error", address)
	}
	c, err := s.track(conn)
	if err != nil {
		return nil, fmt.Errorf("meta: raft dial %s: %w", address, err)
	}
	return c, nil
}

// track registers c for Close, or closes it if the layer is closed.
func (s *StreamLayer) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, ErrStreamClosed
	}
	lc := &layerConn{Conn: c, layer: s}
	s.live[lc] = struct{}{}
	return lc, nil
}

// layerConn is a connection of the layer; closing it forgets it.
type layerConn struct {
	net.Conn
	layer *StreamLayer
	once  sync.Once
}

// Close closes the connection once.
func (c *layerConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.layer.mu.Lock()
		delete(c.layer.live, c)
		c.layer.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// dataAddr is the advertised data address as a net.Addr.
type dataAddr string

// Network returns "tcp".
func (dataAddr) Network() string { return "tcp" }

// String returns the address as configured.
func (a dataAddr) String() string { return string(a) }

// NewTransport returns raft's network transport over layer, with Consul's
// settings: a pool of 3 connections per peer and a 10 s I/O timeout. A nil
// logger discards raft's transport logs. Closing the transport (which
// raft's Shutdown().Error() does) closes layer.
func NewTransport(layer *StreamLayer, logger hclog.Logger) *raft.NetworkTransport {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  logger,
	})
}
