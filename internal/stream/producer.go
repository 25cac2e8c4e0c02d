package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
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
	// checks the vBucket uuid against its failover log here, and the
	// consumer against the vBucket's chain). It returns the failover log to
	// send with the start, a *RollbackError to make the consumer roll back,
	// or another error to refuse. It runs on the request's own goroutine.
	// Nil accepts every request with an empty log.
	Accept func(c ConsumerInfo, req Request) ([]FailoverEntry, error)
	// SeqnoInterval is how often, at most, the producer announces the
	// figures of each stream that changed (to consumers that asked for
	// FeatureSeqnos). Default DefaultSeqnoInterval.
	SeqnoInterval time.Duration
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
	// OnApplied, if set, is called on the connection's reader goroutine
	// with every applied message a consumer sends (FeatureAcks): it holds
	// vb's mutations up to applied, and those up to persisted on disk (0:
	// not said). Acknowledgements of one vBucket on one connection only
	// grow. It must not block.
	OnApplied func(c ConsumerInfo, vb uint16, applied, persisted uint64)
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// ConsumerInfo is what a producer knows of the consumer of a connection,
// from its open message.
type ConsumerInfo struct {
	Name     string // the consumer's node name
	Bucket   string
	Conn     int    // the connection's index in its session
	Features uint32 // asked for (FeatureStandby among them)
}

// DefaultSeqnoInterval is the default of ProducerConfig.SeqnoInterval.
const DefaultSeqnoInterval = 250 * time.Millisecond

// refusalReport is the least time between two log lines of a connection
// about the stream requests it refused.
const refusalReport = 10 * time.Second

// Producer serves vBucket streams to consumers from the node's engines.
// One Producer serves every stream connection of a node.
type Producer struct {
	cfg ProducerConfig

	mu    sync.Mutex
	conns map[*pconn]struct{}
}

