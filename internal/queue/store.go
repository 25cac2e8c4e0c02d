package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// Errors returned by the Store. Callers test them with errors.Is.
var (
	ErrEmpty           = errors.New("queue: empty")                                    // the queue holds no record
	ErrSubscribed      = errors.New("queue: channel has subscribers")                  // Pop on a subscribed channel
	ErrChannelRemoved  = errors.New("queue: channel removed")                          // ends the consumers of a removed channel
	ErrNoChannels      = errors.New("queue: no channel given")                         // Push without channels
	ErrTooManyChannels = errors.New("queue: more channels than a push may name")       // Push to over engine.MaxPushChannels
	ErrBadChannelName  = errors.New("queue: bad channel name")                         // not 1..255 bytes of [A-Za-z0-9_-]
	ErrBadSubscriber   = errors.New("queue: bad subscriber name")                      // not 0..255 bytes of [A-Za-z0-9_-]
	ErrValueTooBig     = errors.New("queue: value too big")                            // over Config.MaxValueSize
	ErrNoSpace         = errors.New("queue: no space left on device")                  // the disk is full; nothing was stored
	ErrClosed          = errors.New("queue: closed")                                   // the store or the consumer was closed
	ErrCorrupt         = errors.New("queue: corrupt file")                             // a state or journal file is damaged
	ErrStreamLagged    = errors.New("queue: stream consumer fell too far behind")      // ends a Stream whose sink is too slow
	ErrBadVBucket      = errors.New("queue: vbucket out of range")                     // a vBucket >= Config.VBuckets
	ErrBadMutation     = errors.New("queue: mutation the queue engine does not apply") // Apply of a kv or log operation
	ErrUnsubscribed    = errors.New("queue: subscriber removed")                       // ends the consumers of a removed subscriber
)

// Durability is how the store keeps records across restarts.
type Durability uint8

// Durability modes.
const (
	// DurabilityMemory keeps records in memory and their overflow on disk.
	// A clean Close saves the rings and Open restores them, order
	// included; a crash loses what was in memory, and the overflow comes
	// back as its last index (written every IndexInterval) describes it.
	DurabilityMemory Durability = iota
	// DurabilityJournal writes every push and pop to an append-only
	// journal before acknowledging it; with FsyncInterval 0 the journal is
	// fsynced (group commit) before any push or pop returns, so a crash
	// loses nothing acknowledged and brings back nothing popped.
	DurabilityJournal
)

// String returns "memory" or "journal".
func (d Durability) String() string {
	if d == DurabilityJournal {
		return "journal"
	}
	return "memory"
}

// ParseDurability parses "memory" or "journal".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "memory":
		return DurabilityMemory, nil
	case "journal":
		return DurabilityJournal, nil
	}
	return 0, fmt.Errorf("unknown queue durability %q (want memory or journal)", s)
}

// Defaults of Config.
const (
	DefaultRingSize      = 64 << 20
	DefaultSegmentSize   = 64 << 20
	DefaultJournalSize   = 64 << 20
	DefaultIndexInterval = 10 * time.Second
)

// Config configures a Store.
type Config struct {
	// Dir holds the state file and the overflow and journal directories.
	Dir string
	// FS is the file system; nil means vfs.Default.
	FS vfs.FS
	// VBuckets is the cluster's vBucket count; 0 means vbucket.Default.
	VBuckets int
	// RingSize is the memory ring capacity of a queue in bytes, record
	// headers (16 bytes each) included; 0 means DefaultRingSize.
	RingSize int64
	// RingSizeByPrefix overrides RingSize for channels whose name starts
	// with a key. No key may be a prefix of another.
	RingSizeByPrefix map[string]int64
	// Durability is DurabilityMemory (the default) or DurabilityJournal.
	Durability Durability
	// FsyncInterval is, in journal mode, how often the journal is fsynced;
	// 0 means before every acknowledgement (group commit).
	FsyncInterval time.Duration
	// JournalSize is the journal length that triggers a checkpoint (the
	// rings and the overflow index saved, the journal restarted); it grows
	// to twice the bytes held in rings when that is larger. 0 means
	// DefaultJournalSize.
	JournalSize int64
	// SegmentSize is the size at which an overflow segment file is
	// closed and a new one started; 0 means DefaultSegmentSize.
	SegmentSize int64
	// IndexInterval is, in memory mode, how often the overflow index is
	// written (it is also written when queues appear, change or go away);
	// 0 means DefaultIndexInterval, negative means only then and on Sync.
	IndexInterval time.Duration
	// MaxValueSize is the largest value accepted; 0 means
	// engine.MaxValueLen, the most it may be. A value larger than a ring
	// goes straight to the overflow.
	MaxValueSize int
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of the subscribers' idle times; nil means time.Now.
	Now func() time.Time
}

