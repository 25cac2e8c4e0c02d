package kv

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

var _ engine.Engine = (*Store)(nil)

// Live delivery limits: what one stream copies under one read lock.
const (
	liveBatchRecords = 256
	liveBatchBytes   = 1 << 20
)

// change is one entry of a changeLog.
type change struct {
	seqno  uint64
	keyPos uint64 // absolute position of the key in changeLog.keys
	ch     string
	op     engine.Op
	klen   uint8
}

// changeLog is a vBucket's ring of recent changes (keys and seqnos, no
// values), kept while the vBucket is streamed. Writers never wait for it:
// old entries are overwritten and a stream that needs one takes a new
// snapshot instead.
type changeLog struct {
	ents    []change // power of two
	keys    []byte   // power of two, at least 2 × engine.MaxKeyLen
	head    uint64   // entries ever added
	keyHead uint64   // key bytes ever added
}

func newChangeLog(n int) *changeLog {
	k := 1024
	for k < n*32 {
		k *= 2
	}
	return &changeLog{ents: make([]change, n), keys: make([]byte, k)}
}

// size is the memory of l, counted in MemoryUsage.
func (l *changeLog) size() int64 {
	return int64(len(l.ents))*int64(unsafe.Sizeof(change{})) + int64(len(l.keys))
}

func (l *changeLog) add(seqno uint64, op engine.Op, ch string, key []byte) {
	l.ents[l.head&uint64(len(l.ents)-1)] = change{seqno: seqno, keyPos: l.keyHead, ch: ch, op: op, klen: uint8(len(key))}
	l.head++
	for len(key) > 0 {
		n := copy(l.keys[l.keyHead&uint64(len(l.keys)-1):], key)
		key = key[n:]
		l.keyHead += uint64(n)
	}
}

// entry returns the change with absolute index i and appends its key to
// dst; ok is false when it was overwritten.
func (l *changeLog) entry(i uint64, dst []byte) (c change, key []byte, ok bool) {
	if i+uint64(len(l.ents)) < l.head {
		return c, dst, false
	}
	c = l.ents[i&uint64(len(l.ents)-1)]
	if c.keyPos+uint64(len(l.keys)) < l.keyHead {
		return c, dst, false
	}
	for p, n := c.keyPos, uint64(c.klen); n > 0; {
		b := l.keys[p&uint64(len(l.keys)-1):]
		b = b[:min(uint64(len(b)), n)]
		dst = append(dst, b...)
		p += uint64(len(b))
		n -= uint64(len(b))
	}
	return c, dst, true
}

// attach registers a stream's wake channel, creating the change log. p.mu
// is held for writing.
func (p *partition) attach(s *Store, wake chan struct{}) {
	if p.log == nil {
		p.log = newChangeLog(s.cfg.StreamBacklog)
		s.acct.used.Add(p.log.size())
	}
	p.wakers = append(p.wakers, wake)
}

// detach unregisters a stream and frees the log after the last one.
func (p *partition) detach(s *Store, wake chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wakers = slices.DeleteFunc(p.wakers, func(w chan struct{}) bool { return w == wake })
	if len(p.wakers) == 0 && p.log != nil {
		s.acct.used.Add(-p.log.size())
		p.log = nil
	}
}

// HighSeqno returns the latest seqno of vb (0 for a vBucket out of range).
func (s *Store) HighSeqno(vb uint16) uint64 {
	if int(vb) >= len(s.parts) {
		return 0
	}
	p := s.parts[vb]
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.seqno
}

// PurgeSeqno returns the highest seqno of vb whose tombstone was purged:
// a stream must start at 0 or at or above it.
func (s *Store) PurgeSeqno(vb uint16) uint64 {
	if int(vb) >= len(s.parts) {
		return 0
	}
	p := s.parts[vb]
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.purged
}

// item is one mutation collected for a stream; its bytes are in
// streamer.buf.
type item struct {
	seqno      uint64
	op         engine.Op
	ch         string
	k0, k1, v1 int
	expiry     int64
}

// streamer is the state of one Stream call.
type streamer struct {
	s     *Store
	p     *partition
	epoch uint64
	wake  chan struct{}
	items []item
	buf   []byte // keys and values of items
	key   []byte // scratch for change-log keys
	m     engine.Mutation
}

