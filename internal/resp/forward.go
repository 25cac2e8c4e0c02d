package resp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// Forwarding. A command on a key of a vBucket the node is not active for
// goes to the vBucket's active as an OpRESPForward request, over the
// data port connections the node dials as a peer; the active runs it on
// its engines (execForwarded) and answers the RESP bytes, which the
// client gets as if the command had run here. A client connection's
// commands to one node go in order over one connection (its lane), so
// that a pipeline keeps its order; the answers are waited for when the
// pipeline's answers are written (conn.resolve), so forwarded commands of
// a pipeline are in flight together. When the active answers `not my
// vbucket` (the map changed) or its connection fails, the command is
// routed again by the node's current map, up to ForwardTimeout.

// peerLanes is the number of connections to each other node.
const peerLanes = 4

// errTryAgain is the answer to a part of a multi-key command that met a
// map change.
const errTryAgain = "TRYAGAIN Multiple keys request during rehashing of slot"

type forwarder struct {
	dial   func(ctx context.Context, addr string) (net.Conn, error)
	log    *slog.Logger
	mu     sync.Mutex
	peers  map[string]*[peerLanes]lane
	closed bool
}

type lane struct {
	mu sync.Mutex
	pc *peerConn
}

func newForwarder(dial func(ctx context.Context, addr string) (net.Conn, error), log *slog.Logger) *forwarder {
	return &forwarder{dial: dial, log: log, peers: map[string]*[peerLanes]lane{}}
}

// conn returns lane i's connection to addr, dialing it when there is none
// or it failed.
func (f *forwarder) conn(addr string, i int) (*peerConn, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, errors.New("resp: forwarder closed")
	}
	lanes := f.peers[addr]
	if lanes == nil {
		lanes = new([peerLanes]lane)
		f.peers[addr] = lanes
	}
	f.mu.Unlock()
	l := &lanes[i%peerLanes]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pc != nil && l.pc.broken() == nil {
		return l.pc, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	nc, err := f.dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", addr, err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		nc.Close()
		return nil, errors.New("resp: forwarder closed")
	}
	f.mu.Unlock()
	l.pc = newPeerConn(nc)
	return l.pc, nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	peers := f.peers
	f.peers = map[string]*[peerLanes]lane{}
	f.mu.Unlock()
	for _, lanes := range peers {
		for i := range lanes {
			lanes[i].mu.Lock()
			if pc := lanes[i].pc; pc != nil {
				pc.fail(errors.New("resp: forwarder closed"))
				<-pc.stopped
			}
			lanes[i].mu.Unlock()
		}
	}
}

// fcall is one forwarded command.
type fcall struct {
	done      chan struct{}
	st        wire.Status
	ans       []byte
	err       error
	permanent bool // err is not worth routing again for

	req   []byte   // the request body
	vb    uint16   // the vBucket it was routed by (single-key commands)
	cmd   *command // counted when answered (single-key commands)
	lane  int
	start time.Time
}

func (fc *fcall) deliver(st wire.Status, ans []byte, err error) {
	fc.st, fc.ans, fc.err = st, ans, err
	close(fc.done)
}

// forwardBody encodes a command for OpRESPForward.
func forwardBody(proto int, channel string, args [][]byte) []byte {
	n := 2 + len(channel) + 16
	for _, a := range args {
		n += len(a) + 16
	}
	b := make([]byte, 0, n)
	b = wire.AppendU8(b, uint8(proto))
	b = wire.AppendStr8(b, channel)
	b = AppendArray(b, len(args))
	for _, a := range args {
		b = AppendBulk(b, a)
	}
	return b
}

// send sends fc to addr.
func (s *Server) send(fc *fcall, addr string) {
	fc.done = make(chan struct{})
	if s.fwd == nil {
		fc.permanent = true
		fc.deliver(0, nil, errors.New("this node serves only the keys of the vBuckets it is active for (a standby serves none) and forwards no command"))
		return
	}
	if addr == "" {
		fc.deliver(0, nil, errors.New("the vBucket has no active node"))
		return
	}
	if len(fc.req) > wire.MaxBody-wire.HeaderLen {
		fc.permanent = true
		fc.deliver(0, nil, fmt.Errorf("a command of %d bytes is over the %d a node forwards", len(fc.req), wire.MaxBody-wire.HeaderLen))
		return
	}
	pc, err := s.fwd.conn(addr, fc.lane)
	if err != nil {
		fc.deliver(0, nil, err)
		return
	}
	s.forwarded.Add(1)
	pc.send(fc)
}

