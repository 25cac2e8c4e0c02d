package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// stateMagic starts the state file.
const stateMagic = "SHQSTA01"

// stateVersion is the version in the state file's header frame.
const stateVersion = 1

// State file names in the store's directory: the state file, and the
// temporary file vfs.WriteFileAtomicFunc writes it to.
const (
	stateName    = "state"
	stateTmpName = stateName + vfs.AtomicTempSuffix
)

// State frame types.
const (
	stateHeader   = 'H'
	stateVBucket  = 'V'
	stateChannel  = 'C'
	stateQueue    = 'Q'
	stateSkip     = 'K'
	stateRingItem = 'R'
	stateEnd      = 'E'
)

// stateFlagRings is set in the header when the file holds the rings.
const stateFlagRings = 1

// stateHead is the state file's header frame.
type stateHead struct {
	nvb          int
	nextQueueID  uint64
	journalFirst uint64
	rings        bool
}

// stateVisitor receives a state file's contents as parseState checks them.
// Strings and byte slices are valid only during the call.
type stateVisitor interface {
	head(h stateHead) error
	vbucket(vb uint16, seqno, lastRemoval uint64) error
	channel(name string, subscribed bool, vbits []byte) error
	queue(subscriber string, id uint64, of ofState) error
	skip(p ofPos) error
	ringItem(vb uint16, seqno uint64, value []byte) error
}

// writeState writes the state file: vBucket seqnos, channels, queues with
// their overflow positions and, with rings set, every ring's records. It
// replaces the old one atomically (vfs.WriteFileAtomicFunc): written to
// state.tmp, fsynced, renamed over it, the directory fsynced.
func (s *Store) writeState(rings bool, journalFirst uint64) error {
	path := s.path(stateName)
	if err := vfs.WriteFileAtomicFunc(s.fs, path, 0o644, func(f vfs.File) error {
		return s.encodeState(f, rings, journalFirst)
	}, nil); err != nil {
		return classify(fmt.Errorf("cannot write state file %q: %w", path, err))
	}
	return nil
}

// encodeState writes the state file's contents to dst.
func (s *Store) encodeState(dst io.Writer, rings bool, journalFirst uint64) error {
	w := bufio.NewWriterSize(dst, 1<<20)
	frames := uint64(0)
	var b []byte
	put := func() error {
		frames++
		_, err := w.Write(b)
		return err
	}
	if _, err := w.WriteString(stateMagic); err != nil {
		return err
	}
	flags := uint8(0)
	if rings {
		flags = stateFlagRings
	}
	b = beginFrame(b[:0], stateHeader)
	b = appendU32(b, stateVersion)
	b = appendU32(b, uint32(len(s.vbs)))
	b = appendU64(b, s.nextQueueID)
	b = appendU64(b, journalFirst)
	b = appendU8(b, flags)
	b = finishFrame(b, 0)
	if err := put(); err != nil {
		return err
	}
	for i, v := range s.vbs {
		if v.seqno == 0 && v.lastRemoval == 0 {
			continue
		}
		b = beginFrame(b[:0], stateVBucket)
		b = appendU16(b, uint16(i))
		b = appendU64(b, v.seqno)
		b = appendU64(b, v.lastRemoval)
		b = finishFrame(b, 0)
		if err := put(); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(s.channels))
	for name := range s.channels {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ch := s.channels[name]
		b = beginFrame(b[:0], stateChannel)
		b = appendStr8(b, name)
		sub := uint8(0)
		if ch.subscribed {
			sub = 1
		}
		b = appendU8(b, sub)
		b = appendU32(b, uint32(len(ch.vbits)*8))
		for _, w := range ch.vbits {
			b = appendU64(b, w)
		}
		b = finishFrame(b, 0)
		if err := put(); err != nil {
			return err
		}
		for _, q := range ch.queues {
			if err := s.writeQueueState(q, rings, &b, put); err != nil {
				return err
			}
		}
	}
	b = beginFrame(b[:0], stateEnd)
	b = appendU64(b, frames)
	b = finishFrame(b, 0)
	if err := put(); err != nil {
		return err
	}
	return w.Flush()
}

