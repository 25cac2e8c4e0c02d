package logstore

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

// ChannelStats describes one channel.
type ChannelStats struct {
	Name      string
	Records   uint64 // records in the channel's files
	Bytes     uint64 // their value bytes
	DiskBytes int64  // size of the channel's files
	Segments  int
	First     uint64 // lowest timestamp (0 when empty)
	Last      uint64 // highest timestamp (0 when empty)
}

func (c *channel) stats() ChannelStats {
	cs := ChannelStats{Name: c.name, Segments: len(c.segs)}
	for _, sf := range c.segs {
		cs.DiskBytes += sf.size
		if sf.records == 0 {
			continue
		}
		if cs.Records == 0 {
			cs.First, cs.Last = sf.minTs, sf.maxTs
		}
		cs.Records += sf.records
		cs.Bytes += sf.bytes
		cs.First, cs.Last = min(cs.First, sf.minTs), max(cs.Last, sf.maxTs)
	}
	return cs
}

// Channels returns every channel's statistics, sorted by name. Records
// hidden by a replicated per-vBucket channel removal are counted until
// their segment is rewritten or deleted.
func (s *Store) Channels() []ChannelStats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ChannelStats, 0, len(s.channels))
	for _, name := range slices.Sorted(maps.Keys(s.channels)) {
		if c := s.channels[name]; len(c.segs) > 0 { // not one whose first append failed
			out = append(out, c.stats())
		}
	}
	return out
}

// ChannelSize returns one channel's statistics, and false when it does
// not exist.
func (s *Store) ChannelSize(ch string) (ChannelStats, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.channels[ch]
	if c == nil || len(c.segs) == 0 {
		return ChannelStats{}, false
	}
	return c.stats(), true
}

// floorsOf returns a copy of ch's tombstones (mu held).
func (s *Store) floorsOf(ch string) map[uint16]uint64 { return maps.Clone(s.tombs[ch]) }

// cloneTombs deep-copies t.
func cloneTombs(t tombs) tombs {
	out := make(tombs, len(t))
	for ch, m := range t {
		out[ch] = maps.Clone(m)
	}
	return out
}

// RemoveChannel removes channel ch's records of the Active vBuckets: each
// Active vBucket that held records of it takes a seqno for the removal (a
// tombstone), which replication streams as an OpRemoveChannel mutation.
// The records of other vBuckets are a replica's copies: they stay until
// their active's removal arrives (Apply), so that the copies stay equal to
// their active's. Once no vBucket holds a visible record, the channel and
// its files go. Removing a channel that does not exist does nothing.
func (s *Store) RemoveChannel(ch string) error {
	if !engine.ValidChannelString(ch) {
		return fmt.Errorf("%w: %q", ErrBadChannel, ch)
	}
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	c := s.channels[ch]
	if c == nil {
		return nil
	}
	high := slices.Clone(s.high)
	tb := cloneTombs(s.tombs)
	var muts []engine.Mutation
	hidden := true
	for i, mx := range c.vbMax {
		vb := uint16(i)
		if mx == 0 || mx <= tb[ch][vb] {
			continue // nothing visible here
		}
		if s.states.Get(vb) != vbmap.Active {
			hidden = false // a replica's copies
			continue
		}
		high[vb]++
		tb.set(ch, vb, high[vb])
		muts = append(muts, engine.Mutation{VBucket: vb, Seqno: high[vb], Op: engine.OpRemoveChannel, Channel: ch})
	}
	if len(muts) == 0 && !hidden {
		return nil // only copies: their actives' removals will come
	}
	// The state goes first: should the deletion stop half-way, the
	// tombstones hide what is left, after a restart too.
	if err := writeState(s.fs, s.cfg.Dir, &state{floors: high, tombs: tb}); err != nil {
		return fmt.Errorf("cannot remove channel %q: %w", ch, noSpace(err))
	}
	s.mu.Lock()
	s.high, s.tombs = high, tb
	if hidden {
		delete(s.channels, ch)
	}
	for i := range muts {
		if subs := s.subs[muts[i].VBucket]; len(subs) > 0 {
			s.notify(subs, muts[i])
		}
	}
	s.mu.Unlock()
	s.maintGen++
	if !hidden {
		return nil
	}
	return s.deleteChannelFiles(c)
}

