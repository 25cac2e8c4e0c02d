package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// Rec is one record to append.
type Rec struct {
	Timestamp uint64
	Value     []byte
}

// request is one Append (or one replicated record) waiting for the
// committer.
type request struct {
	ch    string
	recs  []Rec
	vb    int    // the vBucket of every record; -1 = round-robin
	seqno uint64 // a replicated record's seqno; 0 = assign the next one
	done  chan error
}

// Append appends recs to channel ch and returns when they are durable as
// the fsync mode says: fsynced (Fsync 0) or written (interval mode). Each
// record goes to the next Active vBucket round-robin
// (engine.ErrNoActiveVBucket when there is none), or to
// vbucket.Of(routingKey) when routingKey is not nil, and takes that
// vBucket's next seqno.
//
// ctx is checked before the records are queued; once queued, Append waits
// for their outcome, since the committer reads the caller's values. It
// fails with ErrBadChannel, ErrValueTooBig, ErrClosed, or an I/O error
// (ErrNoSpace for a full disk: then no record of the call is stored, and
// nothing stored before is lost).
func (s *Store) Append(ctx context.Context, ch string, recs []Rec, routingKey []byte) error {
	vb := -1
	if routingKey != nil {
		vb = int(vbucket.Of(routingKey, s.cfg.VBuckets))
	}
	return s.appendTo(ctx, ch, recs, vb, false)
}

// AppendVB is Append of every record to vBucket vb, which the caller
// chose (a routing client spreads its appends over every vBucket of the
// cluster). It fails with ErrBadMutation for a vBucket out of range and
// engine.ErrNotActive unless vb is Active here.
func (s *Store) AppendVB(ctx context.Context, ch string, recs []Rec, vb uint16) error {
	if int(vb) >= s.cfg.VBuckets {
		return fmt.Errorf("%w: vbucket %d of %d", ErrBadMutation, vb, s.cfg.VBuckets)
	}
	return s.appendTo(ctx, ch, recs, int(vb), true)
}

// appendTo is Append to vBucket vb, or round-robin when vb is -1; active
// requires vb to be Active.
func (s *Store) appendTo(ctx context.Context, ch string, recs []Rec, vb int, active bool) error {
	if !engine.ValidChannelString(ch) {
		return fmt.Errorf("%w: %q", ErrBadChannel, ch)
	}
	for i := range recs {
		if len(recs[i].Value) > s.cfg.MaxValueSize {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooBig, len(recs[i].Value), s.cfg.MaxValueSize)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case vb < 0:
		if _, ok := s.states.NextActive(0); !ok {
			return engine.ErrNoActiveVBucket
		}
	case active && s.states.Get(uint16(vb)) != vbmap.Active:
		return fmt.Errorf("logstore: append to vbucket %d: %w", vb, engine.ErrNotActive)
	}
	req := requests.Get().(*request)
	*req = request{ch: ch, recs: recs, vb: vb, done: req.done}
	err := s.submit(req)
	req.recs = nil
	requests.Put(req)
	return err
}

// requests recycles requests and their channels.
var requests = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

// submit queues req for the committer and waits for its outcome.
func (s *Store) submit(req *request) error {
	s.qmu.Lock()
	if s.qclosed {
		s.qmu.Unlock()
		return ErrClosed
	}
	s.queue = append(s.queue, req)
	s.qmu.Unlock()
	s.signal()
	return <-req.done
}

func (s *Store) signal() {
	select {
	case s.qsignal <- struct{}{}:
	default:
	}
}

// gatherBelow is the batch size under which the committer, in interval
// mode, yields once to let more appenders queue before it commits: without
// it, batches of one or two records each pay a whole write.
const gatherBelow = 32

// maxGather bounds how long the committer waits for the writers of the
// previous batch in Fsync-always mode (see gather).
const maxGather = 2 * time.Millisecond

