package queue

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// Bounds of what a live stream may have queued for a slow sink before it
// is ended with ErrStreamLagged.
const (
	streamMaxMutations = 4096
	streamMaxBytes     = 64 << 20
)

// streamer is one live Stream's queue of mutations.
type streamer struct {
	ch    chan engine.Mutation
	bytes atomic.Int64
	err   error // why ch was closed; written before the close
}

// Kind returns engine.KindQueue.
func (s *Store) Kind() engine.Kind { return engine.KindQueue }

// SetState sets vb's state: Push places round-robin records only in
// Active vBuckets, Apply takes only Replica and Pending ones.
func (s *Store) SetState(vb uint16, st vbmap.State) error {
	if _, err := s.states.Set(vb, st); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// State returns vb's state.
func (s *Store) State(vb uint16) vbmap.State { return s.states.Get(vb) }

// HighSeqno returns the latest seqno of vb (0 for a vBucket out of range).
func (s *Store) HighSeqno(vb uint16) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(vb) >= len(s.vbs) {
		return 0
	}
	return s.vbs[vb].seqno
}

// Apply applies a mutation made on the active node, keeping its seqno:
// OpPush stores the record in its channel (in every subscriber queue, as
// Push does), OpPop removes the record pushed at seqno Ref from the queue
// of subscriber Key (the channel's only queue when it has no subscribers),
// OpRemoveChannel removes the channel's records of the vBucket. Subscriptions
// are not replicated: on a replica a record goes at its first pop. In
// journal mode with FsyncInterval 0 Apply returns once the mutation is on
// disk.
func (s *Store) Apply(m *engine.Mutation) error {
	if !engine.ValidChannelString(m.Channel) {
		return fmt.Errorf("%w: %q", ErrBadChannelName, m.Channel)
	}
	if int(m.VBucket) >= len(s.vbs) {
		return fmt.Errorf("%w: %d", ErrBadVBucket, m.VBucket)
	}
	if err := engine.CheckApply(m.VBucket, s.states.Get(m.VBucket)); err != nil {
		return fmt.Errorf("queue: apply %v seqno %d: %w", m.Op, m.Seqno, err)
	}
	var lsn uint64
	var err error
	s.mu.Lock()
	switch {
	case s.closed:
		err = ErrClosed
	case m.Op == engine.OpPush:
		if len(m.Value) > s.cfg.MaxValueSize {
			err = fmt.Errorf("%w: %d bytes", ErrValueTooBig, len(m.Value))
			break
		}
		lsn, err = s.push(m.VBucket, []pushTarget{{channel: m.Channel, seqno: m.Seqno}}, m.Value, true, nil)
	case m.Op == engine.OpPop:
		if !validSubscriber(string(m.Key)) {
			err = fmt.Errorf("%w: %q", ErrBadSubscriber, m.Key)
			break
		}
		s.enc = appendApplyPopEntry(s.enc[:0], m.Channel, string(m.Key), m.VBucket, m.Seqno, m.Ref)
		if lsn, err = s.logEntry(s.enc); err == nil {
			err = s.applyPop(m.Channel, string(m.Key), m.VBucket, m.Seqno, m.Ref)
		}
	case m.Op == engine.OpRemoveChannel:
		s.enc = appendApplyRemoveEntry(s.enc[:0], m.Channel, m.VBucket, m.Seqno)
		if lsn, err = s.logEntry(s.enc); err == nil {
			err = s.applyRemove(m.Channel, m.VBucket, m.Seqno)
		}
	default:
		err = fmt.Errorf("%w: %s", ErrBadMutation, m.Op)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.durable(context.Background(), lsn)
}

// applyPop removes one replicated pop's record.
func (s *Store) applyPop(channel, key string, vb uint16, seqno, ref uint64) error {
	var err error
	if ch := s.channels[channel]; ch != nil && ref != 0 { // ref 0 pops nothing (see Stream)
		q := ch.queues[0]
		if ch.subscribed {
			q = ch.queue(key)
		}
		if q != nil {
			if _, err = q.removeID(vb, ref); err == nil {
				err = q.refill()
			}
		}
	}
	v := &s.vbs[vb]
	v.seqno = max(v.seqno, seqno)
	v.lastRemoval = max(v.lastRemoval, seqno)
	if s.streaming(vb) {
		m := engine.Mutation{VBucket: vb, Seqno: seqno, Op: engine.OpPop, Channel: channel, Ref: ref}
		if key != "" {
			m.Key = []byte(key)
		}
		s.emit(m)
	}
	s.maybeCheckpoint()
	return err
}

// applyRemove removes the records of vb from channel; a channel removed
// here that no longer holds anything goes. The removal may arrive before
// this node's own RemoveChannel of the channel (the cluster's catalog
// change reaches the nodes in their own time): the channel then holds
// nothing of vb any more, so that RemoveChannel forgets it.
func (s *Store) applyRemove(name string, vb uint16, seqno uint64) error {
	err := s.removeVB(func(ch *channel) bool { return ch.name == name }, vb)
	if ch := s.channels[name]; ch != nil {
		ch.vbits[vb/64] &^= 1 << (vb % 64)
		if ch.removed && !ch.holdsAny() {
			s.forget(ch, ErrChannelRemoved)
			if s.journal == nil {
				s.writeIndex()
			}
		}
	}
	v := &s.vbs[vb]
	v.seqno = max(v.seqno, seqno)
	v.lastRemoval = max(v.lastRemoval, seqno)
	if s.streaming(vb) {
		s.emit(engine.Mutation{VBucket: vb, Seqno: seqno, Op: engine.OpRemoveChannel, Channel: name})
	}
	s.maybeCheckpoint()
	return err
}

// removeVB removes the records of vb from the channels which selects.
func (s *Store) removeVB(which func(*channel) bool, vb uint16) error {
	for _, ch := range s.channels {
		if !which(ch) || !ch.hasVB(vb) {
			continue
		}
		for _, q := range ch.queues {
			if _, err := q.remove(func(v uint16, _ uint64) bool { return v == vb }, false); err != nil {
				return fmt.Errorf("cannot remove vbucket %d from channel %q: %w", vb, ch.name, err)
			}
			if err := q.refill(); err != nil {
				return err
			}
		}
	}
	return nil
}

// DropVBucket discards every record of vb and resets its seqno to 0. Its
// live streams end with engine.ErrRollback.
func (s *Store) DropVBucket(vb uint16) error {
	if int(vb) >= len(s.vbs) {
		return fmt.Errorf("%w: %d", ErrBadVBucket, vb)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.enc = appendDropEntry(s.enc[:0], vb)
	lsn, err := s.logEntry(s.enc)
	if err == nil {
		err = s.drop(vb)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.durable(context.Background(), lsn)
}

func (s *Store) drop(vb uint16) error {
	err := s.removeVB(func(*channel) bool { return true }, vb)
	for _, ch := range s.channels {
		ch.vbits[vb/64] &^= 1 << (vb % 64)
	}
	s.vbs[vb].seqno, s.vbs[vb].lastRemoval = 0, 0
	s.endStreams(vb, engine.ErrRollback)
	s.maybeCheckpoint()
	return err
}

// Stream sends vb's records after seqno from, then its live mutations,
// until ctx is done (it then returns ctx.Err()), sink fails, or the stream
// falls too far behind (ErrStreamLagged). The snapshot holds the records
// still queued with a seqno above from, as OpPush mutations; a record in
// several subscriber queues is sent once. The engine keeps no history of
// pops, so a consumer that may hold records popped since from cannot catch
// up: Stream returns engine.ErrRollback when from is above HighSeqno(vb),
// or when a pop or removal happened in vb after from (from 0, a full
// snapshot, always works).
func (s *Store) Stream(ctx context.Context, vb uint16, from uint64, sink engine.Sink) error {
	if int(vb) >= len(s.vbs) {
		return fmt.Errorf("%w: %d", ErrBadVBucket, vb)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	v := &s.vbs[vb]
	high := v.seqno
	if from > high || (from > 0 && v.lastRemoval > from) {
		s.mu.Unlock()
		return engine.ErrRollback
	}
	var snap []engine.Mutation
	if from < high {
		var err error
		if snap, err = s.snapshot(vb, from); err != nil {
			s.mu.Unlock()
			return err
		}
		if !slices.ContainsFunc(snap, func(m engine.Mutation) bool { return m.Seqno == high }) {
			// The latest mutations popped or removed records: end the
			// snapshot with a pop of nothing at high, so that the consumer
			// reaches the snapshot's end (it has no other way to learn it).
			snap = append(snap, engine.Mutation{VBucket: vb, Seqno: high, Op: engine.OpPop, Channel: snapshotEndChannel})
		}
	}
	st := &streamer{ch: make(chan engine.Mutation, streamMaxMutations)}
	v.streams = append(v.streams, st)
	s.mu.Unlock()
	defer s.unstream(vb, st)

	if from < high {
		if err := sink.Snapshot(from, high); err != nil {
			return err
		}
		for i := range snap {
			if err := sink.Mutation(&snap[i]); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-st.ch:
			if !ok {
				return st.err
			}
			st.bytes.Add(-int64(len(m.Value)))
			if err := sink.Snapshot(m.Seqno, m.Seqno); err != nil {
				return err
			}
			if err := sink.Mutation(&m); err != nil {
				return err
			}
		}
	}
}

// snapshotEndChannel names the channel of the pop of nothing (Ref 0) that
// ends a snapshot: any valid name does, no record is touched.
const snapshotEndChannel = "-"

// snapshot collects the queued records of vb with a seqno above from.
func (s *Store) snapshot(vb uint16, from uint64) ([]engine.Mutation, error) {
	var out []engine.Mutation
	for _, ch := range s.channels {
		if !ch.hasVB(vb) {
			continue
		}
		seen := make(map[uint64]bool)
		for _, q := range ch.queues {
			err := q.each(func(v uint16, seqno uint64, value []byte) bool {
				if v == vb && seqno > from && !seen[seqno] {
					seen[seqno] = true
					out = append(out, engine.Mutation{
						VBucket: vb, Seqno: seqno, Op: engine.OpPush, Channel: ch.name, Value: bytes.Clone(value),
					})
				}
				return true
			})
			if err != nil {
				return nil, fmt.Errorf("cannot read channel %q for a stream: %w", ch.name, err)
			}
		}
	}
	return out, nil
}

func (s *Store) unstream(vb uint16, st *streamer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vbs[vb].streams = slices.DeleteFunc(s.vbs[vb].streams, func(x *streamer) bool { return x == st })
}

func (s *Store) streaming(vb uint16) bool { return len(s.vbs[vb].streams) > 0 }

// emit hands m to vb's live streams, ending those that fell behind.
func (s *Store) emit(m engine.Mutation) {
	m.Value = bytes.Clone(m.Value)
	v := &s.vbs[m.VBucket]
	v.streams = slices.DeleteFunc(v.streams, func(st *streamer) bool {
		if st.bytes.Load()+int64(len(m.Value)) <= streamMaxBytes {
			select {
			case st.ch <- m:
				st.bytes.Add(int64(len(m.Value)))
				return false
			default:
			}
		}
		st.err = ErrStreamLagged
		close(st.ch)
		return true
	})
}

// endStreams ends vb's live streams with err.
func (s *Store) endStreams(vb uint16, err error) {
	for _, st := range s.vbs[vb].streams {
		st.err = err
		close(st.ch)
	}
	s.vbs[vb].streams = nil
}

// Marks implements engine.Persister: in journal mode, the journal bytes
// appended (a push, pop or Apply that returned is in them) and those an
// fsync or a checkpoint covered; in memory mode ok is false (nothing is
// on disk before the shutdown's save).
func (s *Store) Marks() (written, synced uint64, ok bool) {
	if s.journal == nil {
		return 0, 0, false
	}
	written, synced, _ = s.journal.marks()
	return written, synced, true
}

// SyncedMoved implements engine.Persister: a channel closed at the
// journal's next fsync or checkpoint (never in memory mode).
func (s *Store) SyncedMoved() <-chan struct{} {
	if s.journal == nil {
		return nil
	}
	_, _, moved := s.journal.marks()
	return moved
}

// Journaled reports whether the store keeps a journal (journal mode): only
// then can a push be made durable on disk.
func (s *Store) Journaled() bool { return s.journal != nil }

var _ engine.Persister = (*Store)(nil)
