package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/auth"
	"shoal/internal/logstore"
	"shoal/internal/wire"
)

const readBufSize = 16 << 10

// conn is one client connection.
type conn struct {
	s *Server
	// raw is the accepted connection. It never changes, so other
	// goroutines (Shutdown) set its read deadline and close it through raw:
	// a tls.Conn would pass both to it anyway.
	raw net.Conn
	// nc is raw, or the TLS connection over it once the handshake is done.
	// The reader goroutine sets it before any other goroutine of the
	// connection (streams, appends, durable acks) starts; only the reader
	// and those goroutines use it.
	nc net.Conn
	br *bufio.Reader

	ctx    context.Context // done when the connection closes
	cancel context.CancelFunc

	// Authentication state, touched only by the reader goroutine.
	nonce  []byte
	user   string
	authed bool
	admin  bool
	peer   bool // the admin or the peer credential ("node"): raft, joins, streams

	big     []byte         // body buffer for frames larger than the read buffer
	logRecs []logstore.Rec // LogPutBatch: the records being parsed (values in the read buffer)

	clock time.Time // end of the previous request of this read batch (reader only)
	now   time.Time // when the request being handled started (reader only)

	// takeover is set by dispatch when the connection leaves the request
	// protocol; readLoop hands it over once the frame is consumed.
	takeover     TakeoverFunc
	takeoverH    wire.Header
	takeoverBody []byte
	tookOver     bool

	// Output side. out collects answers; one goroutine at a time writes it.
	wmu        sync.Mutex
	wcond      *sync.Cond // signalled when out shrinks or the connection fails
	out        []byte
	spare      []byte
	writing    bool
	werr       error
	deadlineAt time.Time // the write deadline currently set on nc

	smu     sync.Mutex
	streams map[uint32]*stream
	swg     sync.WaitGroup // stream goroutines

	appends appends // log appends in flight (log.go)

	shutting chan struct{} // closed by beginShutdown
	shutOnce sync.Once

	q queueConn // queue requests' state (queue.go)

	dur connDurable // the durability of the request being handled (durability.go)

	lc loopConn // the event loop serving the connection, if any (loop_linux.go)

	// mapRev is the highest map revision this connection was sent
	// (GetClusterMap, a map in `not my vbucket`, MapNotify): a `not my
	// vbucket` carries the map only while it is below the node's.
	mapRev atomic.Uint64
}