func (s *Store) writeQueueState(q *queue, rings bool, b *[]byte, put func() error) error {
	st := q.of.state()
	buf := beginFrame((*b)[:0], stateQueue)
	buf = appendStr8(buf, q.subscriber)
	buf = appendU64(buf, q.id)
	buf = appendU64(buf, st.lastSeg)
	buf = appendU64(buf, st.headSeg)
	buf = appendU64(buf, uint64(st.headOff))
	buf = appendU64(buf, st.tailSeg)
	buf = appendU64(buf, uint64(st.tailOff))
	buf = appendU64(buf, uint64(st.records))
	buf = appendU64(buf, uint64(st.bytes))
	*b = finishFrame(buf, 0)
	if err := put(); err != nil {
		return err
	}
	for _, p := range st.skip {
		buf = beginFrame((*b)[:0], stateSkip)
		buf = appendU64(buf, p.seg)
		buf = appendU64(buf, uint64(p.off))
		*b = finishFrame(buf, 0)
		if err := put(); err != nil {
			return err
		}
	}
	if !rings {
		return nil
	}
	var err error
	q.ring.each(func(off int, h itemHeader) bool {
		buf = beginFrame((*b)[:0], stateRingItem)
		buf = appendU16(buf, h.vb)
		buf = appendU64(buf, h.seqno)
		buf = q.ring.appendValue(buf, off, h)
		*b = finishFrame(buf, 0)
		err = put()
		return err == nil
	})
	return err
}

// parseState reads a state file and hands its contents to v in order,
// checking its structure: magic, header first, vBuckets in range, queues
// inside channels, skips and ring records inside queues, ring records only
// when the header says so, and a final end frame counting the others. Any
// departure is an error wrapping ErrCorrupt.
//
// Bytes after a valid end frame (which counts every frame before it, so
// the file is whole up to there) are not parsed: parseState returns an
// error wrapping errStrayTail that gives their offset, after visiting
// everything. The state is complete; the caller may ignore the tail.
//
// nvb < 0 accepts the vBucket count the header gives (an offline check,
// which does not know the node's).
func parseState(r io.Reader, nvb int, v stateVisitor) error {
	var magic [magicLen]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || string(magic[:]) != stateMagic {
		return fmt.Errorf("%w: state file does not start with %q", ErrCorrupt, stateMagic)
	}
	fr := newFrameReader(r, magicLen)
	var (
		frames          uint64
		rings, inQueue  bool
		inChannel, done bool
	)
	for {
		if done {
			if _, err := fr.r.ReadByte(); err == io.EOF {
				return nil
			}
			return &strayTailError{off: fr.off}
		}
		typ, body, err := fr.next()
		if err == io.EOF {
			return fmt.Errorf("%w: state file ends before its end frame", ErrCorrupt)
		}
		if err != nil {
			return fmt.Errorf("state file: %w", err)
		}
		if frames == 0 && typ != stateHeader {
			return fmt.Errorf("%w: state file does not start with a header frame", ErrCorrupt)
		}
		d := newFieldDecoder(body)
		switch typ {
		case stateHeader:
			if frames != 0 {
				return fmt.Errorf("%w: second header frame in the state file", ErrCorrupt)
			}
			version, n := d.u32(), int(d.u32())
			h := stateHead{nvb: n, nextQueueID: d.u64(), journalFirst: d.u64()}
			flags := d.u8()
			rings = flags&stateFlagRings != 0
			h.rings = rings
			if err = d.finish(); err == nil {
				switch {
				case version != stateVersion:
					err = fmt.Errorf("%w: state file version %d, want %d", ErrCorrupt, version, stateVersion)
				case nvb >= 0 && n != nvb:
					err = fmt.Errorf("state file is for %d vbuckets, the store has %d", n, nvb)
				case n < 1 || n > vbucket.Max:
					err = fmt.Errorf("%w: state file is for %d vbuckets", ErrCorrupt, n)
				case flags&^stateFlagRings != 0:
					err = fmt.Errorf("%w: unknown state flags %#x", ErrCorrupt, flags)
				default:
					nvb = n
					err = v.head(h)
				}
			}
		case stateVBucket:
			vb, seqno, lastRemoval := d.u16(), d.u64(), d.u64()
			if err = d.finish(); err == nil {
				if int(vb) >= nvb || lastRemoval > seqno {
					err = fmt.Errorf("%w: vbucket entry %d (seqno %d, removal %d)", ErrCorrupt, vb, seqno, lastRemoval)
				} else {
					err = v.vbucket(vb, seqno, lastRemoval)
				}
			}
		case stateChannel:
			name := d.bytes8()
			sub := d.u8()
			vbits := d.bytes32()
			if err = d.finish(); err == nil {
				if !engine.ValidChannel(name) || sub > 1 || len(vbits) != (nvb+63)/64*8 {
					err = fmt.Errorf("%w: channel entry %q", ErrCorrupt, name)
				} else {
					err = v.channel(string(name), sub == 1, vbits)
				}
			}
			inChannel, inQueue = true, false
		case stateQueue:
			sub := d.bytes8()
			id := d.u64()
			of := ofState{lastSeg: d.u64(), headSeg: d.u64()}
			headOff := d.u64()
			of.tailSeg = d.u64()
			tailOff, records, bytes := d.u64(), d.u64(), d.u64()
			if err = d.finish(); err == nil {
				if !inChannel || !validSubscriber(string(sub)) || headOff > math.MaxInt64 || tailOff > math.MaxInt64 ||
					records > math.MaxInt64 || bytes > math.MaxInt64 || of.headSeg > of.tailSeg || of.tailSeg > of.lastSeg {
					err = fmt.Errorf("%w: queue entry %q (id %d)", ErrCorrupt, sub, id)
				} else {
					of.headOff, of.tailOff, of.records, of.bytes = int64(headOff), int64(tailOff), int64(records), int64(bytes)
					err = v.queue(string(sub), id, of)
				}
			}
			inQueue = inChannel
		case stateSkip:
			seg, off := d.u64(), d.u64()
			if err = d.finish(); err == nil {
				if !inQueue || off > math.MaxInt64 {
					err = fmt.Errorf("%w: skip entry outside a queue", ErrCorrupt)
				} else {
					err = v.skip(ofPos{seg: seg, off: int64(off)})
				}
			}
		case stateRingItem:
			vb, seqno := d.u16(), d.u64()
			value := d.rest()
			if err = d.finish(); err == nil {
				if !inQueue || !rings || int(vb) >= nvb {
					err = fmt.Errorf("%w: ring record (vbucket %d) outside a queue of a file with rings", ErrCorrupt, vb)
				} else {
					err = v.ringItem(vb, seqno, value)
				}
			}
		case stateEnd:
			n := d.u64()
			if err = d.finish(); err == nil && n != frames {
				err = fmt.Errorf("%w: state file end frame counts %d frames, found %d", ErrCorrupt, n, frames)
			}
			done = true
		default:
			err = fmt.Errorf("%w: unknown state frame type %q", ErrCorrupt, typ)
		}
		if err != nil {
			if errors.Is(err, errShortBody) || errors.Is(err, errTrailingData) {
				err = fmt.Errorf("%w: state frame %q: %w", ErrCorrupt, typ, err)
			}
			return err
		}
		frames++
	}
}

