package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"shoal/internal/vfs"
)

// segMagic starts every overflow segment.
const segMagic = "SHQOVF01"

// segSuffix ends the name of every overflow segment.
const segSuffix = ".seg"

// frameRecord is the frame type of an overflow record.
const frameRecord = 'P'

// maxPending is the size at which an overflow's buffered records are
// written without waiting for the end of the batch.
const maxPending = 64 << 10

// segment is one overflow segment file.
type segment struct {
	n    uint64 // its number, also its name
	size int64  // bytes of complete frames, the magic included
}

// ofPos is where a record frame starts: segment number and offset.
type ofPos struct {
	seg uint64
	off int64
}

// ofRecord is a record read from the overflow.
type ofRecord struct {
	pos   ofPos
	size  int64 // of the whole frame
	vb    uint16
	seqno uint64
	value []byte
}

// ofMark is what undoes one append.
type ofMark struct {
	rotated bool
	prev    appender // the tail writer before a rotation
	size    int64    // the tail's size before the append, buffered bytes included
	vlen    int
	newDir  bool // the append created the queue's overflow directory
}

// overflow is a queue's records that did not fit its ring, in push order,
// in numbered segment files under dir. Reads take the head, appends go to
// the last segment. Segments that reads have left behind, and all of them
// when the overflow drains, are handed to the garbage list: they are
// deleted only after the next state file no longer refers to them.
type overflow struct {
	fs      vfs.FS
	log     *slog.Logger
	dir     string
	segSize int64
	garbage *[]string

	dirReady bool
	segs     []segment // oldest first; segs[0] holds the head
	lastSeg  uint64    // the newest segment number ever used
	headOff  int64     // offset of the head record in segs[0]
	w        appender  // writes segs[len-1]; w.f is nil when segs is empty
	r        vfs.File  // reads segs[0]
	fr       frameReader
	head     ofRecord // valid when cached
	cached   bool
	records  int64
	bytes    int64
	skip     map[ofPos]struct{} // records removed out of order
	dirty    bool               // appended since the last sync
	newSegs  bool               // segments created since the last directory sync
	enc      []byte
	// pending holds record frames appended to the last segment but not yet
	// written: they count in records and bytes, not in the segment's size.
	// The store writes them (flush) or rolls them back before it unlocks.
	pending []byte
}

func (o *overflow) segPath(n uint64) string {
	return filepath.Join(o.dir, fmt.Sprintf("%016x%s", n, segSuffix))
}

// appendRecord appends a record frame to dst.
func appendRecord(dst []byte, vb uint16, seqno uint64, value []byte) []byte {
	start := len(dst)
	dst = beginFrame(dst, frameRecord)
	dst = appendU16(dst, vb)
	dst = appendU64(dst, seqno)
	dst = append(dst, value...)
	return finishFrame(dst, start)
}

// decodeRecord decodes the body of a record frame.
func decodeRecord(typ byte, body []byte) (vb uint16, seqno uint64, value []byte, err error) {
	if typ != frameRecord || len(body) < 10 {
		return 0, 0, nil, fmt.Errorf("%w: not a record frame (type %q, %d bytes)", ErrCorrupt, typ, len(body))
	}
	return binary.LittleEndian.Uint16(body), binary.LittleEndian.Uint64(body[2:]), body[10:], nil
}

// append stores a record at the tail: it buffers it in pending when its
// segment has room, for the caller to flush. It either stores all of it or
// nothing; the caller then calls commit or rollback with the mark.
func (o *overflow) append(vb uint16, seqno uint64, value []byte) (ofMark, error) {
	m := ofMark{size: o.w.size + int64(len(o.pending)), vlen: len(value)}
	if !o.dirReady {
		if err := o.fs.MkdirAll(o.dir, 0o755); err != nil {
			return m, fmt.Errorf("cannot create overflow directory %q: %w", o.dir, err)
		}
		o.dirReady, m.newDir = true, true
	}
	if len(o.segs) > 0 && m.size < o.segSize {
		if len(o.pending) >= maxPending {
			if err := o.flush(); err != nil {
				return m, err
			}
		}
		o.pending = appendRecord(o.pending, vb, seqno, value)
	} else {
		if err := o.flush(); err != nil { // the records before it, into their segment
			return m, err
		}
		n := o.lastSeg + 1
		path := o.segPath(n)
		f, err := o.fs.Create(path)
		if err != nil {
			return m, fmt.Errorf("cannot create overflow segment %q: %w", path, err)
		}
		a := appender{f: f}
		o.enc = appendRecord(append(o.enc[:0], segMagic...), vb, seqno, value)
		if err := a.write(o.enc); err != nil {
			_ = f.Close()
			_ = o.fs.Remove(path)
			return m, err
		}
		m.rotated, m.prev = true, o.w
		if len(o.segs) == 0 {
			o.headOff = magicLen
		}
		o.w, o.lastSeg = a, n
		o.segs = append(o.segs, segment{n: n, size: a.size})
		o.newSegs = true
	}
	o.records++
	o.bytes += int64(len(value))
	o.dirty = true
	return m, nil
}