// noteMapRev records that the connection was sent map revision rev.
func (c *conn) noteMapRev(rev uint64) {
	for {
		cur := c.mapRev.Load()
		if rev <= cur || c.mapRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, raw: nc, nc: nc, shutting: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wcond = sync.NewCond(&c.wmu)
	c.authed = s.cfg.Credentials == nil
	return c
}

// connReader is what the read buffer reads from: the connection, or,
// while an event loop serves it, the socket itself without waiting. It
// counts the bytes.
type connReader struct{ c *conn }

func (r connReader) Read(p []byte) (int, error) {
	c := r.c
	var n int
	var err error
	if c.lc.loop != nil {
		n, err = c.rawRead(p)
	} else {
		n, err = c.nc.Read(p)
	}
	c.s.bytesIn.Add(uint64(n))
	return n, err
}

// serve runs the connection until it closes or goes to an event loop.
func (c *conn) serve() {
	if c.s.cfg.TLS != nil {
		tc := tls.Server(c.nc, c.s.cfg.TLS)
		tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		c.setReadDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.s.cfg.Logger.Debug("TLS handshake failed", "remote", c.nc.RemoteAddr(), "err", err)
			c.retire()
			return
		}
		tc.SetWriteDeadline(time.Time{})
		c.setReadDeadline(time.Time{})
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(connReader{c}, readBufSize)
	c.run()
}

// run reads requests until the connection ends (then it finishes it) or
// goes to an event loop. An event loop hands a connection back to a
// goroutine of its own with run too.
func (c *conn) run() {
	if c.readLoop() {
		return
	}
	c.retire()
}

// retire finishes the connection and forgets it.
func (c *conn) retire() {
	c.finish()
	c.s.connDone(c)
}

// readLoop reads and dispatches frames until the connection fails, the
// client closes it, or the server shuts down; then it returns false. It
// returns true when it handed the idle connection to an event loop.
func (c *conn) readLoop() (looped bool) {
	framing := false // a read deadline is set for an unfinished frame
	// A frame that has begun must be complete within FrameTimeout; an idle
	// connection (nothing buffered) may wait forever.
	partial := func() {
		c.pushBatch()
		c.commitAppends() // do not hold appends while the frame arrives
		c.setReadDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
		framing = true
	}
	for {
		if c.br.Buffered() == 0 {
			c.pushBatch()
			c.commitAppends()
			if !c.flush() {
				return false
			}
			if framing {
				c.setReadDeadline(time.Time{})
				framing = false
			}
			if c.toLoop() {
				return true
			}
			if _, err := c.br.Peek(1); err != nil {
				c.readFailed(err)
				return false
			}
			c.clock = time.Time{} // the wait was not part of any request
		}
		if !c.waitRoom() {
			return false
		}
		if c.br.Buffered() < wire.HeaderLen {
			partial()
		}
		hb, err := c.br.Peek(wire.HeaderLen)
		if err != nil {
			c.readFailed(err)
			return false
		}
		h, err := wire.ParseHeader(hb)
		if err == nil && h.Magic != wire.MagicRequest {
			err = wire.ErrBadMagic
		}
		if err != nil {
			// The stream cannot be trusted to delimit frames any more.
			st := wire.StatusBadFrame
			if errors.Is(err, wire.ErrFrameTooBig) {
				st = wire.StatusFrameTooBig
			}
			c.pushBatch()
			c.reply(h, st, []byte(err.Error()))
			c.flush()
			c.s.cfg.Logger.Info("closing connection after a bad frame", "remote", c.nc.RemoteAddr(), "err", err)
			return false
		}
		n := int(h.BodyLen)
		if c.br.Buffered() < wire.HeaderLen+n {
			partial()
		}
		hd := &c.s.handlers[h.Opcode]
		if hd.fn != nil && n > hd.limit {
			// In sync: skip the body and refuse the request.
			c.br.Discard(wire.HeaderLen)
			if _, err := io.CopyN(io.Discard, c.br, int64(n)); err != nil {
				c.readFailed(err)
				return false
			}
			st := wire.StatusValueTooBig
			c.pushBatch()
			c.replyf(h, st, "request body of %d bytes is over the limit of %d for %s", n, hd.limit, h.Opcode)
			if h.Opcode == wire.OpProduce {
				c.produceRefused(h)
			}
			continue
		}
		var body []byte
		if wire.HeaderLen+n <= c.br.Size() {
			b, err := c.br.Peek(wire.HeaderLen + n)
			if err != nil {
				c.readFailed(err)
				return false
			}
			body = b[wire.HeaderLen:]
			c.dispatch(h, body)
			c.br.Discard(wire.HeaderLen + n)
		} else {
			c.br.Discard(wire.HeaderLen)
			if cap(c.big) < n {
				c.big = make([]byte, n)
			}
			body = c.big[:n]
			if _, err := io.ReadFull(c.br, body); err != nil {
				c.readFailed(err)
				return false
			}
			c.dispatch(h, body)
			if cap(c.big) > 4<<20 {
				c.big = nil // do not keep a huge buffer for an idle connection
			}
		}
		if c.takeover != nil {
			c.handOver()
			return false
		}
	}
}

func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case c.isShuttingDown():
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.s.cfg.Logger.Debug("client closed the connection in the middle of a frame", "remote", c.nc.RemoteAddr())
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.s.cfg.Logger.Info("dropping a client that did not finish its frame", "remote", c.nc.RemoteAddr(), "timeout", c.s.cfg.FrameTimeout)
			return
		}
		c.s.cfg.Logger.Debug("read failed", "remote", c.nc.RemoteAddr(), "err", err)
	}
}

