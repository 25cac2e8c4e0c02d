package kv

// TEMPORARY stand-in for the real engine (branch kv), with the same API, so
// the server, client and CLI can be built and tested while it is written.
// Deleted when the kv branch is merged.

import (
	"bytes"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

type Config struct {
	VBuckets     int
	MaxValueSize int
	MemoryLimit  int64
	TombstoneTTL time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
}

var (
	ErrNotFound    = errors.New("kv: not found")
	ErrExists      = errors.New("kv: cas mismatch")
	ErrBadKey      = errors.New("kv: empty key")
	ErrKeyTooBig   = errors.New("kv: key too big")
	ErrValueTooBig = errors.New("kv: value too big")
	ErrOutOfMemory = errors.New("kv: out of memory")
	ErrClosed      = errors.New("kv: closed")
)

type ChannelStats struct {
	Name           string
	Records, Bytes int64
}

type Counters struct{ Written, Read, Deleted, Expired, Iterated, WrittenBytes, ReadBytes int64 }

type EventOp uint8

const (
	EventPut EventOp = iota + 1
	EventDelete
	EventChannelRemoved
)

type Event struct {
	Op         EventOp
	Key, Value []byte
}

type item struct {
	val    []byte
	seq    uint64
	expiry int64
}

type Store struct {
	cfg      Config
	mu       sync.Mutex
	chans    map[string]map[string]*item
	seq      []uint64
	watchers map[string]map[*Watcher]bool
	mem      int64
}

func New(cfg Config) (*Store, error) {
	if cfg.VBuckets == 0 {
		cfg.VBuckets = vbucket.Default
	}
	if cfg.MaxValueSize == 0 {
		cfg.MaxValueSize = 1 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, chans: map[string]map[string]*item{}, seq: make([]uint64, cfg.VBuckets), watchers: map[string]map[*Watcher]bool{}}, nil
}

func (s *Store) Close() {}

func (s *Store) check(key, value []byte) error {
	if len(key) == 0 {
		return ErrBadKey
	}
	if len(key) > wire.MaxKeyLen {
		return ErrKeyTooBig
	}
	if len(value) > s.cfg.MaxValueSize {
		return ErrValueTooBig
	}
	return nil
}

func (s *Store) live(it *item) bool {
	return it != nil && (it.expiry == 0 || it.expiry > s.cfg.Now().Unix())
}

func (s *Store) notify(ch string, ev Event) {
	for w := range s.watchers[ch] {
		w.push(ev)
	}
}

func (s *Store) set(ch string, key, value []byte, ttl time.Duration) uint64 {
	m := s.chans[ch]
	if m == nil {
		m = map[string]*item{}
		s.chans[ch] = m
	}
	vb := vbucket.Of(key, s.cfg.VBuckets)
	s.seq[vb]++
	var exp int64
	if ttl > 0 {
		exp = s.cfg.Now().Add(ttl).Unix()
	}
	if old := m[string(key)]; old != nil {
		s.mem -= int64(len(key) + len(old.val))
	}
	m[string(key)] = &item{val: append([]byte(nil), value...), seq: s.seq[vb], expiry: exp}
	s.mem += int64(len(key) + len(value))
	s.notify(ch, Event{Op: EventPut, Key: append([]byte(nil), key...)})
	return s.seq[vb]
}

func (s *Store) Put(ch string, key, value []byte, ttl time.Duration) (uint64, error) {
	if err := s.check(key, value); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.MemoryLimit > 0 && s.mem+int64(len(key)+len(value)) > s.cfg.MemoryLimit {
		return 0, ErrOutOfMemory
	}
	return s.set(ch, key, value, ttl), nil
}

func (s *Store) Get(ch string, key, dst []byte) ([]byte, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.chans[ch][string(key)]
	if !s.live(it) {
		return dst, 0, ErrNotFound
	}
	return append(dst, it.val...), it.seq, nil
}

func (s *Store) Exists(ch string, key []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live(s.chans[ch][string(key)])
}

func (s *Store) Remove(ch string, key []byte) (bool, error) {
	if len(key) == 0 {
		return false, ErrBadKey
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.chans[ch][string(key)]
	if it == nil {
		return false, nil
	}
	delete(s.chans[ch], string(key))
	s.mem -= int64(len(key) + len(it.val))
	s.seq[vbucket.Of(key, s.cfg.VBuckets)]++
	s.notify(ch, Event{Op: EventDelete, Key: append([]byte(nil), key...)})
	return s.live(it), nil
}

func (s *Store) Update(ch string, key, value []byte, cas uint64, ttl time.Duration) (uint64, error) {
	if err := s.check(key, value); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.chans[ch][string(key)]
	if !s.live(it) {
		return 0, ErrNotFound
	}
	if it.seq != cas {
		return 0, ErrExists
	}
	return s.set(ch, key, value, ttl), nil
}

func (s *Store) Channels() []ChannelStats {
	s.mu.Lock()
	var names []string
	for n, m := range s.chans {
		if len(m) > 0 {
			names = append(names, n)
		}
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := make([]ChannelStats, 0, len(names))
	for _, n := range names {
		out = append(out, s.ChannelSize(n))
	}
	return out
}

func (s *Store) ChannelSize(ch string) ChannelStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ChannelStats{Name: ch}
	for k, it := range s.chans[ch] {
		st.Records++
		st.Bytes += int64(len(k) + len(it.val))
	}
	return st
}

func (s *Store) Size() (int64, int64) {
	var r, b int64
	for _, c := range s.Channels() {
		r += c.Records
		b += c.Bytes
	}
	return r, b
}

func (s *Store) RemoveChannel(ch string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.chans[ch]
	for k, it := range m {
		s.mem -= int64(len(k) + len(it.val))
	}
	delete(s.chans, ch)
	s.notify(ch, Event{Op: EventChannelRemoved})
	return ok && len(m) > 0
}

func (s *Store) MemoryUsage() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.mem }

func (s *Store) Counters() Counters { return Counters{} }

func (s *Store) Scan(ch string, vb uint16, after []byte, fn func(r Record) bool) {
	type kr struct {
		h uint64
		r Record
	}
	s.mu.Lock()
	var recs []kr
	for k, it := range s.chans[ch] {
		if vbucket.OfString(k, s.cfg.VBuckets) != vb || !s.live(it) {
			continue
		}
		recs = append(recs, kr{xxhash.Sum64String(k), Record{Key: []byte(k), Value: append([]byte(nil), it.val...), Seqno: it.seq, Expiry: it.expiry}})
	}
	s.mu.Unlock()
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].h != recs[j].h {
			return recs[i].h < recs[j].h
		}
		return bytes.Compare(recs[i].r.Key, recs[j].r.Key) < 0
	})
	ah := xxhash.Sum64(after)
	for _, r := range recs {
		if after != nil && (r.h < ah || (r.h == ah && bytes.Compare(r.r.Key, after) <= 0)) {
			continue
		}
		if !fn(r.r) {
			return
		}
	}
}

