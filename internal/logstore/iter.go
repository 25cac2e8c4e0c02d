package logstore

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"sort"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
)

// MaxRegexpLen bounds the source of a regular-expression filter.
const MaxRegexpLen = 4096

// Filter selects records by value (and, with InVBuckets, by vBucket).
// The zero Filter selects every record.
type Filter struct {
	sub []byte
	re  *regexp.Regexp
	vbs func(vb uint16) bool
}

// InVBuckets returns f that also keeps only the records of the vBuckets
// for which keep returns true (a node's range read covers the vBuckets
// it is active for). keep is called for every record read, from the
// reader's goroutine. Positions count the records selected, so a read
// resumes correctly only with the same selection.
func (f Filter) InVBuckets(keep func(vb uint16) bool) Filter {
	f.vbs = keep
	return f
}

// Substring returns a filter selecting the values that contain sub.
func Substring(sub string) Filter { return Filter{sub: []byte(sub)} }

// Regexp returns a filter selecting the values that match the regular
// expression expr (RE2 syntax, linear time; "(?i)" for case-insensitive).
// It fails with ErrBadFilter when expr does not compile or is longer than
// MaxRegexpLen.
func Regexp(expr string) (Filter, error) {
	if len(expr) > MaxRegexpLen {
		return Filter{}, fmt.Errorf("%w: expression of %d bytes, limit %d", ErrBadFilter, len(expr), MaxRegexpLen)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return Filter{}, fmt.Errorf("%w: %w", ErrBadFilter, err)
	}
	return Filter{re: re}, nil
}

// Match reports whether the filter selects value v.
func (f Filter) Match(v []byte) bool {
	switch {
	case f.re != nil:
		return f.re.Match(v)
	case f.sub != nil:
		return bytes.Contains(v, f.sub)
	}
	return true
}

// Position is how far a range read got: every selected record with a
// timestamp below Timestamp, and the first Count selected records with
// timestamp Timestamp, were delivered. The zero Position is the start.
// Resuming needs the same channel, range and filter.
type Position struct {
	Timestamp uint64
	Count     uint64
}

// Record is one record a range read returns.
type Record struct {
	Timestamp uint64
	VBucket   uint16
	Seqno     uint64
	Value     []byte
}

// DefaultBatchBytes is a good batch size for Iterator.Next.
const DefaultBatchBytes = 64 << 10

// Iterator streams the records of a range read in batches. It holds open
// at most the files of one group of segments whose time bounds overlap. It
// is not safe for concurrent use; Close it when done.
type Iterator struct {
	s      *Store
	ch     string
	to     uint64
	filter Filter
	cursor uint64 // every timestamp below cursor is done
	done   bool
	pos    Position
	skip   uint64 // selected records at pos.Timestamp still to skip (resume)
	views  []*view
	m      *merge
	floors map[uint16]uint64 // tombstones of the channel: records at or below are hidden
	err    error
}

