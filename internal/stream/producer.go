package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"shoal/internal/engine"
	"shoal/internal/wire"
)

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Name is this node's name, told to consumers. Required.
	Name string
	// Engines returns the engine a consumer's bucket names, or nil if there
	// is none. Required.
	Engines func(bucket string) engine.Engine
	// Accept, if set, decides whether a stream request may start (replication
	// checks the vBucket uuid against its failover log here). It returns the
	// failover log to send with the start, a *RollbackError to make the
	// consumer roll back, or another error to refuse. It runs on the
	// request's own goroutine. Nil accepts every request with an empty log.
	Accept func(consumer string, req Request) ([]FailoverEntry, error)
	// BatchSize is the message bytes after which a batch is sent at once
	// (at most MaxBatchSize; default DefaultBatchSize). The producer also
	// uses at most half the consumer's buffer size.
	BatchSize int
	// FlushDelay is how long a batch waits for more messages after its
	// first one. Default DefaultFlushDelay.
	FlushDelay time.Duration
	// IdleTimeout declares a connection dead after this long with nothing
	// received, if that comes before two of the consumer's NOOP intervals;
	// it also bounds a blocked write. Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// StallTimeout closes a connection (ErrStalled) whose consumer granted
	// no credit for this long while data waited. Default IdleTimeout.
	StallTimeout time.Duration
	// DrainTimeout bounds how long Serve, when its context ends, waits for
	// its streams' ends to be written. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Spy, if set, is told about received traffic.
	Spy Spy
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Producer serves vBucket streams to consumers from the node's engines.
// One Producer serves every stream connection of a node.
type Producer struct {
	cfg ProducerConfig
}

// NewProducer checks cfg and returns a producer.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.FlushDelay == 0 {
		cfg.FlushDelay = DefaultFlushDelay
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = cfg.IdleTimeout
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case len(cfg.Name) == 0 || len(cfg.Name) > wire.MaxClientName:
		return nil, fmt.Errorf("stream: producer name of %d bytes", len(cfg.Name))
	case cfg.Engines == nil:
		return nil, errors.New("stream: producer without engines")
	case cfg.BatchSize < 1 || cfg.BatchSize > MaxBatchSize:
		return nil, fmt.Errorf("stream: batch size %d out of [1, %d]", cfg.BatchSize, MaxBatchSize)
	case cfg.FlushDelay < 0 || cfg.IdleTimeout < 0 || cfg.StallTimeout < 0 || cfg.DrainTimeout < 0:
		return nil, errors.New("stream: negative duration in producer config")
	}
	return &Producer{cfg: cfg}, nil
}

// Serve runs one stream connection. conn has just carried an OpStreamOpen
// frame with header h and body body (the node's server has read it, after
// HELLO and AUTH); Serve answers it, then speaks the stream protocol until
// the consumer leaves, the connection fails, or ctx ends. When ctx ends,
// every stream is ended with ReasonShutdown and the connection closed
// cleanly. Serve closes conn. It returns nil when the consumer closed the
// connection or ctx ended it, else why it failed.
//
// The consumer sends nothing after its open frame until it has the answer,
// so a server reading frames through a buffered reader hands over no bytes
// of the stream.
func (p *Producer) Serve(ctx context.Context, conn net.Conn, h wire.Header, body []byte) error {
	defer conn.Close()
	log := p.cfg.Logger.With("remote", conn.RemoteAddr().String())
	o, err := parseOpen(body)
	if err != nil {
		p.reply(conn, h, wire.StatusBadRequest, []byte(err.Error()))
		return fmt.Errorf("cannot open stream from %s: %w", conn.RemoteAddr(), err)
	}
	eng := p.cfg.Engines(o.bucket)
	if eng == nil {
		p.reply(conn, h, wire.StatusNotFound, fmt.Appendf(nil, "no bucket %q", o.bucket))
		return fmt.Errorf("cannot open stream from %s: no bucket %q", conn.RemoteAddr(), o.bucket)
	}
	features := o.features & knownFeatures
	if err := p.reply(conn, h, wire.StatusOK, appendOpenReply(nil, p.cfg.Name, features)); err != nil {
		return fmt.Errorf("cannot open stream from %s: %w", conn.RemoteAddr(), err)
	}
	pc := p.newConn(conn, o, features, eng, log.With("consumer", o.consumer, "bucket", o.bucket, "conn", o.conn))
	return pc.serve(ctx)
}

// reply writes the answer to the open frame.
func (p *Producer) reply(conn net.Conn, h wire.Header, status wire.Status, body []byte) error {
	frame := wire.AppendHeader(nil, wire.Header{
		Magic: wire.MagicResponse, Version: wire.Version, Opcode: wire.OpStreamOpen,
		Status: status, ID: h.ID, BodyLen: uint32(len(body)),
	})
	if err := conn.SetWriteDeadline(time.Now().Add(DefaultOpenTimeout)); err != nil {
		return err
	}
	_, err := conn.Write(append(frame, body...))
	return err
}

