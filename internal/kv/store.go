package kv

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// Errors returned by the Store. Callers test them with errors.Is.
var (
	ErrNotFound     = errors.New("kv: record not found")
	ErrExists       = errors.New("kv: cas mismatch")
	ErrBadKey       = errors.New("kv: empty key")
	ErrKeyTooBig    = errors.New("kv: key too big")
	ErrValueTooBig  = errors.New("kv: value too big")
	ErrOutOfMemory  = errors.New("kv: memory limit reached")
	ErrClosed       = errors.New("kv: store closed")
	ErrBadChannel   = errors.New("kv: bad channel name")
	ErrBadVBucket   = errors.New("kv: vbucket out of range")
	ErrWrongVBucket = errors.New("kv: key does not belong to this vbucket")
	ErrBadMutation  = errors.New("kv: mutation not applicable")
)

// Defaults of Config.
const (
	DefaultMaxValueSize  = 1 << 20
	DefaultTombstoneTTL  = time.Minute
	DefaultSweepInterval = 100 * time.Millisecond
	DefaultStreamBacklog = 256
)

// Config configures a Store. The zero value is usable.
type Config struct {
	VBuckets     int              // default vbucket.Default (1024)
	MaxValueSize int              // default 1 MiB; engine.MaxValueLen at most
	MemoryLimit  int64            // 0 = none; bytes of record memory + index (MemoryUsage)
	TombstoneTTL time.Duration    // how long tombstones are kept for replicas; default 1 minute
	Now          func() time.Time // clock seam; nil = time.Now
	Logger       *slog.Logger     // nil = slog.Default()
	// SweepInterval is the tick of the background sweeper that expires
	// records and purges old tombstones; default 100 ms, negative = no
	// sweeper (tests drive it by hand).
	SweepInterval time.Duration
	// StreamBacklog is how many recent changes a vBucket keeps while it is
	// streamed; a stream further behind takes a new snapshot. Rounded up to
	// a power of two; default 256.
	StreamBacklog int
}

// Counters are cumulative activity figures (for stats.log).
type Counters struct {
	Written, WrittenBytes   int64 // successful Put and Update: records, key+value bytes
	Read, ReadBytes         int64 // Get hits: records, value bytes
	Deleted, DeletedBytes   int64 // Remove of a live record: records, key+value bytes
	Expired, ExpiredBytes   int64 // records expired by the sweeper
	Iterated, IteratedBytes int64 // records handed to Scan callbacks, key+value bytes
}

// ChannelStats is the size of one channel.
type ChannelStats struct {
	Name    string
	Records int64
	Bytes   int64 // key+value bytes of live records
}

// Store is the kv engine: channels of records spread over vBuckets, each
// vBucket with its own lock, seqno and tables. It implements engine.Engine.
// All methods are safe for concurrent use.
type Store struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	parts    []*partition
	states   *vbmap.States // per vBucket (engine.Engine SetState)
	acct     memAccount
	slots    atomic.Int64 // index slots of all tables, sizes the sweeper's budget
	closed   atomic.Bool
	done     chan struct{}
	wg       sync.WaitGroup
	watchMu  sync.Mutex
	watchers atomic.Pointer[watchIndex]
	sweep    sweepCursor // used by the sweeper goroutine only
	sweepMu  sync.Mutex  // serializes sweeps (background and tests)
}

// counters is a partition's share of Counters.
type counters struct {
	written, writtenBytes   atomic.Int64
	read, readBytes         atomic.Int64
	deleted, deletedBytes   atomic.Int64
	expired, expiredBytes   atomic.Int64
	iterated, iteratedBytes atomic.Int64
}

// channelTomb remembers that a channel was removed from a vBucket, so that
// streams can replay the removal.
type channelTomb struct {
	name  string
	seqno uint64
	stamp uint32
}