// errStrayTail is wrapped by parseState's error when bytes follow a valid
// end frame.
var errStrayTail = errors.New("queue: stray bytes after the end of the state file")

// strayTailError says where the stray bytes after a state file's end frame
// start.
type strayTailError struct{ off int64 }

func (e *strayTailError) Error() string {
	return fmt.Sprintf("%v, from offset %d", errStrayTail, e.off)
}

func (e *strayTailError) Unwrap() error { return errStrayTail }

// restorer rebuilds a Store from its state file.
type restorer struct {
	s     *Store
	h     stateHead
	ch    *channel
	q     *queue
	ofs   map[*queue]ofState
	ids   map[uint64]bool
	vbits []uint64
}

func (r *restorer) head(h stateHead) error {
	r.h = h
	r.s.nextQueueID = h.nextQueueID
	return nil
}

func (r *restorer) vbucket(vb uint16, seqno, lastRemoval uint64) error {
	r.s.vbs[vb].seqno, r.s.vbs[vb].lastRemoval = seqno, lastRemoval
	return nil
}

func (r *restorer) channel(name string, subscribed bool, vbits []byte) error {
	if r.s.channels[name] != nil {
		return fmt.Errorf("%w: channel %q twice in the state file", ErrCorrupt, name)
	}
	r.q = nil
	r.ch = &channel{name: name, subscribed: subscribed, ringSize: r.s.cfg.ringSize(name), vbits: make([]uint64, len(vbits)/8)}
	d := newFieldDecoder(vbits)
	for i := range r.ch.vbits {
		r.ch.vbits[i] = d.u64()
	}
	r.s.channels[name] = r.ch
	return nil
}