// Range returns an iterator over the records of channel ch with timestamps
// in [from, to], in timestamp order (equal timestamps in append order),
// selected by filter, starting after position after. It fails with
// ErrBadRange when from > to, ErrBadChannel or ErrClosed. A channel that
// does not exist reads as empty. Records appended while the read runs may
// or may not be returned.
func (s *Store) Range(ch string, from, to uint64, filter Filter, after Position) (*Iterator, error) {
	if from > to {
		return nil, fmt.Errorf("%w: %d > %d", ErrBadRange, from, to)
	}
	if !engine.ValidChannelString(ch) {
		return nil, fmt.Errorf("%w: %q", ErrBadChannel, ch)
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	it := &Iterator{s: s, ch: ch, to: to, filter: filter, cursor: max(from, after.Timestamp), pos: after}
	if after.Timestamp >= from {
		it.skip = after.Count
	}
	return it, nil
}

// Next returns the next batch: records whose values add up to about
// maxBytes (at least one record), or nil at the end. The batch's values
// are its own. Damaged records are skipped, never returned.
func (it *Iterator) Next(maxBytes int) ([]Record, error) {
	var out []Record
	var arena []byte
	var ends []int
	for it.err == nil && (len(out) == 0 || len(arena) < maxBytes) {
		r, ok := it.next()
		if !ok {
			break
		}
		if (it.filter.vbs != nil && !it.filter.vbs(r.VBucket)) || !it.filter.Match(r.Value) {
			continue
		}
		if it.skip > 0 && r.Timestamp == it.pos.Timestamp {
			it.skip--
			continue
		}
		it.skip = 0
		if r.Timestamp == it.pos.Timestamp {
			it.pos.Count++
		} else {
			it.pos = Position{Timestamp: r.Timestamp, Count: 1}
		}
		out = append(out, Record{Timestamp: r.Timestamp, VBucket: r.VBucket, Seqno: r.Seqno})
		arena = append(arena, r.Value...)
		ends = append(ends, len(arena))
	}
	if it.err != nil {
		return nil, it.err
	}
	start := 0
	for i, end := range ends {
		out[i].Value = arena[start:end:end]
		start = end
	}
	return out, nil
}

// Position returns the position after the last record returned (or the
// position the iterator started from).
func (it *Iterator) Position() Position { return it.pos }

// Close releases the iterator's files. It is safe to call twice.
func (it *Iterator) Close() error {
	it.done = true
	it.dropGroup()
	return nil
}

// next returns the next visible record in order, loading segment groups as
// needed.
func (it *Iterator) next() (*segment.Record, bool) {
	for {
		if it.m != nil {
			r, ok := it.m.next()
			if ok {
				if r.Seqno <= it.floors[r.VBucket] {
					continue
				}
				return r, true
			}
			if err := it.m.err(); err != nil {
				it.err = err
				return nil, false
			}
			it.dropGroup()
		}
		if it.done || !it.loadGroup() {
			return nil, false
		}
	}
}

func (it *Iterator) dropGroup() {
	if it.m != nil {
		it.s.st.corruptRead.Add(uint64(it.m.damage()))
		it.m = nil
	}
	closeViews(it.views)
	it.views = nil
}

// loadGroup opens the next group of segments: the one holding the lowest
// timestamp at or above the cursor and every segment whose time bounds
// overlap it, transitively. Only those files are opened.
func (it *Iterator) loadGroup() bool {
	s := it.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		it.err = ErrClosed
		return false
	}
	c := s.channels[it.ch]
	if c == nil || it.cursor > it.to {
		it.done = true
		return false
	}
	var cands []*segFile
	for _, sf := range c.segs {
		if sf.records > 0 && sf.maxTs >= it.cursor && sf.minTs <= it.to {
			cands = append(cands, sf)
		}
	}
	if len(cands) == 0 {
		it.done = true
		return false
	}
	lo := func(sf *segFile) uint64 { return max(sf.minTs, it.cursor) }
	sort.SliceStable(cands, func(i, j int) bool { return lo(cands[i]) < lo(cands[j]) })
	hi := cands[0].maxTs
	n := 1
	for n < len(cands) && lo(cands[n]) <= hi {
		hi = max(hi, cands[n].maxTs)
		n++
	}
	group := cands[:n]
	sort.Slice(group, func(i, j int) bool { // append order
		if group[i].hdr.Start != group[j].hdr.Start {
			return group[i].hdr.Start < group[j].hdr.Start
		}
		return group[i].gen < group[j].gen
	})
	views, err := s.openViews(group)
	if err != nil {
		it.err = err
		return false
	}
	it.views = views
	it.floors = s.floorsOf(it.ch)
	wlo, whi := it.cursor, min(hi, it.to)
	srcs := make([]source, len(views))
	for i, v := range views {
		srcs[i] = s.newSource(v, wlo, whi)
	}
	it.m = newMerge(srcs)
	if hi >= it.to || hi == math.MaxUint64 {
		it.done = true
	} else {
		it.cursor = hi + 1
	}
	return true
}