// forwardAsync sends a single-key command to its vBucket's active; the
// answer is spliced into the connection's output when it is written.
func (c *conn) forwardAsync(cmd *command, args [][]byte, vb uint16, r vbmap.Route) {
	fc := &fcall{req: forwardBody(c.sess.proto, c.sess.channel, args), vb: vb, cmd: cmd, lane: int(c.sess.id), start: c.clock}
	if fc.start.IsZero() {
		fc.start = time.Now()
	}
	c.s.send(fc, r.ActiveAddr)
	c.pending = append(c.pending, pending{at: len(c.out), f: fc})
	c.sess.lastCmd = cmd.name
}

// finish waits for a forwarded single-key command and appends its answer
// to b, routing it again after a map change or a failed connection.
func (s *Server) finish(b []byte, fc *fcall) []byte {
	deadline := fc.start.Add(s.cfg.ForwardTimeout)
	pause := 5 * time.Millisecond
	for {
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-fc.done:
			timer.Stop()
		case <-timer.C:
			return AppendError(b, "TRYAGAIN the active node of the key did not answer in time")
		}
		switch {
		case fc.err == nil && fc.st == wire.StatusOK:
			return append(b, fc.ans...)
		case fc.err == nil && fc.st != wire.StatusNotMyVBucket:
			return AppendError(b, fmt.Sprintf("ERR the active node of the key refused the command: %s %s", fc.st, fc.ans))
		case fc.permanent:
			return AppendError(b, "ERR "+fc.err.Error())
		}
		// Not my vbucket, or the connection failed: route it again.
		if time.Now().Add(pause).After(deadline) {
			why := "the map is changing"
			if fc.err != nil {
				why = fc.err.Error()
			}
			return AppendError(b, "TRYAGAIN no node serves the key now: "+why)
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
		r, ok := s.eng.Data.ActiveRoute(fc.vb, time.Now())
		if ok {
			return s.runHere(b, fc.req)
		}
		s.send(fc, r.ActiveAddr)
	}
}

// runHere runs a forwarded request on this node after all (the map made
// it the active meanwhile).
func (s *Server) runHere(b, req []byte) []byte {
	ans, st := s.execForwarded(nil, req)
	if st != wire.StatusOK {
		return AppendError(b, "TRYAGAIN the map is changing")
	}
	return append(b, ans...)
}

// call forwards a command (a part of a multi-key one, a scan of another
// node's vBuckets) to addr and waits for its answer.
func (x *exec) call(addr string, args [][]byte) ([]byte, error) {
	fc := &fcall{req: forwardBody(x.sess.proto, x.sess.channel, args), lane: int(x.sess.id), start: time.Now()}
	x.s.send(fc, addr)
	timer := time.NewTimer(x.s.cfg.ForwardTimeout)
	defer timer.Stop()
	select {
	case <-fc.done:
	case <-timer.C:
		return nil, errors.New("TRYAGAIN the node " + addr + " did not answer in time")
	}
	switch {
	case fc.err != nil:
		return nil, fmt.Errorf("TRYAGAIN %v", fc.err)
	case fc.st == wire.StatusNotMyVBucket:
		return nil, errors.New(errTryAgain)
	case fc.st != wire.StatusOK:
		return nil, fmt.Errorf("ERR node %s refused the command: %s %s", addr, fc.st, fc.ans)
	}
	return fc.ans, nil
}

// peerConn is one pipelined connection to another node's data port.
type peerConn struct {
	nc      net.Conn
	wake    chan struct{}
	stopped chan struct{} // closed when both loops are done

	mu    sync.Mutex
	out   []byte
	spare []byte
	calls map[uint32]*fcall
	next  uint32
	err   error
}

func newPeerConn(nc net.Conn) *peerConn {
	p := &peerConn{nc: nc, wake: make(chan struct{}, 1), stopped: make(chan struct{}), calls: map[uint32]*fcall{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.writeLoop() }()
	go func() { defer wg.Done(); p.readLoop() }()
	go func() { wg.Wait(); close(p.stopped) }()
	return p
}

func (p *peerConn) broken() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *peerConn) send(fc *fcall) {
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		fc.deliver(0, nil, err)
		return
	}
	p.next++
	id := p.next
	p.calls[id] = fc
	b, off := wire.BeginFrame(p.out, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: wire.OpRESPForward, ID: id})
	b = append(b, fc.req...)
	p.out = wire.EndFrame(b, off)
	select { // under mu: fail closes wake under it
	case p.wake <- struct{}{}:
	default:
	}
	p.mu.Unlock()
}

func (p *peerConn) writeLoop() {
	for range p.wake {
		p.mu.Lock()
		if p.err != nil {
			p.mu.Unlock()
			return
		}
		if len(p.out) == 0 { // a wake-up for frames an earlier write took
			p.mu.Unlock()
			continue
		}
		// buf is the writer's until the write is done: spare is nil
		// meanwhile, so that out never shares its array.
		buf := p.out
		p.out, p.spare = p.spare[:0], nil
		p.mu.Unlock()
		p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := p.nc.Write(buf)
		if err != nil {
			p.fail(fmt.Errorf("cannot write to %s: %w", p.nc.RemoteAddr(), err))
			return
		}
		p.mu.Lock()
		if cap(buf) <= 1<<20 {
			p.spare = buf[:0]
		}
		p.mu.Unlock()
	}
}