// dispatch runs the handler of one request.
func (c *conn) dispatch(h wire.Header, body []byte) {
	op := h.Opcode
	if op != wire.OpPush {
		c.pushBatch() // answers stay in order
	}
	hd := &c.s.handlers[op]
	if hd.fn == nil {
		if fn, ok := c.s.takeover[op]; ok {
			if !c.authed || (c.s.cfg.Credentials != nil && !c.peer) {
				c.replyf(h, wire.StatusNotPermitted, "%s needs the %q or %q credential", op, auth.Admin, auth.Peer)
				return
			}
			c.takeover, c.takeoverH, c.takeoverBody = fn, h, append([]byte(nil), body...)
			return
		}
		c.replyf(h, wire.StatusUnsupported, "opcode %#02x is not supported by this node", uint8(op))
		return
	}
	if !c.authed && !hd.open {
		c.replyf(h, wire.StatusAuthRequired, "%s needs authentication: send HELLO and AUTH first", op)
		return
	}
	if hd.peer && c.s.cfg.Credentials != nil && !c.peer {
		c.replyf(h, wire.StatusNotPermitted, "%s needs the %q or %q credential", op, auth.Admin, auth.Peer)
		return
	}
	if hd.admin && c.s.cfg.Credentials != nil && !c.admin {
		c.replyf(h, wire.StatusNotPermitted, "%s needs the %q credential", op, "admin")
		return
	}
	st := &c.s.ops[op]
	a := st.active.Add(1)
	if a > st.maxActive.Load() {
		st.maxActive.Store(a)
	}
	// One clock read per request: a request starts when the previous one of
	// the same read batch ended.
	start := c.clock
	if start.IsZero() {
		start = time.Now()
	}
	c.now = start
	c.dur = connDurable{}
	if h.Flags&wire.FlagDurable != 0 || c.s.dur.inflight.Load() > 0 || c.s.dur.def.Load() != 0 {
		var ok bool
		if body, ok = c.prepareDurable(h, body); !ok {
			st.lat.Observe(time.Since(start))
			st.active.Add(-1)
			return
		}
	}
	hd.fn(c, h, body)
	c.clock = time.Time{}
	if !hd.async {
		end := time.Now()
		st.lat.Observe(end.Sub(start))
		st.active.Add(-1)
		c.clock = end
	}
}

// requestDone records the end of a request that started at start.
func (s *Server) requestDone(op wire.Opcode, start time.Time) {
	st := &s.ops[op]
	st.lat.Observe(time.Since(start))
	st.active.Add(-1)
}

// handOver gives the connection to a takeover function (replication),
// with any bytes already read after the takeover frame.
func (c *conn) handOver() {
	c.pushBatch()
	c.commitAppends()
	c.appends.wg.Wait()
	if !c.flush() {
		return
	}
	// From here the new owner has nc: a later Shutdown must not set its
	// read deadline (the owner ends it on its own). If Shutdown came first,
	// the connection closes instead.
	owned := false
	c.shutOnce.Do(func() { owned = true })
	if !owned {
		return
	}
	c.nc.SetReadDeadline(time.Time{})
	nc := c.nc
	if n := c.br.Buffered(); n > 0 {
		left, _ := c.br.Peek(n)
		nc = &prefixConn{Conn: c.nc, r: io.MultiReader(bytes.NewReader(append([]byte(nil), left...)), c.nc)}
	}
	c.tookOver = true
	c.takeover(nc, c.takeoverH, c.takeoverBody)
}

// prefixConn is a connection whose first reads return bytes already
// buffered by the request reader.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// reply appends a complete answer frame.
func (c *conn) reply(h wire.Header, st wire.Status, body []byte) {
	b, off := c.begin(h, st, 0)
	b = append(b, body...)
	c.end(b, off)
}

// replyf appends an error answer with a formatted message.
func (c *conn) replyf(h wire.Header, st wire.Status, format string, args ...any) {
	b, off := c.begin(h, st, 0)
	b = appendf(b, format, args...)
	c.end(b, off)
}

