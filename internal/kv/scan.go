package kv

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// scanEntry is one record copied by Scan; its bytes are in scanBuf.buf.
type scanEntry struct {
	h          uint64
	k0, k1, v1 int
	seqno      uint64
	expiry     int64
}

// scanBuf is Scan's scratch space, pooled.
type scanBuf struct {
	ents []scanEntry
	buf  []byte
}

// maxPooledScan is the largest scratch buffer kept for reuse.
const maxPooledScan = 4 << 20

var scanPool = sync.Pool{New: func() any { return new(scanBuf) }}

// Scan calls fn with the live records of channel ch in vBucket vb, in a
// stable order (xxhash64 of the key ascending, then key bytes), starting
// strictly after key after (nil = from the start), until fn returns false.
// The records are copied under the vBucket's read lock; fn runs without any
// lock and may call the Store. Record slices are valid only during fn.
func (s *Store) Scan(ch string, vb uint16, after []byte, fn func(r Record) bool) {
	if s.closed.Load() || int(vb) >= len(s.parts) {
		return
	}
	sb := scanPool.Get().(*scanBuf)
	defer func() {
		if cap(sb.buf) <= maxPooledScan {
			sb.ents, sb.buf = sb.ents[:0], sb.buf[:0]
			scanPool.Put(sb)
		}
	}()
	var ah uint64
	if len(after) > 0 {
		ah = xxhash.Sum64(after)
	}
	now := s.nowUnix()
	p := s.parts[vb]
	p.mu.RLock()
	if t := p.tables[ch]; t != nil {
		for i, sl := range t.slots {
			if sl == 0 {
				continue
			}
			r := t.recAt(i)
			if !r.liveAt(now) {
				continue
			}
			h := xxhash.Sum64(r.key)
			if len(after) > 0 && (h < ah || h == ah && bytes.Compare(r.key, after) <= 0) {
				continue
			}
			e := scanEntry{h: h, k0: len(sb.buf), seqno: r.seqno, expiry: r.expiry()}
			sb.buf = append(sb.buf, r.key...)
			e.k1 = len(sb.buf)
			sb.buf = append(sb.buf, r.value...)
			e.v1 = len(sb.buf)
			sb.ents = append(sb.ents, e)
		}
	}
	p.mu.RUnlock()
	slices.SortFunc(sb.ents, func(a, b scanEntry) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return bytes.Compare(sb.buf[a.k0:a.k1], sb.buf[b.k0:b.k1])
	})
	var n, nb int64
	for _, e := range sb.ents {
		n++
		nb += int64(e.v1 - e.k0)
		if !fn(Record{Key: sb.buf[e.k0:e.k1:e.k1], Value: sb.buf[e.k1:e.v1:e.v1], Seqno: e.seqno, Expiry: e.expiry}) {
			break
		}
	}
	p.ctr.iterated.Add(n)
	p.ctr.iteratedBytes.Add(nb)
}

// SnapshotChannel calls fn once per vBucket that holds a table of channel
// ch, with the vBucket's seqno and its live records, copied under one read
// lock per vBucket: each call is a consistent view of its vBucket (the
// dump writer's input). Record slices are valid only during fn. An error of
// fn stops the snapshot and is returned wrapped.
func (s *Store) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []Record) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	var recs []Record
	var buf []byte
	for vb, p := range s.parts {
		var seqno uint64
		var ok bool
		recs, buf, seqno, ok = s.copyChannel(p, ch, recs[:0], buf[:0])
		if !ok {
			continue
		}
		if err := fn(uint16(vb), seqno, recs); err != nil {
			return fmt.Errorf("kv: snapshot of channel %q vbucket %d: %w", ch, vb, err)
		}
	}
	return nil
}

// copyChannel copies the live records of ch in p under its read lock (the
// pause SnapshotChannel imposes on writers of p).
func (s *Store) copyChannel(p *partition, ch string, recs []Record, buf []byte) ([]Record, []byte, uint64, bool) {
	now := s.nowUnix()
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tables[ch]
	if t == nil {
		return recs, buf, 0, false
	}
	buf = slices.Grow(buf, int(t.liveBytes)) // no reallocation below: slices stay put
	recs = slices.Grow(recs, t.live)
	for i, sl := range t.slots {
		if sl == 0 {
			continue
		}
		r := t.recAt(i)
		if !r.liveAt(now) {
			continue
		}
		k0 := len(buf)
		buf = append(buf, r.key...)
		k1 := len(buf)
		buf = append(buf, r.value...)
		recs = append(recs, Record{Key: buf[k0:k1:k1], Value: buf[k1:len(buf):len(buf)], Seqno: r.seqno, Expiry: r.expiry()})
	}
	return recs, buf, p.seqno, true
}

// Load adds records of channel ch in vBucket vb read from a dump taken at
// vBucket seqno seqno. Records keep their Seqno and Expiry; expired ones
// are skipped; a record older than what the vBucket holds for its key is
// skipped. The vBucket's seqno and purge seqno are raised to at least
// seqno (the tombstones before it are gone). Records are hostile input:
// each is validated (ErrWrongVBucket when its key is not of vb). Load is
// meant for startup, before streams of vb run.
func (s *Store) Load(ch string, vb uint16, seqno uint64, recs []Record) error {
	if err := s.checkChannel(ch); err != nil {
		return fmt.Errorf("kv: load: %w", err)
	}
	if int(vb) >= len(s.parts) {
		return fmt.Errorf("kv: load vbucket %d: %w", vb, ErrBadVBucket)
	}
	now := s.nowUnix()
	p := s.parts[vb]
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seqno = max(p.seqno, seqno)
	p.purged = max(p.purged, seqno)
	for n := range recs {
		r := &recs[n]
		if err := s.checkWrite(ch, r.Key, r.Value); err != nil {
			return fmt.Errorf("kv: load channel %q vbucket %d record %d: %w", ch, vb, n, err)
		}
		h := xxhash.Sum64(r.Key)
		if h%uint64(len(s.parts)) != uint64(vb) {
			return fmt.Errorf("kv: load channel %q vbucket %d record %d: %w", ch, vb, n, ErrWrongVBucket)
		}
		if r.Expiry != 0 && now >= r.Expiry {
			continue
		}
		m := mix(h)
		t := p.tables[ch]
		i, found := 0, false
		if t != nil {
			if i, found = t.find(r.Key, m); found && t.recAt(i).seqno > r.Seqno {
				continue
			}
		}
		var stamp uint32
		if r.Expiry != 0 {
			stamp = toStamp(r.Expiry)
		}
		t, err := s.store(p, t, ch, i, found, m, r.Seqno, liveFlags(stamp), r.Key, r.Value, stamp, true)
		if err != nil {
			return fmt.Errorf("kv: load channel %q vbucket %d record %d: %w", ch, vb, n, err)
		}
		p.seqno = max(p.seqno, r.Seqno)
		s.notify(t.name, r.Key)
	}
	return nil
}