// pconn is one stream connection of a producer.
type pconn struct {
	p    *Producer
	id   uint64
	conn net.Conn
	open open
	eng  engine.Engine
	log  *slog.Logger
	send *sender
	recv *receiver

	alive context.Context // ends when the connection fails
	kill  context.CancelFunc

	mu       sync.Mutex
	cause    error // why the connection ends; nil while it runs
	streams  map[uint16]context.CancelCauseFunc
	running  int           // stream goroutines
	closing  bool          // no new streams; allEnded closes once running is 0
	allEnded chan struct{} // closed when closing and no stream goroutine is left
	readDone chan struct{} // closed when the reader has returned
	drained  chan struct{} // closed when shutdown has finished
}

func (p *Producer) newConn(conn net.Conn, o open, features uint32, eng engine.Engine, log *slog.Logger) *pconn {
	wait, expired := silence(o.noop, p.cfg.IdleTimeout)
	window := int64(o.buffer)
	pc := &pconn{
		p: p, id: connIDs.Add(1), conn: conn, open: o, eng: eng, log: log,
		streams:  make(map[uint16]context.CancelCauseFunc),
		allEnded: make(chan struct{}),
		readDone: make(chan struct{}),
		drained:  make(chan struct{}),
		send: newSender(conn, senderConfig{
			batch:   int(min(int64(p.cfg.BatchSize), max(window/2, 1))),
			delay:   p.cfg.FlushDelay,
			noop:    o.noop,
			timeout: p.cfg.IdleTimeout,
			window:  window,
			stall:   p.cfg.StallTimeout,
			s2:      features&FeatureS2 != 0,
		}),
		recv: newReceiver(conn, wait, expired),
	}
	pc.alive, pc.kill = context.WithCancel(context.Background())
	if p.cfg.Spy != nil {
		pc.recv.spy, pc.recv.id, pc.recv.peer, pc.recv.bucket = p.cfg.Spy, pc.id, o.consumer, o.bucket
		pc.recv.heard() // the open frame
	}
	return pc
}

func (pc *pconn) serve(ctx context.Context) error {
	pc.log.Info("stream connection open", "noop", pc.open.noop, "buffer", pc.open.buffer, "s2", pc.send.cfg.s2)
	go func() {
		defer close(pc.send.done)
		if err := pc.send.run(); !errors.Is(err, errShutdown) {
			pc.fail(err)
		}
	}()
	stop := context.AfterFunc(ctx, pc.shutdown)
	err := pc.readLoop()
	close(pc.readDone)
	pc.fail(err)
	if !stop() {
		<-pc.drained
	}
	<-pc.allEnded
	<-pc.send.done
	if pc.recv.spy != nil {
		pc.recv.spy.Forget(pc.id)
	}
	pc.mu.Lock()
	cause := pc.cause
	pc.mu.Unlock()
	if errors.Is(cause, errShutdown) || errors.Is(cause, ErrPeerClosed) {
		pc.log.Info("stream connection closed", "reason", cause)
		return nil
	}
	pc.log.Warn("stream connection failed", "err", cause)
	return cause
}

// endStreams stops accepting requests and cancels every stream with cause.
// It reports whether it set the connection's cause.
func (pc *pconn) endStreams(cause error) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	first := pc.cause == nil
	if first {
		pc.cause = cause
	}
	if !pc.closing {
		pc.closing = true
		if pc.running == 0 {
			close(pc.allEnded)
		}
	}
	for _, cancel := range pc.streams {
		cancel(cause)
	}
	return first
}

// fail ends the connection at once.
func (pc *pconn) fail(err error) {
	pc.endStreams(err)
	pc.kill()
	pc.send.close(err, false)
	pc.conn.Close()
}

// shutdown ends the connection cleanly when Serve's context ends: every
// stream sends its end, the sender writes what is pending, the producer
// closes its writing side and waits for the consumer to close. The waits
// share one DrainTimeout.
func (pc *pconn) shutdown() {
	defer close(pc.drained)
	if !pc.endStreams(errShutdown) {
		return // the connection had already failed
	}
	limit := time.NewTimer(pc.p.cfg.DrainTimeout)
	defer limit.Stop()
	select {
	case <-pc.allEnded:
	case <-limit.C:
	}
	pc.send.close(errShutdown, true)
	select {
	case <-pc.send.done:
		if cw, ok := pc.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		select {
		case <-pc.readDone:
		case <-limit.C:
		}
	case <-limit.C:
	}
	pc.fail(errShutdown)
}

func (pc *pconn) readLoop() error {
	var (
		dc decoder
		m  message
	)
	for {
		payload, err := pc.recv.next()
		if err != nil {
			return err
		}
		if payload == nil {
			continue
		}
		dc.reset(payload)
		for dc.more() {
			if err := dc.next(&m); err != nil {
				return err
			}
			switch m.typ {
			case msgRequest:
				err = pc.startStream(m.req)
			case msgClose:
				pc.closeStream(m.vb)
			case msgAck:
				err = pc.send.acked(m.ack)
			default:
				err = fmt.Errorf("%w: message type %#x from a consumer", ErrProtocol, m.typ)
			}
			if err != nil {
				return err
			}
		}
	}
}