// Stream sends vb's mutations after seqno from to sink: a snapshot of every
// record, tombstone and channel removal with a seqno above from (in seqno
// order, under one marker Snapshot(from+1, high)), then live mutations in
// seqno order, each under its own marker, until ctx is done (it returns
// ctx.Err()), the Store closes (ErrClosed) or sink fails. Live values are
// read when sent, so a key changed again is sent once, at its latest
// seqno. A stream that falls behind the vBucket's change log takes a new
// snapshot; writers never wait for a stream.
//
// It returns an error wrapping engine.ErrRollback when from is above the
// high seqno, when from is not 0 and below the purge seqno (the consumer
// must restart from 0), or when vb is dropped while streaming.
func (s *Store) Stream(ctx context.Context, vb uint16, from uint64, sink engine.Sink) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if int(vb) >= len(s.parts) {
		return fmt.Errorf("kv: stream vbucket %d: %w", vb, ErrBadVBucket)
	}
	p := s.parts[vb]
	st := &streamer{s: s, p: p, wake: make(chan struct{}, 1)}
	st.m.VBucket = vb
	p.mu.Lock()
	if err := p.checkFrom(from); err != nil {
		p.mu.Unlock()
		return err
	}
	st.epoch = p.epoch
	p.attach(s, st.wake)
	p.mu.Unlock()
	defer p.detach(s, st.wake)

	last := from
	for {
		end, cursor, err := st.snapshot(last)
		if err != nil {
			return err
		}
		if end > last {
			if err := sink.Snapshot(last+1, end); err != nil {
				return err
			}
			for i := range st.items {
				if err := sink.Mutation(st.mutation(&st.items[i])); err != nil {
					return err
				}
			}
			last = end
		}
		for {
			var behind bool
			cursor, last, behind, err = st.live(ctx, cursor, last, sink)
			if err != nil {
				return err
			}
			if behind {
				break
			}
		}
	}
}

// checkFrom applies the rollback rules to a stream from seqno from. p.mu
// is held.
func (p *partition) checkFrom(from uint64) error {
	if from > p.seqno {
		return fmt.Errorf("kv: stream vbucket %d from %d above high seqno %d: %w", p.id, from, p.seqno, engine.ErrRollback)
	}
	if from != 0 && from < p.purged {
		return fmt.Errorf("kv: stream vbucket %d from %d below purge seqno %d: %w", p.id, from, p.purged, engine.ErrRollback)
	}
	return nil
}

// snapshot collects, under one read lock, everything of the vBucket with a
// seqno above from, sorted by seqno. It returns the high seqno and the
// change-log position that live delivery continues from.
func (st *streamer) snapshot(from uint64) (end, cursor uint64, err error) {
	p := st.p
	st.items, st.buf = st.items[:0], st.buf[:0]
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.epoch != st.epoch {
		return 0, 0, fmt.Errorf("kv: vbucket %d dropped while streaming: %w", p.id, engine.ErrRollback)
	}
	if err := p.checkFrom(from); err != nil {
		return 0, 0, err
	}
	for _, c := range p.removed {
		if c.seqno > from {
			st.items = append(st.items, item{seqno: c.seqno, op: engine.OpRemoveChannel, ch: c.name})
		}
	}
	for _, t := range p.tables {
		for i, sl := range t.slots {
			if sl == 0 {
				continue
			}
			if r := t.recAt(i); r.seqno > from {
				st.add(t.name, &r)
			}
		}
	}
	slices.SortFunc(st.items, func(a, b item) int { return cmp.Compare(a.seqno, b.seqno) })
	return p.seqno, p.log.head, nil
}

// add copies record r of channel ch into the stream's batch.
func (st *streamer) add(ch string, r *rec) {
	it := item{seqno: r.seqno, op: engine.OpSet, ch: ch, k0: len(st.buf), expiry: r.expiry()}
	switch {
	case r.flags&flagExpired != 0:
		it.op = engine.OpExpire
	case r.flags&flagTomb != 0:
		it.op = engine.OpDelete
	}
	st.buf = append(st.buf, r.key...)
	it.k1 = len(st.buf)
	st.buf = append(st.buf, r.value...)
	it.v1 = len(st.buf)
	st.items = append(st.items, it)
}

// mutation fills the stream's Mutation from it; its slices alias st.buf.
func (st *streamer) mutation(it *item) *engine.Mutation {
	st.m.Seqno, st.m.Op, st.m.Channel, st.m.Expiry = it.seqno, it.op, it.ch, it.expiry
	st.m.Key = st.buf[it.k0:it.k1:it.k1]
	st.m.Value = st.buf[it.k1:it.v1:it.v1]
	if it.op == engine.OpRemoveChannel {
		st.m.Key, st.m.Value = nil, nil
	}
	return &st.m
}

// live waits for changes after cursor and sends them. behind reports that
// the change log no longer holds cursor: the caller takes a new snapshot
// from last.
func (st *streamer) live(ctx context.Context, cursor, last uint64, sink engine.Sink) (uint64, uint64, bool, error) {
	cursor, behind, err := st.collect(cursor, last)
	if err != nil || behind {
		return cursor, last, behind, err
	}
	if len(st.items) == 0 {
		select {
		case <-ctx.Done():
			return cursor, last, false, ctx.Err()
		case <-st.s.done:
			return cursor, last, false, ErrClosed
		case <-st.wake:
		}
		return cursor, last, false, nil
	}
	for i := range st.items {
		it := &st.items[i]
		if err := sink.Snapshot(it.seqno, it.seqno); err != nil {
			return cursor, last, false, err
		}
		if err := sink.Mutation(st.mutation(it)); err != nil {
			return cursor, last, false, err
		}
		last = it.seqno
	}
	return cursor, last, false, nil
}