// commit makes an append final: a segment it left behind is synced and
// closed.
func (o *overflow) commit(m ofMark) {
	if !m.rotated || m.prev.f == nil {
		return
	}
	if err := m.prev.f.Sync(); err != nil {
		o.log.Error("cannot sync overflow segment", "file", m.prev.f.Name(), "err", err)
	}
	_ = m.prev.f.Close()
}

// flush writes the pending records in one call. On failure they stay
// pending (for rollback) and the segment keeps no part of them.
func (o *overflow) flush() error {
	if len(o.pending) == 0 {
		return nil
	}
	if err := o.w.write(o.pending); err != nil {
		return err
	}
	o.segs[len(o.segs)-1].size = o.w.size
	o.pending = o.pending[:0]
	if cap(o.pending) > 2*maxPending {
		o.pending = nil
	}
	return nil
}

// rollback undoes an append.
func (o *overflow) rollback(m ofMark) {
	o.records--
	o.bytes -= int64(m.vlen)
	if !m.rotated && m.size >= o.w.size { // still pending
		o.pending = o.pending[:m.size-o.w.size]
		return
	}
	if m.rotated {
		path := o.segPath(o.lastSeg)
		_ = o.w.f.Close()
		if err := o.fs.Remove(path); err != nil {
			o.log.Warn("cannot remove rolled back overflow segment", "file", path, "err", err)
		}
		o.segs = o.segs[:len(o.segs)-1]
		o.w = m.prev
		o.lastSeg--
		o.pending = o.pending[:0] // what was buffered for the segment rolled back
		if len(o.segs) <= 1 {
			o.closeReader()
		}
		return
	}
	o.pending = o.pending[:0] // pushed after the mark: flushed by a later append
	if err := o.w.rollback(m.size); err != nil {
		o.log.Warn("cannot cut rolled back overflow record; retried before the next write", "err", err)
	}
	o.segs[len(o.segs)-1].size = m.size
	if len(o.segs) == 1 {
		o.closeReader() // it may have buffered the bytes just cut
	}
}

func (o *overflow) closeReader() {
	if o.r != nil {
		_ = o.r.Close()
		o.r = nil
	}
	o.cached = false
}

// peek returns the head record, reading it if needed, or nil when the
// overflow is empty. The value is valid until the next call on o. A record
// that cannot be read makes the rest of its segment unreadable: peek logs
// it, skips to the next segment and recounts what is left.
func (o *overflow) peek() (*ofRecord, error) {
	for o.records > 0 {
		if o.cached {
			return &o.head, nil
		}
		skipped, err := o.readHead()
		if err == nil {
			if skipped {
				continue
			}
			o.cached = true
			return &o.head, nil
		}
		if errors.Is(err, ErrCorrupt) || errors.Is(err, errTorn) {
			o.log.Error("overflow record unreadable, dropping the rest of its segment",
				"dir", o.dir, "segment", o.segs[0].n, "offset", o.headOff, "err", err)
			if err := o.dropCorrupt(); err != nil {
				return nil, err
			}
			continue
		}
		return nil, err
	}
	return nil, nil
}