// startStream starts the goroutine of a requested stream. Requests that
// arrive while the connection closes are dropped: the consumer reports
// them lost with the connection.
func (pc *pconn) startStream(req Request) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closing {
		return nil
	}
	if pc.streams[req.VBucket] != nil {
		return fmt.Errorf("%w: second request for vbucket %d", ErrProtocol, req.VBucket)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	pc.streams[req.VBucket] = cancel
	pc.running++
	go pc.stream(ctx, cancel, req)
	return nil
}

func (pc *pconn) closeStream(vb uint16) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if cancel := pc.streams[vb]; cancel != nil {
		cancel(errClosedByConsumer)
	}
}

// stream is the goroutine of one vBucket stream: it runs the request and
// sends the stream's end.
func (pc *pconn) stream(ctx context.Context, cancel context.CancelCauseFunc, req Request) {
	reason, seqno, text := pc.runStream(ctx, req)
	cancel(nil)
	pc.mu.Lock()
	delete(pc.streams, req.VBucket)
	pc.mu.Unlock()
	if reason == ReasonError || reason == ReasonRefused {
		pc.log.Warn("stream ended", "vbucket", req.VBucket, "reason", reason, "err", text)
	}
	if err := pc.send.lock(pc.alive); err == nil {
		pc.send.pending = appendEnd(pc.send.pending, req.VBucket, reason, seqno, text)
		pc.send.unlock()
	}
	pc.mu.Lock()
	pc.running--
	if pc.closing && pc.running == 0 {
		close(pc.allEnded)
	}
	pc.mu.Unlock()
}

// runStream accepts the request and streams the engine's mutations until
// the stream ends, and returns how it ended.
func (pc *pconn) runStream(ctx context.Context, req Request) (reason Reason, seqno uint64, text string) {
	vb := req.VBucket
	if !req.valid() {
		return ReasonRefused, 0, fmt.Sprintf("snapshot [%d, %d] does not hold start %d", req.SnapStart, req.SnapEnd, req.Start)
	}
	var log []FailoverEntry
	if accept := pc.p.cfg.Accept; accept != nil {
		var err error
		log, err = accept(pc.open.consumer, req)
		var rb *RollbackError
		switch {
		case errors.As(err, &rb):
			return ReasonRollback, rb.Seqno, ""
		case err != nil:
			return ReasonRefused, 0, err.Error()
		case len(log) > MaxFailoverLog:
			return ReasonError, 0, fmt.Sprintf("failover log of %d entries over %d", len(log), MaxFailoverLog)
		}
	}
	if err := pc.send.lock(ctx); err != nil {
		return pc.endOf(ctx, vb, err, 0)
	}
	pc.send.pending = appendStart(pc.send.pending, vb, log)
	pc.send.unlock()
	s := &sink{pc: pc, ctx: ctx, vb: vb}
	err := pc.eng.Stream(ctx, vb, req.Start, s)
	return pc.endOf(ctx, vb, err, s.last)
}

// endOf maps how a stream stopped to its end reason.
func (pc *pconn) endOf(ctx context.Context, vb uint16, err error, last uint64) (Reason, uint64, string) {
	if cause := context.Cause(ctx); cause != nil {
		switch {
		case errors.Is(cause, errClosedByConsumer):
			return ReasonClosed, last, ""
		case errors.Is(cause, errShutdown):
			return ReasonShutdown, last, ""
		}
		return ReasonError, last, cause.Error()
	}
	switch {
	case err == nil:
		return ReasonDone, last, ""
	case errors.Is(err, engine.ErrRollback):
		return ReasonRollback, pc.eng.HighSeqno(vb), ""
	}
	return ReasonError, last, err.Error()
}

// sink is the engine.Sink of one stream: it appends the engine's snapshot
// markers and mutations to the connection's batch.
type sink struct {
	pc      *pconn
	ctx     context.Context
	vb      uint16
	last    uint64 // the last seqno sent
	channel string // the last channel name checked
}

// Snapshot implements engine.Sink.
func (s *sink) Snapshot(start, end uint64) error {
	if start > end {
		return fmt.Errorf("stream: vbucket %d: engine sent snapshot [%d, %d]", s.vb, start, end)
	}
	send := s.pc.send
	if err := send.lock(s.ctx); err != nil {
		return err
	}
	send.pending = appendSnapshot(send.pending, s.vb, start, end)
	send.unlock()
	return nil
}

// Mutation implements engine.Sink.
func (s *sink) Mutation(m *engine.Mutation) error {
	if m.VBucket != s.vb {
		return fmt.Errorf("stream: engine sent vbucket %d on the stream of vbucket %d", m.VBucket, s.vb)
	}
	err := checkMutation(m)
	if err == nil && m.Channel != s.channel {
		if err = checkChannel(m.Channel); err == nil {
			s.channel = m.Channel
		}
	}
	if err != nil {
		return fmt.Errorf("stream: cannot send vbucket %d seqno %d: %w", s.vb, m.Seqno, err)
	}
	send := s.pc.send
	if err := send.lock(s.ctx); err != nil {
		return err
	}
	send.pending = appendMutation(send.pending, m)
	send.unlock()
	s.last = m.Seqno
	return nil
}