func (c *Config) normalize() error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Dir == "" {
		return errors.New("queue: no directory configured")
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.VBuckets == 0 {
		c.VBuckets = vbucket.Default
	}
	if c.VBuckets < 1 || c.VBuckets > vbucket.Max {
		return fmt.Errorf("queue: %d vbuckets is out of range 1..%d", c.VBuckets, vbucket.Max)
	}
	if c.RingSize == 0 {
		c.RingSize = DefaultRingSize
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = DefaultSegmentSize
	}
	if c.JournalSize == 0 {
		c.JournalSize = DefaultJournalSize
	}
	if c.IndexInterval == 0 {
		c.IndexInterval = DefaultIndexInterval
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = engine.MaxValueLen
	}
	if c.RingSize < 0 || c.SegmentSize < 0 || c.JournalSize < 0 || c.FsyncInterval < 0 {
		return errors.New("queue: negative size or interval in config")
	}
	if c.MaxValueSize < 0 || c.MaxValueSize > engine.MaxValueLen {
		return fmt.Errorf("queue: max value size %d is out of range 0..%d", c.MaxValueSize, engine.MaxValueLen)
	}
	if c.Durability > DurabilityJournal {
		return fmt.Errorf("queue: unknown durability %d", c.Durability)
	}
	for p, size := range c.RingSizeByPrefix {
		if p == "" || size <= 0 {
			return fmt.Errorf("queue: ring size %d for prefix %q: want a non-empty prefix and a positive size", size, p)
		}
		for o := range c.RingSizeByPrefix {
			if o != p && strings.HasPrefix(o, p) {
				return fmt.Errorf("queue: ring size prefixes %q and %q overlap", p, o)
			}
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func (c *Config) ringSize(channel string) int64 {
	for p, size := range c.RingSizeByPrefix {
		if strings.HasPrefix(channel, p) {
			return size
		}
	}
	return c.RingSize
}

// Counters are totals since Open of records pushed by Push (one per
// channel named) and popped by Pop or a Consumer.
type Counters struct {
	PushedRecords, PushedBytes uint64
	PoppedRecords, PoppedBytes uint64
}

// vbState is one vBucket's seqno and live streams.
type vbState struct {
	seqno uint64
	// lastRemoval is the seqno of the latest pop or removal; a stream
	// cannot resume from before it (see Stream).
	lastRemoval uint64
	streams     []*streamer
}

// Store is the queue engine: every queue channel of a node. It is safe for
// concurrent use. It implements engine.Engine.
type Store struct {
	cfg Config
	fs  vfs.FS
	log *slog.Logger

	mu              sync.Mutex
	closed          bool
	channels        map[string]*channel
	vbs             []vbState
	rr              uint32 // round-robin vBucket choice
	states          *vbmap.States
	nextQueueID     uint64
	journal         *journal // nil in memory mode
	takenVB         uint16   // the vBucket of the first record the last take popped (mu)
	sinceCheckpoint int64
	checkpointAt    int64
	garbage         []string // files to delete after the next state write
	enc             []byte
	targets         []pushTarget // Push's scratch, under mu
	items           []popItem
	marks           []qMark
	batch           pushBatch // PushBatch's, under mu

	pushedRecords, pushedBytes atomic.Uint64
	poppedRecords, poppedBytes atomic.Uint64

	stopIndex chan struct{}
	bg        sync.WaitGroup
}

var _ engine.Engine = (*Store)(nil)

// Open opens the store in cfg.Dir, restoring what it holds: after a clean
// Close everything, order included; after a crash what the durability
// mode promises (see Durability).
func Open(cfg Config) (*Store, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	s := &Store{
		cfg:         cfg,
		fs:          cfg.FS,
		log:         cfg.Logger.With("engine", "queue"),
		channels:    make(map[string]*channel),
		vbs:         make([]vbState, cfg.VBuckets),
		states:      vbmap.NewStates(cfg.VBuckets),
		nextQueueID: 1,
		stopIndex:   make(chan struct{}),
	}
	for _, d := range []string{cfg.Dir, s.overflowDir(), s.journalDir()} {
		if err := s.fs.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cannot create queue directory %q: %w", d, err)
		}
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	var records int64
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			records += q.records()
		}
	}
	s.log.Info("queue store open", "dir", cfg.Dir, "durability", cfg.Durability.String(),
		"channels", len(s.channels), "records", records)
	if s.journal != nil {
		s.journal.start()
	} else if cfg.IndexInterval > 0 {
		s.bg.Add(1)
		go s.indexLoop()
	}
	return s, nil
}

func (s *Store) overflowDir() string { return filepath.Join(s.cfg.Dir, "overflow") }
func (s *Store) journalDir() string  { return filepath.Join(s.cfg.Dir, "journal") }
func (s *Store) queueDir(id uint64) string {
	return filepath.Join(s.overflowDir(), fmt.Sprintf("%016x", id))
}

func (s *Store) indexLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.IndexInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopIndex:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if !s.closed {
			s.writeIndex()
		}
		s.mu.Unlock()
	}
}