// commitLoop is the committer: it takes every queued request at once and
// commits them as one batch (group commit), until Close.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	var spare []*request
	b := newBatch(s.cfg.VBuckets)
	var prevReqs int           // requests of the previous batch
	var prevTook time.Duration // how long its commit took
	for {
		s.qmu.Lock()
		for len(s.queue) == 0 && !s.qclosed {
			s.qmu.Unlock()
			<-s.qsignal
			s.qmu.Lock()
		}
		switch {
		case s.cfg.Fsync > 0 && len(s.queue) < gatherBelow && !s.qclosed:
			s.qmu.Unlock()
			runtime.Gosched()
			s.qmu.Lock()
		case s.cfg.Fsync == 0:
			s.gather(prevReqs, min(prevTook, maxGather))
		}
		batch := s.queue
		s.queue = spare[:0]
		s.qmu.Unlock()
		if len(batch) == 0 {
			return
		}
		t0 := time.Now()
		err := s.commit(batch, b)
		prevReqs, prevTook = len(batch), time.Since(t0)
		for i, r := range batch {
			r.done <- err
			batch[i] = nil
		}
		spare = batch
	}
}

// gather, in Fsync-always mode, waits (with qmu held, released while
// waiting) until want requests are queued, or for at most limit. Writers
// that append one record after another come back as soon as their batch
// is acknowledged; without the wait the next batch would hold only those
// that queued during the previous fsync, about half of them, and every
// fsync would serve half the writers. want is the size of the previous
// batch and limit how long its commit took, so a writer waits at most
// about one more fsync, and only while the previous batch's writers are
// still coming back.
func (s *Store) gather(want int, limit time.Duration) {
	if len(s.queue) >= want || limit <= 0 {
		return
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	for len(s.queue) < want && !s.qclosed {
		s.qmu.Unlock()
		select {
		case <-s.qsignal:
		case <-t.C:
			s.qmu.Lock()
			return
		}
		s.qmu.Lock()
	}
}

// fileBatch is what one batch appends to one segment file.
type fileBatch struct {
	sf   *segFile
	c    *channel
	buf  []byte
	recs []appended
}

// appended is one record of a batch.
type appended struct {
	ts    uint64
	vb    uint16
	seqno uint64
	value []byte // the caller's, valid until the batch is acknowledged
}

// batch is the work of one commit. The committer reuses one.
type batch struct {
	files  []*fileBatch
	free   []*fileBatch
	byFile map[*segFile]*fileBatch
	high   []uint64 // tentative seqnos per vBucket, valid where stamp == gen
	stamp  []uint32
	gen    uint32
	rr     uint64
}

func newBatch(nvb int) *batch {
	return &batch{byFile: map[*segFile]*fileBatch{}, high: make([]uint64, nvb), stamp: make([]uint32, nvb)}
}

// reset empties b for the next commit, keeping its buffers.
func (b *batch) reset(rr uint64) {
	for _, fb := range b.files {
		*fb = fileBatch{buf: fb.buf[:0], recs: fb.recs[:0]}
		b.free = append(b.free, fb)
	}
	b.files = b.files[:0]
	clear(b.byFile)
	if b.gen++; b.gen == 0 {
		clear(b.stamp)
		b.gen = 1
	}
	b.rr = rr
}

// fileFor returns the fileBatch of sf, adding one.
func (b *batch) fileFor(sf *segFile, c *channel) *fileBatch {
	if fb := b.byFile[sf]; fb != nil {
		return fb
	}
	var fb *fileBatch
	if n := len(b.free); n > 0 {
		fb, b.free = b.free[n-1], b.free[:n-1]
	} else {
		fb = &fileBatch{}
	}
	fb.sf, fb.c = sf, c
	b.byFile[sf] = fb
	b.files = append(b.files, fb)
	return fb
}

// commit writes a batch of requests. Either all of it is stored (and, in
// Fsync-always mode, fsynced) or none of it: on failure every file it
// touched is cut back to its size before the batch.
func (s *Store) commit(reqs []*request, b *batch) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.useTick++
	b.reset(s.rr)
	err := s.prepare(reqs, b)
	if err == nil {
		err = s.writeBatch(b)
	}
	if err != nil {
		s.rollback(b)
		n := 0
		for _, r := range reqs {
			n += len(r.recs)
		}
		s.st.appendErrors.Add(uint64(n))
		return err
	}
	s.publish(b)
	s.committed()
	return nil
}