type Watcher struct {
	s       *Store
	ch      string
	max     int
	mu      sync.Mutex
	pending []Event
	size    int
	lost    bool
	ready   chan struct{}
}

func (s *Store) Watch(ch string, maxPending int) *Watcher {
	if maxPending <= 0 {
		maxPending = 256 << 10
	}
	w := &Watcher{s: s, ch: ch, max: maxPending, ready: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.watchers[ch] == nil {
		s.watchers[ch] = map[*Watcher]bool{}
	}
	s.watchers[ch][w] = true
	s.mu.Unlock()
	return w
}

func (w *Watcher) push(ev Event) {
	w.mu.Lock()
	if w.size+len(ev.Key)+16 > w.max {
		w.pending, w.size, w.lost = nil, 0, true
	} else {
		w.pending = append(w.pending, ev)
		w.size += len(ev.Key) + 16
	}
	w.mu.Unlock()
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

func (w *Watcher) Ready() <-chan struct{} { return w.ready }

func (w *Watcher) Drain(dst []Event) ([]Event, bool) {
	w.mu.Lock()
	evs, lost := w.pending, w.lost
	w.pending, w.size, w.lost = nil, 0, false
	w.mu.Unlock()
	for _, ev := range evs {
		if ev.Op == EventPut {
			v, _, err := w.s.Get(w.ch, ev.Key, nil)
			if err != nil {
				continue
			}
			ev.Value = v
		}
		dst = append(dst, ev)
	}
	return dst, lost
}

func (w *Watcher) Close() {
	w.s.mu.Lock()
	delete(w.s.watchers[w.ch], w)
	w.s.mu.Unlock()
}

func (s *Store) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []Record) error) error {
	for vb := 0; vb < s.cfg.VBuckets; vb++ {
		var recs []Record
		s.Scan(ch, uint16(vb), nil, func(r Record) bool { recs = append(recs, r); return true })
		if len(recs) == 0 {
			continue
		}
		s.mu.Lock()
		seq := s.seq[vb]
		s.mu.Unlock()
		if err := fn(uint16(vb), seq, recs); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) Load(ch string, vb uint16, seqno uint64, recs []Record) error {
	for _, r := range recs {
		if _, err := s.Put(ch, r.Key, r.Value, 0); err != nil {
			return err
		}
	}
	return nil
}