// newChannel creates a channel with its first queue.
func (s *Store) newChannel(name string, subscribed bool, subscriber string) *channel {
	ch := &channel{
		name:       name,
		subscribed: subscribed,
		ringSize:   s.cfg.ringSize(name),
		vbits:      make([]uint64, (len(s.vbs)+63)/64),
	}
	ch.queues = []*queue{s.newQueue(ch, subscriber, s.nextQueueID)}
	s.nextQueueID++
	s.channels[name] = ch
	return ch
}

func (s *Store) newQueue(ch *channel, subscriber string, id uint64) *queue {
	q := &queue{id: id, ch: ch, subscriber: subscriber, activeAt: s.cfg.Now()}
	q.ring.limit = ch.ringSize
	q.of = overflow{fs: s.fs, log: s.log, dir: s.queueDir(id), segSize: s.cfg.SegmentSize, garbage: &s.garbage}
	return q
}

// forget drops a channel: its consumers end with why and its files go to
// the garbage list.
func (s *Store) forget(ch *channel, why error) {
	for _, q := range ch.queues {
		q.end(why)
		q.of.close()
		if q.of.dirReady {
			s.garbage = append(s.garbage, q.of.dir)
		}
	}
	delete(s.channels, ch.name)
}

// logEntry appends an encoded entry to the journal (nothing in memory
// mode) and returns its sequence number.
func (s *Store) logEntry(b []byte) (uint64, error) {
	if s.journal == nil {
		return 0, nil
	}
	lsn, err := s.journal.append(b)
	if err != nil {
		return 0, classify(err)
	}
	s.sinceCheckpoint += int64(len(b))
	return lsn, nil
}

// durable waits, in journal mode with FsyncInterval 0, until lsn is on disk.
func (s *Store) durable(ctx context.Context, lsn uint64) error {
	if s.journal == nil || s.journal.interval > 0 || lsn == 0 {
		return nil
	}
	return classify(s.journal.wait(ctx, lsn))
}

// PopWaits reports whether a Pop waits for an fsync of the journal
// (journal mode with an fsync per write) before it returns.
func (s *Store) PopWaits() bool { return s.journal != nil && s.journal.interval == 0 }

// classify marks a full disk with ErrNoSpace.
func classify(err error) error {
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

func validSubscriber(name string) bool {
	return name == "" || engine.ValidChannelString(name)
}

// Push stores value in every channel named (1..255 of them, created on
// first use), in every subscriber queue of each. It succeeds only when the
// value is stored everywhere; otherwise nothing is stored. The record's
// vBucket is vbucket.Of(routingKey) when routingKey is not empty, else the
// next Active one round-robin (engine.ErrNoActiveVBucket when there is
// none); each channel's copy gets its own seqno there. A
// full disk while overflowing fails the push with ErrNoSpace. In journal
// mode with FsyncInterval 0, Push returns after the journal is on disk (or
// ctx is done: the record may then be stored without having been
// acknowledged).
func (s *Store) Push(ctx context.Context, channels []string, value, routingKey []byte) error {
	vb := -1
	if len(routingKey) > 0 {
		vb = int(vbucket.Of(routingKey, len(s.vbs)))
	}
	return s.pushTo(ctx, channels, value, vb, false)
}

// PushVB is Push to vBucket vb, which the caller chose (a routing client
// spreads its pushes over every vBucket of the cluster): it fails with
// ErrBadVBucket for a vBucket out of range and engine.ErrNotActive unless
// vb is Active here.
func (s *Store) PushVB(ctx context.Context, channels []string, value []byte, vb uint16) error {
	if int(vb) >= len(s.vbs) {
		return fmt.Errorf("%w: %d", ErrBadVBucket, vb)
	}
	return s.pushTo(ctx, channels, value, int(vb), true)
}

// pushTo is Push to vBucket vb, or round-robin when vb is -1; active
// requires vb to be Active.
func (s *Store) pushTo(ctx context.Context, channels []string, value []byte, want int, active bool) error {
	if len(channels) == 0 {
		return ErrNoChannels
	}
	if len(channels) > engine.MaxPushChannels {
		return ErrTooManyChannels
	}
	for _, name := range channels {
		if !engine.ValidChannelString(name) {
			return fmt.Errorf("%w: %q", ErrBadChannelName, name)
		}
	}
	if len(value) > s.cfg.MaxValueSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooBig, len(value), s.cfg.MaxValueSize)
	}
	s.mu.Lock()
	lsn, err := s.pushLocked(channels, value, want, active, nil)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.pushedRecords.Add(uint64(len(channels)))
	s.pushedBytes.Add(uint64(len(channels) * len(value)))
	return s.durable(ctx, lsn)
}