// Status describes every stream connection being served, sorted by
// consumer, bucket and connection.
func (p *Producer) Status() []ConnStatus {
	p.mu.Lock()
	conns := make([]*pconn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	out := make([]ConnStatus, 0, len(conns))
	for _, pc := range conns {
		out = append(out, pc.status())
	}
	slices.SortFunc(out, func(a, b ConnStatus) int {
		return cmp.Or(cmp.Compare(a.Consumer, b.Consumer), cmp.Compare(a.Bucket, b.Bucket), cmp.Compare(a.Conn, b.Conn))
	})
	return out
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
	if cfg.SeqnoInterval == 0 {
		cfg.SeqnoInterval = DefaultSeqnoInterval
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
	case cfg.FlushDelay < 0 || cfg.IdleTimeout < 0 || cfg.StallTimeout < 0 || cfg.DrainTimeout < 0 || cfg.SeqnoInterval < 0:
		return nil, errors.New("stream: negative duration in producer config")
	}
	return &Producer{cfg: cfg, conns: make(map[*pconn]struct{})}, nil
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
	p.mu.Lock()
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
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
	lost     int   // streams ended by the connection's failure (logged once, with it)
	refused  int   // requests refused since the last report
	refusedV uint16
	refusedT string    // the first refused since the last report: its vBucket and why
	reported time.Time // the last report of refusals
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
	pc.send.track = newTracker()
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
	announced := make(chan struct{})
	if pc.open.features&FeatureSeqnos != 0 {
		go func() { defer close(announced); pc.announce() }()
	} else {
		close(announced)
	}
	err := pc.readLoop()
	close(pc.readDone)
	pc.fail(err)
	if !stop() {
		<-pc.drained
	}
	<-pc.allEnded
	<-pc.send.done
	<-announced
	if pc.recv.spy != nil {
		pc.recv.spy.Forget(pc.id)
	}
	pc.mu.Lock()
	cause, lost := pc.cause, pc.lost
	pc.mu.Unlock()
	pc.reportRefusals(true)
	// One line for the connection, however many streams it ended.
	if errors.Is(cause, errShutdown) || errors.Is(cause, ErrPeerClosed) {
		pc.log.Info("stream connection closed", "reason", cause, "streams_ended", lost)
		return nil
	}
	pc.log.Warn("stream connection failed", "err", cause, "streams_ended", lost)
	return cause
}

// announce sends, every SeqnoInterval, a seqno message for each open
// stream whose high seqno or unacknowledged bytes changed since the last
// one, until the connection ends.
func (pc *pconn) announce() {
	t := time.NewTicker(pc.p.cfg.SeqnoInterval)
	defer t.Stop()
	type due struct {
		p    *progress
		high uint64
	}
	var list []due
	for {
		select {
		case <-pc.alive.Done():
			return
		case <-t.C:
		}
		list = list[:0]
		send := pc.send
		send.mu.Lock()
		for _, p := range send.track.streams {
			if p.started && !p.ended {
				list = append(list, due{p: p})
			}
		}
		send.mu.Unlock()
		if len(list) == 0 {
			continue
		}
		// The engine's locks are never taken under the sender's.
		for i := range list {
			list[i].high = pc.eng.HighSeqno(list[i].p.vb)
		}
		if err := send.lock(pc.alive); err != nil {
			return
		}
		for _, d := range list {
			p := d.p
			behind := uint64(max(p.unacked, 0))
			if p.ended || (p.announced && p.announcedHigh == d.high && p.announcedBehind == behind) {
				continue
			}
			send.pending = appendSeqno(send.pending, p.vb, d.high, behind)
			p.announced, p.announcedHigh, p.announcedBehind = true, d.high, behind
		}
		send.unlock()
	}
}

// status describes the connection and its streams.
func (pc *pconn) status() ConnStatus {
	st := ConnStatus{
		Consumer: pc.open.consumer, Bucket: pc.open.bucket, Conn: int(pc.open.conn), Conns: int(pc.open.conns),
		Remote: pc.conn.RemoteAddr().String(), Features: pc.open.features & knownFeatures,
	}
	send := pc.send
	send.mu.Lock()
	st.UnackedBytes = send.out
	for _, p := range send.track.streams {
		st.Streams = append(st.Streams, StreamStatus{VBucket: p.vb, Sent: p.sent, Acked: p.acked, UnackedBytes: p.unacked, Bytes: p.bytes, Ended: p.ended,
			Applied: p.applied, Persisted: p.persisted})
	}
	send.mu.Unlock()
	slices.SortFunc(st.Streams, func(a, b StreamStatus) int { return cmp.Compare(a.VBucket, b.VBucket) })
	return st
}

// noteRefused counts a refused request; the refusals are logged at most
// once per refusalReport, with the first one's reason (a consumer whose
// map is stale asks again for every vBucket every few seconds).
func (pc *pconn) noteRefused(vb uint16, why string) {
	pc.mu.Lock()
	if pc.refused == 0 {
		pc.refusedV, pc.refusedT = vb, why
	}
	pc.refused++
	pc.mu.Unlock()
	pc.reportRefusals(false)
}

// reportRefusals logs the refusals counted since the last report, if the
// report interval has passed or final is set.
func (pc *pconn) reportRefusals(final bool) {
	pc.mu.Lock()
	n, vb, why := pc.refused, pc.refusedV, pc.refusedT
	if n == 0 || (!final && time.Since(pc.reported) < refusalReport) {
		pc.mu.Unlock()
		return
	}
	pc.refused, pc.reported = 0, time.Now()
	pc.mu.Unlock()
	pc.log.Warn("stream requests refused", "count", n, "first_vbucket", vb, "reason", why)
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
			case msgApplied:
				err = pc.applied(m.vb, m.applied, m.persisted)
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
	reason, seqno, text, prog := pc.runStream(ctx, req)
	cancel(nil)
	pc.mu.Lock()
	delete(pc.streams, req.VBucket)
	failing := pc.cause != nil
	if failing {
		pc.lost++
	}
	pc.mu.Unlock()
	switch {
	case failing:
		// The connection's failure ended it: logged once, with the
		// connection (a consumer that leaves mid-backfill ends every
		// stream at once).
	case reason == ReasonRefused:
		pc.noteRefused(req.VBucket, text)
	case reason == ReasonError:
		pc.log.Warn("stream ended", "vbucket", req.VBucket, "reason", reason, "err", text)
	}
	if err := pc.send.lock(pc.alive); err == nil {
		n := len(pc.send.pending)
		pc.send.pending = appendEnd(pc.send.pending, req.VBucket, reason, seqno, text)
		if prog != nil {
			pc.send.track.note(prog, 0, len(pc.send.pending)-n)
			pc.send.track.end(prog)
		}
		pc.send.unlock()
	} else if prog != nil {
		pc.send.mu.Lock()
		pc.send.track.end(prog)
		pc.send.mu.Unlock()
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
func (pc *pconn) runStream(ctx context.Context, req Request) (reason Reason, seqno uint64, text string, prog *progress) {
	vb := req.VBucket
	if !req.valid() {
		return ReasonRefused, 0, fmt.Sprintf("snapshot [%d, %d] does not hold start %d", req.SnapStart, req.SnapEnd, req.Start), nil
	}
	var log []FailoverEntry
	if accept := pc.p.cfg.Accept; accept != nil {
		var err error
		log, err = accept(ConsumerInfo{Name: pc.open.consumer, Bucket: pc.open.bucket, Conn: int(pc.open.conn), Features: pc.open.features}, req)
		var rb *RollbackError
		switch {
		case errors.As(err, &rb):
			return ReasonRollback, rb.Seqno, "", nil
		case err != nil:
			return ReasonRefused, 0, err.Error(), nil
		case len(log) > MaxFailoverLog:
			return ReasonError, 0, fmt.Sprintf("failover log of %d entries over %d", len(log), MaxFailoverLog), nil
		}
	}
	if err := pc.send.lock(ctx); err != nil {
		reason, seqno, text := pc.endOf(ctx, vb, err, 0)
		return reason, seqno, text, nil
	}
	n := len(pc.send.pending)
	pc.send.pending = appendStart(pc.send.pending, vb, log)
	prog = pc.send.track.begin(vb, req.Start)
	pc.send.track.note(prog, 0, len(pc.send.pending)-n)
	pc.send.unlock()
	s := &sink{pc: pc, ctx: ctx, vb: vb, prog: prog}
	err := pc.eng.Stream(ctx, vb, req.Start, s)
	reason, seqno, text = pc.endOf(ctx, vb, err, s.last)
	return reason, seqno, text, prog
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
	prog    *progress
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
	n := len(send.pending)
	send.pending = appendSnapshot(send.pending, s.vb, start, end)
	send.track.note(s.prog, 0, len(send.pending)-n)
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
	n := len(send.pending)
	send.pending = appendMutation(send.pending, m)
	send.track.note(s.prog, m.Seqno, len(send.pending)-n)
	send.unlock()
	s.last = m.Seqno
	return nil
}