// prepare assigns vBuckets and seqnos and encodes the frames, per file.
func (s *Store) prepare(reqs []*request, b *batch) error {
	nvb := uint64(s.cfg.VBuckets)
	var fb *fileBatch // the file of the previous record, most often the next one's too
	for _, req := range reqs {
		c, err := s.channelForAppend(req.ch)
		if err != nil {
			return err
		}
		for i := range req.recs {
			rec := &req.recs[i]
			var vb uint16
			switch {
			case req.vb >= 0:
				vb = uint16(req.vb)
			default:
				v, ok := s.states.NextActive(uint32(b.rr % nvb))
				if !ok {
					return engine.ErrNoActiveVBucket
				}
				vb, b.rr = v, uint64(v)+1
			}
			cur := s.high[vb]
			if b.stamp[vb] == b.gen {
				cur = b.high[vb]
			}
			seqno := cur + 1
			if req.seqno != 0 {
				if req.seqno <= cur {
					continue // a replayed replicated record
				}
				seqno = req.seqno
			}
			b.high[vb], b.stamp[vb] = seqno, b.gen
			if start := s.bucket(rec.Timestamp); fb == nil || fb.c != c || fb.sf.hdr.Start != start {
				sf, err := s.writable(c, start)
				if err != nil {
					return err
				}
				fb = b.fileFor(sf, c)
			}
			fb.buf = segment.AppendFrame(fb.buf, &segment.Record{
				Timestamp: rec.Timestamp, VBucket: vb, Seqno: seqno, Value: rec.Value})
			fb.recs = append(fb.recs, appended{ts: rec.Timestamp, vb: vb, seqno: seqno, value: rec.Value})
		}
	}
	return nil
}

// writeBatch writes every file's frames, then fsyncs them in Fsync-always
// mode.
func (s *Store) writeBatch(b *batch) error {
	for _, fb := range b.files {
		if _, err := fb.sf.w.f.Write(fb.buf); err != nil {
			return fmt.Errorf("cannot append to segment %q: %w", fb.sf.path, noSpace(err))
		}
		fb.sf.w.dirty = true
	}
	if s.cfg.Fsync > 0 {
		return nil
	}
	for _, fb := range b.files {
		if err := s.syncWriter(fb.sf); err != nil {
			return err
		}
	}
	return nil
}

// syncWriter fsyncs sf's writer if it is dirty.
func (s *Store) syncWriter(sf *segFile) error {
	if !sf.w.dirty {
		return nil
	}
	t0 := time.Now()
	err := sf.w.f.Sync()
	s.observeFsync(time.Since(t0))
	if err != nil {
		s.marks.failed.Store(true)
		return fmt.Errorf("cannot fsync segment %q: %w", sf.path, noSpace(err))
	}
	sf.w.dirty = false
	return nil
}

// rollback cuts every file of a failed batch back to its committed size.
// A file that cannot be cut is closed and takes no more appends; its tail
// is invisible until the next Open, which cuts what is torn there (whole
// frames of the refused batch that made it to disk before the failure
// then read as stored: the one case where a refused append can reappear).
func (s *Store) rollback(b *batch) {
	for _, fb := range b.files {
		sf := fb.sf
		if sf.w == nil {
			continue
		}
		err := sf.w.f.Truncate(sf.size)
		if _, serr := sf.w.f.Seek(sf.size, io.SeekStart); err == nil {
			err = serr
		}
		if err != nil {
			s.log.Error("cannot cut back a failed append; the segment takes no more appends",
				"file", sf.path, "size", sf.size, "err", err)
			sf.broken = true
			s.marks.failed.Store(true) // its earlier records may not be on disk
			_ = s.closeFile(sf.w)
			s.dropWriter(sf)
		}
	}
}