// pushLocked is pushTo's part under mu, with the arguments checked.
func (s *Store) pushLocked(channels []string, value []byte, want int, active bool, b *pushBatch) (uint64, error) {
	if s.closed {
		return 0, ErrClosed
	}
	targets := s.targets[:0]
	var vb uint16
	switch {
	case want < 0:
		var ok bool
		if vb, ok = s.states.NextActive(s.rr); !ok {
			return 0, engine.ErrNoActiveVBucket
		}
		s.rr = uint32(vb) + 1
	case active && s.states.Get(uint16(want)) != vbmap.Active:
		return 0, fmt.Errorf("queue: push to vbucket %d: %w", want, engine.ErrNotActive)
	default:
		vb = uint16(want)
	}
	for i, name := range channels {
		targets = append(targets, pushTarget{channel: name, seqno: s.vbs[vb].seqno + 1 + uint64(i)})
		if ch := s.channels[name]; ch != nil {
			ch.removed = false // made again after its removal
		}
	}
	lsn, err := s.push(vb, targets, value, true, b)
	s.targets = targets[:0]
	return lsn, err
}

// BatchPush is one push of a PushBatch.
type BatchPush struct {
	Channels   []string
	Value      []byte
	RoutingKey []byte // as Push's, when VBucket is negative
	VBucket    int    // >= 0: PushVB to this vBucket
}

// pushBatch is what PushBatch defers to the end of the batch: the marks to
// commit or roll back, what to undo on rollback, and what to emit after
// the commit.
type pushBatch struct {
	marks   []qMark
	seqnos  []vbSeqno // each vBucket's seqno before a push of the batch
	created []*channel
	emits   []engine.Mutation
	newDir  bool
}

type vbSeqno struct {
	vb    uint16
	seqno uint64
}

// PushBatch does the pushes given, in order, and returns the error of each
// (in errs, reused), as if each were a Push (routing key) or a PushVB
// (VBucket set) with ctx. In memory mode it stores them all under one hold
// of the lock and writes the records that go to a queue's disk overflow in
// one call per overflow: a server pushes the requests it read together
// this way. When a write fails (or anything but a push's own arguments or
// vBucket fails), none of them is kept and each is pushed again on its
// own, to fail or succeed alone (ErrNoSpace on a full disk).
func (s *Store) PushBatch(ctx context.Context, pushes []BatchPush, errs []error) []error {
	errs = errs[:0]
	push := func(p BatchPush) error {
		if p.VBucket >= 0 {
			return s.PushVB(ctx, p.Channels, p.Value, uint16(p.VBucket))
		}
		return s.Push(ctx, p.Channels, p.Value, p.RoutingKey)
	}
	if s.journal != nil || len(pushes) == 1 {
		for _, p := range pushes {
			errs = append(errs, push(p))
		}
		return errs
	}
	for _, p := range pushes {
		var err error
		switch {
		case len(p.Channels) == 0:
			err = ErrNoChannels
		case len(p.Channels) > engine.MaxPushChannels:
			err = ErrTooManyChannels
		case len(p.Value) > s.cfg.MaxValueSize:
			err = fmt.Errorf("%w: %d bytes, the limit is %d", ErrValueTooBig, len(p.Value), s.cfg.MaxValueSize)
		case p.VBucket >= len(s.vbs):
			err = fmt.Errorf("%w: %d", ErrBadVBucket, p.VBucket)
		}
		for _, name := range p.Channels {
			if err == nil && !engine.ValidChannelString(name) {
				err = fmt.Errorf("%w: %q", ErrBadChannelName, name)
			}
		}
		errs = append(errs, err)
	}
	s.mu.Lock()
	b := &s.batch
	var failed error
	for i, p := range pushes {
		if errs[i] != nil {
			continue
		}
		want, active := p.VBucket, true
		if want < 0 {
			active = false
			if len(p.RoutingKey) > 0 {
				want = int(vbucket.Of(p.RoutingKey, len(s.vbs)))
			}
		}
		_, err := s.pushLocked(p.Channels, p.Value, want, active, b)
		if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, engine.ErrNoActiveVBucket) && !errors.Is(err, engine.ErrNotActive) {
			failed = err // perhaps writing the records of others
			break
		}
		errs[i] = err
	}
	if failed == nil {
		failed = s.writeBatch(b)
	}
	if failed != nil {
		s.rollbackBatch(b)
		s.mu.Unlock()
		s.log.Warn("cannot store a batch of pushes; pushing them one by one", "err", failed)
		for i, p := range pushes {
			if errs[i] == nil {
				errs[i] = push(p)
			}
		}
		return errs
	}
	s.commitBatch(b)
	s.mu.Unlock()
	for i, p := range pushes {
		if errs[i] == nil {
			s.pushedRecords.Add(uint64(len(p.Channels)))
			s.pushedBytes.Add(uint64(len(p.Channels) * len(p.Value)))
		}
	}
	return errs
}

// writeBatch writes the overflow records of the batch.
func (s *Store) writeBatch(b *pushBatch) error {
	for _, m := range b.marks {
		if err := m.q.of.flush(); err != nil {
			return classify(fmt.Errorf("cannot push to channel %q: %w", m.q.ch.name, err))
		}
	}
	return nil
}