// readHead reads the frame at the head into o.head. It reports skip when
// it stepped over a segment end or a record removed out of order.
func (o *overflow) readHead() (skip bool, err error) {
	if o.headOff >= o.segs[0].size {
		if len(o.segs) == 1 {
			return false, fmt.Errorf("%w: overflow %q ends with %d records unaccounted for", ErrCorrupt, o.dir, o.records)
		}
		o.dropHeadSegment()
		return true, nil
	}
	if o.r == nil {
		f, err := o.fs.Open(o.segPath(o.segs[0].n))
		if err != nil {
			return false, fmt.Errorf("cannot open overflow segment: %w", err)
		}
		o.r = f
		o.fr = newFrameReader(&offsetReader{f: f, off: o.headOff}, o.headOff)
	}
	typ, body, err := o.fr.next()
	if err != nil {
		if err == io.EOF {
			err = errTorn
		}
		return false, err
	}
	pos := ofPos{seg: o.segs[0].n, off: o.headOff}
	size := o.fr.off - o.headOff
	if _, ok := o.skip[pos]; ok {
		delete(o.skip, pos)
		o.headOff += size
		return true, nil
	}
	vb, seqno, value, err := decodeRecord(typ, body)
	if err != nil {
		return false, err
	}
	o.head = ofRecord{pos: pos, size: size, vb: vb, seqno: seqno, value: value}
	return false, nil
}

// pop removes the head record returned by peek.
func (o *overflow) pop() {
	if !o.cached {
		panic("queue: overflow pop without peek")
	}
	o.cached = false
	o.headOff = o.head.pos.off + o.head.size
	o.records--
	o.bytes -= int64(len(o.head.value))
	if o.records == 0 {
		o.drain()
	}
}

func (o *overflow) dropHeadSegment() {
	o.closeReader()
	*o.garbage = append(*o.garbage, o.segPath(o.segs[0].n))
	for p := range o.skip {
		if p.seg == o.segs[0].n {
			delete(o.skip, p)
		}
	}
	o.segs = o.segs[1:]
	o.headOff = magicLen
}

// drain forgets every segment once no record is left.
func (o *overflow) drain() {
	o.closeReader()
	if o.w.f != nil {
		_ = o.w.f.Close()
	}
	o.w = appender{}
	for _, s := range o.segs {
		*o.garbage = append(*o.garbage, o.segPath(s.n))
	}
	o.segs, o.headOff, o.skip, o.records, o.bytes, o.dirty = nil, 0, nil, 0, 0, false
	o.pending = nil
}

// dropCorrupt gives up the rest of the head segment and recounts.
func (o *overflow) dropCorrupt() error {
	o.closeReader()
	o.cut(0, o.headOff)
	return o.recount()
}

// cut ends segment i logically at off: what follows is unreadable.
func (o *overflow) cut(i int, off int64) {
	o.segs[i].size = off
	if i == len(o.segs)-1 && o.w.f != nil {
		o.w.size, o.w.torn = off, true // cut for real before the next write
	}
}

// recount counts the live records again, cutting every segment at its
// first unreadable frame.
func (o *overflow) recount() error {
	var records, bytes int64
	for i, s := range o.segs {
		start := int64(magicLen)
		if i == 0 {
			start = o.headOff
		}
		_, bad, err := o.scanSegment(s, start, func(r *ofRecord) bool {
			records++
			bytes += int64(len(r.value))
			return true
		})
		if err != nil {
			return err
		}
		if bad >= 0 {
			o.cut(i, bad)
		}
	}
	o.records, o.bytes = records, bytes
	if records == 0 {
		o.drain()
	}
	return nil
}

// removeAt removes the live record at pos, whose value is vlen bytes.
func (o *overflow) removeAt(pos ofPos, vlen int) {
	if o.cached && o.head.pos == pos {
		o.pop()
		return
	}
	if o.skip == nil {
		o.skip = make(map[ofPos]struct{})
	}
	o.skip[pos] = struct{}{}
	o.records--
	o.bytes -= int64(vlen)
	if o.records == 0 {
		o.drain()
	}
}

