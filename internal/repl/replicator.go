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
	// VBuckets are the vBuckets to replicate at first (SetVBuckets changes
	// them). Required.
	VBuckets []uint16
	// Standby tells the producer that this node is a whole-node standby
	// outside its vBucket chains (stream.FeatureStandby).
	Standby bool
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
	// Complete, if set, reports the vBuckets whose copy here is complete
	// up to the engine's high seqno (it was their active until a
	// rebalance's takeover drained it to the new one): an unordered
	// engine's such vBucket resumes from its seqno instead of being
	// copied again from 0.
	Complete func(vb uint16) bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// vbState is what a Replicator knows of one vBucket.
type vbState struct {
	seqno     uint64 // the highest seqno applied
	snapStart uint64 // the last snapshot marker received
	snapEnd   uint64
	marked    bool   // snapStart and snapEnd are set
	open      bool   // its stream is started on the current session
	resync    bool   // drop it and start from 0 before the next request
	started   bool   // a stream of it started since the Replicator was made
	high      uint64 // the producer's high seqno, as last announced (or a snapshot's end)
	behind    uint64 // the producer's unacknowledged bytes of it, as last announced
	bytes     uint64 // value bytes applied
	removing  bool   // SetVBuckets is taking it out: request it no more
}

// lag returns how many seqnos the replica is behind the producer's last
// announced high seqno.
func (st *vbState) lag() uint64 {
	if st.high > st.seqno {
		return st.high - st.seqno
	}
	return 0
}

// caughtUp: its stream is open, it is not inside a snapshot, and it holds
// the producer's high seqno as last announced.
func (st *vbState) caughtUp() bool { return st.open && !st.inSnapshot() && st.seqno >= st.high }

// inSnapshot reports whether a snapshot was begun and not finished: the
// vBucket is consistent only once it holds the snapshot's end.
func (st *vbState) inSnapshot() bool { return st.marked && st.seqno < st.snapEnd }

// reset forgets what the vBucket held and what the producer announced of
// it (a rollback: the producer's history is not the one it announced).
func (st *vbState) reset() { *st = vbState{started: st.started, removing: st.removing} }

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
	list       []uint16   // the vBuckets replicated, ascending
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
		retune:  make(chan struct{}, 1),
		state:   StateStopped,
	}
	list, err := checkVBuckets(cfg.VBuckets)
	if err != nil {
		return nil, err
	}
	r.list = list
	r.cfg.VBuckets = nil // r.list from now on
	for _, vb := range list {
		r.vbs = r.addState(r.vbs, vb)
	}
	return r, nil
}

// checkVBuckets returns vbs sorted, or an error if it is empty or names a
// vBucket twice.
func checkVBuckets(vbs []uint16) ([]uint16, error) {
	if len(vbs) == 0 {
		return nil, errors.New("repl: no vbuckets")
	}
	list := slices.Clone(vbs)
	slices.Sort(list)
	for i := 1; i < len(list); i++ {
		if list[i] == list[i-1] {
			return nil, fmt.Errorf("repl: vbucket %d given twice", list[i])
		}
	}
	return list, nil
}

// addState returns vbs with a fresh state for vb, which starts from the
// engine's high seqno. The queue engine's snapshots do not come in seqno
// order, so a queue vBucket holding data is copied again from 0, unless
// Config.Complete says it holds no partial snapshot.
func (r *Replicator) addState(vbs []*vbState, vb uint16) []*vbState {
	if int(vb) >= len(vbs) {
		vbs = append(vbs, make([]*vbState, int(vb)+1-len(vbs))...)
	}
	st := &vbState{seqno: r.cfg.Engine.HighSeqno(vb)}
	st.resync = !r.ordered && st.seqno > 0 && (r.cfg.Complete == nil || !r.cfg.Complete(vb))
	vbs[vb] = st
	return vbs
}

// VBuckets returns the vBuckets replicated, ascending.
func (r *Replicator) VBuckets() []uint16 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

// removeTimeout bounds how long SetVBuckets waits for the producer to end
// the streams of the vBuckets it removes; past it the session is closed
// (and reopened without them), which ends them for sure.
const removeTimeout = 5 * time.Second