// commitBatch makes the written batch final.
func (s *Store) commitBatch(b *pushBatch) {
	for _, m := range b.marks {
		m.commit()
	}
	for _, m := range b.emits {
		s.emit(m)
	}
	if b.newDir {
		s.writeIndex()
	}
	b.reset()
}

// rollbackBatch undoes every push of the batch.
func (s *Store) rollbackBatch(b *pushBatch) {
	for i := len(b.marks) - 1; i >= 0; i-- {
		b.marks[i].rollback()
	}
	for i := len(b.seqnos) - 1; i >= 0; i-- {
		s.vbs[b.seqnos[i].vb].seqno = b.seqnos[i].seqno
	}
	for _, ch := range b.created {
		s.forget(ch, ErrChannelRemoved)
	}
	b.reset()
}

func (b *pushBatch) reset() {
	clear(b.marks)
	clear(b.created)
	clear(b.emits)
	b.marks, b.seqnos, b.created, b.emits, b.newDir = b.marks[:0], b.seqnos[:0], b.created[:0], b.emits[:0], false
}

// push stores value at the targets, all or nothing, and journals it when
// log is set. Its overflow records are written before it returns, or, in a
// batch (b not nil), by writeBatch; commitBatch then commits it.
func (s *Store) push(vb uint16, targets []pushTarget, value []byte, log bool, b *pushBatch) (uint64, error) {
	marks := s.marks[:0]
	var created []*channel
	fail := func(err error) (uint64, error) {
		for i := len(marks) - 1; i >= 0; i-- {
			marks[i].rollback()
		}
		for _, ch := range created {
			s.forget(ch, ErrChannelRemoved)
		}
		return 0, classify(err)
	}
	for _, t := range targets {
		ch := s.channels[t.channel]
		if ch == nil {
			ch = s.newChannel(t.channel, false, "")
			created = append(created, ch)
		}
		for _, q := range ch.queues {
			m, err := q.push(vb, t.seqno, value)
			if err != nil {
				return fail(fmt.Errorf("cannot push to channel %q: %w", t.channel, err))
			}
			marks = append(marks, m)
		}
	}
	if b == nil {
		for _, m := range marks {
			if err := m.q.of.flush(); err != nil {
				return fail(fmt.Errorf("cannot push to channel %q: %w", m.q.ch.name, err))
			}
		}
	}
	var lsn uint64
	if log && s.journal != nil {
		s.enc = appendPushEntry(s.enc[:0], vb, targets, value)
		var err error
		if lsn, err = s.logEntry(s.enc); err != nil {
			return fail(err)
		}
	}
	newDir := false
	for _, m := range marks {
		newDir = newDir || m.of.newDir
		if b == nil {
			m.commit()
		} else {
			b.marks = append(b.marks, m)
		}
	}
	s.marks = marks[:0]
	if b != nil {
		b.seqnos = append(b.seqnos, vbSeqno{vb, s.vbs[vb].seqno})
		b.created = append(b.created, created...)
		b.newDir = b.newDir || newDir
	}
	for _, t := range targets {
		ch := s.channels[t.channel]
		ch.setVB(vb)
		s.vbs[vb].seqno = max(s.vbs[vb].seqno, t.seqno)
		for _, q := range ch.queues {
			q.notify()
		}
		if !s.streaming(vb) {
			continue
		}
		m := engine.Mutation{VBucket: vb, Seqno: t.seqno, Op: engine.OpPush, Channel: t.channel, Value: value}
		if b == nil {
			s.emit(m)
		} else {
			b.emits = append(b.emits, m)
		}
	}
	if b != nil {
		return lsn, nil
	}
	if newDir && s.journal == nil {
		s.writeIndex()
	}
	s.maybeCheckpoint()
	return lsn, nil
}

// Pop removes the oldest record of channel in an Active vBucket and
// appends its value to dst (a replica vBucket's records are copies,
// removed only by their active's pops). It returns ErrEmpty when there is
// none (or no such channel) and
// ErrSubscribed when the channel has subscribers. In journal mode with
// FsyncInterval 0 it returns only after the pop is on disk.
func (s *Store) Pop(channel string, dst []byte) ([]byte, error) {
	v, _, err := s.PopVB(channel, dst)
	return v, err
}

// PopVB is Pop that also returns the vBucket of the record popped (a
// durable pop waits for that vBucket's replicas).
func (s *Store) PopVB(channel string, dst []byte) ([]byte, uint16, error) {
	if !engine.ValidChannelString(channel) {
		return dst, 0, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return dst, 0, ErrClosed
	}
	ch := s.channels[channel]
	if ch == nil {
		s.mu.Unlock()
		return dst, 0, ErrEmpty
	}
	if ch.subscribed {
		s.mu.Unlock()
		return dst, 0, ErrSubscribed
	}
	dst, n, lsn, err := s.take(ch.queues[0], dst, 0, false)
	vb := s.takenVB
	s.mu.Unlock()
	if err != nil {
		return dst, 0, err
	}
	if n == 0 {
		return dst, 0, ErrEmpty
	}
	return dst, vb, s.durable(context.Background(), lsn)
}