// scan calls fn for every live record from the head on, in order, until fn
// returns false. It reads with handles of its own. The record passed to fn
// is valid only during the call. A segment's unreadable rest is logged and
// skipped (reading the head cuts it off for good).
func (o *overflow) scan(fn func(r *ofRecord) bool) error {
	for i, s := range o.segs {
		start := int64(magicLen)
		if i == 0 {
			start = o.headOff
		}
		more, _, err := o.scanSegment(s, start, fn)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// scanSegment calls fn for the live records of s from offset start on. It
// returns whether fn wants more, and the offset of the first unreadable
// frame (-1 when there is none).
func (o *overflow) scanSegment(s segment, start int64, fn func(r *ofRecord) bool) (bool, int64, error) {
	path := o.segPath(s.n)
	f, err := o.fs.Open(path)
	if err != nil {
		return false, -1, fmt.Errorf("cannot open overflow segment: %w", err)
	}
	defer f.Close()
	fr := newFrameReader(&offsetReader{f: f, off: start}, start)
	for fr.off < s.size {
		off := fr.off
		typ, body, err := fr.next()
		var vb uint16
		var seqno uint64
		var value []byte
		if err == nil {
			vb, seqno, value, err = decodeRecord(typ, body)
		}
		if err != nil {
			if err == io.EOF || errors.Is(err, errTorn) || errors.Is(err, ErrCorrupt) {
				o.log.Error("overflow segment unreadable from here on", "file", path, "offset", off, "err", err)
				return true, off, nil
			}
			return false, -1, fmt.Errorf("cannot read overflow segment %q at %d: %w", path, off, err)
		}
		pos := ofPos{seg: s.n, off: off}
		if _, ok := o.skip[pos]; ok {
			continue
		}
		if !fn(&ofRecord{pos: pos, size: fr.off - off, vb: vb, seqno: seqno, value: value}) {
			return false, -1, nil
		}
	}
	return true, -1, nil
}

// sync makes the appended records durable.
func (o *overflow) sync() error {
	if o.dirty && o.w.f != nil {
		if err := o.w.f.Sync(); err != nil {
			return fmt.Errorf("cannot sync overflow segment %q: %w", o.w.f.Name(), err)
		}
	}
	o.dirty = false
	if o.newSegs {
		if err := o.fs.SyncDir(o.dir); err != nil {
			return fmt.Errorf("cannot sync overflow directory %q: %w", o.dir, err)
		}
		o.newSegs = false
	}
	return nil
}

// close releases the files.
func (o *overflow) close() {
	o.closeReader()
	if o.w.f != nil {
		_ = o.w.f.Close()
		o.w = appender{}
	}
}

// ofState is an overflow's entry in the state file.
type ofState struct {
	lastSeg uint64
	headSeg uint64
	headOff int64
	tailSeg uint64
	tailOff int64
	records int64
	bytes   int64
	skip    []ofPos
}

func (o *overflow) state() ofState {
	if len(o.pending) > 0 {
		panic("queue: overflow state with records not written")
	}
	st := ofState{lastSeg: o.lastSeg, headSeg: o.lastSeg, tailSeg: o.lastSeg, records: o.records, bytes: o.bytes}
	if len(o.segs) > 0 {
		st.headSeg, st.headOff = o.segs[0].n, o.headOff
		t := o.segs[len(o.segs)-1]
		st.tailSeg, st.tailOff = t.n, t.size
	}
	for p := range o.skip {
		st.skip = append(st.skip, p)
	}
	slices.SortFunc(st.skip, func(a, b ofPos) int {
		if a.seg != b.seg {
			return cmpU64(a.seg, b.seg)
		}
		return cmpU64(uint64(a.off), uint64(b.off))
	})
	return st
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// restore brings the overflow back from its state entry and the files on
// disk. With exact set (journal mode) the files are cut back to what the
// state says, since the journal replays what came after; otherwise (memory
// mode) records found after the state's tail are kept and seen is called
// for each of them. Segments the state no longer needs are deleted.
func (o *overflow) restore(st ofState, exact bool, seen func(vb uint16, seqno uint64)) error {
	o.lastSeg = st.lastSeg
	st.headOff = max(st.headOff, magicLen) // offsets inside the magic come only from damage
	st.tailOff = max(st.tailOff, magicLen)
	ents, err := o.fs.ReadDir(o.dir)
	if errors.Is(err, fs.ErrNotExist) {
		if st.records > 0 {
			o.log.Error("overflow directory missing, its records are lost", "dir", o.dir, "records", st.records)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot list overflow directory %q: %w", o.dir, err)
	}
	o.dirReady = true
	var nums []uint64
	for _, e := range ents {
		n, ok := parseSegName(e.Name())
		if !ok {
			o.log.Warn("ignoring unknown file in overflow directory", "dir", o.dir, "file", e.Name())
			continue
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	live := st.records > 0
	if live {
		o.records, o.bytes = st.records, st.bytes
		for _, p := range st.skip {
			if o.skip == nil {
				o.skip = make(map[ofPos]struct{}, len(st.skip))
			}
			o.skip[p] = struct{}{}
		}
	}
	recount := false
	for _, n := range nums {
		path := o.segPath(n)
		from := int64(-1) // where unvouched records start; -1: the state vouches for all
		switch {
		case live && n >= st.headSeg && n < st.tailSeg:
		case live && n == st.tailSeg:
			from = st.tailOff
		case n > st.tailSeg && !exact:
			from = magicLen
		default:
			if err := o.fs.Remove(path); err != nil {
				return fmt.Errorf("cannot remove stale overflow segment %q: %w", path, err)
			}
			continue
		}
		if want := st.headSeg + uint64(len(o.segs)); live && n <= st.tailSeg && n != want {
			o.log.Error("overflow segments missing, records lost", "dir", o.dir, "want", want, "found", n)
			recount = true
		}
		size, st2, err := o.restoreSegment(path, from, exact, seen)
		if err != nil {
			return err
		}
		if st2 != segIntact {
			recount = true
		}
		if st2 == segGone {
			continue
		}
		if len(o.segs) == 0 {
			o.headOff = magicLen
			if live && n == st.headSeg {
				o.headOff = st.headOff
			}
		}
		o.segs = append(o.segs, segment{n: n, size: size})
		o.lastSeg = max(o.lastSeg, n)
	}
	if len(o.segs) > 0 && o.headOff > o.segs[0].size {
		o.log.Error("overflow head beyond its segment's end", "dir", o.dir, "head", o.headOff, "size", o.segs[0].size)
		o.headOff, recount = o.segs[0].size, true
	}
	if o.records <= 0 || len(o.segs) == 0 {
		o.drain()
		return nil
	}
	last := o.segs[len(o.segs)-1]
	f, err := o.fs.OpenFile(o.segPath(last.n), os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open overflow segment: %w", err)
	}
	o.w = appender{f: f, size: last.size, torn: true} // cut and positioned before the first write
	if recount {
		return o.recount()
	}
	return nil
}

// segCheck is what restoreSegment found.
type segCheck uint8

const (
	segIntact  segCheck = iota // as the state says
	segDamaged                 // usable, but shorter than the state says: recount
	segGone                    // unusable and removed
)

// restoreSegment checks the segment at path and returns its size. From
// offset from on (unless from is -1) its records are not vouched for by the
// state: with exact set they are cut off, otherwise they are counted (calling
// seen) and a torn tail is cut.
func (o *overflow) restoreSegment(path string, from int64, exact bool, seen func(vb uint16, seqno uint64)) (int64, segCheck, error) {
	f, err := o.fs.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return 0, segGone, fmt.Errorf("cannot open overflow segment: %w", err)
	}
	defer f.Close()
	if err := readMagic(f, segMagic); err != nil {
		o.log.Error("dropping overflow segment without a valid header", "file", path, "err", err)
		return 0, segGone, o.fs.Remove(path)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, segGone, fmt.Errorf("cannot stat overflow segment: %w", err)
	}
	size := fi.Size()
	switch {
	case from < 0:
		return size, segIntact, nil
	case size < from:
		o.log.Error("overflow segment shorter than the state says", "file", path, "size", size, "want", from)
		return size, segDamaged, nil
	case exact:
		if err := f.Truncate(from); err != nil {
			return 0, segGone, fmt.Errorf("cannot cut overflow segment %q: %w", path, err)
		}
		return from, segIntact, nil
	}
	size, err = o.recoverTail(f, from, size, seen)
	return size, segIntact, err
}

// recoverTail counts the records of f between from and its end and cuts a
// torn or corrupt tail off. It returns the new size.
func (o *overflow) recoverTail(f vfs.File, from, size int64, seen func(vb uint16, seqno uint64)) (int64, error) {
	fr := newFrameReader(&offsetReader{f: f, off: from}, from)
	for {
		typ, body, err := fr.next()
		if err == nil {
			var vb uint16
			var seqno uint64
			var value []byte
			vb, seqno, value, err = decodeRecord(typ, body)
			if err == nil {
				o.records++
				o.bytes += int64(len(value))
				seen(vb, seqno)
				continue
			}
		}
		if err == io.EOF {
			return fr.off, nil
		}
		if !errors.Is(err, errTorn) && !errors.Is(err, ErrCorrupt) {
			return 0, fmt.Errorf("cannot read overflow segment %q: %w", f.Name(), err)
		}
		o.log.Warn("cutting torn tail of overflow segment", "file", f.Name(), "offset", fr.off, "bytes", size-fr.off)
		if err := f.Truncate(fr.off); err != nil {
			return 0, fmt.Errorf("cannot cut overflow segment %q: %w", f.Name(), err)
		}
		return fr.off, nil
	}
}

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	return n, err == nil
}
