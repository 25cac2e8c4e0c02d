package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/engine"
	"shoal/internal/wire"
)

// Defaults of the consumer and producer settings.
const (
	DefaultNoopInterval = time.Second
	DefaultIdleTimeout  = 360 * time.Second
	DefaultBufferSize   = 16 << 20
	DefaultBatchSize    = 64 << 10
	DefaultFlushDelay   = time.Millisecond
	DefaultDrainTimeout = time.Second
	// DefaultOpenTimeout bounds dialling, the handshake and the open
	// exchange of one connection when the context has no earlier deadline.
	DefaultOpenTimeout = 10 * time.Second
)

// openRequestID is the request id of the OpStreamOpen frame.
const openRequestID = 1

// connIDs numbers the stream connections of the process for the Spy.
var connIDs atomic.Uint64

// Handler receives what a consumer's streams deliver. Its methods are
// called from the connections' reader goroutines: calls for one vBucket are
// sequential and in stream order, calls for vBuckets on different
// connections may be concurrent. While a method runs, its connection reads
// nothing more, so a slow handler slows the producer down (credit flow).
// Byte slices and the failover log alias the library's buffers and are
// valid only during the call. A method may call the Consumer's methods.
//
// A non-nil error from Started, Snapshot or Mutation stops that vBucket's
// stream: the consumer asks the producer to close it, drops what still
// arrives for it, and reports Ended with ReasonHandler and the error.
type Handler interface {
	// Started reports that the producer accepted the request for vb and
	// sends its failover log (newest first, as the producer's Accept
	// returned it).
	Started(vb uint16, log []FailoverEntry) error
	// Snapshot announces that the mutations that follow, up to the next
	// marker, bring vb to a consistent view at seqno end (see engine.Sink).
	Snapshot(vb uint16, start, end uint64) error
	// Mutation delivers one mutation.
	Mutation(m *engine.Mutation) error
	// Ended reports that vb's stream is over. vb may be requested again.
	Ended(e End)
	// Lost reports the end of one connection of the session and lists the
	// streams it carried, which get no further call. It is called exactly
	// once per connection.
	Lost(err *ConnError)
}

// SeqnoHandler is implemented by a Handler that wants the producer's seqno
// messages (ConsumerConfig.Seqnos): Seqno reports vb's high seqno on the
// producer and the bytes of vb's messages the producer has queued or sent
// that this consumer had not acknowledged when it sent the message. It is
// called like the Handler's other methods, between Started and Ended.
type SeqnoHandler interface {
	Seqno(vb uint16, high, behind uint64)
}

// End describes the end of one vBucket stream.
type End struct {
	VBucket uint16
	Reason  Reason
	// Seqno is the seqno to roll back to for ReasonRollback, else the last
	// seqno the producer sent on the stream (0 if none).
	Seqno uint64
	// Message is the producer's explanation (ReasonRefused, ReasonError).
	Message string
	// Err is the Handler's error (ReasonHandler).
	Err error
}