// take pops up to maxBytes of values (at least one record) from q into dst,
// journaling the pops first.
func (s *Store) take(q *queue, dst []byte, maxBytes int, framed bool) ([]byte, int, uint64, error) {
	if s.closed {
		return dst, 0, 0, ErrClosed
	}
	items, err := q.heads(s.items[:0], maxBytes, s.activeVB)
	s.items = items[:0]
	if err != nil {
		return dst, 0, 0, fmt.Errorf("cannot read queue %q: %w", q.ch.name, err)
	}
	if len(items) == 0 {
		return dst, 0, 0, nil
	}
	for i := range items {
		s.vbs[items[i].vb].seqno++
		items[i].popSeqno = s.vbs[items[i].vb].seqno
	}
	s.takenVB = items[0].vb
	var lsn uint64
	if s.journal != nil {
		pops := make([]popRef, len(items))
		for i, it := range items {
			pops[i] = popRef{vb: it.vb, ref: it.seqno, seqno: it.popSeqno}
		}
		s.enc = appendPopEntry(s.enc[:0], q, pops)
		if lsn, err = s.logEntry(s.enc); err != nil {
			for _, it := range items {
				s.vbs[it.vb].seqno--
			}
			return dst, 0, 0, err
		}
	}
	dst = q.take(dst, items, framed)
	var bytes uint64
	for _, it := range items {
		s.vbs[it.vb].lastRemoval = it.popSeqno
		bytes += uint64(it.vlen)
		s.emitPop(q, it.vb, it.popSeqno, it.seqno)
	}
	if err := q.refill(); err != nil {
		s.log.Error("cannot refill ring from overflow", "channel", q.ch.name, "err", err)
	}
	s.poppedRecords.Add(uint64(len(items)))
	s.poppedBytes.Add(bytes)
	s.maybeCheckpoint()
	return dst, len(items), lsn, nil
}

// activeVB reports whether vb is Active here: pops take only records of
// active vBuckets (the others are copies of another node's; popping one
// would make the copy diverge).
func (s *Store) activeVB(vb uint16) bool { return s.states.Get(vb) == vbmap.Active }

func (s *Store) emitPop(q *queue, vb uint16, seqno, ref uint64) {
	if !s.streaming(vb) {
		return
	}
	m := engine.Mutation{VBucket: vb, Seqno: seqno, Op: engine.OpPop, Channel: q.ch.name, Ref: ref}
	if q.ch.subscribed {
		m.Key = []byte(q.subscriber)
	}
	s.emit(m)
}