// partition is one vBucket: its tables (one per channel) and seqnos.
type partition struct {
	mu      sync.RWMutex
	id      uint16
	seqno   uint64 // high seqno
	purged  uint64 // highest seqno of a purged tombstone
	tables  map[string]*table
	removed []channelTomb
	epoch   uint64 // bumped by DropVBucket; streams of an old epoch end
	log     *changeLog
	wakers  []chan struct{}
	ctr     counters
}

// New creates a Store and starts its sweeper.
func New(cfg Config) (*Store, error) {
	if cfg.VBuckets == 0 {
		cfg.VBuckets = vbucket.Default
	}
	if cfg.VBuckets < 1 || cfg.VBuckets > vbucket.Max {
		return nil, fmt.Errorf("kv: %d vbuckets: want 1..%d", cfg.VBuckets, vbucket.Max)
	}
	if cfg.MaxValueSize == 0 {
		cfg.MaxValueSize = DefaultMaxValueSize
	}
	if cfg.MaxValueSize < 0 || cfg.MaxValueSize > engine.MaxValueLen {
		return nil, fmt.Errorf("kv: max value size %d: want 0..%d", cfg.MaxValueSize, engine.MaxValueLen)
	}
	if cfg.MemoryLimit < 0 {
		return nil, fmt.Errorf("kv: negative memory limit %d", cfg.MemoryLimit)
	}
	if cfg.TombstoneTTL <= 0 {
		cfg.TombstoneTTL = DefaultTombstoneTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.StreamBacklog <= 0 {
		cfg.StreamBacklog = DefaultStreamBacklog
	}
	n := 1
	for n < cfg.StreamBacklog {
		n *= 2
	}
	cfg.StreamBacklog = n
	s := &Store{cfg: cfg, log: cfg.Logger, now: cfg.Now, done: make(chan struct{})}
	s.acct.limit = cfg.MemoryLimit
	s.parts = make([]*partition, cfg.VBuckets)
	s.states = vbmap.NewStates(cfg.VBuckets)
	for i := range s.parts {
		s.parts[i] = &partition{id: uint16(i), tables: map[string]*table{}}
	}
	if cfg.SweepInterval > 0 {
		s.wg.Add(1)
		go s.sweepLoop(cfg.SweepInterval)
	}
	return s, nil
}

// Close stops the sweeper and ends running streams; later calls fail with
// ErrClosed. The data stays readable by nobody: drop the Store afterwards.
func (s *Store) Close() {
	if s.closed.Swap(true) {
		return
	}
	close(s.done)
	s.wg.Wait()
}

// Kind returns engine.KindKV.
func (s *Store) Kind() engine.Kind { return engine.KindKV }

// SetState sets vb's state: only an Active vBucket expires its records
// (a replica gets the active's expiries), only a Replica or Pending one
// takes Apply.
func (s *Store) SetState(vb uint16, st vbmap.State) error {
	if _, err := s.states.Set(vb, st); err != nil {
		return fmt.Errorf("kv: %w", err)
	}
	return nil
}

// State returns vb's state.
func (s *Store) State(vb uint16) vbmap.State { return s.states.Get(vb) }

func (s *Store) nowUnix() int64 { return s.now().Unix() }

// visible reports whether r is a live record that has not expired.
func (s *Store) visible(r *rec) bool {
	if r.flags&flagTomb != 0 {
		return false
	}
	return r.flags&flagTime == 0 || s.nowUnix() < fromStamp(r.stamp)
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return ErrBadKey
	}
	if len(key) > engine.MaxKeyLen {
		return fmt.Errorf("kv: key of %d bytes: %w", len(key), ErrKeyTooBig)
	}
	return nil
}

// checkChannel refuses writes to a closed store or a bad channel name.
func (s *Store) checkChannel(ch string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if !engine.ValidChannelString(ch) {
		return fmt.Errorf("kv: channel %q: %w", ch, ErrBadChannel)
	}
	return nil
}