func (r *restorer) queue(subscriber string, id uint64, of ofState) error {
	switch {
	case r.ids[id] || id == 0 || id >= r.s.nextQueueID:
		return fmt.Errorf("%w: queue id %d repeated or out of range", ErrCorrupt, id)
	case r.ch.queue(subscriber) != nil:
		return fmt.Errorf("%w: subscriber %q twice in channel %q", ErrCorrupt, subscriber, r.ch.name)
	case !r.ch.subscribed && (subscriber != "" || len(r.ch.queues) > 0):
		return fmt.Errorf("%w: channel %q without subscribers has queue %q", ErrCorrupt, r.ch.name, subscriber)
	}
	r.ids[id] = true
	r.q = r.s.newQueue(r.ch, subscriber, id)
	r.ch.queues = append(r.ch.queues, r.q)
	r.ofs[r.q] = of
	return nil
}

func (r *restorer) skip(p ofPos) error {
	of := r.ofs[r.q]
	of.skip = append(of.skip, p)
	r.ofs[r.q] = of
	return nil
}

func (r *restorer) ringItem(vb uint16, seqno uint64, value []byte) error {
	r.q.ring.push(vb, seqno, value)
	return nil
}

// check verifies what only the whole file shows: every channel has a
// queue.
func (r *restorer) check() error {
	for _, ch := range r.s.channels {
		if len(ch.queues) == 0 {
			return fmt.Errorf("%w: channel %q without queues in the state file", ErrCorrupt, ch.name)
		}
	}
	return nil
}

func (s *Store) path(name string) string { return filepath.Join(s.cfg.Dir, name) }