// Subscribe attaches a consumer to the queue of subscriber (0..255 bytes
// of [A-Za-z0-9_-]) in channel, creating the channel when needed. The
// first subscription of a channel, whatever its name, takes over the
// records already queued; every further subscriber name starts with an
// empty queue and receives every record pushed from then on; consumers
// sharing a name split one queue. Subscriptions last until Unsubscribe
// or the channel's removal.
func (s *Store) Subscribe(channel, subscriber string) (*Consumer, error) {
	if !engine.ValidChannelString(channel) {
		return nil, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	if !validSubscriber(subscriber) {
		return nil, fmt.Errorf("%w: %q", ErrBadSubscriber, subscriber)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	q, lsn, err := s.subscribe(channel, subscriber, true)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	q.ch.removed = false // made again after its removal
	c := &Consumer{s: s, q: q, ready: make(chan struct{}, 1)}
	q.consumers = append(q.consumers, c)
	q.activeAt = s.cfg.Now()
	if q.records() > 0 {
		c.signal()
	}
	s.mu.Unlock()
	if err := s.durable(context.Background(), lsn); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (s *Store) subscribe(channel, subscriber string, log bool) (*queue, uint64, error) {
	ch := s.channels[channel]
	if ch != nil && ch.subscribed {
		if q := ch.queue(subscriber); q != nil {
			return q, 0, nil
		}
	}
	var lsn uint64
	if log {
		s.enc = appendNameEntry(s.enc[:0], entrySubscribe, channel, subscriber)
		var err error
		if lsn, err = s.logEntry(s.enc); err != nil {
			return nil, 0, err
		}
	}
	var q *queue
	switch {
	case ch == nil:
		q = s.newChannel(channel, true, subscriber).queues[0]
	case !ch.subscribed:
		ch.subscribed = true
		q = ch.queues[0]
		q.subscriber = subscriber
	default:
		q = s.newQueue(ch, subscriber, s.nextQueueID)
		s.nextQueueID++
		ch.queues = append(ch.queues, q)
	}
	if s.journal == nil {
		s.writeIndex()
	}
	s.maybeCheckpoint()
	return q, lsn, nil
}

// Unsubscribe removes subscriber from channel: its consumers end with
// ErrUnsubscribed. While other subscribers remain, its queue and the
// records in it go; the last subscriber's queue, records included, becomes
// the channel's plain queue again, which Pop serves. It reports whether
// the subscriber existed.
func (s *Store) Unsubscribe(channel, subscriber string) (bool, error) {
	if !engine.ValidChannelString(channel) {
		return false, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	if !validSubscriber(subscriber) {
		return false, fmt.Errorf("%w: %q", ErrBadSubscriber, subscriber)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, ErrClosed
	}
	ok, lsn, err := s.unsubscribe(channel, subscriber, true)
	s.mu.Unlock()
	if err != nil {
		return false, err
	}
	return ok, s.durable(context.Background(), lsn)
}

func (s *Store) unsubscribe(channel, subscriber string, log bool) (bool, uint64, error) {
	ch := s.channels[channel]
	if ch == nil || !ch.subscribed {
		return false, 0, nil
	}
	q := ch.queue(subscriber)
	if q == nil {
		return false, 0, nil
	}
	var lsn uint64
	if log {
		s.enc = appendNameEntry(s.enc[:0], entryUnsubscribe, channel, subscriber)
		var err error
		if lsn, err = s.logEntry(s.enc); err != nil {
			return false, 0, err
		}
	}
	q.end(ErrUnsubscribed)
	if len(ch.queues) == 1 {
		ch.subscribed = false
		q.subscriber = ""
		q.activeAt = s.cfg.Now()
	} else {
		q.of.close()
		if q.of.dirReady {
			s.garbage = append(s.garbage, q.of.dir)
		}
		ch.queues = slices.DeleteFunc(ch.queues, func(x *queue) bool { return x == q })
	}
	if s.journal == nil {
		s.writeIndex()
	}
	s.maybeCheckpoint()
	return true, lsn, nil
}

// RemoveChannel removes a channel's records of the Active vBuckets, each
// such vBucket taking a seqno for the removal (streamed as an
// OpRemoveChannel mutation). Copies of records of other vBuckets (a
// replica's) stay until their active's removals arrive through the stream
// (Apply), which keeps the copies equal to their active's. A channel left
// holding nothing goes with its queues and subscriptions; one still
// holding copies stays for them, and its consumers end with
// ErrChannelRemoved either way. It reports whether the channel existed.
func (s *Store) RemoveChannel(channel string) (bool, error) {
	if !engine.ValidChannelString(channel) {
		return false, fmt.Errorf("%w: %q", ErrBadChannelName, channel)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, ErrClosed
	}
	ok, lsn, err := s.removeChannel(channel, true)
	s.mu.Unlock()
	if err != nil {
		return false, err
	}
	return ok, s.durable(context.Background(), lsn)
}

// vbRemoval is the removal of a channel's records of one vBucket, at a
// seqno of that vBucket.
type vbRemoval struct {
	vb    uint16
	seqno uint64
}

func (s *Store) removeChannel(channel string, log bool) (bool, uint64, error) {
	ch := s.channels[channel]
	if ch == nil {
		return false, 0, nil
	}
	var removals []vbRemoval
	for i := range s.vbs {
		vb := uint16(i)
		if ch.hasVB(vb) && s.activeVB(vb) {
			removals = append(removals, vbRemoval{vb: vb, seqno: s.vbs[vb].seqno + 1})
		}
	}
	var lsn uint64
	if log {
		s.enc = appendRemoveInEntry(s.enc[:0], channel, removals)
		var err error
		if lsn, err = s.logEntry(s.enc); err != nil {
			return false, 0, err
		}
	}
	return true, lsn, s.removeIn(ch, removals)
}

// removeIn removes ch's records of the vBuckets of removals at their
// seqnos, then forgets ch if it holds no record of another vBucket, or
// keeps it for those copies (removed) and ends its consumers.
func (s *Store) removeIn(ch *channel, removals []vbRemoval) error {
	var errs []error
	for _, r := range removals {
		if err := s.removeVB(func(c *channel) bool { return c == ch }, r.vb); err != nil {
			errs = append(errs, err)
		}
		ch.vbits[r.vb/64] &^= 1 << (r.vb % 64)
		v := &s.vbs[r.vb]
		v.seqno = max(v.seqno, r.seqno)
		v.lastRemoval = max(v.lastRemoval, r.seqno)
		if s.streaming(r.vb) {
			s.emit(engine.Mutation{VBucket: r.vb, Seqno: r.seqno, Op: engine.OpRemoveChannel, Channel: ch.name})
		}
	}
	if !ch.holdsAny() {
		s.forget(ch, ErrChannelRemoved)
	} else {
		ch.removed = true
		for _, q := range ch.queues {
			q.end(ErrChannelRemoved)
		}
	}
	if s.journal == nil {
		s.writeIndex()
	}
	s.maybeCheckpoint()
	return errors.Join(errs...)
}

// removeAll removes every record of a channel, one seqno in every vBucket
// that held any: the replay of an entry written before removals were made
// per active vBucket.
func (s *Store) removeAll(channel string) error {
	ch := s.channels[channel]
	if ch == nil {
		return nil
	}
	var removals []vbRemoval
	for i := range s.vbs {
		if vb := uint16(i); ch.hasVB(vb) {
			removals = append(removals, vbRemoval{vb: vb, seqno: s.vbs[vb].seqno + 1})
		}
	}
	return s.removeIn(ch, removals)
}

// Channels describes every queue, sorted by channel and then in
// subscription order.
func (s *Store) Channels() []ChannelStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ChannelStats
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			out = append(out, q.stats())
		}
	}
	slices.SortStableFunc(out, func(a, b ChannelStats) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Subscribers describes the subscriber queues of channel, in
// subscription order; none when it has no subscribers.
func (s *Store) Subscribers(channel string) []ChannelStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channel]
	if ch == nil || !ch.subscribed {
		return nil
	}
	out := make([]ChannelStats, 0, len(ch.queues))
	for _, q := range ch.queues {
		out = append(out, q.stats())
	}
	return out
}

// Counters returns the push and pop totals since Open.
func (s *Store) Counters() Counters {
	return Counters{
		PushedRecords: s.pushedRecords.Load(), PushedBytes: s.pushedBytes.Load(),
		PoppedRecords: s.poppedRecords.Load(), PoppedBytes: s.poppedBytes.Load(),
	}
}

// Sync makes everything acknowledged so far durable: in journal mode it
// fsyncs the journal, in memory mode it writes the overflow index.
func (s *Store) Sync() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.journal == nil {
		defer s.mu.Unlock()
		return s.writeIndex()
	}
	s.mu.Unlock()
	return classify(s.journal.sync())
}

