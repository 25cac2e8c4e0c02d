package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"shoal/client"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Frames is a shoal node spoken to by a small built-in client that writes
// the frames of a batch in one write and then reads their answers on the
// same goroutine, as the RESP driver does for Redis. The Go client (the
// Shoal target) multiplexes calls over a connection with a writer and a
// reader goroutine, which costs the load generator 1–2.5 µs more per
// request; on a machine where the load generator has a core of its own,
// that, not the node, bounds a run at pipeline 1. Frames makes the load
// generator as cheap for shoal as for Redis, so that a comparison measures
// the servers.
//
// It serves one node that is active for every vBucket (a one-node
// cluster) without TLS or authentication, and the get, set, push, pop,
// append and drop operations; the Shoal target does everything else.
type Frames struct {
	addr  string
	nodes *Shoal // reads the node's counters
}

// NewFrames returns the Frames target of the node at addr (HOST:PORT);
// dial opens a client to it, for the node's counters (NodeCounts).
func NewFrames(addr string, dial func(ctx context.Context) (*client.Client, error)) *Frames {
	return &Frames{addr: addr, nodes: NewShoal(addr, dial)}
}

// NodeCounts implements NodeCounter.
func (f *Frames) NodeCounts(ctx context.Context) (map[string]NodeCount, error) {
	return f.nodes.NodeCounts(ctx)
}

// String implements Target.
func (f *Frames) String() string { return "shoal " + f.addr + " (frames)" }

// framesReadBuf is the reader's buffer; answers over framesMaxAnswer bytes
// are refused, as no operation of the driver expects one.
const (
	framesReadBuf   = 64 << 10
	framesMaxAnswer = 16 << 20
)

// Open implements Target: it connects and says Hello, which gives the
// node's vBucket count.
func (f *Frames) Open(ctx context.Context, pipeline int) (Conn, error) {
	d := net.Dialer{Timeout: respDialWait}
	nc, err := d.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %w", f.addr, err)
	}
	nc.SetDeadline(time.Now().Add(respDialWait))
	hello := wire.AppendStr8(nil, "shoal-bench")
	hello = wire.AppendU16(hello, wire.Version)
	hello = wire.AppendU32(hello, 0)
	r, err := wire.RoundTrip(nc, wire.OpHello, 0, hello, 1<<10)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", f.addr, err)
	}
	dec := wire.NewDecoder(r)
	dec.Bytes8()
	dec.Bytes8()
	vbs, _, authRequired := int(dec.U16()), dec.U32(), dec.U8() == 1
	switch {
	case dec.Err() != nil || vbs == 0:
		nc.Close()
		return nil, fmt.Errorf("%s: malformed Hello answer", f.addr)
	case authRequired:
		nc.Close()
		return nil, fmt.Errorf("%s requires authentication, which the frames driver does not do: use --driver client", f.addr)
	}
	nc.SetDeadline(time.Time{})
	c := &framesConn{nc: nc, br: bufio.NewReaderSize(nc, framesReadBuf), vbs: vbs,
		out: make([]byte, 0, pipeline*160), answered: make([]bool, pipeline)}
	// An ended context unblocks a Do in progress.
	c.stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	return c, nil
}

// framesConn is one connection to a node.
type framesConn struct {
	nc       net.Conn
	br       *bufio.Reader
	vbs      int
	out      []byte
	id       uint32 // the id of the last request sent
	answered []bool
	stop     func() bool
}