// ConsumerConfig configures Dial.
type ConsumerConfig struct {
	// Name is this node's name, told to the producer (1..100 bytes).
	Name string
	// Addr is the producer's data port.
	Addr string
	// Bucket names what to stream: the producer maps it to an engine.
	// It is also the channel liveness records (a channel name: 1..255
	// bytes of [A-Za-z0-9_-]).
	Bucket string
	// Connections is the number of TCP connections (1..MaxConnections,
	// default 1). vBucket vb always travels on connection vb % Connections.
	Connections int
	// Compression asks the producer to s2-compress its packets.
	Compression bool
	// Seqnos asks the producer for seqno messages (FeatureSeqnos), which
	// reach the Handler if it implements SeqnoHandler.
	Seqnos bool
	// Standby tells the producer that this consumer is a whole-node
	// standby (FeatureStandby).
	Standby bool
	// Acks asks to acknowledge applied seqnos per vBucket (FeatureAcks,
	// acks.go); a producer that does not grant it gets none.
	Acks bool
	// NoopInterval: each side sends a NOOP when it has sent nothing for this
	// long, and declares the connection dead (ErrSilent) after two intervals
	// with nothing received. Default DefaultNoopInterval.
	NoopInterval time.Duration
	// IdleTimeout declares the connection dead (ErrIdle) after this long
	// with nothing received, if that comes before two NOOP intervals.
	// Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// BufferSize is the flow-control window in bytes: the producer stops
	// when this many bytes are unacknowledged (one packet may overshoot it).
	// Default DefaultBufferSize.
	BufferSize int
	// Dial opens a connection; default a net.Dialer on "tcp".
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Handshake, if set, runs on each fresh connection before the stream is
	// opened (HELLO and AUTH).
	Handshake func(ctx context.Context, conn net.Conn) error
	// Handler receives the streams. Required.
	Handler Handler
	// Spy, if set, is told about received traffic.
	Spy Spy
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

func (cfg *ConsumerConfig) check() error {
	if cfg.Connections == 0 {
		cfg.Connections = 1
	}
	if cfg.NoopInterval == 0 {
		cfg.NoopInterval = DefaultNoopInterval
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.BufferSize == 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case len(cfg.Name) == 0 || len(cfg.Name) > wire.MaxClientName:
		return fmt.Errorf("stream: consumer name of %d bytes", len(cfg.Name))
	case !wire.ValidChannelString(cfg.Bucket):
		return fmt.Errorf("stream: bad bucket name %q", cfg.Bucket)
	case cfg.Connections < 1 || cfg.Connections > MaxConnections:
		return fmt.Errorf("stream: %d connections (1..%d)", cfg.Connections, MaxConnections)
	case cfg.NoopInterval < MinNoopInterval || cfg.NoopInterval > MaxNoopInterval:
		return fmt.Errorf("stream: noop interval %v out of [%v, %v]", cfg.NoopInterval, MinNoopInterval, MaxNoopInterval)
	case cfg.IdleTimeout < 0:
		return fmt.Errorf("stream: negative idle timeout")
	case cfg.BufferSize < 0 || cfg.BufferSize > math.MaxUint32:
		return fmt.Errorf("stream: buffer size %d", cfg.BufferSize)
	case cfg.Handler == nil:
		return errors.New("stream: no handler")
	}
	return nil
}

// silence returns how long a side waits for bytes before it declares the
// connection dead, and the error it reports then.
func silence(noop, idle time.Duration) (time.Duration, error) {
	if idle < 2*noop {
		return idle, ErrIdle
	}
	return 2 * noop, ErrSilent
}

// Consumer is one session of stream connections to one producer. vBucket
// vb is pinned to connection vb % Connections, so its order holds whatever
// the number of connections. When any connection fails the whole session
// ends: every connection reports its lost streams through Handler.Lost and
// Done is closed. To reconnect, Dial again and request the vBuckets from
// where they stopped.
type Consumer struct {
	cfg      ConsumerConfig
	log      *slog.Logger
	producer string
	conns    []*cconn

	ending atomic.Bool // set when the session starts to end: deliver nothing more

	mu        sync.Mutex
	cause     error // why the session ended; nil while it runs
	causeConn int   // the connection that failed first, -1 for Close
	running   int   // connections whose goroutines have not finished
	done      chan struct{}
}

// Dial opens a session: cfg.Connections connections to cfg.Addr, each
// handshaken and opened with an OpStreamOpen frame. It fails if any
// connection cannot be opened; a refusal by the producer wraps ErrRefused.
func Dial(ctx context.Context, cfg ConsumerConfig) (*Consumer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg:     cfg,
		log:     cfg.Logger.With("producer_addr", cfg.Addr, "bucket", cfg.Bucket),
		done:    make(chan struct{}),
		running: cfg.Connections,
	}
	var features uint32
	if cfg.Compression {
		features |= FeatureS2
	}
	if cfg.Seqnos {
		features |= FeatureSeqnos
	}
	if cfg.Standby {
		features |= FeatureStandby
	}
	if cfg.Acks {
		features |= FeatureAcks
	}
	for i := range cfg.Connections {
		cc, err := c.open(ctx, i, features)
		if err == nil && c.producer != "" && cc.peer != c.producer {
			cc.conn.Close()
			err = fmt.Errorf("%w: producer %q on a session with %q", ErrProtocol, cc.peer, c.producer)
		}
		if err != nil {
			for _, o := range c.conns {
				o.conn.Close()
			}
			return nil, fmt.Errorf("cannot open stream connection %d to %s: %w", i, cfg.Addr, err)
		}
		c.producer = cc.peer
		c.conns = append(c.conns, cc)
	}
	c.log = c.log.With("producer", c.producer)
	for _, cc := range c.conns {
		cc.start()
	}
	c.log.Info("stream session open", "connections", cfg.Connections)
	return c, nil
}