// publish makes a written batch visible: sizes, bounds, seqnos, streams.
func (s *Store) publish(b *batch) {
	var n, nbytes uint64
	s.mu.Lock()
	for _, fb := range b.files {
		sf, c := fb.sf, fb.c
		sf.size += int64(len(fb.buf))
		for i := range fb.recs {
			a := &fb.recs[i]
			sf.add(a.ts, a.vb, len(a.value))
			c.vbMax[a.vb] = max(c.vbMax[a.vb], a.seqno)
			s.high[a.vb] = max(s.high[a.vb], a.seqno)
			nbytes += uint64(len(a.value))
			if subs := s.subs[a.vb]; len(subs) > 0 {
				s.notify(subs, appendMutation(c.name, a))
			}
		}
		n += uint64(len(fb.recs))
	}
	s.rr = b.rr
	s.mu.Unlock()
	s.st.appends.Add(n)
	s.st.appendBytes.Add(nbytes)
}

// channelForAppend returns channel name, creating its directory if new.
func (s *Store) channelForAppend(name string) (*channel, error) {
	if c := s.channels[name]; c != nil {
		return c, nil
	}
	dir := filepath.Join(s.cfg.Dir, name)
	if err := s.fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create channel directory %q: %w", dir, noSpace(err))
	}
	if err := s.fs.SyncDir(s.cfg.Dir); err != nil {
		return nil, fmt.Errorf("cannot sync %q: %w", s.cfg.Dir, noSpace(err))
	}
	c := s.newChannel(name, dir)
	s.mu.Lock()
	s.channels[name] = c
	s.mu.Unlock()
	return c, nil
}

// newChannel returns an empty channel.
func (s *Store) newChannel(name, dir string) *channel {
	return &channel{name: name, dir: dir, vbMax: make([]uint64, s.cfg.VBuckets), rewriting: map[uint64]uint32{}}
}

// writable returns the segment of c that takes appends for the bucket at
// start, opening its writer or creating the file.
func (s *Store) writable(c *channel, start uint64) (*segFile, error) {
	i := sort.Search(len(c.segs), func(i int) bool { return c.segs[i].hdr.Start > start })
	var last *segFile
	if i > 0 && c.segs[i-1].hdr.Start == start {
		last = c.segs[i-1]
	}
	reserved, rewriting := c.rewriting[start]
	if last != nil && !last.broken && !last.compressed() && last.hdr.Span == s.span &&
		(!rewriting || last.gen > reserved) {
		return last, s.openWriter(last)
	}
	gen := uint32(0)
	if last != nil {
		gen = last.gen + 1
	}
	if rewriting && reserved >= gen {
		gen = reserved + 1
	}
	return s.createSegment(c, i, start, gen)
}

// maxGenSkips bounds the generations createSegment skips over files that
// are not in the index.
const maxGenSkips = 16

// createSegment creates a plain segment file, fsyncs its header and its
// directory entry, and inserts it at index i of c.segs.
func (s *Store) createSegment(c *channel, i int, start uint64, gen uint32) (*segFile, error) {
	hdr := segment.Header{Start: start, Span: s.span}
	var path string
	var f vfs.File
	var err error
	for range maxGenSkips {
		// A file Open ignored (a bad header) may hold this name.
		path = filepath.Join(c.dir, segName(start, gen, false))
		f, err = s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
		gen++
	}
	if err != nil {
		return nil, fmt.Errorf("cannot create segment %q: %w", path, noSpace(err))
	}
	_, err = f.Write(hdr.Append(nil))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = s.fs.SyncDir(c.dir)
	}
	if err != nil {
		f.Close()
		_ = s.fs.Remove(path)
		return nil, fmt.Errorf("cannot create segment %q: %w", path, noSpace(err))
	}
	sf := &segFile{path: path, hdr: hdr, gen: gen, size: segment.HeaderSize, sorted: true,
		vbs: newBitset(s.cfg.VBuckets), w: &writer{f: f, used: s.useTick}}
	s.addWriter(sf)
	s.mu.Lock()
	c.segs = append(c.segs, nil)
	copy(c.segs[i+1:], c.segs[i:])
	c.segs[i] = sf
	s.mu.Unlock()
	return sf, nil
}