// recover rebuilds the store from the state file, the overflow files and,
// in journal mode, the journal; then it writes a fresh state file.
func (s *Store) recover() error {
	if err := s.fs.Remove(s.path(stateTmpName)); err == nil {
		s.log.Warn("removed a state file left half-written by a crash", "file", s.path(stateTmpName))
	}
	// Without a state file a journal may still exist (a crash during the
	// first checkpoint): replay it from its first segment.
	r := &restorer{s: s, ofs: make(map[*queue]ofState), ids: make(map[uint64]bool), h: stateHead{journalFirst: 1}}
	clean := true
	f, err := s.fs.Open(s.path(stateName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.log.Info("no queue state file, starting empty", "dir", s.cfg.Dir)
	case err != nil:
		return fmt.Errorf("cannot open state file: %w", err)
	default:
		err = parseState(bufio.NewReaderSize(f, 1<<20), len(s.vbs), r)
		_ = f.Close()
		var stray *strayTailError
		if errors.As(err, &stray) {
			// The file is whole up to its end frame, which counts every
			// frame before it: what follows is not ours. The state is
			// rewritten below, without it.
			s.log.Warn("queue state file has stray bytes after its end: ignored them, the file is rewritten without them",
				"file", s.path(stateName), "offset", stray.off)
			err = nil
		}
		if err == nil {
			err = r.check()
		}
		if err != nil {
			return fmt.Errorf("cannot load state file %q: %w", s.path(stateName), err)
		}
		clean = r.h.rings
	}
	// A state written by a journal checkpoint names the journal that
	// continues it: its overflow positions are exact and the journal is
	// replayed, whatever mode the store is opened in now.
	fromJournal := r.h.journalFirst > 0
	for q, st := range r.ofs {
		err := q.of.restore(st, fromJournal, func(vb uint16, seqno uint64) {
			s.vbs[vb].seqno = max(s.vbs[vb].seqno, seqno)
			q.ch.setVB(vb)
		})
		if err != nil {
			return err
		}
	}
	if err := s.removeOrphans(fromJournal); err != nil {
		return err
	}
	if fromJournal {
		s.journal = newJournal(s.fs, s.log, s.journalDir(), 0, s.cfg.FsyncInterval)
		s.checkpointAt = math.MaxInt64 // no checkpoint while replaying
		last, err := s.journal.replay(r.h.journalFirst, s.replay)
		if err != nil {
			return err
		}
		s.journal.gen = last
		for _, ch := range s.channels {
			for _, q := range ch.queues {
				if err := q.refill(); err != nil {
					return err
				}
			}
		}
	} else if !clean {
		s.log.Warn("queue store was not closed cleanly: memory rings are lost, overflow restored from its index")
		for i := range s.vbs {
			s.vbs[i].lastRemoval = s.vbs[i].seqno
		}
	}
	if s.cfg.Durability == DurabilityJournal {
		if s.journal == nil {
			s.journal = newJournal(s.fs, s.log, s.journalDir(), 0, s.cfg.FsyncInterval)
		}
		return s.checkpoint()
	}
	if s.journal == nil {
		return s.writeIndex()
	}
	// Opened in memory mode after journal mode: the index takes over.
	j := s.journal
	s.journal = nil
	if err := s.writeIndex(); err != nil {
		return err
	}
	gens, err := j.segments()
	if err != nil {
		return err
	}
	for _, g := range gens {
		if err := s.fs.Remove(j.segPath(g)); err != nil {
			return fmt.Errorf("cannot delete journal segment: %w", err)
		}
	}
	return nil
}

// removeOrphans deletes overflow directories of queues the state does not
// know: in journal mode queues created since the checkpoint (the journal
// rebuilds them), otherwise ones left by a crash after their removal.
func (s *Store) removeOrphans(fromJournal bool) error {
	ents, err := s.fs.ReadDir(s.overflowDir())
	if err != nil {
		return fmt.Errorf("cannot list overflow directory: %w", err)
	}
	known := make(map[uint64]bool)
	for _, ch := range s.channels {
		for _, q := range ch.queues {
			known[q.id] = true
		}
	}
	for _, e := range ents {
		id, err := strconv.ParseUint(e.Name(), 16, 64)
		if err != nil || len(e.Name()) != 16 {
			s.log.Warn("ignoring unknown file in overflow directory", "file", e.Name())
			continue
		}
		if known[id] {
			continue
		}
		if fromJournal {
			s.log.Info("deleting overflow of a queue created after the checkpoint; the journal rebuilds it", "dir", s.queueDir(id))
		} else {
			s.log.Warn("deleting overflow of a queue the state does not know", "dir", s.queueDir(id))
		}
		if err := s.fs.RemoveAll(s.queueDir(id)); err != nil {
			return fmt.Errorf("cannot delete orphan overflow: %w", err)
		}
	}
	return nil
}

// replay applies one journal entry during recovery.
func (s *Store) replay(typ byte, body []byte) error {
	e, err := decodeEntry(typ, body, len(s.vbs))
	if err != nil {
		return err
	}
	switch e.typ {
	case entryPush:
		_, err = s.push(e.vb, e.targets, e.value, false, nil)
	case entryPop:
		err = s.replayPop(e)
	case entryApplyPop:
		err = s.applyPop(e.channel, e.subscriber, e.vb, e.seqno, e.ref)
	case entrySubscribe:
		_, _, err = s.subscribe(e.channel, e.subscriber, false)
	case entryUnsubscribe:
		_, _, err = s.unsubscribe(e.channel, e.subscriber, false)
	case entryRemove:
		err = s.removeAll(e.channel)
	case entryRemoveIn:
		if ch := s.channels[e.channel]; ch != nil {
			err = s.removeIn(ch, e.removals)
		}
	case entryApplyRemove:
		err = s.applyRemove(e.channel, e.vb, e.seqno)
	case entryDrop:
		err = s.drop(e.vb)
	}
	return err
}

// replayPop repeats the pops of a journal entry: each record is normally
// at the head of its queue.
func (s *Store) replayPop(e entry) error {
	ch := s.channels[e.channel]
	var q *queue
	if ch != nil && ch.subscribed == e.subscribed {
		q = ch.queue(e.subscriber)
	}
	for _, p := range e.pops {
		if q != nil {
			found, err := q.removeID(p.vb, p.ref)
			if err != nil {
				return err
			}
			if !found {
				s.log.Warn("journal pops a record the queue does not hold", "channel", e.channel, "vbucket", p.vb, "seqno", p.ref)
			}
		}
		s.vbs[p.vb].seqno = max(s.vbs[p.vb].seqno, p.seqno)
		s.vbs[p.vb].lastRemoval = max(s.vbs[p.vb].lastRemoval, p.seqno)
	}
	if q != nil {
		return q.refill()
	}
	return nil
}
