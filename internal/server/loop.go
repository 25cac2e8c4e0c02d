package server

import (
	"errors"
	"io"
	"time"

	"shoal/internal/wire"
)

// errWouldBlock is what an event loop's read returns when the socket has
// nothing (it never reaches a caller: the loop reads only when epoll says
// there is something, and a spurious wake-up just waits again).
var errWouldBlock = errors.New("server: read would block")

// errEOF is io.EOF, the end of a socket read without waiting.
var errEOF = io.EOF

// eventResult is what serving one readiness event asks of the loop.
type eventResult int

const (
	eventStay    eventResult = iota // served; wait for the next event
	eventPromote                    // back to a goroutine of its own (c.run)
	eventClose                      // the connection ended (c.retire)
)

// serveEvent serves a readable connection in its event loop: one read,
// then every complete request in the read buffer that may run in the loop,
// then one write of the answers. Anything else — a partial frame, a bad
// or oversized one, a request that may wait (streams, appends, durable
// writes, a pop that waits for an fsync), answers the socket does not
// take at once — goes back to a goroutine of its own, from the first
// request not served here: readLoop goes on from there.
func (c *conn) serveEvent() eventResult {
	if _, err := c.br.Peek(1); err != nil {
		if errors.Is(err, errWouldBlock) {
			return eventStay
		}
		c.readFailed(err)
		return eventClose
	}
	c.clock = time.Time{} // the wait was not part of any request
	for c.br.Buffered() >= wire.HeaderLen {
		hb, _ := c.br.Peek(wire.HeaderLen)
		h, err := wire.ParseHeader(hb)
		if err != nil || h.Magic != wire.MagicRequest {
			return eventPromote // readLoop answers it and closes
		}
		n := int(h.BodyLen)
		hd := &c.s.handlers[h.Opcode]
		if c.br.Buffered() < wire.HeaderLen+n || !c.loopable(h, hd) || c.pendingOut() > c.s.cfg.MaxPendingOut {
			return eventPromote
		}
		b, _ := c.br.Peek(wire.HeaderLen + n)
		c.dispatch(h, b[wire.HeaderLen:])
		c.br.Discard(wire.HeaderLen + n)
	}
	if c.br.Buffered() > 0 {
		return eventPromote // the start of a frame
	}
	c.pushBatch()
	return c.flushNow()
}

// loopable reports whether request h may run in an event loop: a handler
// marked so, within its body limit, without durability to wait for, and
// for a Pop, a queue whose pops do not wait for an fsync.
func (c *conn) loopable(h wire.Header, hd *handler) bool {
	if !hd.loop || int(h.BodyLen) > hd.limit {
		return false
	}
	if h.Flags&wire.FlagDurable != 0 || c.s.dur.inflight.Load() > 0 || c.s.dur.def.Load() != 0 {
		return false
	}
	q := c.s.eng.Queue
	return h.Opcode != wire.OpPop || (q != nil && !q.PopWaits())
}

// pendingOut is how many answer bytes wait for the socket.
func (c *conn) pendingOut() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.out)
}

// flushNow writes the answers with one write that does not wait:
// eventStay when they all went out (or another goroutine is writing
// them), eventPromote when the socket took only part of them (the
// goroutine writes the rest, waiting up to WriteTimeout), eventClose when
// the connection failed.
func (c *conn) flushNow() eventResult {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return eventClose
	}
	if c.writing || len(c.out) == 0 {
		return eventStay
	}
	n, err := c.rawWrite(c.out)
	c.s.bytesOut.Add(uint64(n))
	if err != nil {
		c.werr = err
		c.nc.Close()
		c.wcond.Broadcast()
		return eventClose
	}
	if n == len(c.out) {
		c.out = c.out[:0]
		return eventStay
	}
	c.out = c.out[:copy(c.out, c.out[n:])]
	return eventPromote
}

// connDone forgets a connection that has finished.
func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.nconns.Add(-1)
	s.connWG.Done()
}