// collect copies up to a batch of changes after cursor, skipping those at
// or below last and those whose key changed again since (it is sent at its
// later seqno).
func (st *streamer) collect(cursor, last uint64) (uint64, bool, error) {
	p := st.p
	st.items, st.buf = st.items[:0], st.buf[:0]
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.epoch != st.epoch {
		return cursor, false, fmt.Errorf("kv: vbucket %d dropped while streaming: %w", p.id, engine.ErrRollback)
	}
	if st.s.closed.Load() {
		return cursor, false, ErrClosed
	}
	for cursor < p.log.head && len(st.items) < liveBatchRecords && len(st.buf) < liveBatchBytes {
		c, key, ok := p.log.entry(cursor, st.key[:0])
		st.key = key
		if !ok {
			return cursor, true, nil
		}
		cursor++
		if c.seqno <= last {
			continue
		}
		if c.op == engine.OpRemoveChannel {
			st.items = append(st.items, item{seqno: c.seqno, op: c.op, ch: c.ch})
			continue
		}
		t := p.tables[c.ch]
		if t == nil {
			continue
		}
		i, found := t.find(key, mix(xxhash.Sum64(key)))
		if !found {
			continue
		}
		if r := t.recAt(i); r.seqno == c.seqno {
			st.add(t.name, &r)
		}
	}
	return cursor, false, nil
}

// Apply applies a mutation made on the active node, keeping its seqno
// (the replica side of a stream). A set, delete or expiry older than what
// the vBucket holds for the key (or than a removal of the channel) is
// ignored, so a resent snapshot is harmless. vb must be a Replica or
// Pending (engine.CheckApply): such a vBucket does not expire records on
// its own, the active sends the expiries. Mutation fields are hostile
// input: they are validated and copied.
func (s *Store) Apply(m *engine.Mutation) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if int(m.VBucket) >= len(s.parts) {
		return fmt.Errorf("kv: apply to vbucket %d: %w", m.VBucket, ErrBadVBucket)
	}
	if err := engine.CheckApply(m.VBucket, s.states.Get(m.VBucket)); err != nil {
		return fmt.Errorf("kv: apply %v seqno %d: %w", m.Op, m.Seqno, err)
	}
	switch m.Op {
	case engine.OpSet, engine.OpDelete, engine.OpExpire:
		if err := s.checkWrite(m.Channel, m.Key, m.Value); err != nil {
			return fmt.Errorf("kv: apply %v seqno %d: %w", m.Op, m.Seqno, err)
		}
		if vb := vbucket.Of(m.Key, len(s.parts)); vb != m.VBucket {
			return fmt.Errorf("kv: apply %v seqno %d: key of vbucket %d sent for %d: %w", m.Op, m.Seqno, vb, m.VBucket, ErrWrongVBucket)
		}
	case engine.OpRemoveChannel:
		if err := s.checkChannel(m.Channel); err != nil {
			return fmt.Errorf("kv: apply %v seqno %d: %w", m.Op, m.Seqno, err)
		}
	default:
		return fmt.Errorf("kv: apply %v seqno %d: %w", m.Op, m.Seqno, ErrBadMutation)
	}
	p := s.parts[m.VBucket]
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Seqno <= p.removedAt(m.Channel) {
		return nil
	}
	if m.Op == engine.OpRemoveChannel {
		if t := p.tables[m.Channel]; t != nil {
			p.dropTable(s, t)
			s.notifyLost(t.name)
		}
		name := p.addChannelTomb(m.Channel, m.Seqno, toStamp(s.nowUnix()))
		p.seqno = max(p.seqno, m.Seqno)
		p.changed(m.Op, name, nil, m.Seqno)
		return nil
	}
	mh := mix(xxhash.Sum64(m.Key))
	t := p.tables[m.Channel]
	i, found := 0, false
	if t != nil {
		i, found = t.find(m.Key, mh)
		if found && t.recAt(i).seqno > m.Seqno {
			return nil // stale
		}
	}
	// A tombstone is stored even for a key this replica never had, so that
	// streams from this node can pass the deletion on.
	flags, stamp, limited := tombFlags(m.Op == engine.OpExpire), toStamp(s.nowUnix()), false
	if m.Op == engine.OpSet {
		stamp, limited = 0, true
		if m.Expiry != 0 {
			stamp = toStamp(m.Expiry)
		}
		flags = liveFlags(stamp)
	}
	t, err := s.store(p, t, m.Channel, i, found, mh, m.Seqno, flags, m.Key, m.Value, stamp, limited)
	if err != nil {
		return err
	}
	p.seqno = max(p.seqno, m.Seqno)
	p.changed(m.Op, t.name, m.Key, m.Seqno)
	s.notify(t.name, m.Key)
	return nil
}

// DropVBucket discards every record and tombstone of vb in every channel
// and resets its seqno and purge seqno to 0. Streams of vb end with
// engine.ErrRollback; watchers of its channels are marked lost.
func (s *Store) DropVBucket(vb uint16) error {
	if int(vb) >= len(s.parts) {
		return fmt.Errorf("kv: drop vbucket %d: %w", vb, ErrBadVBucket)
	}
	p := s.parts[vb]
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.tables {
		p.dropTable(s, t)
		s.notifyLost(t.name)
	}
	p.removed = nil
	p.seqno, p.purged = 0, 0
	p.epoch++
	for _, w := range p.wakers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	return nil
}
