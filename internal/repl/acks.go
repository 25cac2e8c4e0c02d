package repl

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/stats"
)

// Acks is what an active knows of its replicas' copies: per engine
// (bucket), vBucket and consumer, the highest seqno the consumer has
// acknowledged applying (stream.FeatureAcks) and the highest it said it
// has on disk (persisted, 0 when it cannot tell). Durable writes wait on it
// (Wait): a per-vBucket list of waiters, woken by the acknowledgements
// that arrive, each with a timer for its timeout — no goroutine per write.
// It also samples the replication lag: the time from a live mutation
// handed to a replica's stream to that replica's acknowledgement of it.
type Acks struct {
	mu  sync.Mutex
	vbs map[ackKey]*vbAcks

	lag map[string]*stats.Histogram // by bucket; fixed at NewAcks

	skip atomic.Bool // test hook: durable writes do not wait (a planted bug)
}

type ackKey struct {
	bucket string
	vb     uint16
}

// vbAcks is one vBucket of one engine.
type vbAcks struct {
	by      map[string]ackPos // by consumer
	waiters []*Waiter
	// The lag sample: a live mutation's seqno and when it was handed to a
	// stream. Each consumer's acknowledgement that first covers it observes
	// the lag once.
	sampleSeqno uint64
	sampleAt    time.Time
}

// ackPos is what one consumer acknowledged of a vBucket.
type ackPos struct {
	applied, persisted uint64
}

// ErrNotDurable is the outcome of a wait that ran out of time (or was
// cancelled) before a majority acknowledged: the write is ambiguous.
var ErrNotDurable = errors.New("repl: not acknowledged by a majority of the chain in time")

// lagSampleEvery is the least time between two lag samples of a vBucket.
const lagSampleEvery = 10 * time.Millisecond

// NewAcks returns an empty tracker for the given buckets.
func NewAcks(buckets ...string) *Acks {
	a := &Acks{vbs: make(map[ackKey]*vbAcks), lag: make(map[string]*stats.Histogram)}
	for _, b := range buckets {
		a.lag[b] = &stats.Histogram{}
	}
	return a
}

// SetSkipWait arms (or disarms) the planted bug of the durability tests:
// every wait succeeds at once, whatever the replicas hold.
func (a *Acks) SetSkipWait(on bool) { a.skip.Store(on) }

// Lag returns the replication lag histogram of bucket (nil if unknown).
func (a *Acks) Lag(bucket string) *stats.Histogram { return a.lag[bucket] }

func (a *Acks) vbLocked(bucket string, vb uint16) *vbAcks {
	k := ackKey{bucket, vb}
	v := a.vbs[k]
	if v == nil {
		v = &vbAcks{by: make(map[string]ackPos, 2)}
		a.vbs[k] = v
	}
	return v
}

// Sample offers a live mutation of vb handed to a stream at now as the
// vBucket's lag sample; it is taken when the previous one is older than
// lagSampleEvery.
func (a *Acks) Sample(bucket string, vb uint16, seqno uint64, now time.Time) {
	if a.lag[bucket] == nil {
		return
	}
	a.mu.Lock()
	v := a.vbLocked(bucket, vb)
	if seqno > v.sampleSeqno && now.Sub(v.sampleAt) >= lagSampleEvery {
		v.sampleSeqno, v.sampleAt = seqno, now
	}
	a.mu.Unlock()
}

// Note records that consumer holds vb of bucket up to applied, and on
// disk up to persisted, and wakes the waits it completes.
func (a *Acks) Note(bucket, consumer string, vb uint16, applied, persisted uint64) {
	now := time.Now()
	a.mu.Lock()
	v := a.vbLocked(bucket, vb)
	prev := v.by[consumer].applied
	v.by[consumer] = ackPos{applied, min(persisted, applied)}
	if h := a.lag[bucket]; h != nil && v.sampleSeqno > prev && v.sampleSeqno <= applied {
		h.Observe(now.Sub(v.sampleAt))
	}
	var done []*Waiter
	keep := v.waiters[:0]
	for _, w := range v.waiters {
		if v.holds(w) {
			done = append(done, w)
		} else {
			keep = append(keep, w)
		}
	}
	clear(v.waiters[len(keep):])
	v.waiters = keep
	a.mu.Unlock()
	for _, w := range done {
		w.finish(nil)
	}
}

