package kv

import (
	"time"

	"github.com/cespare/xxhash/v2"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// Sweeper work bounds.
const (
	sweepSegment   = 1024 // slots examined per lock hold
	sweepMinBudget = 8192 // slots examined per tick, at least
	sweepRounds    = 50   // ticks per full pass, at most (with larger budgets)
	sweepVBCost    = 16   // work charged for visiting a vBucket or a table
)

// sweepCursor is where the sweeper stopped: vBucket, table, slot.
type sweepCursor struct {
	vb      int
	started bool   // the vBucket's channel tombstones were handled
	ch      string // current (or last) table
	inTable bool
	pos     int
}

func (s *Store) sweepLoop(interval time.Duration) {
	defer s.wg.Done()
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tk.C:
			s.sweepSlots(max(sweepMinBudget, int(s.slots.Load()/sweepRounds)))
		}
	}
}

// sweepSlots examines about budget index slots from where the last sweep
// stopped: it expires records of active vBuckets (one OpExpire mutation
// each), purges tombstones older than TombstoneTTL (raising the purge
// seqno), drops empty tables, shrinks sparse indexes, trims tail chunks
// that are mostly garbage and compacts chunk descriptors. The tombstone (or
// channel removal) of a vBucket's latest mutation is kept: a snapshot then
// always ends with a mutation at its end seqno, so a consumer's seqno
// reaches the producer's.
func (s *Store) sweepSlots(budget int) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	for budget > 0 && !s.closed.Load() {
		p := s.parts[s.sweep.vb]
		p.mu.Lock()
		budget -= s.sweepStep(p, s.nowUnix(), min(budget, sweepSegment))
		p.mu.Unlock()
	}
}

// tombstoneAge is TombstoneTTL in whole seconds (rounded up).
func (s *Store) tombstoneAge() int64 {
	return int64((s.cfg.TombstoneTTL + time.Second - 1) / time.Second)
}

// sweepStep does at most n slots of work in p and returns the work done,
// charging sweepVBCost for moving to another vBucket or table (so sweeps
// progress, and an idle store is not swept in circles). p.mu is held.
func (s *Store) sweepStep(p *partition, now int64, n int) int {
	c := &s.sweep
	if !c.started {
		c.started = true
		kept := p.removed[:0]
		for _, ct := range p.removed {
			if now-fromStamp(ct.stamp) >= s.tombstoneAge() && ct.seqno != p.seqno {
				p.purged = max(p.purged, ct.seqno)
			} else {
				kept = append(kept, ct)
			}
		}
		clear(p.removed[len(kept):])
		p.removed = kept
		return sweepVBCost
	}
	if !c.inTable {
		name, ok := p.nextTable(c.ch)
		if !ok {
			*c = sweepCursor{vb: (c.vb + 1) % len(s.parts)}
			return sweepVBCost
		}
		c.ch, c.pos, c.inTable = name, 0, true
	}
	t := p.tables[c.ch]
	if t == nil {
		c.inTable = false
		return sweepVBCost
	}
	active := s.states.Get(p.id) == vbmap.Active // replicas get the active's expiries
	work := 0
	if t.timed == 0 {
		// Nothing to expire or purge: skip the slots (reading each record
		// is a cache miss; under load a full pass cost a few % of a core).
		work, c.pos = len(t.slots)/64, len(t.slots)
	}
	for work < n && c.pos < len(t.slots) {
		work++
		if t.slots[c.pos] == 0 {
			c.pos++
			continue
		}
		r := t.recAt(c.pos)
		switch {
		case r.tomb():
			if now-fromStamp(r.stamp) >= s.tombstoneAge() && r.seqno != p.seqno {
				p.purged = max(p.purged, r.seqno)
				t.drop(c.pos)
				continue // another entry may have shifted into c.pos
			}
		case active && r.flags&flagTime != 0 && now >= fromStamp(r.stamp):
			s.expire(p, t, c.pos, &r)
		}
		c.pos++
	}
	if c.pos >= len(t.slots) {
		c.inTable = false
		if t.count == 0 {
			p.dropTable(s, t)
		} else {
			slots := len(t.slots)
			t.shrink()
			s.slots.Add(int64(len(t.slots) - slots))
			t.trimTail()
			t.compactChunks()
		}
	}
	return max(work, 1)
}

// nextTable returns the smallest channel name of p above after.
func (p *partition) nextTable(after string) (string, bool) {
	best, ok := "", false
	for name := range p.tables {
		if name > after && (!ok || name < best) {
			best, ok = name, true
		}
	}
	return best, ok
}

// expire turns the expired record r in slot i into a tombstone at a new
// seqno. p.mu is held.
func (s *Store) expire(p *partition, t *table, i int, r *rec) {
	var kb [engine.MaxKeyLen]byte
	key := kb[:copy(kb[:], r.key)]
	n := int64(len(r.key) + len(r.value))
	seqno := p.seqno + 1
	if _, err := s.store(p, t, t.name, i, true, mix(xxhash.Sum64(key)), seqno, tombFlags(true), key, nil, toStamp(s.nowUnix()), false); err != nil {
		s.log.Warn("kv: cannot expire record", "channel", t.name, "vbucket", p.id, "err", err)
		return
	}
	p.seqno = seqno
	p.changed(engine.OpExpire, t.name, key, seqno)
	s.notify(t.name, key)
	p.ctr.expired.Add(1)
	p.ctr.expiredBytes.Add(n)
}
