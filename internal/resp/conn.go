package resp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

const (
	readBufSize = 16 << 10
	// keepBuf is the largest read buffer kept while a connection is idle.
	keepBuf = 1 << 20
)

// conn is one RESP connection.
type conn struct {
	s   *Server
	raw net.Conn // the accepted connection (Shutdown sets its deadline)
	nc  net.Conn // raw, or TLS over it
	r   io.Reader

	buf        []byte // read buffer: buf[start:end] is unparsed input
	start, end int
	args       [][]byte

	sess    session
	x       exec   // the command being run (reused: no allocation per command)
	scratch []byte // values read by a command before they are answered

	out        []byte    // answers not written yet
	pending    []pending // forwarded answers to splice into out
	werr       error
	quit       bool      // QUIT: close after writing the answers
	clock      time.Time // end of the previous command of this pipeline
	deadlineAt time.Time // the write deadline set on nc
}

// pending is a forwarded command whose answer goes at offset at of out.
type pending struct {
	at int
	f  *fcall
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, raw: nc, nc: nc}
	c.sess = session{
		id:     s.nextID.Add(1),
		proto:  2,
		authed: s.cfg.Credentials == nil,
		since:  time.Now(),
		remote: nc.RemoteAddr().String(),
	}
	c.sess.setChannel(s.cfg.Channel)
	return c
}

func (c *conn) serve() {
	defer c.nc.Close()
	br := bufio.NewReaderSize(countingReader{c.raw, c.s}, 512)
	var r io.Reader = br
	if c.s.cfg.TLS != nil {
		// The first byte waits as long as an idle connection may.
		if sniffTLS(br) {
			c.raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(&bufConn{Conn: c.raw, br: br}, c.s.cfg.TLS)
			tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				c.s.cfg.Logger.Debug("RESP TLS handshake failed", "remote", c.raw.RemoteAddr(), "err", err)
				return
			}
			tc.SetWriteDeadline(time.Time{})
			c.nc, r = tc, tc
			c.sess.tls = true
		}
		c.raw.SetReadDeadline(time.Time{})
	}
	c.r = r
	c.buf = make([]byte, readBufSize)
	c.readLoop()
}

// readLoop parses and runs commands until the connection fails, the client
// quits or the server shuts down. Answers are written when no complete
// command is left in the read buffer (one write per pipeline), or when
// they pass MaxPendingOut.
func (c *conn) readLoop() {
	framing := false
	for !c.quit {
		args, n, need, err := c.s.parser.Parse(c.buf[c.start:c.end], c.args)
		c.args = args
		if err != nil {
			c.out = AppendError(c.out, "ERR "+err.Error())
			c.flush()
			c.s.cfg.Logger.Info("closing RESP connection after a protocol error", "remote", c.raw.RemoteAddr(), "err", err)
			return
		}
		if n > 0 {
			c.start += n
			if len(args) > 0 {
				c.run(args)
			}
			if len(c.out) >= c.s.cfg.MaxPendingOut && !c.flush() {
				return
			}
			continue
		}
		// Incomplete: write the answers so far, then read more.
		if !c.flush() {
			return
		}
		if c.start == c.end {
			c.start, c.end = 0, 0
			if framing {
				c.raw.SetReadDeadline(time.Time{})
				framing = false
			}
			if len(c.buf) > keepBuf {
				c.buf = make([]byte, readBufSize)
			}
		} else if !framing {
			c.raw.SetReadDeadline(time.Now().Add(c.s.cfg.FrameTimeout))
			framing = true
		}
		if c.isClosing() {
			return
		}
		// Room: move the partial command to the front, grow for it.
		if c.start > 0 && (c.end == len(c.buf) || need > len(c.buf)-c.start) {
			c.end = copy(c.buf, c.buf[c.start:c.end])
			c.start = 0
		}
		// Grow only a full buffer, at most doubling: the memory of a
		// connection follows what it sent, not what its lengths claim.
		if c.end == len(c.buf) {
			size := 2 * len(c.buf)
			if need > len(c.buf) {
				size = min(size, need)
			}
			size = min(size, c.s.parser.MaxCommand+64)
			if size <= len(c.buf) {
				c.out = AppendError(c.out, "ERR Protocol error: command too big")
				c.flush()
				return
			}
			nb := make([]byte, size)
			c.end = copy(nb, c.buf[c.start:c.end])
			c.start = 0
			c.buf = nb
		}
		m, err := c.r.Read(c.buf[c.end:])
		c.end += m
		c.clock = time.Time{} // the wait was no command's
		if err != nil && m == 0 {
			c.readFailed(err)
			return
		}
	}
	c.flush()
}

func (c *conn) isClosing() bool {
	select {
	case <-c.s.done:
		return true
	default:
		return false
	}
}

func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.isClosing():
	case errors.As(err, &ne) && ne.Timeout():
		c.s.cfg.Logger.Info("dropping a RESP client that did not finish its command", "remote", c.raw.RemoteAddr(), "timeout", c.s.cfg.FrameTimeout)
	default:
		c.s.cfg.Logger.Debug("RESP read failed", "remote", c.raw.RemoteAddr(), "err", err)
	}
}

// flush splices the forwarded answers into out and writes it. It returns
// false once the connection has failed.
func (c *conn) flush() bool {
	if c.werr != nil {
		return false
	}
	if len(c.pending) > 0 {
		c.resolve()
		c.clock = time.Time{} // waited for other nodes
	}
	if len(c.out) == 0 {
		return true
	}
	// The deadline moves only when half of it has passed: one clock read
	// and no syscall for most writes.
	now := c.clock
	if now.IsZero() {
		now = time.Now()
	}
	if now.Add(c.s.cfg.WriteTimeout / 2).After(c.deadlineAt) {
		c.deadlineAt = now.Add(c.s.cfg.WriteTimeout)
		c.nc.SetWriteDeadline(c.deadlineAt)
	}
	n, err := c.nc.Write(c.out)
	c.s.bytesOut.Add(uint64(n))
	if cap(c.out) > keepBuf {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	if err != nil {
		c.werr = err
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.s.cfg.Logger.Info("dropping a RESP client that does not read its answers", "remote", c.raw.RemoteAddr(), "timeout", c.s.cfg.WriteTimeout)
		}
		c.nc.Close()
		return false
	}
	return true
}

// resolve waits for the forwarded answers and splices them into out at
// their places.
func (c *conn) resolve() {
	var b []byte
	prev := 0
	for i := range c.pending {
		p := &c.pending[i]
		b = append(b, c.out[prev:p.at]...)
		at := len(b)
		b = c.s.finish(b, p.f)
		// A forwarded command counts from its start to its answer.
		c.s.observe(p.f.cmd, p.f.start, len(b) > at && b[at] == '-')
		prev = p.at
		c.pending[i] = pending{}
	}
	b = append(b, c.out[prev:]...)
	c.out = b
	c.pending = c.pending[:0]
}