// deleteChannelFiles closes c's writers and deletes its directory.
func (s *Store) deleteChannelFiles(c *channel) error {
	for _, sf := range c.segs {
		if sf.w != nil {
			_ = s.closeFile(sf.w)
			s.dropWriter(sf)
		}
	}
	if err := s.fs.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("cannot delete channel directory %q: %w", c.dir, err)
	}
	if err := s.fs.SyncDir(s.cfg.Dir); err != nil {
		return fmt.Errorf("cannot sync %q: %w", s.cfg.Dir, err)
	}
	return nil
}

// applyRemove applies a replicated OpRemoveChannel: a tombstone hides the
// channel's records of vb up to seqno; once every vBucket of the channel
// is hidden, its files are deleted.
func (s *Store) applyRemove(ch string, vb uint16, seqno uint64) error {
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	if seqno <= s.high[vb] {
		return nil // a replay
	}
	high := slices.Clone(s.high)
	high[vb] = seqno
	tb := cloneTombs(s.tombs)
	tb.set(ch, vb, seqno)
	c := s.channels[ch]
	hidden := c != nil
	if c != nil {
		for v, mx := range c.vbMax {
			if mx > tb[ch][uint16(v)] {
				hidden = false
			}
		}
	}
	if err := writeState(s.fs, s.cfg.Dir, &state{floors: high, tombs: tb}); err != nil {
		return fmt.Errorf("cannot apply removal of channel %q: %w", ch, noSpace(err))
	}
	s.mu.Lock()
	s.high, s.tombs = high, tb
	if hidden {
		delete(s.channels, ch)
	}
	if subs := s.subs[vb]; len(subs) > 0 {
		s.notify(subs, engine.Mutation{VBucket: vb, Seqno: seqno, Op: engine.OpRemoveChannel, Channel: ch})
	}
	s.mu.Unlock()
	if hidden {
		s.maintGen++
		return s.deleteChannelFiles(c)
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// Maintain applies retention once: it deletes the segments whose bucket
// ended Retention or more before Now, and compresses (zstd, sorted by
// timestamp) the plain segments whose bucket ended CompressAfter or more
// before Now. It runs every MaintainEvery in the background.
func (s *Store) Maintain() error {
	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	if s.isClosed() {
		return ErrClosed
	}
	now := max(s.cfg.Now().Unix(), 0)
	old := func(end uint64, age time.Duration) bool {
		a := int64(age / time.Second)
		return age > 0 && now >= a && end <= uint64(now-a)
	}
	type bucketRef struct {
		c     *channel
		start uint64
		drop  bool
	}
	var work []bucketRef
	s.mu.RLock()
	for _, name := range slices.Sorted(maps.Keys(s.channels)) {
		c := s.channels[name]
		for i := 0; i < len(c.segs); {
			start, end, plain := c.segs[i].hdr.Start, c.segs[i].hdr.End(), false
			j := i
			for ; j < len(c.segs) && c.segs[j].hdr.Start == start; j++ {
				end = max(end, c.segs[j].hdr.End())
				plain = plain || !c.segs[j].compressed()
			}
			switch {
			case old(end, s.cfg.Retention):
				work = append(work, bucketRef{c, start, true})
			case plain && old(end, s.cfg.CompressAfter):
				work = append(work, bucketRef{c, start, false})
			}
			i = j
		}
	}
	s.mu.RUnlock()
	var errs []error
	for _, w := range work {
		var err error
		if w.drop {
			err = s.deleteBucket(w.c, w.start)
		} else {
			err = s.rewriteBucket(w.c, w.start, nil, true)
		}
		if err != nil {
			s.log.Error("retention failed", "channel", w.c.name, "bucket", w.start, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Store) maintainLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.MaintainEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_ = s.Maintain()
		}
	}
}

// bucketSegs returns c's segments of the bucket at start (writeMu held).
func bucketSegs(c *channel, start uint64) []*segFile {
	var out []*segFile
	for _, sf := range c.segs {
		if sf.hdr.Start == start {
			out = append(out, sf)
		}
	}
	return out
}

// replaceSegs removes old from c's index and inserts repl (if not nil);
// the channel leaves the index when it has no segment left. Both locks
// held.
func (s *Store) replaceSegs(c *channel, old []*segFile, repl *segFile) {
	segs := slices.DeleteFunc(c.segs, func(sf *segFile) bool { return slices.Contains(old, sf) })
	if repl != nil {
		i := sort.Search(len(segs), func(i int) bool {
			return segs[i].hdr.Start > repl.hdr.Start ||
				(segs[i].hdr.Start == repl.hdr.Start && segs[i].gen > repl.gen)
		})
		segs = slices.Insert(segs, i, repl)
	}
	c.segs = segs
	if len(segs) == 0 && len(c.rewriting) == 0 {
		delete(s.channels, c.name)
	}
}

// removeFiles deletes files and fsyncs their directory, logging failures.
func (s *Store) removeFiles(dir string, paths []string) {
	for _, p := range paths {
		if err := s.fs.Remove(p); err != nil {
			s.log.Error("cannot delete segment", "file", p, "err", err)
		}
	}
	if err := s.fs.SyncDir(dir); err != nil {
		s.log.Error("cannot sync directory", "dir", dir, "err", err)
	}
}

// deleteBucket deletes every segment of c's bucket at start (retention).
func (s *Store) deleteBucket(c *channel, start uint64) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	segs := bucketSegs(c, start)
	var paths []string
	for _, sf := range segs {
		if sf.w != nil {
			_ = s.closeFile(sf.w)
			s.dropWriter(sf)
		}
		paths = append(paths, sf.path)
	}
	s.mu.Lock()
	s.replaceSegs(c, segs, nil)
	gone := s.channels[c.name] != c
	s.mu.Unlock()
	s.maintGen++
	s.removeFiles(c.dir, paths)
	if gone {
		if err := s.fs.Remove(c.dir); err != nil {
			s.log.Warn("cannot remove empty channel directory", "dir", c.dir, "err", err)
		}
	}
	s.st.deleted.Add(uint64(len(paths)))
	s.log.Info("retention deleted segments", "channel", c.name, "bucket", start, "files", len(paths))
	return nil
}

// rewriteBucket replaces every segment of c's bucket at start with one
// merged file of the next generation, sorted by timestamp (ties in append
// order), compressed or plain, without hidden records and without the
// records drop selects. Appends to the bucket go on meanwhile, into a yet
// newer generation. A crash before the old files are deleted is repaired by
// Open: a merged file supersedes lower generations.
func (s *Store) rewriteBucket(c *channel, start uint64, drop func(*segment.Record) bool, compress bool) error {
	s.writeMu.Lock()
	segs := bucketSegs(c, start)
	if len(segs) == 0 {
		s.writeMu.Unlock()
		return nil
	}
	gen := segs[len(segs)-1].gen + 1
	c.rewriting[start] = gen
	var err error
	for _, sf := range segs {
		if sf.w != nil && err == nil {
			err = s.closeWriter(sf)
		}
	}
	var views []*view
	var floors map[uint16]uint64
	if err == nil {
		s.mu.RLock()
		views, err = s.openViews(segs)
		floors = s.floorsOf(c.name)
		s.mu.RUnlock()
	}
	s.writeMu.Unlock()
	var out *segFile
	if err == nil {
		out, err = s.writeMerged(c, segs, views, gen, floors, drop, compress)
		closeViews(views)
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err != nil {
		delete(c.rewriting, start)
		return fmt.Errorf("cannot rewrite bucket %d of channel %q: %w", start, c.name, noSpace(err))
	}
	paths := make([]string, 0, len(segs)+1)
	for _, sf := range segs {
		paths = append(paths, sf.path)
	}
	keep := out
	if out.records == 0 {
		keep = nil
		paths = append(paths, out.path)
	}
	s.mu.Lock()
	delete(c.rewriting, start)
	s.replaceSegs(c, segs, keep)
	s.mu.Unlock()
	s.maintGen++
	s.removeFiles(c.dir, paths)
	if compress {
		s.st.compressed.Add(1)
	}
	s.log.Info("rewrote bucket", "channel", c.name, "bucket", start, "inputs", len(segs),
		"file", out.path, "records", out.records, "compressed", compress)
	return nil
}

// writeMerged writes the merged file of a rewrite under a temporary name,
// fsyncs it and renames it into place (vfs.WriteFileAtomicFunc).
func (s *Store) writeMerged(c *channel, segs []*segFile, views []*view, gen uint32,
	floors map[uint16]uint64, drop func(*segment.Record) bool, compress bool) (*segFile, error) {
	hdr := segment.Header{Flags: segment.FlagMerged | segment.FlagSorted, Start: segs[0].hdr.Start}
	for _, sf := range segs {
		hdr.Span = max(hdr.Span, sf.hdr.Span)
	}
	if compress {
		hdr.Flags |= segment.FlagCompressed
	}
	path := filepath.Join(c.dir, segName(hdr.Start, gen, compress))
	out := &segFile{path: path, hdr: hdr, gen: gen, sorted: true, vbs: newBitset(s.cfg.VBuckets)}
	var cw *countingWriter
	err := vfs.WriteFileAtomicFunc(s.fs, path, 0o644, func(f vfs.File) error {
		cw = &countingWriter{w: f}
		bw := bufio.NewWriterSize(cw, 1<<20)
		if _, err := bw.Write(hdr.Append(nil)); err != nil {
			return err
		}
		var blocks *segment.BlockWriter
		if compress {
			enc, err := segment.NewEncoder()
			if err != nil {
				return err
			}
			defer enc.Close()
			blocks = segment.NewBlockWriter(bw, enc)
		}
		srcs := make([]source, len(views))
		for i, v := range views {
			srcs[i] = s.newSource(v, 0, math.MaxUint64)
		}
		m := newMerge(srcs)
		var frame []byte
		for r, ok := m.next(); ok; r, ok = m.next() {
			if r.Seqno <= floors[r.VBucket] || (drop != nil && drop(r)) {
				continue
			}
			var err error
			if blocks != nil {
				err = blocks.Add(r)
			} else {
				frame = segment.AppendFrame(frame[:0], r)
				_, err = bw.Write(frame)
			}
			if err != nil {
				return err
			}
			out.add(r.Timestamp, r.VBucket, len(r.Value))
		}
		if err := m.err(); err != nil {
			return err
		}
		if n := m.damage(); n > 0 {
			s.st.corruptRead.Add(uint64(n))
			s.log.Warn("rewrite left out damaged records", "channel", c.name, "bucket", hdr.Start, "stretches", n)
		}
		if blocks != nil {
			if err := blocks.Flush(); err != nil {
				return err
			}
		}
		return bw.Flush()
	}, nil)
	switch {
	case vfs.Replaced(err):
		// Once renamed, the merged file supersedes its inputs at the next
		// Open whatever happens, so the rewrite must count as done.
		s.log.Error("cannot sync directory after a rewrite", "dir", c.dir, "err", err)
	case err != nil:
		return nil, err
	}
	out.size = cw.n
	return out, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}
