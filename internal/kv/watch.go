package kv

import (
	"slices"
	"sync"
)

// DefaultMaxPending is the default bound of a Watcher's pending changes.
const DefaultMaxPending = 256 << 10

// pendingCost is what one pending key costs besides its bytes (map slot and
// string header), counted against a Watcher's bound.
const pendingCost = 48

// EventOp is what an Event reports.
type EventOp uint8

// Event operations.
const (
	EventPut            EventOp = 1 // Key holds Value
	EventDelete         EventOp = 2 // Key has no record (removed or expired)
	EventChannelRemoved EventOp = 3 // the channel was removed; Key and Value are nil
)

// Event is one change delivered by Watcher.Drain.
type Event struct {
	Op    EventOp
	Key   []byte
	Value []byte
}

// watchIndex maps a channel to its watchers; it is replaced, never
// modified, so writers read it without a lock.
type watchIndex map[string][]*Watcher

// Watcher follows the changes of one channel (swarm's Mirror). Changes to a
// key coalesce until the next Drain, which reads the values then. Pending
// changes are bounded: when the bound is hit they are dropped and the
// watcher is lost until the next Drain; its consumer must then refresh
// (Scan everything), which costs the node no memory.
type Watcher struct {
	s     *Store
	ch    string
	max   int
	ready chan struct{}

	mu      sync.Mutex
	pending map[string]struct{}
	bytes   int
	removed bool
	lost    bool
	closed  bool

	drainMu sync.Mutex
	spans   []span
	buf     []byte
}

// span locates one drained event in Watcher.buf.
type span struct {
	k0, k1, v1 int
	op         EventOp
}

// Watch starts following channel ch. maxPending bounds the bytes of
// pending changes (keys plus a fixed cost each); <= 0 means
// DefaultMaxPending. Close the Watcher when done.
func (s *Store) Watch(ch string, maxPending int) *Watcher {
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	w := &Watcher{s: s, ch: ch, max: maxPending, ready: make(chan struct{}, 1), pending: map[string]struct{}{}}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	idx := watchIndex{}
	if old := s.watchers.Load(); old != nil {
		for k, v := range *old {
			idx[k] = v
		}
	}
	idx[ch] = append(slices.Clone(idx[ch]), w)
	s.watchers.Store(&idx)
	return w
}

// watchersOf returns the watchers of ch.
func (s *Store) watchersOf(ch string) []*Watcher {
	if idx := s.watchers.Load(); idx != nil {
		return (*idx)[ch]
	}
	return nil
}

// notify tells the watchers of ch that key changed.
func (s *Store) notify(ch string, key []byte) {
	for _, w := range s.watchersOf(ch) {
		w.add(key)
	}
}

// notifyRemoved tells the watchers of ch that it was removed.
func (s *Store) notifyRemoved(ch string) {
	for _, w := range s.watchersOf(ch) {
		w.mu.Lock()
		if !w.lost {
			w.removed = true
		}
		w.mu.Unlock()
		w.signal()
	}
}

// notifyLost makes the watchers of ch lost (their consumers refresh).
func (s *Store) notifyLost(ch string) {
	for _, w := range s.watchersOf(ch) {
		w.mu.Lock()
		w.drop()
		w.mu.Unlock()
		w.signal()
	}
}

// drop forgets the pending changes and marks w lost. w.mu is held.
func (w *Watcher) drop() {
	w.pending = map[string]struct{}{}
	w.bytes = 0
	w.removed = false
	w.lost = true
}

func (w *Watcher) add(key []byte) {
	w.mu.Lock()
	if !w.lost && !w.closed {
		if _, ok := w.pending[string(key)]; !ok {
			if cost := len(key) + pendingCost; w.bytes+cost > w.max {
				w.drop()
			} else {
				w.pending[string(key)] = struct{}{}
				w.bytes += cost
			}
		}
	}
	w.mu.Unlock()
	w.signal()
}

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// Ready receives when changes (or a loss) are pending.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Lost reports whether pending changes were dropped since the last Drain.
func (w *Watcher) Lost() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lost
}

// Drain appends the pending changes to dst[:0] and resets them. A channel
// removal comes first; then one event per changed key, with the key's
// state read now: EventPut with its value, or EventDelete. When lost is
// true nothing else is returned and the consumer must refresh. Keys and
// values stay valid until the next Drain.
func (w *Watcher) Drain(dst []Event) (evs []Event, lost bool) {
	w.drainMu.Lock()
	defer w.drainMu.Unlock()
	w.mu.Lock()
	keys, removed, lost := w.pending, w.removed, w.lost
	w.pending = map[string]struct{}{}
	w.bytes, w.removed, w.lost = 0, false, false
	w.mu.Unlock()
	dst = dst[:0]
	if lost {
		return dst, true
	}
	if removed {
		dst = append(dst, Event{Op: EventChannelRemoved})
	}
	w.buf, w.spans = w.buf[:0], w.spans[:0]
	for k := range keys {
		sp := span{k0: len(w.buf), op: EventPut}
		w.buf = append(w.buf, k...)
		sp.k1 = len(w.buf)
		var err error
		w.buf, _, err = w.s.Get(w.ch, w.buf[sp.k0:sp.k1], w.buf)
		if err != nil {
			sp.op = EventDelete
		}
		sp.v1 = len(w.buf)
		w.spans = append(w.spans, sp)
	}
	for _, sp := range w.spans {
		ev := Event{Op: sp.op, Key: w.buf[sp.k0:sp.k1:sp.k1]}
		if sp.op == EventPut {
			ev.Value = w.buf[sp.k1:sp.v1:sp.v1]
		}
		dst = append(dst, ev)
	}
	return dst, false
}

// Close stops the watcher.
func (w *Watcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.pending = nil
	w.mu.Unlock()
	s := w.s
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	idx := watchIndex{}
	for k, v := range *s.watchers.Load() {
		if k == w.ch {
			v = slices.DeleteFunc(slices.Clone(v), func(x *Watcher) bool { return x == w })
			if len(v) == 0 {
				continue
			}
		}
		idx[k] = v
	}
	s.watchers.Store(&idx)
}