// open dials connection i and exchanges the open frames.
func (c *Consumer) open(ctx context.Context, i int, features uint32) (*cconn, error) {
	cfg := &c.cfg
	deadline := time.Now().Add(DefaultOpenTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := cfg.Dial(dctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	// Cancelling ctx aborts the blocking reads and writes below.
	stop := context.AfterFunc(dctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	peer, got, err := c.exchange(dctx, conn, deadline, i, features)
	if !stop() {
		err = context.Cause(dctx) // the I/O error was only its effect
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c.newConn(i, conn, peer, got), nil
}

func (c *Consumer) exchange(ctx context.Context, conn net.Conn, deadline time.Time, i int, features uint32) (string, uint32, error) {
	cfg := &c.cfg
	if err := conn.SetDeadline(deadline); err != nil {
		return "", 0, err
	}
	if cfg.Handshake != nil {
		if err := cfg.Handshake(ctx, conn); err != nil {
			return "", 0, fmt.Errorf("handshake: %w", err)
		}
		if err := conn.SetDeadline(deadline); err != nil {
			return "", 0, err
		}
	}
	body := appendOpen(nil, open{
		consumer: cfg.Name, bucket: cfg.Bucket,
		conn: uint16(i), conns: uint16(cfg.Connections),
		features: features, noop: cfg.NoopInterval, buffer: uint32(cfg.BufferSize),
	})
	frame := wire.AppendHeader(nil, wire.Header{
		Magic: wire.MagicRequest, Version: wire.Version, Opcode: wire.OpStreamOpen,
		ID: openRequestID, BodyLen: uint32(len(body)),
	})
	if _, err := conn.Write(append(frame, body...)); err != nil {
		return "", 0, fmt.Errorf("cannot send the open frame: %w", err)
	}
	var hb [wire.HeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return "", 0, fmt.Errorf("cannot read the open reply: %w", err)
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil {
		return "", 0, fmt.Errorf("%w: open reply: %w", ErrProtocol, err)
	}
	if h.Magic != wire.MagicResponse || h.Opcode != wire.OpStreamOpen || h.ID != openRequestID || h.BodyLen > maxReplyBody {
		return "", 0, fmt.Errorf("%w: open reply %v", ErrProtocol, h)
	}
	reply := make([]byte, h.BodyLen)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return "", 0, fmt.Errorf("cannot read the open reply: %w", err)
	}
	if h.Status != wire.StatusOK {
		return "", 0, fmt.Errorf("%w: %s: %s", ErrRefused, h.Status, reply)
	}
	peer, got, err := parseOpenReply(reply)
	if err != nil {
		return "", 0, err
	}
	if got&^features != 0 {
		return "", 0, fmt.Errorf("%w: producer granted features %#x, asked %#x", ErrProtocol, got, features)
	}
	return peer, got, nil
}

// Producer returns the producer's node name.
func (c *Consumer) Producer() string { return c.producer }

// Request asks for a vBucket stream. It returns at once; the outcome comes
// through the Handler (Started, then Ended; or Lost). It fails with
// ErrStreamExists while vb has a stream (a closing one too: wait for its
// Ended), ErrBadRequest for a bad snapshot range, and an error wrapping
// ErrClosed or the session's failure once the session has ended.
func (c *Consumer) Request(req Request) error {
	req.normalize()
	if !req.valid() {
		return fmt.Errorf("%w: vbucket %d: snapshot [%d, %d] does not hold start %d",
			ErrBadRequest, req.VBucket, req.SnapStart, req.SnapEnd, req.Start)
	}
	return c.conns[int(req.VBucket)%len(c.conns)].request(req)
}

// CloseStream asks the producer to end vb's stream; Ended with
// ReasonClosed follows. It fails with ErrNoStream if vb has none.
func (c *Consumer) CloseStream(vb uint16) error {
	return c.conns[int(vb)%len(c.conns)].closeStream(vb, nil)
}

// Close ends the session: the connections are closed and their streams
// reported to Handler.Lost with ErrClosed. It returns at once (so a Handler
// may call it); Wait waits for the end.
func (c *Consumer) Close() { c.fail(-1, ErrClosed) }

// Done is closed when the session has ended: every goroutine has finished
// and every Lost has been delivered.
func (c *Consumer) Done() <-chan struct{} { return c.done }

// Wait waits for the session to end and returns why (ErrClosed after Close).
func (c *Consumer) Wait() error {
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// fail ends the session with err, the failure of connection i (-1: Close).
// The first failure wins.
func (c *Consumer) fail(i int, err error) {
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	c.cause, c.causeConn = err, i
	c.ending.Store(true)
	c.mu.Unlock()
	if i >= 0 {
		c.log.Warn("stream session failed", "conn", i, "err", err)
	}
	for _, cc := range c.conns {
		cc.conn.Close()
	}
}

// connErr returns the error connection i reports to Lost.
func (c *Consumer) connErr(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.causeConn == i || c.causeConn < 0 {
		return c.cause
	}
	return fmt.Errorf("connection %d failed: %w", c.causeConn, c.cause)
}

// exited counts a connection out and closes done after the last.
func (c *Consumer) exited() {
	c.mu.Lock()
	c.running--
	last, cause := c.running == 0, c.cause
	c.mu.Unlock()
	if last {
		c.log.Info("stream session closed", "err", cause)
		close(c.done)
	}
}

// cconn is one connection of a consumer session.
type cconn struct {
	c    *Consumer
	i    int
	id   uint64
	conn net.Conn
	peer string
	send *sender
	recv *receiver

	mu      sync.Mutex
	streams map[uint16]*cstream
	dead    bool

	// Seqno acknowledgements (acks.go), the reader's alone.
	acks  bool     // FeatureAcks was granted
	moved []uint16 // vBuckets whose applied seqno the current packet moved
}

// cstream is the consumer's state of one vBucket stream.
type cstream struct {
	started  bool   // the producer's start arrived
	closing  bool   // the consumer asked the producer to close it
	err      error  // the Handler's error that made the consumer close it
	snap     bool   // a snapshot marker arrived
	snapLow  uint64 // the current snapshot's range
	snapHigh uint64
	ack      ackState // the reader's alone
}

func (c *Consumer) newConn(i int, conn net.Conn, peer string, features uint32) *cconn {
	cfg := &c.cfg
	wait, expired := silence(cfg.NoopInterval, cfg.IdleTimeout)
	cc := &cconn{
		c: c, i: i, id: connIDs.Add(1), conn: conn, peer: peer,
		streams: make(map[uint16]*cstream),
		send: newSender(conn, senderConfig{
			noop:    cfg.NoopInterval,
			timeout: wait,
			ackAt:   max(uint64(cfg.BufferSize)/5, 1),
		}),
		recv: newReceiver(conn, wait, expired),
	}
	cc.recv.s2 = features&FeatureS2 != 0
	cc.acks = features&FeatureAcks != 0
	if cfg.Spy != nil {
		cc.recv.spy, cc.recv.id, cc.recv.peer, cc.recv.bucket = cfg.Spy, cc.id, peer, cfg.Bucket
	}
	return cc
}

// start runs the connection's goroutines once the whole session is open.
func (cc *cconn) start() {
	cc.recv.heard() // the open reply
	go func() {
		defer close(cc.send.done)
		cc.c.fail(cc.i, cc.send.run())
	}()
	go cc.run()
}

// run is the connection's reader goroutine.
func (cc *cconn) run() {
	err := cc.readLoop()
	cc.c.fail(cc.i, err)
	cc.send.close(err, false)
	<-cc.send.done
	cc.mu.Lock()
	cc.dead = true
	vbs := make([]uint16, 0, len(cc.streams))
	for vb := range cc.streams {
		vbs = append(vbs, vb)
	}
	cc.streams = nil
	cc.mu.Unlock()
	slices.Sort(vbs)
	if cc.recv.spy != nil {
		cc.recv.spy.Forget(cc.id)
	}
	cc.c.cfg.Handler.Lost(&ConnError{Conn: cc.i, Addr: cc.c.cfg.Addr, VBuckets: vbs, Err: cc.c.connErr(cc.i)})
	cc.c.exited()
}

func (cc *cconn) request(req Request) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.dead {
		return cc.c.ended()
	}
	if cc.streams[req.VBucket] != nil {
		return fmt.Errorf("%w: vbucket %d", ErrStreamExists, req.VBucket)
	}
	if err := cc.send.lock(context.Background()); err != nil {
		return err
	}
	cc.send.pending = appendRequest(cc.send.pending, req)
	cc.send.unlock()
	cc.streams[req.VBucket] = &cstream{}
	return nil
}

// closeStream asks the producer to close vb's stream; cause is the
// Handler's error, if that is why.
func (cc *cconn) closeStream(vb uint16, cause error) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.dead {
		return cc.c.ended()
	}
	st := cc.streams[vb]
	if st == nil {
		return fmt.Errorf("%w: vbucket %d", ErrNoStream, vb)
	}
	if st.closing {
		if st.err == nil {
			st.err = cause
		}
		return nil
	}
	if err := cc.send.lock(context.Background()); err != nil {
		return err
	}
	cc.send.pending = appendClose(cc.send.pending, vb)
	cc.send.unlock()
	st.closing, st.err = true, cause
	return nil
}

// ended returns the error of calls made after the session ended.
func (c *Consumer) ended() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.cause, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: session failed: %w", ErrClosed, c.cause)
}

func (cc *cconn) readLoop() error {
	var (
		dc decoder
		m  message
	)
	for {
		payload, err := cc.recv.next()
		if err != nil {
			return err
		}
		if payload == nil {
			continue
		}
		dc.reset(payload)
		for dc.more() {
			if cc.c.ending.Load() {
				return ErrClosed // the session's cause is already set
			}
			if err := dc.next(&m); err != nil {
				return err
			}
			if err := cc.handle(&m); err != nil {
				return err
			}
		}
		if cc.acks {
			if err := cc.sendApplied(); err != nil {
				return err
			}
		}
		cc.send.addAck(HeaderLen + len(payload))
	}
}

// handle checks one message against the stream's state and hands it to
// the Handler.
func (cc *cconn) handle(m *message) error {
	h := cc.c.cfg.Handler
	cc.mu.Lock()
	st := cc.streams[m.vb]
	if st == nil {
		cc.mu.Unlock()
		return fmt.Errorf("%w: message type %#x for vbucket %d, which has no stream", ErrProtocol, m.typ, m.vb)
	}
	deliver := !st.closing
	prevSnap, prevHigh := st.snap, st.snapHigh
	var err error
	switch m.typ {
	case msgStart:
		if st.started {
			err = fmt.Errorf("%w: second start for vbucket %d", ErrProtocol, m.vb)
		}
		st.started = true
	case msgSnapshot:
		switch {
		case !st.started:
			err = fmt.Errorf("%w: snapshot before start on vbucket %d", ErrProtocol, m.vb)
		case st.snap && m.start <= st.snapHigh:
			err = fmt.Errorf("%w: vbucket %d snapshot [%d, %d] after [%d, %d]",
				ErrProtocol, m.vb, m.start, m.end, st.snapLow, st.snapHigh)
		}
		st.snap, st.snapLow, st.snapHigh = true, m.start, m.end
	case msgMutation:
		if !st.snap || m.mut.Seqno < st.snapLow || m.mut.Seqno > st.snapHigh {
			err = fmt.Errorf("%w: vbucket %d mutation %d outside its snapshot [%d, %d]",
				ErrProtocol, m.vb, m.mut.Seqno, st.snapLow, st.snapHigh)
		}
	case msgEnd:
		delete(cc.streams, m.vb)
	case msgSeqno:
		if !st.started {
			err = fmt.Errorf("%w: seqno before start on vbucket %d", ErrProtocol, m.vb)
		}
	default:
		err = fmt.Errorf("%w: message type %#x from a producer", ErrProtocol, m.typ)
	}
	cc.mu.Unlock()
	if err != nil {
		return err
	}
	if m.typ == msgEnd {
		e := End{VBucket: m.vb, Reason: m.reason, Seqno: m.seqno, Message: string(m.text)}
		if st.err != nil {
			e.Reason, e.Err = ReasonHandler, st.err
		}
		h.Ended(e)
		return nil
	}
	if !deliver {
		return nil
	}
	switch m.typ {
	case msgStart:
		err = h.Started(m.vb, m.log)
	case msgSnapshot:
		err = h.Snapshot(m.vb, m.start, m.end)
		if err == nil && cc.acks && prevSnap {
			cc.noteApplied(m.vb, st, prevHigh) // the previous snapshot is complete
		}
	case msgMutation:
		err = h.Mutation(&m.mut)
		if err == nil && cc.acks && m.mut.Seqno == st.snapHigh {
			cc.noteApplied(m.vb, st, m.mut.Seqno)
		}
	case msgSeqno:
		if sh, ok := h.(SeqnoHandler); ok {
			sh.Seqno(m.vb, m.high, m.behind)
		}
	}
	if err != nil {
		if cerr := cc.closeStream(m.vb, fmt.Errorf("stream: vbucket %d: %w", m.vb, err)); cerr != nil {
			return cerr
		}
	}
	return nil
}