// openWriter makes sure sf has an open writer positioned at its end.
func (s *Store) openWriter(sf *segFile) error {
	if sf.w != nil {
		sf.w.used = s.useTick
		return nil
	}
	f, err := s.fs.OpenFile(sf.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot open segment %q for appends: %w", sf.path, err)
	}
	if _, err := f.Seek(sf.size, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("cannot seek segment %q: %w", sf.path, err)
	}
	sf.w = &writer{f: f, used: s.useTick}
	s.addWriter(sf)
	return nil
}

// addWriter registers sf's new writer and closes the least recently used
// writers beyond the limit (never one the current batch uses).
func (s *Store) addWriter(sf *segFile) {
	s.open = append(s.open, sf)
	for len(s.open) > s.cfg.MaxOpenWriters {
		var lru *segFile
		for _, o := range s.open {
			if o.w.used < s.useTick && (lru == nil || o.w.used < lru.w.used) {
				lru = o
			}
		}
		if lru == nil {
			return
		}
		if err := s.closeWriter(lru); err != nil {
			s.log.Error("cannot close segment", "file", lru.path, "err", err)
		}
	}
}

// closeWriter fsyncs (if dirty) and closes sf's writer.
func (s *Store) closeWriter(sf *segFile) error {
	if sf.w.syncing {
		sf.w.dirty = true // Sync's fsync of it is not done yet: do one here
	}
	err := s.syncWriter(sf)
	if cerr := s.closeFile(sf.w); err == nil && cerr != nil {
		err = fmt.Errorf("cannot close segment %q: %w", sf.path, cerr)
	}
	s.dropWriter(sf)
	return err
}

// closeFile closes w's file (writeMu held), or, while Sync is fsyncing
// it, leaves that to Sync.
func (s *Store) closeFile(w *writer) error {
	if w.syncing {
		w.orphan = true
		return nil
	}
	return w.f.Close()
}

// dropWriter forgets sf's (closed) writer.
func (s *Store) dropWriter(sf *segFile) {
	sf.w = nil
	for i, o := range s.open {
		if o == sf {
			s.open = append(s.open[:i], s.open[i+1:]...)
			break
		}
	}
}

// Sync fsyncs every file written since the last fsync. In interval mode
// it runs every Config.Fsync; Close runs it too. Appends go on while it
// fsyncs: it holds writeMu only to pick the files and to record the
// outcome (a file closed meanwhile is closed once its fsync is done).
// Holding writeMu throughout, as it once did, stopped every append for
// the length of each interval's fsync (with 4 KiB records, 15 ms on
// average every 100 ms).
func (s *Store) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	type pending struct {
		path string
		w    *writer
		err  error
	}
	s.writeMu.Lock()
	mark := s.marks.written.Load() // no batch is being written: writeMu
	var todo []pending
	for _, sf := range s.open {
		if sf.w.dirty {
			sf.w.dirty, sf.w.syncing = false, true
			todo = append(todo, pending{path: sf.path, w: sf.w})
		}
	}
	s.writeMu.Unlock()
	for i := range todo {
		t0 := time.Now()
		todo[i].err = todo[i].w.f.Sync()
		s.observeFsync(time.Since(t0))
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var first error
	for _, p := range todo {
		p.w.syncing = false
		if p.err != nil {
			s.marks.failed.Store(true)
			p.w.dirty = true
			err := fmt.Errorf("cannot fsync segment %q: %w", p.path, noSpace(p.err))
			s.log.Error("interval fsync failed", "file", p.path, "err", err)
			if first == nil {
				first = err
			}
		}
		if p.w.orphan {
			if err := p.w.f.Close(); err != nil {
				s.log.Error("cannot close segment", "file", p.path, "err", err)
			}
		}
	}
	if first == nil {
		s.syncedTo(mark)
	}
	return first
}

func (s *Store) syncLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.Fsync)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.Sync()
		}
	}
}
