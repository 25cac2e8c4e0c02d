package repl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/engine"
	"shoal/internal/stream"
	"shoal/internal/wire"
)

// DefaultOpenTimeout bounds dialling, the handshake and the open exchange
// of a session.
const DefaultOpenTimeout = 5 * time.Second

// Replicator states, as Status reports them.
const (
	StateStopped    = "stopped"    // not running (Stop, or never started)
	StateConnecting = "connecting" // opening a session
	StateStreaming  = "streaming"  // a session is open
	StateBackoff    = "backoff"    // waiting before the next attempt
)

// Options are the settings of a Replicator that may change while it runs.
type Options struct {
	// Connections is the number of TCP connections of a session
	// (1..stream.MaxConnections, default 1).
	Connections int
	// NoopInterval: each side sends a NOOP after sending nothing for this
	// long and declares the connection dead after two intervals with nothing
	// received. Default stream.DefaultNoopInterval.
	NoopInterval time.Duration
	// IdleTimeout declares the connection dead after this long with nothing
	// received, if shorter than two NOOP intervals. Default
	// stream.DefaultIdleTimeout.
	IdleTimeout time.Duration
	// BufferSize is the credit window in bytes. Default
	// stream.DefaultBufferSize.
	BufferSize int
	// Compression asks the producer to s2-compress its packets.
	Compression bool
}

func (o *Options) setDefaults() {
	if o.Connections == 0 {
		o.Connections = 1
	}
	if o.NoopInterval == 0 {
		o.NoopInterval = stream.DefaultNoopInterval
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = stream.DefaultIdleTimeout
	}
	if o.BufferSize == 0 {
		o.BufferSize = stream.DefaultBufferSize
	}
}

func (o Options) check() error {
	switch {
	case o.Connections < 1 || o.Connections > stream.MaxConnections:
		return fmt.Errorf("repl: %d connections (1..%d)", o.Connections, stream.MaxConnections)
	case o.NoopInterval < stream.MinNoopInterval || o.NoopInterval > stream.MaxNoopInterval:
		return fmt.Errorf("repl: noop interval %v out of [%v, %v]", o.NoopInterval, stream.MinNoopInterval, stream.MaxNoopInterval)
	case o.IdleTimeout < 0 || o.BufferSize < 0:
		return errors.New("repl: negative idle timeout or buffer size")
	}
	return nil
}

