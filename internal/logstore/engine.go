package logstore

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

var _ engine.Engine = (*Store)(nil)

// Kind returns engine.KindLog.
func (s *Store) Kind() engine.Kind { return engine.KindLog }

// SetState sets vb's state: round-robin appends go only to Active
// vBuckets, Apply takes only Replica and Pending ones.
func (s *Store) SetState(vb uint16, st vbmap.State) error {
	if _, err := s.states.Set(vb, st); err != nil {
		return fmt.Errorf("log: %w", err)
	}
	return nil
}

// State returns vb's state.
func (s *Store) State(vb uint16) vbmap.State { return s.states.Get(vb) }

// HighSeqno returns the latest seqno of vb (0 for a vBucket out of range).
func (s *Store) HighSeqno(vb uint16) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if int(vb) >= len(s.high) {
		return 0
	}
	return s.high[vb]
}

// Apply applies a replicated mutation: OpAppend stores the record with its
// vBucket and seqno (durable as Append is), OpRemoveChannel hides the
// channel's records of that vBucket. A mutation at or below the vBucket's
// high seqno is a replay and is ignored, which makes Apply idempotent: the
// log engine's Stream sends snapshots in seqno order.
func (s *Store) Apply(m *engine.Mutation) error {
	if int(m.VBucket) >= s.cfg.VBuckets || m.Seqno == 0 {
		return fmt.Errorf("%w: vbucket %d seqno %d", ErrBadMutation, m.VBucket, m.Seqno)
	}
	if !engine.ValidChannelString(m.Channel) {
		return fmt.Errorf("%w: %q", ErrBadChannel, m.Channel)
	}
	if err := engine.CheckApply(m.VBucket, s.states.Get(m.VBucket)); err != nil {
		return fmt.Errorf("log: apply %v seqno %d: %w", m.Op, m.Seqno, err)
	}
	switch m.Op {
	case engine.OpAppend:
		if len(m.Value) > segment.MaxValueLen {
			return fmt.Errorf("%w: %d bytes", ErrValueTooBig, len(m.Value))
		}
		return s.submit(&request{ch: m.Channel, recs: []Rec{{Timestamp: m.Timestamp, Value: m.Value}},
			vb: int(m.VBucket), seqno: m.Seqno, done: make(chan error, 1)})
	case engine.OpRemoveChannel:
		return s.applyRemove(m.Channel, m.VBucket, m.Seqno)
	}
	return fmt.Errorf("%w: op %v", ErrBadMutation, m.Op)
}