// writeIndex writes the state file without the rings (memory mode) and
// deletes the files it no longer refers to. Failures are logged and
// returned; the next write retries.
func (s *Store) writeIndex() error {
	if err := s.syncOverflows(); err != nil {
		s.log.Error("cannot write overflow index", "err", err)
		return err
	}
	if err := s.writeState(false, 0); err != nil {
		s.log.Error("cannot write overflow index", "err", err)
		return err
	}
	s.collectGarbage()
	return nil
}

func (s *Store) syncOverflows() error {
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			if err := q.of.sync(); err != nil {
				return classify(err)
			}
		}
	}
	return nil
}

func (s *Store) collectGarbage() {
	for _, p := range s.garbage {
		if err := s.fs.RemoveAll(p); err != nil {
			s.log.Warn("cannot delete queue file", "path", p, "err", err)
		}
	}
	s.garbage = s.garbage[:0]
}

// maybeCheckpoint checkpoints in journal mode once the journal is long
// enough.
func (s *Store) maybeCheckpoint() {
	if s.journal == nil || s.sinceCheckpoint < s.checkpointAt {
		return
	}
	if err := s.checkpoint(); err != nil {
		s.log.Error("checkpoint failed; retried later", "err", err)
		s.checkpointAt = s.sinceCheckpoint + s.cfg.JournalSize/4
	}
}

// checkpoint (journal mode) saves the rings and the overflow index in a
// state file and restarts the journal after it.
func (s *Store) checkpoint() error {
	next := s.journal.gen + 1
	f, err := s.journal.createSegment(next)
	if err != nil {
		return classify(err)
	}
	if err := s.syncOverflows(); err == nil {
		err = s.writeState(true, next)
	}
	if err != nil {
		_ = f.Close()
		_ = s.fs.Remove(s.journal.segPath(next))
		return classify(err)
	}
	s.journal.switchTo(f, next)
	s.collectGarbage()
	s.sinceCheckpoint = 0
	var ringBytes int64
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			ringBytes += int64(q.ring.used)
		}
	}
	s.checkpointAt = max(s.cfg.JournalSize, 2*ringBytes)
	return nil
}

// Close saves everything (memory mode: rings and overflow index; journal
// mode: a checkpoint) and releases the files. Consumers end with ErrClosed,
// streams with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var err error
	if s.journal != nil {
		err = s.checkpoint()
	} else if err = s.syncOverflows(); err == nil {
		if err = s.writeState(true, 0); err == nil {
			s.collectGarbage()
		}
	}
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			q.end(ErrClosed)
		}
	}
	for i := range s.vbs {
		s.endStreams(uint16(i), ErrClosed)
	}
	s.mu.Unlock()
	close(s.stopIndex)
	s.bg.Wait()
	s.closeFiles()
	if err != nil {
		return fmt.Errorf("cannot save queues on close: %w", err)
	}
	return nil
}

func (s *Store) closeFiles() {
	if s.journal != nil {
		s.journal.close()
	}
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			q.of.close()
		}
	}
}