// Config configures a Replicator.
type Config struct {
	// Name is this node's name, told to the producer. Required.
	Name string
	// Addr is the producer's data port. Required.
	Addr string
	// Bucket is the producer's engine to follow: "kv", "queue" or "log".
	Bucket string
	// Engine is the local engine the mutations are applied to. Required.
	Engine engine.Engine
	// Logs are Engine's failover logs on this node. Required.
	Logs *Logs
	// VBuckets are the vBuckets to replicate. Required.
	VBuckets []uint16
	// Options are the initial settings (Set changes them).
	Options Options
	// Dial opens a connection; default a net.Dialer on "tcp".
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Handshake runs on each fresh connection (see Handshake).
	Handshake func(ctx context.Context, conn net.Conn) error
	// OpenTimeout bounds the opening of a session. Default DefaultOpenTimeout.
	OpenTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between attempts, which
	// doubles after each failed one (jittered ±20%). Defaults
	// DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Spy, if set, is told about the traffic received from the producer.
	Spy stream.Spy
	// ApplyHook, if set, runs before each mutation is applied; an error
	// fails the apply (ApplyFailpoint; tests).
	ApplyHook func(*engine.Mutation) error
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// vbState is what a Replicator knows of one vBucket.
type vbState struct {
	seqno     uint64 // the highest seqno applied
	snapStart uint64 // the last snapshot marker received
	snapEnd   uint64
	marked    bool // snapStart and snapEnd are set
	open      bool // its stream is started on the current session
	resync    bool // drop it and start from 0 before the next request
}

// inSnapshot reports whether a snapshot was begun and not finished: the
// vBucket is consistent only once it holds the snapshot's end.
func (st *vbState) inSnapshot() bool { return st.marked && st.seqno < st.snapEnd }

func (st *vbState) reset() { *st = vbState{} }

// Replicator keeps a replica of some vBuckets of one engine of a producer
// node: it holds a session (stream.Consumer) to the producer, asks for
// each vBucket from the seqno it holds with the uuid of its failover log,
// applies the mutations with their seqnos, and after every loss
// reconnects with backoff and resumes. A history that diverged (rollback)
// is dropped and copied again from 0. An apply error stops that vBucket's
// stream, then the session is closed and reopened (seed 001 case 6).
// Start, Stop and Set may be called at any time, from any goroutine.
type Replicator struct {
	cfg     Config
	log     *slog.Logger
	ordered bool // the engine's snapshots come in seqno order
	rnd     func() float64

	ctl sync.Mutex // serialises Start, Stop, Set and Close

	mu         sync.Mutex
	opts       Options
	vbs        []*vbState // by vBucket id; nil for those not replicated
	cancel     context.CancelFunc
	done       chan struct{} // closed when the running loop exits
	retune     chan struct{}
	sess       *session
	state      string
	producer   string
	sessions   uint64
	reconnects uint64
	rollbacks  uint64
	lastErr    string
	lastErrAt  time.Time

	applied atomic.Uint64
}

// New checks cfg and returns a stopped Replicator. The vBuckets start from
// the engine's high seqnos. The queue engine's snapshots do not come in
// seqno order, so a replica cannot tell after a restart whether one was
// complete: its vBuckets holding data are copied again from 0.
func New(cfg Config) (*Replicator, error) {
	cfg.Options.setDefaults()
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = DefaultOpenTimeout
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Name == "" || len(cfg.Name) > wire.MaxClientName:
		return nil, fmt.Errorf("repl: node name of %d bytes", len(cfg.Name))
	case cfg.Addr == "":
		return nil, errors.New("repl: no producer address")
	case !wire.ValidChannelString(cfg.Bucket):
		return nil, fmt.Errorf("repl: bad bucket name %q", cfg.Bucket)
	case cfg.Engine == nil || cfg.Logs == nil:
		return nil, errors.New("repl: no engine or failover logs")
	case len(cfg.VBuckets) == 0:
		return nil, errors.New("repl: no vbuckets")
	case cfg.BackoffMin < 0 || cfg.BackoffMax < cfg.BackoffMin || cfg.OpenTimeout < 0:
		return nil, errors.New("repl: bad backoff or open timeout")
	}
	if err := cfg.Options.check(); err != nil {
		return nil, err
	}
	r := &Replicator{
		cfg:     cfg,
		log:     cfg.Logger.With("bucket", cfg.Bucket, "producer_addr", cfg.Addr),
		ordered: cfg.Engine.Kind() != engine.KindQueue,
		rnd:     jitter,
		opts:    cfg.Options,
		vbs:     make([]*vbState, int(slices.Max(cfg.VBuckets))+1),
		retune:  make(chan struct{}, 1),
		state:   StateStopped,
	}
	for _, vb := range cfg.VBuckets {
		if r.vbs[vb] != nil {
			return nil, fmt.Errorf("repl: vbucket %d given twice", vb)
		}
		st := &vbState{seqno: cfg.Engine.HighSeqno(vb)}
		st.resync = !r.ordered && st.seqno > 0
		r.vbs[vb] = st
	}
	return r, nil
}

// Start starts replicating (again, after Stop): it connects in the
// background and returns at once.
func (r *Replicator) Start() {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	r.state = StateConnecting
	select { // a Set made while stopped needs no reconnect
	case <-r.retune:
	default:
	}
	go r.run(ctx, r.done)
	r.log.Info("replication started")
}

// Stop closes the session and waits until nothing more is applied. What
// was applied stays; Start resumes from it.
func (r *Replicator) Stop() {
	r.ctl.Lock()
	defer r.ctl.Unlock()
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel = nil
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	r.mu.Lock()
	r.state = StateStopped
	r.mu.Unlock()
	r.log.Info("replication stopped")
}