// DropVBucket discards every record of vb, by rewriting each bucket that
// holds some, forgets vb's tombstones and resets its seqno to 0. Streams of
// vb end with ErrVBucketDropped. The caller stops appends to vb first.
func (s *Store) DropVBucket(vb uint16) error {
	if int(vb) >= s.cfg.VBuckets {
		return fmt.Errorf("%w: vbucket %d", ErrBadMutation, vb)
	}
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	type bucketRef struct {
		c          *channel
		start      uint64
		compressed bool
	}
	var work []bucketRef
	s.mu.RLock()
	for _, name := range slices.Sorted(maps.Keys(s.channels)) {
		c := s.channels[name]
		for _, sf := range c.segs {
			if !sf.vbs.has(vb) {
				continue
			}
			if n := len(work); n > 0 && work[n-1].c == c && work[n-1].start == sf.hdr.Start {
				work[n-1].compressed = work[n-1].compressed && sf.compressed()
				continue
			}
			work = append(work, bucketRef{c, sf.hdr.Start, sf.compressed()})
		}
	}
	s.mu.RUnlock()
	for _, w := range work {
		if err := s.rewriteBucket(w.c, w.start, func(r *segment.Record) bool { return r.VBucket == vb }, w.compressed); err != nil {
			return fmt.Errorf("cannot drop vbucket %d: %w", vb, err)
		}
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	high := slices.Clone(s.high)
	high[vb] = 0
	tb := cloneTombs(s.tombs)
	for ch, m := range tb {
		delete(m, vb)
		if len(m) == 0 {
			delete(tb, ch)
		}
	}
	if err := writeState(s.fs, s.cfg.Dir, &state{floors: high, tombs: tb}); err != nil {
		return fmt.Errorf("cannot drop vbucket %d: %w", vb, noSpace(err))
	}
	s.mu.Lock()
	s.high, s.tombs = high, tb
	for _, c := range s.channels {
		c.vbMax[vb] = 0
	}
	s.endSubs(func(sb *sub) bool { return sb.vb == vb }, ErrVBucketDropped)
	s.mu.Unlock()
	s.maintGen++
	return nil
}

// Bounds of a stream's queue of live mutations; past them the stream
// catches up from the files instead.
const (
	maxSubQueue = 4096
	maxSubBytes = 4 << 20
)

// sub is a live stream's queue of mutations of one vBucket.
type sub struct {
	vb       uint16
	queue    []engine.Mutation
	qbytes   int
	overflow bool
	end      error // set when the stream must end
	wake     chan struct{}
}

func (sb *sub) signal() {
	select {
	case sb.wake <- struct{}{}:
	default:
	}
}

// notify queues m (whose value it copies) for every stream in subs (mu
// held).
func (s *Store) notify(subs map[*sub]struct{}, m engine.Mutation) {
	for sb := range subs {
		if sb.overflow {
			continue
		}
		if len(sb.queue) >= maxSubQueue || sb.qbytes+len(m.Value) > maxSubBytes {
			sb.overflow, sb.queue, sb.qbytes = true, nil, 0
		} else {
			c := m
			c.Value = slices.Clone(m.Value)
			sb.queue = append(sb.queue, c)
			sb.qbytes += len(c.Value)
		}
		sb.signal()
	}
}

// endSubs ends the streams that pred selects with err (mu held).
func (s *Store) endSubs(pred func(*sub) bool, err error) {
	for _, subs := range s.subs {
		for sb := range subs {
			if pred(sb) {
				sb.end = err
				sb.signal()
			}
		}
	}
}

// appendMutation returns the mutation of an appended record.
func appendMutation(ch string, a *appended) engine.Mutation {
	return engine.Mutation{VBucket: a.vb, Seqno: a.seqno, Op: engine.OpAppend, Channel: ch,
		Timestamp: a.ts, Value: a.value}
}

// Stream sends vb's mutations after seqno from: first a snapshot read
// from the files, in seqno order (records of every channel, and the
// channel-removal tombstones), then live mutations as they commit, each as
// a snapshot of one. A stream that falls more than 4096 mutations (or 4
// MiB) behind catches up from the files again. It returns when ctx is done, sink
// fails, the store closes (ErrClosed) or vb is dropped (ErrVBucketDropped);
// engine.ErrRollback when from is above HighSeqno(vb).
func (s *Store) Stream(ctx context.Context, vb uint16, from uint64, sink engine.Sink) error {
	if int(vb) >= s.cfg.VBuckets {
		return fmt.Errorf("%w: vbucket %d", ErrBadMutation, vb)
	}
	sb := &sub{vb: vb, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if from > s.high[vb] {
		s.mu.Unlock()
		return engine.ErrRollback
	}
	end := s.high[vb]
	if s.subs[vb] == nil {
		s.subs[vb] = map[*sub]struct{}{}
	}
	s.subs[vb][sb] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs[vb], sb)
		if len(s.subs[vb]) == 0 {
			delete(s.subs, vb)
		}
		s.mu.Unlock()
	}()
	last := from
	if end > last {
		if err := s.snapshot(ctx, vb, last, end, sink); err != nil {
			return err
		}
		last = end
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sb.wake:
		}
		s.mu.Lock()
		if sb.end != nil {
			s.mu.Unlock()
			return sb.end
		}
		q, overflow, hi := sb.queue, sb.overflow, s.high[vb]
		sb.queue, sb.qbytes, sb.overflow = nil, 0, false
		s.mu.Unlock()
		if overflow {
			if hi > last {
				if err := s.snapshot(ctx, vb, last, hi, sink); err != nil {
					return err
				}
				last = hi
			}
			continue
		}
		for i := range q {
			m := &q[i]
			if m.Seqno <= last {
				continue
			}
			if err := sink.Snapshot(last, m.Seqno); err != nil {
				return err
			}
			if err := sink.Mutation(m); err != nil {
				return err
			}
			last = m.Seqno
		}
	}
}