// SetVBuckets changes the vBuckets replicated, without touching the
// others: on an open session the new ones are requested at once and the
// removed ones are closed (stream.Consumer.CloseStream). It returns once
// nothing more is applied to a removed vBucket, so the caller may then
// make it active or drop it. What a removed vBucket holds stays. vbs must
// not be empty.
func (r *Replicator) SetVBuckets(vbs []uint16) error {
	list, err := checkVBuckets(vbs)
	if err != nil {
		return err
	}
	r.ctl.Lock()
	defer r.ctl.Unlock()
	r.mu.Lock()
	var added, removed []uint16
	for _, vb := range list {
		if int(vb) >= len(r.vbs) || r.vbs[vb] == nil {
			added = append(added, vb)
			r.vbs = r.addState(r.vbs, vb)
		}
	}
	for _, vb := range r.list {
		if _, found := slices.BinarySearch(list, vb); !found {
			removed = append(removed, vb)
			r.vbs[vb].removing = true
		}
	}
	r.list = list
	s := r.sess
	r.mu.Unlock()
	if len(added)+len(removed) == 0 {
		return nil
	}
	r.log.Info("replicated vbuckets changed", "added", len(added), "removed", len(removed), "vbuckets", len(list))
	if s != nil {
		s.remove(removed)
	}
	r.mu.Lock()
	for _, vb := range removed {
		r.vbs[vb] = nil
	}
	s = r.sess
	r.mu.Unlock()
	if s != nil {
		for _, vb := range added {
			s.request(vb)
		}
	}
	return nil
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
	s := &session{r: r, restart: make(chan error, 1), persist: newSessionPersist(r.cfg.Engine)}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.OpenTimeout)
	defer cancel()
	c, err := stream.Dial(dctx, stream.ConsumerConfig{
		Name:         r.cfg.Name,
		Addr:         r.cfg.Addr,
		Bucket:       r.cfg.Bucket,
		Connections:  opts.Connections,
		Compression:  opts.Compression,
		Seqnos:       true,
		Acks:         true,
		Standby:      r.cfg.Standby,
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
	list := slices.Clone(r.list)
	r.mu.Unlock()
	r.log.Info("replication session open", "producer", c.Producer(), "connections", opts.Connections,
		"noop_interval", opts.NoopInterval, "vbuckets", len(list))
	// A vBucket SetVBuckets adds from now on is requested by it; one it
	// removes is skipped by request.
	for _, vb := range list {
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
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchPersisted(wctx)
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
	for _, st := range r.vbs {
		if st != nil {
			st.open = false
		}
	}
	r.mu.Unlock()
	s.reportRefusals(true)
	return cause, retuned
}

// rollback drops vb, which must then be copied again from 0.
func (r *Replicator) rollback(vb uint16) error {
	if err := r.cfg.Engine.DropVBucket(vb); err != nil {
		return fmt.Errorf("cannot drop vbucket %d to roll it back: %w", vb, err)
	}
	r.cfg.Logs.Reset(vb)
	r.mu.Lock()
	if st := r.vbs[vb]; st != nil {
		st.reset()
	}
	r.mu.Unlock()
	return nil
}

// state returns vb's state, nil when vb is not replicated (r.mu held).
func (r *Replicator) stateOf(vb uint16) *vbState {
	if int(vb) >= len(r.vbs) {
		return nil
	}
	return r.vbs[vb]
}

// session is one stream.Consumer of a Replicator and its Handler.
type session struct {
	r          *Replicator
	c          *stream.Consumer
	restart    chan error // the handler asks the loop to reopen the session
	progressed atomic.Bool
	persist    *sessionPersist // what the engine fsynced (persist.go)

	mu      sync.Mutex // also serialises request with remove
	retries map[uint16]*time.Timer
	// tries counts, per vBucket, the streams the producer ended on its own
	// since the vBucket last started: the re-request waits a backoff of
	// that many failures (a producer still applying the map that makes it
	// the active is asked again within 100 ms, a lasting refusal every
	// BackoffMax).
	tries   map[uint16]int
	ended   bool
	removed map[uint16]chan struct{} // closed when a removed vBucket's stream is over

	// Streams the producer ended on its own (refused, engine error), since
	// the last log line about them: a consumer whose map is stale is
	// refused every vBucket every BackoffMax, which must not make a line
	// each time.
	refused   int
	refusedE  stream.End
	refusedAt time.Time
}

// fail asks the loop to close the session and reconnect.
func (s *session) fail(err error) {
	select {
	case s.restart <- err:
	default:
	}
}

// request asks for vb from what the replica holds, unless vb is not (or
// no longer) replicated.
func (s *session) request(vb uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	r := s.r
	r.mu.Lock()
	st := r.stateOf(vb)
	if st == nil || st.removing {
		r.mu.Unlock()
		return
	}
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
	// ErrStreamExists: the session's first requests and SetVBuckets both
	// asked for a vBucket added meanwhile.
	if err := s.c.Request(req); err != nil && !errors.Is(err, stream.ErrClosed) && !errors.Is(err, stream.ErrStreamExists) {
		s.fail(fmt.Errorf("cannot request vbucket %d: %w", vb, err))
	}
}

// remove closes the streams of vbs (which SetVBuckets marked removing)
// and waits until they are over: ended by the producer, or lost with the
// session. When the producer does not end them within removeTimeout, the
// session is failed, which ends them.
func (s *session) remove(vbs []uint16) {
	if len(vbs) == 0 {
		return
	}
	var waits []chan struct{}
	s.mu.Lock()
	if s.removed == nil {
		s.removed = make(map[uint16]chan struct{})
	}
	for _, vb := range vbs {
		if t := s.retries[vb]; t != nil {
			t.Stop()
			delete(s.retries, vb)
		}
		if s.ended {
			continue
		}
		done := make(chan struct{})
		s.removed[vb] = done
		// The lock keeps request from asking for vb meanwhile: either the
		// stream exists and is closed here, or it does not and will not.
		if err := s.c.CloseStream(vb); err != nil {
			delete(s.removed, vb) // no stream (ErrNoStream), or the session is over
			continue
		}
		waits = append(waits, done)
	}
	s.mu.Unlock()
	timeout := time.NewTimer(removeTimeout)
	defer timeout.Stop()
	for _, w := range waits {
		select {
		case <-w:
		case <-s.c.Done():
		case <-timeout.C:
			s.fail(fmt.Errorf("the producer did not end %d removed vbucket streams within %v", len(waits), removeTimeout))
			<-s.c.Done()
			return
		}
	}
}

// over reports whether vb was removed, and if so tells remove that its
// stream is over.
func (s *session) over(vb uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	done, ok := s.removed[vb]
	if ok {
		close(done)
		delete(s.removed, vb)
	}
	return ok
}

// retryLater asks for vb again, if the session still runs, after a
// backoff that grows with the refusals of vb since it last started
// (BackoffMin doubling to BackoffMax).
func (s *session) retryLater(vb uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	if s.retries == nil {
		s.retries = make(map[uint16]*time.Timer)
		s.tries = make(map[uint16]int)
	}
	if t := s.retries[vb]; t != nil {
		t.Stop()
	}
	s.tries[vb]++
	wait := backoff(s.tries[vb], s.r.cfg.BackoffMin, s.r.cfg.BackoffMax, s.r.rnd)
	s.retries[vb] = time.AfterFunc(wait, func() {
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
	for vb, done := range s.removed {
		close(done)
		delete(s.removed, vb)
	}
}

// errNotReplicated is a handler's answer for a vBucket SetVBuckets took
// out while its stream was still delivering.
var errNotReplicated = errors.New("repl: vbucket no longer replicated")

// Started implements stream.Handler: the producer accepted the request,
// so the replica follows its history from now on.
func (s *session) Started(vb uint16, log []stream.FailoverEntry) error {
	s.r.mu.Lock()
	st := s.r.stateOf(vb)
	if st == nil || st.removing {
		s.r.mu.Unlock()
		return errNotReplicated
	}
	st.open, st.started = true, true
	s.r.mu.Unlock()
	s.mu.Lock()
	delete(s.tries, vb)
	s.mu.Unlock()
	s.persist.forget(vb)
	s.r.cfg.Logs.Replace(vb, log)
	s.progressed.Store(true)
	return nil
}

// Snapshot implements stream.Handler. A marker's end is the producer's
// high seqno when it was made.
func (s *session) Snapshot(vb uint16, start, end uint64) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	st := s.r.stateOf(vb)
	if st == nil || st.removing {
		return errNotReplicated
	}
	st.snapStart, st.snapEnd, st.marked = start, end, true
	st.high = max(st.high, end)
	return nil
}

// Seqno implements stream.SeqnoHandler: the producer's high seqno and
// unacknowledged bytes of vb.
func (s *session) Seqno(vb uint16, high, behind uint64) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if st := s.r.stateOf(vb); st != nil {
		st.high, st.behind = max(st.high, high), behind
	}
}

// Mutation implements stream.Handler: it applies m with its seqno.
func (s *session) Mutation(m *engine.Mutation) error {
	r := s.r
	if hook := r.cfg.ApplyHook; hook != nil {
		if err := hook(m); err != nil {
			return err
		}
	}
	r.mu.Lock()
	st := r.stateOf(m.VBucket)
	gone := st == nil || st.removing
	r.mu.Unlock()
	if gone {
		return errNotReplicated
	}
	if err := r.cfg.Engine.Apply(m); err != nil {
		return fmt.Errorf("cannot apply %v seqno %d: %w", m.Op, m.Seqno, err)
	}
	r.mu.Lock()
	if st := r.stateOf(m.VBucket); st != nil {
		st.seqno = max(st.seqno, m.Seqno)
		st.high = max(st.high, m.Seqno)
		st.bytes += uint64(len(m.Value))
	}
	r.mu.Unlock()
	r.applied.Add(1)
	return nil
}

// Ended implements stream.Handler. It runs under the session's lock up
// to the rollback, so that SetVBuckets never takes a vBucket out while it
// is being dropped.
func (s *session) Ended(e stream.End) {
	r := s.r
	vb := e.VBucket
	s.mu.Lock()
	if done, ok := s.removed[vb]; ok { // SetVBuckets took it out
		close(done)
		delete(s.removed, vb)
		s.mu.Unlock()
		return
	}
	r.mu.Lock()
	st := r.stateOf(vb)
	gone := st == nil || st.removing
	if st != nil {
		st.open = false
	}
	held := uint64(0)
	if st != nil {
		held = st.seqno
	}
	r.mu.Unlock()
	if gone {
		s.mu.Unlock()
		return
	}
	switch e.Reason {
	case stream.ReasonRollback:
		r.log.Info("rolling back vbucket: the producer cannot resume it", "vbucket", vb, "replica_seqno", held, "producer_seqno", e.Seqno)
		err := r.rollback(vb)
		s.mu.Unlock()
		if err != nil {
			s.fail(err)
			return
		}
		r.mu.Lock()
		r.rollbacks++
		r.mu.Unlock()
		s.request(vb)
	case stream.ReasonHandler:
		s.mu.Unlock()
		r.log.Warn("replication stream stopped: apply failed; reopening the session", "vbucket", vb, "err", e.Err)
		s.fail(e.Err)
	case stream.ReasonShutdown:
		s.mu.Unlock()
		// The producer is stopping; the session ends next.
	default:
		s.mu.Unlock()
		err := fmt.Errorf("producer ended the stream of vbucket %d: %s %s", vb, e.Reason, e.Message)
		r.noteErr(err)
		s.noteRefused(e)
		s.retryLater(vb)
	}
}

// refusalReport is the least time between two log lines of a session
// about the streams the producer ended on its own.
const refusalReport = 10 * time.Second

// noteRefused counts a stream the producer ended on its own and logs the
// count at most once per refusalReport.
func (s *session) noteRefused(e stream.End) {
	s.mu.Lock()
	if s.refused == 0 {
		s.refusedE = e
	}
	s.refused++
	s.mu.Unlock()
	s.reportRefusals(false)
}

// reportRefusals logs the streams counted by noteRefused since the last
// report, if the interval has passed or final is set.
func (s *session) reportRefusals(final bool) {
	s.mu.Lock()
	n, e := s.refused, s.refusedE
	if n == 0 || (!final && time.Since(s.refusedAt) < refusalReport) {
		s.mu.Unlock()
		return
	}
	s.refused, s.refusedAt = 0, time.Now()
	s.mu.Unlock()
	s.r.log.Warn("replication streams ended by the producer; asking again later", "count", n,
		"first_vbucket", e.VBucket, "reason", e.Reason, "message", e.Message, "retry_within", s.r.cfg.BackoffMax)
}

// Lost implements stream.Handler: the session failed; the loop reconnects.
func (s *session) Lost(e *stream.ConnError) {
	s.r.mu.Lock()
	for _, vb := range e.VBuckets {
		if st := s.r.stateOf(vb); st != nil {
			st.open = false
		}
	}
	s.r.mu.Unlock()
	for _, vb := range e.VBuckets {
		s.over(vb)
	}
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
	// LagSeqnos and LagBytes sum the lag of every vBucket (VBStatus).
	LagSeqnos uint64 `json:"lag_seqnos"`
	LagBytes  uint64 `json:"lag_bytes"`
	// Unknown counts the vBuckets no stream has started for since the
	// Replicator was made: how far behind they are is not known.
	Unknown int `json:"unknown"`
	// Seqnos are the seqnos applied, in the order of VBucketList (with
	// Status(true) only).
	Seqnos []uint64 `json:"seqnos,omitempty"`
	// VBucketList are the vBuckets replicated and PerVBucket their state,
	// in the same order (with Status(true) only).
	VBucketList []uint16   `json:"vbucket_list,omitempty"`
	PerVBucket  []VBStatus `json:"per_vbucket,omitempty"`
}

// VBStatus is a replica vBucket's replication state.
type VBStatus struct {
	VBucket uint16 `json:"vbucket"`
	// Seqno is the highest seqno applied; High the producer's high seqno
	// as last announced (seqno message, snapshot marker or mutation).
	Seqno uint64 `json:"seqno"`
	High  uint64 `json:"high"`
	// LagSeqnos is High - Seqno (0 when not below); LagBytes the bytes of
	// the vBucket's mutations the producer had not seen acknowledged when
	// it last announced, while the replica lags (the producer does not know
	// the size of what it has not read from its engine yet).
	LagSeqnos uint64 `json:"lag_seqnos"`
	LagBytes  uint64 `json:"lag_bytes"`
	// Bytes are the value bytes applied since the Replicator was made.
	Bytes uint64 `json:"bytes"`
	// State: "caught_up", "snapshot" (inside a snapshot), "behind" (open,
	// below the producer's high seqno), "waiting" (no open stream) or
	// "unknown" (no stream started yet).
	State string `json:"state"`
}

// Status returns the Replicator's state. A vBucket is caught up when its
// stream is open, it is not inside a snapshot and it holds the producer's
// high seqno as last announced; the others lag. With seqnos, each
// vBucket's state is included.
func (r *Replicator) Status(seqnos bool) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Status{
		Bucket: r.cfg.Bucket, Producer: r.cfg.Addr, ProducerNode: r.producer, State: r.state,
		Connections: r.opts.Connections, NoopInterval: r.opts.NoopInterval.String(), IdleTimeout: r.opts.IdleTimeout.String(),
		VBuckets: len(r.list), Applied: r.applied.Load(),
		Sessions: r.sessions, Reconnects: r.reconnects, Rollbacks: r.rollbacks, LastError: r.lastErr,
	}
	if !r.lastErrAt.IsZero() {
		at := r.lastErrAt
		st.LastErrorAt = &at
	}
	if seqnos {
		st.Seqnos = make([]uint64, 0, len(r.list))
		st.VBucketList = slices.Clone(r.list)
		st.PerVBucket = make([]VBStatus, 0, len(r.list))
	}
	for _, vb := range r.list {
		v := r.vbs[vb]
		vs := VBStatus{VBucket: vb, Seqno: v.seqno, High: v.high, LagSeqnos: v.lag(), Bytes: v.bytes}
		if vs.LagSeqnos > 0 {
			vs.LagBytes = v.behind
		}
		switch {
		case !v.started:
			vs.State = "unknown"
			st.Unknown++
		case v.caughtUp():
			vs.State = "caught_up"
			st.CaughtUp++
		case !v.open:
			vs.State = "waiting"
		case v.inSnapshot():
			vs.State = "snapshot"
		default:
			vs.State = "behind"
		}
		st.LagSeqnos += vs.LagSeqnos
		st.LagBytes += vs.LagBytes
		if seqnos {
			st.Seqnos = append(st.Seqnos, v.seqno)
			st.PerVBucket = append(st.PerVBucket, vs)
		}
	}
	st.Lagging = st.VBuckets - st.CaughtUp
	return st
}

// Lag is how far a replica is from its producer, as far as it knows.
type Lag struct {
	// VBuckets are those not known to hold everything the producer had
	// announced: inside a snapshot, below its last announced high seqno,
	// or never streamed since the Replicator was made.
	VBuckets int
	// Seqnos and Bytes sum their lag (VBStatus).
	Seqnos, Bytes uint64
	// Unknown are those never streamed.
	Unknown int
}

// Behind returns the replica's lag as far as it knows it, whether or not
// a session is open: what the producer announced last against what was
// applied. A promotion uses it when the producer may be gone.
func (r *Replicator) Behind() Lag {
	r.mu.Lock()
	defer r.mu.Unlock()
	var l Lag
	for _, vb := range r.list {
		v := r.vbs[vb]
		switch {
		case !v.started:
			l.Unknown++
			l.VBuckets++
		case v.inSnapshot() || v.seqno < v.high:
			l.VBuckets++
			l.Seqnos += v.lag()
			if v.lag() > 0 {
				l.Bytes += v.behind
			}
		}
	}
	return l
}