// Set changes the options. A running Replicator closes its session and
// opens one with the new options at once; vBuckets resume where they were.
func (r *Replicator) Set(o Options) error {
	o.setDefaults()
	if err := o.check(); err != nil {
		return err
	}
	r.ctl.Lock()
	defer r.ctl.Unlock()
	r.mu.Lock()
	r.opts = o
	running := r.cancel != nil
	r.mu.Unlock()
	if running {
		select {
		case r.retune <- struct{}{}:
		default:
		}
	}
	r.log.Info("replication options changed", "connections", o.Connections, "noop_interval", o.NoopInterval,
		"idle_timeout", o.IdleTimeout, "buffer_size", o.BufferSize, "compression", o.Compression)
	return nil
}

// Options returns the current options.
func (r *Replicator) Options() Options {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts
}

// run is the loop of a started Replicator: open a session, follow it
// until it ends, back off, again.
func (r *Replicator) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	failures := 0
	for {
		s, err := r.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		msg := "cannot open a replication session; retrying"
		if err == nil {
			msg = "replication session lost; reconnecting"
			cause, retuned := r.follow(ctx, s)
			if ctx.Err() != nil {
				return
			}
			if retuned {
				failures = 0
				continue
			}
			if s.progressed.Load() {
				failures = 0
			}
			err = cause
			r.mu.Lock()
			r.reconnects++
			r.mu.Unlock()
		}
		failures++
		wait := backoff(failures, r.cfg.BackoffMin, r.cfg.BackoffMax, r.rnd)
		r.noteErr(err)
		r.setState(StateBackoff)
		r.log.Warn(msg, "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.retune:
			failures = 0
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Replicator) setState(s string) {
	r.mu.Lock()
	r.state = s
	r.mu.Unlock()
}

func (r *Replicator) noteErr(err error) {
	r.mu.Lock()
	r.lastErr, r.lastErrAt = err.Error(), time.Now()
	r.mu.Unlock()
}

// connect opens a session and requests every vBucket.
func (r *Replicator) connect(ctx context.Context) (*session, error) {
	r.setState(StateConnecting)
	opts := r.Options()
	s := &session{r: r, restart: make(chan error, 1)}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.OpenTimeout)
	defer cancel()
	c, err := stream.Dial(dctx, stream.ConsumerConfig{
		Name:         r.cfg.Name,
		Addr:         r.cfg.Addr,
		Bucket:       r.cfg.Bucket,
		Connections:  opts.Connections,
		Compression:  opts.Compression,
		NoopInterval: opts.NoopInterval,
		IdleTimeout:  opts.IdleTimeout,
		BufferSize:   opts.BufferSize,
		Dial:         r.cfg.Dial,
		Handshake:    r.cfg.Handshake,
		Handler:      s,
		Spy:          r.cfg.Spy,
		Logger:       r.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.c = c
	r.mu.Lock()
	r.sess, r.producer, r.state = s, c.Producer(), StateStreaming
	r.sessions++
	r.mu.Unlock()
	r.log.Info("replication session open", "producer", c.Producer(), "connections", opts.Connections,
		"noop_interval", opts.NoopInterval, "vbuckets", len(r.cfg.VBuckets))
	for _, vb := range r.cfg.VBuckets {
		s.request(vb)
	}
	return s, nil
}

// errRetuned ends a session whose options changed.
var errRetuned = errors.New("repl: options changed")

// follow waits for the session to end (it failed, the handler asked to
// restart it, the options changed, or ctx ended), closes it and returns
// why.
func (r *Replicator) follow(ctx context.Context, s *session) (cause error, retuned bool) {
	select {
	case <-ctx.Done():
		cause = ctx.Err()
	case <-s.c.Done():
		cause = s.c.Wait()
	case cause = <-s.restart:
	case <-r.retune:
		cause, retuned = errRetuned, true
	}
	s.c.Close()
	<-s.c.Done()
	s.stopRetries()
	r.mu.Lock()
	r.sess = nil
	for _, vb := range r.cfg.VBuckets {
		r.vbs[vb].open = false
	}
	r.mu.Unlock()
	return cause, retuned
}

// rollback drops vb, which must then be copied again from 0.
func (r *Replicator) rollback(vb uint16) error {
	if err := r.cfg.Engine.DropVBucket(vb); err != nil {
		return fmt.Errorf("cannot drop vbucket %d to roll it back: %w", vb, err)
	}
	r.cfg.Logs.Reset(vb)
	r.mu.Lock()
	r.vbs[vb].reset()
	r.mu.Unlock()
	return nil
}

// session is one stream.Consumer of a Replicator and its Handler.
type session struct {
	r          *Replicator
	c          *stream.Consumer
	restart    chan error // the handler asks the loop to reopen the session
	progressed atomic.Bool

	mu      sync.Mutex
	retries map[uint16]*time.Timer
	ended   bool
}

// fail asks the loop to close the session and reconnect.
func (s *session) fail(err error) {
	select {
	case s.restart <- err:
	default:
	}
}

// request asks for vb from what the replica holds.
func (s *session) request(vb uint16) {
	r := s.r
	r.mu.Lock()
	st := r.vbs[vb]
	resync := st.resync || (!r.ordered && st.inSnapshot())
	r.mu.Unlock()
	if resync {
		r.log.Info("copying vbucket again from 0", "vbucket", vb, "reason", "unordered snapshot not known to be complete")
		if err := r.rollback(vb); err != nil {
			s.fail(err)
			return
		}
	}
	r.mu.Lock()
	req := stream.Request{VBucket: vb, Start: st.seqno}
	if st.marked && st.snapStart <= st.seqno && st.seqno < st.snapEnd {
		req.SnapStart, req.SnapEnd = st.snapStart, st.snapEnd
	}
	r.mu.Unlock()
	if req.Start > 0 {
		req.UUID = r.cfg.Logs.UUID(vb)
	}
	if err := s.c.Request(req); err != nil && !errors.Is(err, stream.ErrClosed) {
		s.fail(fmt.Errorf("cannot request vbucket %d: %w", vb, err))
	}
}

// retryLater asks for vb again after BackoffMax, if the session still runs.
func (s *session) retryLater(vb uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	if s.retries == nil {
		s.retries = make(map[uint16]*time.Timer)
	}
	if t := s.retries[vb]; t != nil {
		t.Stop()
	}
	s.retries[vb] = time.AfterFunc(s.r.cfg.BackoffMax, func() {
		s.mu.Lock()
		ended := s.ended
		delete(s.retries, vb)
		s.mu.Unlock()
		if !ended {
			s.request(vb)
		}
	})
}

// stopRetries cancels the pending re-requests of an ended session.
func (s *session) stopRetries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	for _, t := range s.retries {
		t.Stop()
	}
}

// Started implements stream.Handler: the producer accepted the request,
// so the replica follows its history from now on.
func (s *session) Started(vb uint16, log []stream.FailoverEntry) error {
	s.r.cfg.Logs.Replace(vb, log)
	s.r.mu.Lock()
	s.r.vbs[vb].open = true
	s.r.mu.Unlock()
	s.progressed.Store(true)
	return nil
}

// Snapshot implements stream.Handler.
func (s *session) Snapshot(vb uint16, start, end uint64) error {
	s.r.mu.Lock()
	st := s.r.vbs[vb]
	st.snapStart, st.snapEnd, st.marked = start, end, true
	s.r.mu.Unlock()
	return nil
}

// Mutation implements stream.Handler: it applies m with its seqno.
func (s *session) Mutation(m *engine.Mutation) error {
	r := s.r
	if hook := r.cfg.ApplyHook; hook != nil {
		if err := hook(m); err != nil {
			return err
		}
	}
	if err := r.cfg.Engine.Apply(m); err != nil {
		return fmt.Errorf("cannot apply %v seqno %d: %w", m.Op, m.Seqno, err)
	}
	r.mu.Lock()
	st := r.vbs[m.VBucket]
	st.seqno = max(st.seqno, m.Seqno)
	r.mu.Unlock()
	r.applied.Add(1)
	return nil
}

// Ended implements stream.Handler.
func (s *session) Ended(e stream.End) {
	r := s.r
	r.mu.Lock()
	r.vbs[e.VBucket].open = false
	r.mu.Unlock()
	switch e.Reason {
	case stream.ReasonRollback:
		r.mu.Lock()
		held := r.vbs[e.VBucket].seqno
		r.mu.Unlock()
		r.log.Info("rolling back vbucket: the producer cannot resume it", "vbucket", e.VBucket, "replica_seqno", held, "producer_seqno", e.Seqno)
		if err := r.rollback(e.VBucket); err != nil {
			s.fail(err)
			return
		}
		r.mu.Lock()
		r.rollbacks++
		r.mu.Unlock()
		s.request(e.VBucket)
	case stream.ReasonHandler:
		r.log.Warn("replication stream stopped: apply failed; reopening the session", "vbucket", e.VBucket, "err", e.Err)
		s.fail(e.Err)
	case stream.ReasonShutdown:
		// The producer is stopping; the session ends next.
	default:
		err := fmt.Errorf("producer ended the stream of vbucket %d: %s %s", e.VBucket, e.Reason, e.Message)
		r.log.Warn("replication stream ended; asking again later", "vbucket", e.VBucket, "reason", e.Reason, "message", e.Message)
		r.noteErr(err)
		s.retryLater(e.VBucket)
	}
}

// Lost implements stream.Handler: the session failed; the loop reconnects.
func (s *session) Lost(e *stream.ConnError) {
	s.r.mu.Lock()
	for _, vb := range e.VBuckets {
		s.r.vbs[vb].open = false
	}
	s.r.mu.Unlock()
}

// Status is a Replicator's state, for /status.
type Status struct {
	Bucket       string     `json:"bucket"`
	Producer     string     `json:"producer"`
	ProducerNode string     `json:"producer_node,omitempty"`
	State        string     `json:"state"`
	Connections  int        `json:"connections"`
	NoopInterval string     `json:"noop_interval"`
	IdleTimeout  string     `json:"idle_timeout"`
	VBuckets     int        `json:"vbuckets"`
	CaughtUp     int        `json:"caught_up"`
	Lagging      int        `json:"lagging"`
	Applied      uint64     `json:"applied"`
	Sessions     uint64     `json:"sessions"`
	Reconnects   uint64     `json:"reconnects"`
	Rollbacks    uint64     `json:"rollbacks"`
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
	// Seqnos are the seqnos applied, in the order of Config.VBuckets (with
	// Status(true) only).
	Seqnos []uint64 `json:"seqnos,omitempty"`
}

// Status returns the Replicator's state. A vBucket is caught up when its
// stream is open and it is not inside a snapshot; the others lag. With
// seqnos, each vBucket's applied seqno is included.
func (r *Replicator) Status(seqnos bool) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{
		Bucket: r.cfg.Bucket, Producer: r.cfg.Addr, ProducerNode: r.producer, State: r.state,
		Connections: r.opts.Connections, NoopInterval: r.opts.NoopInterval.String(), IdleTimeout: r.opts.IdleTimeout.String(),
		VBuckets: len(r.cfg.VBuckets), Applied: r.applied.Load(),
		Sessions: r.sessions, Reconnects: r.reconnects, Rollbacks: r.rollbacks, LastError: r.lastErr,
	}
	if !r.lastErrAt.IsZero() {
		at := r.lastErrAt
		st.LastErrorAt = &at
	}
	if seqnos {
		st.Seqnos = make([]uint64, 0, len(r.cfg.VBuckets))
	}
	for _, vb := range r.cfg.VBuckets {
		v := r.vbs[vb]
		if v.open && !v.inSnapshot() {
			st.CaughtUp++
		}
		if seqnos {
			st.Seqnos = append(st.Seqnos, v.seqno)
		}
	}
	st.Lagging = st.VBuckets - st.CaughtUp
	return st
}