// begin locks the output buffer and appends the header of an answer to h;
// the caller appends the body and calls end.
func (c *conn) begin(h wire.Header, st wire.Status, flags byte) ([]byte, int) {
	c.wmu.Lock()
	return wire.BeginFrame(c.out, wire.Header{
		Magic: wire.MagicResponse, Version: wire.Version, Opcode: h.Opcode, Flags: flags,
		Status: st, VBucket: h.VBucket, ID: h.ID,
	})
}

// end finishes the frame begun at off and unlocks the output buffer.
func (c *conn) end(b []byte, off int) {
	c.s.countAnswer(wire.Opcode(b[off+2]), wire.Status(binary.LittleEndian.Uint16(b[off+4:])))
	c.out = wire.EndFrame(b, off)
	c.wmu.Unlock()
}

// flush writes the output buffer unless another goroutine is writing it
// (that one picks up what was added). It returns false when the connection
// has failed.
func (c *conn) flush() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return false
	}
	if c.writing {
		return true
	}
	for len(c.out) > 0 && c.werr == nil {
		buf := c.out
		c.out = c.spare[:0]
		c.writing = true
		now := time.Now()
		setDeadline := now.Add(c.s.cfg.WriteTimeout / 2).After(c.deadlineAt)
		c.wmu.Unlock()
		if setDeadline {
			c.nc.SetWriteDeadline(now.Add(c.s.cfg.WriteTimeout))
		}
		n, err := c.nc.Write(buf)
		c.s.bytesOut.Add(uint64(n))
		c.wmu.Lock()
		if setDeadline {
			c.deadlineAt = now.Add(c.s.cfg.WriteTimeout)
		}
		c.writing = false
		if cap(buf) <= 1<<20 {
			c.spare = buf[:0]
		} else {
			c.spare = nil
		}
		if err != nil {
			c.werr = err
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.s.cfg.Logger.Info("dropping a client that does not read its answers", "remote", c.nc.RemoteAddr(), "timeout", c.s.cfg.WriteTimeout)
			}
			c.nc.Close()
			c.kickLoop() // an event loop would not hear of it: the socket left its epoll set
		}
		c.wcond.Broadcast()
	}
	return c.werr == nil
}

// waitRoom blocks while too many answer bytes wait for the socket. It
// returns false when the connection has failed.
func (c *conn) waitRoom() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(c.out) > c.s.cfg.MaxPendingOut && c.werr == nil {
		if !c.writing {
			c.wmu.Unlock()
			c.flush()
			c.wmu.Lock()
			continue
		}
		c.wcond.Wait()
	}
	return c.werr == nil
}

func (c *conn) isShuttingDown() bool {
	select {
	case <-c.shutting:
		return true
	default:
		return false
	}
}

// setReadDeadline sets the read deadline of the reader (which alone calls
// it) to t, unless the connection is shutting down: then the deadline
// stays in the past, as beginShutdown set it, whichever of the two came
// first, so that the reader stops after what it has already received.
func (c *conn) setReadDeadline(t time.Time) {
	c.raw.SetReadDeadline(t)
	if c.isShuttingDown() {
		c.raw.SetReadDeadline(time.Now())
	}
}

// beginShutdown makes the reader stop after the requests already received.
// It leaves a connection handed over to a takeover function alone.
func (c *conn) beginShutdown() {
	c.shutOnce.Do(func() {
		close(c.shutting)
		c.raw.SetReadDeadline(time.Now())
	})
}

// finish ends streams, writes what is left and closes the connection.
func (c *conn) finish() {
	if c.tookOver {
		c.cancel()
		return
	}
	c.pushBatch() // before the wait: it may leave answers to durable acks
	c.cancel()
	c.endStreams()
	c.swg.Wait()
	c.commitAppends()
	c.appends.wg.Wait()
	c.flush()
	c.nc.Close()
}

func newNonce() []byte {
	b := make([]byte, wire.NonceLen)
	rand.Read(b)
	return b
}