func (p *peerConn) readLoop() {
	br := bufio.NewReaderSize(p.nc, 64<<10)
	var hb [wire.HeaderLen]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			p.fail(fmt.Errorf("connection to %s: %w", p.nc.RemoteAddr(), err))
			return
		}
		h, err := wire.ParseHeader(hb[:])
		if err == nil && h.Magic != wire.MagicResponse {
			err = wire.ErrBadMagic
		}
		if err != nil {
			p.fail(fmt.Errorf("answer from %s: %w", p.nc.RemoteAddr(), err))
			return
		}
		body := make([]byte, h.BodyLen)
		if _, err := io.ReadFull(br, body); err != nil {
			p.fail(fmt.Errorf("connection to %s: %w", p.nc.RemoteAddr(), err))
			return
		}
		p.mu.Lock()
		fc := p.calls[h.ID]
		delete(p.calls, h.ID)
		p.mu.Unlock()
		if fc != nil {
			fc.deliver(h.Status, body, nil)
		}
	}
}

// fail ends the connection: every call in flight gets err.
func (p *peerConn) fail(err error) {
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		return
	}
	p.err = err
	calls := p.calls
	p.calls = nil
	close(p.wake)
	p.mu.Unlock()
	p.nc.Close()
	for _, fc := range calls {
		fc.deliver(0, nil, err)
	}
}

// Answers of forwarded parts.

// nextElem splits the first RESP element (of any type, nested up to depth)
// off b.
func nextElem(b []byte, depth int) (elem, rest []byte, err error) {
	if len(b) < 3 || depth > 8 {
		return nil, nil, errBadAnswer
	}
	line := bytes.IndexByte(b, '\n')
	if line < 1 || b[line-1] != '\r' {
		return nil, nil, errBadAnswer
	}
	switch b[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return b[:line+1], b[line+1:], nil
	case '$', '=', '!':
		n, _, err := parseLen(b, 1)
		if err != nil {
			return nil, nil, errBadAnswer
		}
		if n < 0 {
			return b[:line+1], b[line+1:], nil
		}
		end := line + 1 + int(n) + 2
		if end > len(b) {
			return nil, nil, errBadAnswer
		}
		return b[:end], b[end:], nil
	case '*', '%', '~', '>':
		n, _, err := parseLen(b, 1)
		if err != nil {
			return nil, nil, errBadAnswer
		}
		if b[0] == '%' {
			n *= 2
		}
		rest = b[line+1:]
		for i := int64(0); i < n; i++ {
			if _, rest, err = nextElem(rest, depth+1); err != nil {
				return nil, nil, err
			}
		}
		return b[:len(b)-len(rest)], rest, nil
	}
	return nil, nil, errBadAnswer
}

var errBadAnswer = errors.New("ERR malformed answer from another node")

// arrayElems returns the elements of an array answer.
func arrayElems(b []byte) ([][]byte, error) {
	if len(b) == 0 || b[0] != '*' {
		return nil, answerError(b)
	}
	n, pos, err := parseLen(b, 1)
	if err != nil || pos == 0 || n < 0 || n > int64(len(b)) {
		return nil, errBadAnswer
	}
	out := make([][]byte, 0, n)
	rest := b[pos:]
	for i := int64(0); i < n; i++ {
		var e []byte
		if e, rest, err = nextElem(rest, 1); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// intAnswer returns the value of an integer answer.
func intAnswer(b []byte) (int64, error) {
	if len(b) < 4 || b[0] != ':' {
		return 0, answerError(b)
	}
	v, err := parseInt(bytes.TrimSuffix(b[1:], []byte("\r\n")))
	if err != nil {
		return 0, errBadAnswer
	}
	return v, nil
}

// bulkAnswer returns the value of a bulk answer; nil for a null.
func bulkAnswer(b []byte) ([]byte, error) {
	if len(b) >= 3 && (b[0] == '_' || bytes.HasPrefix(b, []byte("$-1"))) {
		return nil, nil
	}
	if len(b) == 0 || b[0] != '$' {
		return nil, answerError(b)
	}
	n, pos, err := parseLen(b, 1)
	if err != nil || pos == 0 || pos+int(n)+2 > len(b) {
		return nil, errBadAnswer
	}
	return b[pos : pos+int(n)], nil
}

// answerError turns an error answer into an error carrying its message.
func answerError(b []byte) error {
	if len(b) > 0 && b[0] == '-' {
		return errors.New(string(bytes.TrimSuffix(b[1:], []byte("\r\n"))))
	}
	return errBadAnswer
}
