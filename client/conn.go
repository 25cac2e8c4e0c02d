package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"shoal/internal/auth"
	"shoal/internal/wire"
)

// NodeInfo is what a node says about itself in the handshake.
type NodeInfo struct {
	Addr         string
	NodeID       string
	Version      string
	VBuckets     int
	Features     uint32
	AuthRequired bool
}

// result is the answer to one request.
type result struct {
	status wire.Status
	flags  byte
	body   []byte
	err    error // set when the connection broke before the answer
}

// call waits for the answer to one request.
type call struct {
	ch chan result
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan result, 1)} }}

// frameSink receives the frames of a stream request.
type frameSink interface {
	// frame delivers one frame; body is owned by the sink.
	frame(r result)
}

// conn is one multiplexed connection to a node: any number of requests
// in flight, answers matched by request id. Callers append requests to an
// output buffer; one writer goroutine sends whatever has accumulated, and
// one reader goroutine delivers the answers.
type conn struct {
	addr string
	nc   net.Conn
	info NodeInfo

	mu     sync.Mutex
	out    []byte
	spare  []byte
	wake   chan struct{} // tells writeLoop that out has requests
	nextID uint32
	calls  map[uint32]*call
	sinks  map[uint32]frameSink
	err    error // set once the connection is broken
	done   chan struct{}
}

// dialConn connects to addr and runs the handshake.
func dialConn(ctx context.Context, addr string, o *options) (*conn, error) {
	d := net.Dialer{Timeout: o.dialTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDisconnected, addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if o.tls != nil {
		cfg := o.tls.Clone()
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			}
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("%w: %s: TLS handshake: %w", ErrDisconnected, addr, err)
		}
		nc = tc
	}
	c := &conn{addr: addr, nc: nc, calls: map[uint32]*call{}, sinks: map[uint32]frameSink{}, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go c.readLoop()
	go c.writeLoop()
	if err := c.handshake(ctx, o); err != nil {
		c.close(err)
		return nil, err
	}
	return c, nil
}

func (c *conn) handshake(ctx context.Context, o *options) error {
	b := wire.AppendStr8(nil, o.name)
	b = wire.AppendU16(b, wire.Version)
	b = wire.AppendU32(b, 0)
	r, err := c.do(ctx, wire.OpHello, 0, b)
	if err != nil {
		return err
	}
	d := wire.NewDecoder(r)
	c.info = NodeInfo{
		Addr: c.addr, NodeID: string(d.Bytes8()), Version: string(d.Bytes8()),
		VBuckets: int(d.U16()), Features: d.U32(), AuthRequired: d.U8() == 1,
	}
	nonce := d.Rest()
	if d.Err() != nil || len(nonce) != wire.NonceLen || c.info.VBuckets == 0 {
		return fmt.Errorf("%w: %s: malformed HELLO answer", ErrProtocol, c.addr)
	}
	if o.user != "" {
		b := wire.AppendStr8(nil, o.user)
		b = append(b, auth.Proof(o.secret, nonce, o.user)...)
		if _, err := c.do(ctx, wire.OpAuth, 0, b); err != nil {
			return err
		}
	} else if c.info.AuthRequired {
		return &Error{Status: uint16(wire.StatusAuthRequired), Node: c.addr, VBucket: -1, Message: "the node requires authentication: give a user and secret"}
	}
	return nil
}

// send queues one request frame for the writer goroutine, registering the
// call or sink under a fresh id first (or id, for stream control).
func (c *conn) send(op wire.Opcode, vb uint16, flags byte, body []byte, cl *call, sink frameSink, id uint32) (uint32, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if id == 0 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id = c.nextID
	}
	if cl != nil {
		c.calls[id] = cl
	}
	if sink != nil {
		c.sinks[id] = sink
	}
	h := wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, Flags: flags, VBucket: vb, ID: id, BodyLen: uint32(len(body))}
	c.out = wire.AppendHeader(c.out, h)
	c.out = append(c.out, body...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // the writer is already due to run
	}
	return id, nil
}

// sendMany queues n requests at once (one lock, one wake of the writer)
// and returns their ids. req(i) returns request i, or a nil call to skip it.
func (c *conn) sendMany(n int, req func(i int) (wire.Opcode, uint16, byte, []byte, *call)) ([]uint32, error) {
	ids := make([]uint32, 0, n)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	for i := range n {
		op, vb, flags, body, cl := req(i)
		if cl == nil {
			continue
		}
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		id := c.nextID
		c.calls[id] = cl
		ids = append(ids, id)
		c.out = wire.AppendHeader(c.out, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, Flags: flags, VBucket: vb, ID: id, BodyLen: uint32(len(body))})
		c.out = append(c.out, body...)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return ids, nil
}

// writeLoop writes whatever requests have accumulated, until the
// connection closes. Concurrent callers only append, so requests issued
// together leave in one write: that is what pipelines them. Before each
// write the loop yields once, letting callers that are already runnable
// (woken together by a batch of answers) add their requests first.
func (c *conn) writeLoop() {
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		runtime.Gosched()
		c.mu.Lock()
		if len(c.out) == 0 {
			c.mu.Unlock()
			continue
		}
		buf := c.out
		c.out, c.spare = c.spare[:0], nil // spare is buf's again after the write
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		if cap(buf) <= 1<<20 {
			c.mu.Lock()
			c.spare = buf[:0]
			c.mu.Unlock()
		}
		if err != nil {
			c.close(fmt.Errorf("%w: %s: write: %w", ErrDisconnected, c.addr, err))
			return
		}
	}
}