// snapshotChunk bounds the value bytes read ahead before they are sent.
const snapshotChunk = 1 << 20

// snapshot sends Snapshot(from, end) and then every mutation of vb in
// (from, end] in seqno order.
func (s *Store) snapshot(ctx context.Context, vb uint16, from, end uint64, sink engine.Sink) error {
	if err := sink.Snapshot(from, end); err != nil {
		return err
	}
	last := from
	for last < end {
		var err error
		if last, err = s.snapshotPass(ctx, vb, last, end, sink); err != nil {
			return err
		}
	}
	return nil
}

// snapLoc locates one mutation of a snapshot.
type snapLoc struct {
	seqno uint64
	seg   int // index into the pass's segments; -1 for a tombstone
	pos   segment.Pos
	ch    string
}

// snapSeg is a segment file as a snapshot pass sees it.
type snapSeg struct {
	ch   string
	path string
	hdr  segment.Header
	size int64
}

// snapshotPass finds every mutation of vb in (last, end] and sends them in
// seqno order, holding maintMu (so no file goes away) while it reads, but
// not while the sink works. If maintenance changed files meanwhile it
// returns early; the caller starts another pass from what was sent.
func (s *Store) snapshotPass(ctx context.Context, vb uint16, last, end uint64, sink engine.Sink) (uint64, error) {
	s.maintMu.Lock()
	locked := true
	defer func() {
		if locked {
			s.maintMu.Unlock()
		}
	}()
	// Passes queue on maintMu, and each one reads every segment holding
	// its vBucket: a stream whose consumer left while it waited ends here
	// instead of scanning the files first.
	if err := ctx.Err(); err != nil {
		return last, err
	}
	gen := s.maintGen
	var segs []snapSeg
	var locs []snapLoc
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return last, ErrClosed
	}
	floors := map[string]uint64{}
	for ch, m := range s.tombs {
		if seq, ok := m[vb]; ok {
			floors[ch] = seq
			if seq > last && seq <= end {
				locs = append(locs, snapLoc{seqno: seq, seg: -1, ch: ch})
			}
		}
	}
	for _, c := range s.channels {
		for _, sf := range c.segs {
			if sf.vbs.has(vb) {
				segs = append(segs, snapSeg{ch: c.name, path: sf.path, hdr: sf.hdr, size: sf.size})
			}
		}
	}
	s.mu.RUnlock()

	for i, sg := range segs {
		err := s.withFile(sg.path, func(f vfs.File) error {
			rd := segment.NewReader(f, sg.hdr, sg.size, s.validator(sg.hdr), s.dec)
			for n := 0; rd.Next(); n++ {
				if n%4096 == 4095 && ctx.Err() != nil {
					return ctx.Err()
				}
				r := rd.Record()
				if r.VBucket == vb && r.Seqno > last && r.Seqno <= end && r.Seqno > floors[sg.ch] {
					locs = append(locs, snapLoc{seqno: r.Seqno, seg: i, pos: rd.Pos(), ch: sg.ch})
				}
			}
			return rd.Err()
		})
		if err != nil {
			return last, err
		}
	}
	slices.SortFunc(locs, func(a, b snapLoc) int { return cmp.Compare(a.seqno, b.seqno) })

	rd := &locReader{s: s, segs: segs}
	defer rd.close()
	var chunk []engine.Mutation
	for i := 0; i < len(locs); {
		chunk, bytes := chunk[:0], 0
		for ; i < len(locs) && bytes < snapshotChunk; i++ {
			m, err := rd.read(vb, &locs[i])
			if err != nil {
				return last, err
			}
			chunk = append(chunk, m)
			bytes += len(m.Value)
		}
		s.maintMu.Unlock()
		locked = false
		for j := range chunk {
			if err := ctx.Err(); err != nil {
				return last, err
			}
			if err := sink.Mutation(&chunk[j]); err != nil {
				return last, err
			}
			last = chunk[j].Seqno
		}
		s.maintMu.Lock()
		locked = true
		if s.isClosed() {
			return last, ErrClosed
		}
		if s.maintGen != gen {
			return last, nil
		}
	}
	return end, nil
}