// Forget drops what consumer acknowledged for vb of bucket (its copy was
// dropped, or it left the chain).
func (a *Acks) Forget(bucket, consumer string, vb uint16) {
	a.mu.Lock()
	if v := a.vbs[ackKey{bucket, vb}]; v != nil {
		delete(v.by, consumer)
	}
	a.mu.Unlock()
}

// Acked returns what consumer acknowledged for vb of bucket: applied and
// persisted.
func (a *Acks) Acked(bucket, consumer string, vb uint16) (applied, persisted uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v := a.vbs[ackKey{bucket, vb}]; v != nil {
		p := v.by[consumer]
		return p.applied, p.persisted
	}
	return 0, 0
}

// Need is how many replicas of a chain of n copies (the active first)
// must hold a write for a majority: the active counts as one.
func Need(n int) int { return max(n/2+1-1, 0) }

// holds reports whether enough of w's replicas hold its seqno (on disk,
// for a persist wait).
func (v *vbAcks) holds(w *Waiter) bool {
	got := 0
	for _, r := range w.replicas {
		p := v.by[r]
		if w.persist && p.persisted >= w.seqno || !w.persist && p.applied >= w.seqno {
			got++
		}
	}
	return got >= w.need
}

// Waiter is one durable write waiting for its majority.
type Waiter struct {
	a        *Acks
	key      ackKey
	seqno    uint64
	persist  bool // the replicas must have it on disk
	replicas []string
	need     int
	done     func(error)
	fired    atomic.Bool
	timer    *time.Timer
}

// finish calls done once.
func (w *Waiter) finish(err error) {
	if !w.fired.CompareAndSwap(false, true) {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.done(err)
}

// Cancel ends the wait with ErrNotDurable unless it is over already.
func (w *Waiter) Cancel() {
	if w.fired.Load() {
		return
	}
	w.a.remove(w)
	w.finish(ErrNotDurable)
}

func (a *Acks) remove(w *Waiter) {
	a.mu.Lock()
	if v := a.vbs[w.key]; v != nil {
		if i := slices.Index(v.waiters, w); i >= 0 {
			v.waiters = slices.Delete(v.waiters, i, i+1)
		}
	}
	a.mu.Unlock()
}

// Wait calls done(nil) once a majority of chain (the vBucket's chain, this
// node, the active, first) holds vb of bucket up to seqno — with persist,
// on disk: the replicas' persisted seqnos count, and the caller has made
// sure the active's own copy is on disk —, or done(ErrNotDurable) after
// timeout. done runs at most once, on the goroutine of the
// acknowledgement or the timer, or on Wait's own when the majority is
// there already (a chain of one, or fast replicas); it must not block.
// The Waiter cancels the wait.
func (a *Acks) Wait(bucket string, vb uint16, seqno uint64, persist bool, chain []string, timeout time.Duration, done func(error)) *Waiter {
	w := &Waiter{a: a, key: ackKey{bucket, vb}, seqno: seqno, persist: persist, done: done}
	if len(chain) > 1 {
		w.replicas = chain[1:]
	}
	w.need = Need(len(chain))
	if a.skip.Load() || w.need == 0 {
		w.finish(nil)
		return w
	}
	a.mu.Lock()
	v := a.vbLocked(bucket, vb)
	if v.holds(w) {
		a.mu.Unlock()
		w.finish(nil)
		return w
	}
	v.waiters = append(v.waiters, w)
	w.timer = time.AfterFunc(timeout, func() {
		a.remove(w)
		w.finish(ErrNotDurable)
	})
	a.mu.Unlock()
	return w
}

// Waiting counts the writes waiting for their majority.
func (a *Acks) Waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, v := range a.vbs {
		n += len(v.waiters)
	}
	return n
}