// do sends a request and waits for its answer. It returns the body of an
// OK answer or the error status as an *Error.
func (c *conn) do(ctx context.Context, op wire.Opcode, vb uint16, body []byte) ([]byte, error) {
	return c.doFlags(ctx, op, vb, 0, body)
}

// doFlags is do with header flags (wire.FlagVBucket).
func (c *conn) doFlags(ctx context.Context, op wire.Opcode, vb uint16, flags byte, body []byte) ([]byte, error) {
	if flags&wire.FlagDurable != 0 && c.info.Features&featureDurable == 0 && len(body) >= wire.DurablePrefixLen && body[0] == byte(None) {
		// An explicit none to a node without durable writes: the write as it was.
		flags, body = flags&^wire.FlagDurable, body[wire.DurablePrefixLen:]
	}
	if flags&wire.FlagDurable != 0 && c.info.Features&featureDurable == 0 {
		// An older node would read the durability prefix as the body.
		return nil, &Error{Status: uint16(wire.StatusUnsupported), Message: "this node does not take durable writes", Node: c.addr, VBucket: -1}
	}
	cl := callPool.Get().(*call)
	id, err := c.send(op, vb, flags, body, cl, nil, 0)
	if err != nil {
		callPool.Put(cl)
		return nil, err
	}
	select {
	case r := <-cl.ch:
		callPool.Put(cl)
		if r.err != nil {
			return nil, r.err
		}
		if r.status != wire.StatusOK {
			return r.body, statusError(c.addr, r.status, r.body)
		}
		return r.body, nil
	case <-ctx.Done():
		c.mu.Lock()
		_, waiting := c.calls[id]
		delete(c.calls, id)
		c.mu.Unlock()
		if waiting {
			callPool.Put(cl) // no answer will be delivered to it any more
		}
		return nil, ctx.Err()
	}
}

// control sends a stream control frame for stream id.
func (c *conn) control(id uint32, action uint8, credit uint32) error {
	b := []byte{action}
	if action == wire.StreamCredit {
		b = wire.AppendU32(b, credit)
	}
	_, err := c.send(wire.OpStreamControl, 0, 0, b, nil, nil, id)
	return err
}

// forget drops the sink of a stream.
func (c *conn) forget(id uint32) {
	c.mu.Lock()
	delete(c.sinks, id)
	c.mu.Unlock()
}

// readLoop delivers answers until the connection breaks.
func (c *conn) readLoop() {
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var hb [wire.HeaderLen]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			c.close(fmt.Errorf("%w: %s: %w", ErrDisconnected, c.addr, err))
			return
		}
		h, err := wire.ParseHeader(hb[:])
		if err == nil && h.Magic != wire.MagicResponse {
			err = wire.ErrBadMagic
		}
		if err != nil && bytes.HasPrefix(hb[:], []byte("HTTP/")) {
			c.close(httpAnswer(c.addr, c.nc, hb[:], br))
			return
		}
		if err != nil {
			c.close(fmt.Errorf("%w: %s: %w", ErrProtocol, c.addr, err))
			return
		}
		body := make([]byte, h.BodyLen)
		if _, err := io.ReadFull(br, body); err != nil {
			c.close(fmt.Errorf("%w: %s: %w", ErrDisconnected, c.addr, err))
			return
		}
		r := result{status: h.Status, flags: h.Flags, body: body}
		if h.ID == 0 && h.Status == wire.StatusTooManyConnections {
			c.close(statusError(c.addr, h.Status, body))
			return
		}
		c.mu.Lock()
		if sink, ok := c.sinks[h.ID]; ok {
			if h.Flags&wire.FlagMore == 0 {
				delete(c.sinks, h.ID)
			}
			c.mu.Unlock()
			sink.frame(r)
			continue
		}
		cl, ok := c.calls[h.ID]
		delete(c.calls, h.ID)
		c.mu.Unlock()
		if ok {
			cl.ch <- r
		}
	}
}

// httpAnswer is the error of a connection that got an HTTP answer: the
// address is an HTTP port. A shoal node's HTTP port says where its data
// port is (in the body); that sentence ends the error.
func httpAnswer(addr string, nc net.Conn, head []byte, br *bufio.Reader) error {
	nc.SetReadDeadline(time.Now().Add(time.Second))
	rest, _ := io.ReadAll(io.LimitReader(br, 4<<10))
	msg := append(head, rest...)
	if i := bytes.Index(msg, []byte("this is shoal's HTTP port")); i >= 0 {
		line := msg[i:]
		if j := bytes.IndexAny(line, "\r\n"); j >= 0 {
			line = line[:j]
		}
		return fmt.Errorf("%w: %s: %s", ErrProtocol, addr, line)
	}
	return fmt.Errorf("%w: %s: this is an HTTP port, not a shoal data port", ErrProtocol, addr)
}

// close breaks the connection and fails every waiting call and stream.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	calls, sinks := c.calls, c.sinks
	c.calls, c.sinks = map[uint32]*call{}, map[uint32]frameSink{}
	c.mu.Unlock()
	c.nc.Close()
	close(c.done)
	for _, cl := range calls {
		cl.ch <- result{err: err}
	}
	for _, s := range sinks {
		s.frame(result{err: err})
	}
}

// broken returns the error that broke the connection, or nil.
func (c *conn) broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