// Do implements Conn: every request of the batch in one write, then the
// answers, matched by id (an append's answer may come after later ones).
func (c *framesConn) Do(ctx context.Context, reqs []Request, out []Outcome) error {
	start := time.Now()
	first := c.id + 1
	b := c.out[:0]
	for i := range reqs {
		c.id++
		var ok bool
		if b, ok = appendFrame(b, &reqs[i], c.id, c.vbs); !ok {
			return fmt.Errorf("%w: %s through the frames driver (use --driver client)", ErrUnsupported, reqs[i].Op)
		}
	}
	c.out = b
	if len(c.answered) < len(reqs) {
		c.answered = make([]bool, len(reqs))
	}
	answered := c.answered[:len(reqs)]
	clear(answered)
	if _, err := c.nc.Write(b); err != nil {
		return c.fail(reqs, out, answered, fmt.Errorf("cannot send: %w", err))
	}
	for range reqs {
		var hb [wire.HeaderLen]byte
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			return c.fail(reqs, out, answered, fmt.Errorf("cannot read an answer: %w", err))
		}
		h, err := wire.ParseHeader(hb[:])
		i := int(h.ID - first) // ids wrap around: the difference does too
		switch {
		case err != nil:
		case h.Magic != wire.MagicResponse || i >= len(reqs) || answered[i]:
			err = fmt.Errorf("unexpected answer %v", h)
		case h.BodyLen > framesMaxAnswer:
			err = fmt.Errorf("answer of %d bytes to %s", h.BodyLen, reqs[i].Op)
		}
		if err != nil {
			return c.fail(reqs, out, answered, fmt.Errorf("%w: %w", ErrBadReply, err))
		}
		o := Outcome{Latency: time.Since(start)}
		switch h.Status {
		case wire.StatusOK:
		case wire.StatusNotFound, wire.StatusEmpty:
			o.Miss = true
		default:
			msg, _ := c.br.Peek(min(int(h.BodyLen), 200))
			o.Err = fmt.Errorf("%s: %v: %s", reqs[i].Op, h.Status, msg)
		}
		if _, err := c.br.Discard(int(h.BodyLen)); err != nil {
			return c.fail(reqs, out, answered, fmt.Errorf("cannot read an answer: %w", err))
		}
		out[i], answered[i] = o, true
	}
	return nil
}

// fail sets err on every request not answered and returns it: the
// connection cannot be used any more.
func (c *framesConn) fail(reqs []Request, out []Outcome, answered []bool, err error) error {
	for i := range reqs {
		if !answered[i] {
			out[i] = Outcome{Err: err}
		}
	}
	return err
}

// appendFrame appends the request frame of q with id; false for an
// operation the driver does not do.
func appendFrame(b []byte, q *Request, id uint32, vbs int) ([]byte, bool) {
	h := wire.Header{Magic: wire.MagicRequest, Version: wire.Version, ID: id}
	off := len(b)
	b = wire.AppendHeader(b, h)
	switch q.Op {
	case OpGet, OpSet:
		h.Opcode, h.VBucket = wire.OpGet, vbucket.Of(q.Key, vbs)
		b = wire.AppendStr8(b, q.Channel)
		b = wire.AppendBytes8(b, q.Key)
		if q.Op == OpSet {
			h.Opcode = wire.OpPut
			b = wire.AppendU32(b, 0) // no TTL
			b = append(b, q.Value...)
		}
	case OpPush:
		h.Opcode = wire.OpPush
		b = wire.AppendU8(b, 1)
		b = wire.AppendStr8(b, q.Channel)
		b = wire.AppendBytes8(b, nil) // no routing key: the node picks the vBucket
		b = append(b, q.Value...)
	case OpPop:
		h.Opcode = wire.OpPop
		b = wire.AppendStr8(b, q.Channel)
	case OpAppend:
		ts := q.Time
		if ts == 0 {
			ts = time.Now().Unix()
		}
		h.Opcode = wire.OpLogPut
		b = wire.AppendStr8(b, q.Channel)
		b = wire.AppendU64(b, uint64(ts))
		b = wire.AppendBytes8(b, nil)
		b = append(b, q.Value...)
	case OpDrop:
		h.Opcode = wire.OpRemoveChannel
		b = wire.AppendStr8(b, q.Channel)
	default:
		return b[:off], false
	}
	h.BodyLen = uint32(len(b) - off - wire.HeaderLen)
	wire.AppendHeader(b[off:off], h)
	return b, true
}

// Close implements Conn.
func (c *framesConn) Close() error {
	c.stop()
	return c.nc.Close()
}