// withFile opens path read-only for the duration of fn.
func (s *Store) withFile(path string, fn func(vfs.File) error) error {
	f, err := s.fs.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open segment %q: %w", path, err)
	}
	defer f.Close()
	return fn(f)
}

// locReader reads the mutations snapLocs point at, keeping the last file
// and the last decompressed block.
type locReader struct {
	s        *Store
	segs     []snapSeg
	f        vfs.File
	fseg     int
	block    []byte
	blockSeg int
	blockOff int64
	sc       *segment.FrameScanner // over block, at record scIdx
	scIdx    int
}

func (lr *locReader) close() {
	if lr.f != nil {
		lr.f.Close()
	}
}

func (lr *locReader) read(vb uint16, l *snapLoc) (engine.Mutation, error) {
	if l.seg < 0 {
		return engine.Mutation{VBucket: vb, Seqno: l.seqno, Op: engine.OpRemoveChannel, Channel: l.ch}, nil
	}
	sg := &lr.segs[l.seg]
	if lr.f == nil || lr.fseg != l.seg {
		lr.close()
		lr.f = nil
		f, err := lr.s.fs.Open(sg.path)
		if err != nil {
			return engine.Mutation{}, fmt.Errorf("cannot open segment %q: %w", sg.path, err)
		}
		lr.f, lr.fseg = f, l.seg
	}
	valid := lr.s.validator(sg.hdr)
	var rec segment.Record
	if sg.hdr.Flags&segment.FlagCompressed == 0 {
		r, err := segment.ReadFrameAt(lr.f, l.pos.Off, sg.size, valid)
		if err != nil {
			return engine.Mutation{}, fmt.Errorf("cannot read segment %q: %w", sg.path, err)
		}
		rec = r
	} else {
		if lr.block == nil || lr.blockSeg != l.seg || lr.blockOff != l.pos.Off {
			raw, err := segment.ReadBlockAt(lr.f, l.pos.Off, sg.size, lr.s.dec, lr.block)
			if err != nil {
				return engine.Mutation{}, fmt.Errorf("cannot read segment %q: %w", sg.path, err)
			}
			lr.block, lr.blockSeg, lr.blockOff = raw, l.seg, l.pos.Off
			lr.sc = nil
		}
		if lr.sc == nil || lr.scIdx >= l.pos.Idx {
			lr.sc, lr.scIdx = segment.NewFrameScanner(bytes.NewReader(lr.block), 0, int64(len(lr.block)), valid), -1
		}
		for lr.scIdx < l.pos.Idx {
			if !lr.sc.Next() {
				return engine.Mutation{}, fmt.Errorf("%w: record %d of block at %d of %q", segment.ErrDamaged,
					l.pos.Idx, l.pos.Off, sg.path)
			}
			lr.scIdx++
		}
		sc := lr.sc
		rec = *sc.Record()
		rec.Value = slices.Clone(rec.Value)
	}
	return engine.Mutation{VBucket: rec.VBucket, Seqno: rec.Seqno, Op: engine.OpAppend, Channel: l.ch,
		Timestamp: rec.Timestamp, Value: rec.Value}, nil
}