func (s *Store) checkWrite(ch string, key, value []byte) error {
	if err := s.checkChannel(ch); err != nil {
		return err
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if len(value) > s.cfg.MaxValueSize {
		return fmt.Errorf("kv: value of %d bytes (max %d): %w", len(value), s.cfg.MaxValueSize, ErrValueTooBig)
	}
	return nil
}

// locate returns the partition of key and its mixed hash.
func (s *Store) locate(key []byte) (*partition, uint64) {
	h := xxhash.Sum64(key)
	return s.parts[h%uint64(len(s.parts))], mix(h)
}

// liveFlags are the flags of a live record with expiry stamp (0 = none).
func liveFlags(stamp uint32) byte {
	if stamp != 0 {
		return flagTime
	}
	return 0
}

// tombFlags are the flags of a tombstone.
func tombFlags(expired bool) byte {
	if expired {
		return flagTomb | flagTime | flagExpired
	}
	return flagTomb | flagTime
}

// store writes a record (flags, key, value, stamp) at seqno into channel ch
// of p, creating the table if needed; i and found come from a find on t
// (nil when there is no table). limited applies the memory limit, which
// tombstones ignore: removals must go on when memory is full. p.mu is held.
func (s *Store) store(p *partition, t *table, ch string, i int, found bool, m, seqno uint64, flags byte, key, value []byte, stamp uint32, limited bool) (*table, error) {
	size := recSize(len(key), len(value), flags)
	if t == nil {
		if limited && !s.acct.fits(newTableCost(size)) {
			return nil, ErrOutOfMemory
		}
		t = newTable(strings.Clone(ch), &s.acct)
		s.slots.Add(minSlots)
		p.tables[t.name] = t
		i, found = t.find(key, m)
	} else if limited && !s.acct.fits(t.cost(size, i, found)) {
		return t, ErrOutOfMemory
	}
	slots := len(t.slots)
	err := t.set(i, found, m, seqno, flags, key, value, stamp)
	s.slots.Add(int64(len(t.slots) - slots))
	if err != nil {
		if t.count == 0 {
			p.dropTable(s, t)
		}
		return t, fmt.Errorf("kv: channel %q vbucket %d: %w (%w)", ch, p.id, ErrOutOfMemory, err)
	}
	return t, nil
}

// newTableCost is what a new table holding one n-byte record adds to
// MemoryUsage.
func newTableCost(n int) int64 {
	size, _ := (&table{}).chunkSize(n)
	return tableOverhead + minSlots*8 + int64(size) + chunkDescSize
}

// dropTable removes t from p and releases its memory. p.mu is held.
func (p *partition) dropTable(s *Store, t *table) {
	delete(p.tables, t.name)
	s.slots.Add(-int64(len(t.slots)))
	t.release()
}

// changed tells streams about a mutation of p. p.mu is held for writing.
func (p *partition) changed(op engine.Op, ch string, key []byte, seqno uint64) {
	if p.log == nil {
		return
	}
	p.log.add(seqno, op, ch, key)
	for _, w := range p.wakers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Put stores value under key in channel ch, creating the channel on first
// write. ttl > 0 makes the record expire ttl later (rounded up to a whole
// second); ttl <= 0 means never. It returns the record's CAS (its seqno).
func (s *Store) Put(ch string, key, value []byte, ttl time.Duration) (uint64, error) {
	if err := s.checkWrite(ch, key, value); err != nil {
		return 0, err
	}
	stamp := s.ttlStamp(ttl)
	p, m := s.locate(key)
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tables[ch]
	i, found := 0, false
	if t != nil {
		i, found = t.find(key, m)
	}
	return s.write(p, t, ch, i, found, m, key, value, stamp)
}

// write is the common end of Put and Update. p.mu is held.
func (s *Store) write(p *partition, t *table, ch string, i int, found bool, m uint64, key, value []byte, stamp uint32) (uint64, error) {
	seqno := p.seqno + 1
	t, err := s.store(p, t, ch, i, found, m, seqno, liveFlags(stamp), key, value, stamp, true)
	if err != nil {
		return 0, err
	}
	p.seqno = seqno
	p.changed(engine.OpSet, t.name, key, seqno)
	s.notify(t.name, key)
	p.ctr.written.Add(1)
	p.ctr.writtenBytes.Add(int64(len(key) + len(value)))
	return seqno, nil
}

// Update replaces the value of an existing record whose CAS is cas. It
// fails with ErrNotFound when there is no live record and with ErrExists
// when the record changed since cas was read. ttl > 0 sets a new expiry;
// ttl == 0 keeps the record's (Redis's SET ... KEEPTTL): a record that
// was to expire still does, at the same time; ttl < 0 clears it (the
// record never expires, as after Redis's SET without KEEPTTL).
func (s *Store) Update(ch string, key, value []byte, cas uint64, ttl time.Duration) (uint64, error) {
	if err := s.checkWrite(ch, key, value); err != nil {
		return 0, err
	}
	stamp := s.ttlStamp(ttl)
	var w recordRef
	s.lockRecord(&w, ch, key)
	defer w.p.mu.Unlock()
	switch {
	case !w.live:
		return 0, ErrNotFound
	case w.r.seqno != cas:
		return 0, ErrExists
	}
	if ttl == 0 && w.r.flags&flagTime != 0 {
		stamp = w.r.stamp
	}
	return s.write(w.p, w.t, ch, w.i, true, w.m, key, value, stamp)
}

// recordRef is where key's record is in a channel: its partition, locked
// for writing by lockRecord, the channel's table (nil when it has none),
// the key's hash and slot, whether the slot holds a record of key (found)
// and whether that one is live, and the record (valid when found).
type recordRef struct {
	p     *partition
	t     *table
	m     uint64
	i     int
	found bool
	live  bool
	r     rec
}

// lockRecord locks key's partition for writing and looks key up in
// channel ch, filling in ref (zero): the common start of Add, Update and
// Expire. The caller unlocks ref.p.mu.
func (s *Store) lockRecord(ref *recordRef, ch string, key []byte) {
	ref.p, ref.m = s.locate(key)
	ref.p.mu.Lock()
	if ref.t = ref.p.tables[ch]; ref.t != nil {
		if ref.i, ref.found = ref.t.find(key, ref.m); ref.found {
			ref.r = ref.t.recAt(ref.i)
			ref.live = s.visible(&ref.r)
		}
	}
}

// ttlStamp is the expiry stamp of a write with ttl: ttl later, rounded up
// to a whole second; 0 (never) for ttl <= 0.
func (s *Store) ttlStamp(ttl time.Duration) uint32 {
	if ttl <= 0 {
		return 0 // inlined: the common case costs a comparison
	}
	return s.stampAfter(ttl)
}

func (s *Store) stampAfter(ttl time.Duration) uint32 { return expiryStamp(s.now(), ttl) }

// Expire sets when the live record of key expires: ttl later (rounded up
// to a whole second), or never for ttl <= 0 (Redis's EXPIRE and PERSIST).
// The value stays; it is a write (a new seqno, which replicas receive
// with the new expiry), and it returns the record's new CAS. ErrNotFound
// when there is no live record.
func (s *Store) Expire(ch string, key []byte, ttl time.Duration) (uint64, error) {
	if err := s.checkChannel(ch); err != nil {
		return 0, err
	}
	if err := checkKey(key); err != nil {
		return 0, err
	}
	stamp := s.ttlStamp(ttl)
	var w recordRef
	s.lockRecord(&w, ch, key)
	defer w.p.mu.Unlock()
	if !w.live {
		return 0, ErrNotFound
	}
	// r.value points into the table, which the write may move.
	value := bytes.Clone(w.r.value)
	if value == nil {
		value = []byte{}
	}
	return s.write(w.p, w.t, ch, w.i, true, w.m, key, value, stamp)
}

// Expiry returns when the live record of key expires (the zero time when
// never) and its CAS; ErrNotFound when there is no live record.
func (s *Store) Expiry(ch string, key []byte) (time.Time, uint64, error) {
	if s.closed.Load() {
		return time.Time{}, 0, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return time.Time{}, 0, err
	}
	p, m := s.locate(key)
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tables[ch]
	if t == nil {
		return time.Time{}, 0, ErrNotFound
	}
	i, found := t.find(key, m)
	if !found {
		return time.Time{}, 0, ErrNotFound
	}
	r := t.recAt(i)
	if !s.visible(&r) {
		return time.Time{}, 0, ErrNotFound
	}
	if r.flags&flagTime == 0 {
		return time.Time{}, r.seqno, nil
	}
	return time.Unix(fromStamp(r.stamp), 0), r.seqno, nil
}

// Get appends the value of key to dst and returns it with the record's CAS.
// It does not allocate when dst has room. On error dst is returned as is.
func (s *Store) Get(ch string, key, dst []byte) ([]byte, uint64, error) {
	if s.closed.Load() {
		return dst, 0, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return dst, 0, err
	}
	p, m := s.locate(key)
	p.mu.RLock()
	t := p.tables[ch]
	if t == nil {
		p.mu.RUnlock()
		return dst, 0, ErrNotFound
	}
	i, found := t.find(key, m)
	if !found {
		p.mu.RUnlock()
		return dst, 0, ErrNotFound
	}
	r := t.recAt(i)
	if !s.visible(&r) {
		p.mu.RUnlock()
		return dst, 0, ErrNotFound
	}
	dst = append(dst, r.value...)
	p.mu.RUnlock()
	p.ctr.read.Add(1)
	p.ctr.readBytes.Add(int64(len(r.value)))
	return dst, r.seqno, nil
}

// Exists reports whether ch holds a live record under key.
func (s *Store) Exists(ch string, key []byte) bool {
	if s.closed.Load() || checkKey(key) != nil {
		return false
	}
	p, m := s.locate(key)
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tables[ch]
	if t == nil {
		return false
	}
	i, found := t.find(key, m)
	if !found {
		return false
	}
	r := t.recAt(i)
	return s.visible(&r)
}

// Remove deletes the record of key, leaving a tombstone for replicas. It
// reports whether a live record was removed; removing nothing is not a
// mutation.
func (s *Store) Remove(ch string, key []byte) (bool, error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	if err := checkKey(key); err != nil {
		return false, err
	}
	p, m := s.locate(key)
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tables[ch]
	if t == nil {
		return false, nil
	}
	i, found := t.find(key, m)
	if !found {
		return false, nil
	}
	r := t.recAt(i)
	if !s.visible(&r) {
		return false, nil
	}
	n := int64(len(r.key) + len(r.value))
	seqno := p.seqno + 1
	if _, err := s.store(p, t, ch, i, true, m, seqno, tombFlags(false), key, nil, toStamp(s.nowUnix()), false); err != nil {
		return false, err
	}
	p.seqno = seqno
	p.changed(engine.OpDelete, t.name, key, seqno)
	s.notify(t.name, key)
	p.ctr.deleted.Add(1)
	p.ctr.deletedBytes.Add(n)
	return true, nil
}

// addChannelTomb records the removal of channel name from p at seqno,
// replacing an older removal of the same channel. It returns the name as
// stored.
func (p *partition) addChannelTomb(name string, seqno uint64, stamp uint32) string {
	for i := range p.removed {
		if c := &p.removed[i]; c.name == name {
			c.seqno, c.stamp = seqno, stamp
			return c.name
		}
	}
	p.removed = append(p.removed, channelTomb{strings.Clone(name), seqno, stamp})
	return p.removed[len(p.removed)-1].name
}

// removedAt returns the seqno at which channel name was last removed from
// p, 0 if never (or the removal was purged).
func (p *partition) removedAt(name string) uint64 {
	for _, c := range p.removed {
		if c.name == name {
			return c.seqno
		}
	}
	return 0
}

// RemoveChannel removes every record of ch in the Active vBuckets, one
// vBucket at a time (one mutation per vBucket that held any), and frees
// their memory. The records of other vBuckets are a replica's copies: they
// go when their active's removal arrives (Apply), so the copies stay equal
// to their active's. Watchers of ch get an EventChannelRemoved. It reports
// whether ch held anything in an active vBucket.
func (s *Store) RemoveChannel(ch string) bool {
	if s.closed.Load() {
		return false
	}
	stamp := toStamp(s.nowUnix())
	any := false
	for _, p := range s.parts {
		if s.states.Get(p.id) != vbmap.Active {
			continue
		}
		p.mu.Lock()
		if t := p.tables[ch]; t != nil {
			p.dropTable(s, t)
			p.seqno++
			p.addChannelTomb(t.name, p.seqno, stamp)
			p.changed(engine.OpRemoveChannel, t.name, nil, p.seqno)
			any = true
		}
		p.mu.Unlock()
	}
	if any {
		s.notifyRemoved(ch)
	}
	return any
}

// ChannelSize returns the live records and bytes of ch. Records that
// expired but were not swept yet are still counted.
func (s *Store) ChannelSize(ch string) ChannelStats { return s.ChannelSizeIn(ch, nil) }

// ChannelSizeIn is ChannelSize over the vBuckets for which keep returns
// true (every vBucket when keep is nil): a node reports the vBuckets it
// is active for.
func (s *Store) ChannelSizeIn(ch string, keep func(vb uint16) bool) ChannelStats {
	st := ChannelStats{Name: ch}
	for _, p := range s.parts {
		if keep != nil && !keep(p.id) {
			continue
		}
		p.mu.RLock()
		if t := p.tables[ch]; t != nil {
			st.Records += int64(t.live)
			st.Bytes += t.liveBytes
		}
		p.mu.RUnlock()
	}
	return st
}

// Channels returns the channels that hold live records, sorted by name.
func (s *Store) Channels() []ChannelStats { return s.ChannelsIn(nil) }

// ChannelsIn is Channels over the vBuckets for which keep returns true
// (every vBucket when keep is nil).
func (s *Store) ChannelsIn(keep func(vb uint16) bool) []ChannelStats {
	acc := map[string]*ChannelStats{}
	for _, p := range s.parts {
		if keep != nil && !keep(p.id) {
			continue
		}
		p.mu.RLock()
		for name, t := range p.tables {
			if t.live == 0 {
				continue
			}
			st := acc[name]
			if st == nil {
				st = &ChannelStats{Name: name}
				acc[name] = st
			}
			st.Records += int64(t.live)
			st.Bytes += t.liveBytes
		}
		p.mu.RUnlock()
	}
	out := make([]ChannelStats, 0, len(acc))
	for _, st := range acc {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Size returns the live records and key+value bytes of all channels.
func (s *Store) Size() (records, bytes int64) {
	for _, p := range s.parts {
		p.mu.RLock()
		for _, t := range p.tables {
			records += int64(t.live)
			bytes += t.liveBytes
		}
		p.mu.RUnlock()
	}
	return records, bytes
}

// MemoryUsage returns the bytes of arena chunks, index slots, table
// overheads and stream backlogs: what MemoryLimit is compared with.
func (s *Store) MemoryUsage() int64 { return s.acct.used.Load() }

// Counters returns the cumulative activity counters.
func (s *Store) Counters() Counters {
	var c Counters
	for _, p := range s.parts {
		c.Written += p.ctr.written.Load()
		c.WrittenBytes += p.ctr.writtenBytes.Load()
		c.Read += p.ctr.read.Load()
		c.ReadBytes += p.ctr.readBytes.Load()
		c.Deleted += p.ctr.deleted.Load()
		c.DeletedBytes += p.ctr.deletedBytes.Load()
		c.Expired += p.ctr.expired.Load()
		c.ExpiredBytes += p.ctr.expiredBytes.Load()
		c.Iterated += p.ctr.iterated.Load()
		c.IteratedBytes += p.ctr.iteratedBytes.Load()
	}
	return c
}
