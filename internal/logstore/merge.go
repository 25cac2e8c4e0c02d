package logstore

import (
	"cmp"
	"fmt"
	"slices"

	"shoal/internal/logstore/segment"
	"shoal/internal/vfs"
)

// view is a reader's snapshot of one segment file: an open handle and the
// committed size at the time it was taken.
type view struct {
	f      vfs.File
	path   string
	hdr    segment.Header
	size   int64
	sorted bool
}

// openViews opens the files of segs (mu held by the caller, so that no
// file can be deleted in between). On error it closes what it opened.
func (s *Store) openViews(segs []*segFile) ([]*view, error) {
	vs := make([]*view, 0, len(segs))
	for _, sf := range segs {
		f, err := s.fs.Open(sf.path)
		if err != nil {
			closeViews(vs)
			return nil, fmt.Errorf("cannot open segment %q: %w", sf.path, err)
		}
		vs = append(vs, &view{f: f, path: sf.path, hdr: sf.hdr, size: sf.size, sorted: sf.sorted})
	}
	return vs, nil
}

func closeViews(vs []*view) {
	for _, v := range vs {
		v.f.Close()
	}
}

// source yields the records of one view with timestamps in [lo, hi], in
// timestamp order (ties in file order). A record stays valid until the
// next call to next.
type source interface {
	next() (*segment.Record, bool)
	err() error
	damage() int
}

// newSource returns a source over v. A compressed file is always read
// front to back: rewrites write them sorted, and one that is not (damage
// that passed the CRCs) is read whole rather than cut short.
func (s *Store) newSource(v *view, lo, hi uint64) source {
	compressed := v.hdr.Flags&segment.FlagCompressed != 0
	if v.sorted || compressed {
		return &seqSource{rd: segment.NewReader(v.f, v.hdr, v.size, s.validator(v.hdr), s.dec), lo: lo, hi: hi,
			sorted: v.sorted}
	}
	return &sortSource{s: s, v: v, lo: lo, hi: hi}
}

// seqSource reads a file front to back; when the file is sorted it stops
// at the first timestamp past hi.
type seqSource struct {
	rd     *segment.Reader
	lo, hi uint64
	sorted bool
	done   bool
}

func (q *seqSource) next() (*segment.Record, bool) {
	for !q.done && q.rd.Next() {
		r := q.rd.Record()
		if r.Timestamp > q.hi {
			if q.sorted {
				q.done = true
				break
			}
			continue
		}
		if r.Timestamp >= q.lo {
			return r, true
		}
	}
	return nil, false
}

func (q *seqSource) err() error  { return q.rd.Err() }
func (q *seqSource) damage() int { return len(q.rd.Damage()) }

// sortSource reads an unsorted plain file in two passes: it first indexes
// the frames in [lo, hi] (24 bytes each), sorts the index stably by
// timestamp, then reads the frames in that order, a stretch of up to
// maxCoalesce bytes at a time.
type sortSource struct {
	s       *Store
	v       *view
	lo, hi  uint64
	idx     []frameRef
	indexed bool
	i       int // next index entry
	buf     []byte
	bufOff  int64
	rec     segment.Record
	e       error
	dmg     int
}

type frameRef struct {
	ts  uint64
	off int64
	n   int64
}

// maxCoalesce bounds one coalesced read.
const maxCoalesce = 1 << 20

func (q *sortSource) index() {
	q.indexed = true
	sc := segment.NewFrameScanner(q.v.f, segment.HeaderSize, q.v.size, q.s.validator(q.v.hdr))
	for sc.Next() {
		r := sc.Record()
		if r.Timestamp >= q.lo && r.Timestamp <= q.hi {
			q.idx = append(q.idx, frameRef{ts: r.Timestamp, off: sc.Offset(), n: int64(segment.FrameSize(len(r.Value)))})
		}
	}
	q.e, q.dmg = sc.Err(), len(sc.Damage())
	slices.SortStableFunc(q.idx, func(a, b frameRef) int { return cmp.Compare(a.ts, b.ts) })
}

func (q *sortSource) next() (*segment.Record, bool) {
	if !q.indexed {
		q.index()
	}
	for q.e == nil && q.i < len(q.idx) {
		ref := q.idx[q.i]
		if ref.off < q.bufOff || ref.off+ref.n > q.bufOff+int64(len(q.buf)) {
			q.fill()
			if q.e != nil {
				break
			}
		}
		q.i++
		b := q.buf[ref.off-q.bufOff : ref.off-q.bufOff+ref.n]
		r, _, ok := segment.DecodeFrame(b, q.s.validator(q.v.hdr))
		if !ok { // changed under us since the index pass
			q.dmg++
			continue
		}
		q.rec = r
		return &q.rec, true
	}
	return nil, false
}

// fill reads, in one go, the stretch of the file that holds the index
// entries from q.i on for as long as that stretch stays within
// maxCoalesce bytes: in a file that is nearly in order, many records.
func (q *sortSource) fill() {
	first := q.idx[q.i]
	lo, hi := first.off, first.off+first.n
	for j := q.i + 1; j < len(q.idx); j++ {
		e := q.idx[j]
		nlo, nhi := min(lo, e.off), max(hi, e.off+e.n)
		if nhi-nlo > maxCoalesce {
			break
		}
		lo, hi = nlo, nhi
	}
	n := int(hi - lo)
	if cap(q.buf) < n {
		q.buf = make([]byte, n, max(n, maxCoalesce))
	}
	q.buf = q.buf[:n]
	if _, err := q.v.f.ReadAt(q.buf, lo); err != nil {
		q.e = fmt.Errorf("cannot read segment %q at %d: %w", q.v.path, lo, err)
		q.buf = q.buf[:0]
		return
	}
	q.bufOff = lo
}

func (q *sortSource) err() error  { return q.e }
func (q *sortSource) damage() int { return q.dmg }

// merge interleaves sources by timestamp; ties go to the earlier source
// (the sources are given in append order: bucket start, then generation).
type merge struct {
	srcs  []source
	heads []*segment.Record
	last  int // source whose head was returned last; it advances first
}

func newMerge(srcs []source) *merge {
	m := &merge{srcs: srcs, heads: make([]*segment.Record, len(srcs)), last: -1}
	for i, src := range srcs {
		m.heads[i], _ = src.next()
	}
	return m
}

// next returns the next record in order; it stays valid until the next
// call.
func (m *merge) next() (*segment.Record, bool) {
	if m.last >= 0 {
		m.heads[m.last], _ = m.srcs[m.last].next()
	}
	best := -1
	for i, h := range m.heads {
		if h != nil && (best < 0 || h.Timestamp < m.heads[best].Timestamp) {
			best = i
		}
	}
	m.last = best
	if best < 0 {
		return nil, false
	}
	return m.heads[best], true
}

// err returns the first read error of any source.
func (m *merge) err() error {
	for _, src := range m.srcs {
		if err := src.err(); err != nil {
			return err
		}
	}
	return nil
}

// damage returns the damaged stretches the sources met.
func (m *merge) damage() int {
	n := 0
	for _, src := range m.srcs {
		n += src.damage()
	}
	return n
}
