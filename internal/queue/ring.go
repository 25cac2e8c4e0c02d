package queue

import "encoding/binary"

// itemHeaderLen is the per-record cost of the memory ring beyond the value.
const itemHeaderLen = 16

// itemRemoved marks a ring item removed out of order (a replicated pop, a
// dropped vBucket); it is skipped when it reaches the head.
const itemRemoved = 1

// minRingAlloc is the smallest buffer a ring allocates.
const minRingAlloc = 4 << 10

// releaseAbove is the buffer size above which an emptied ring gives its
// buffer back to the garbage collector.
const releaseAbove = 1 << 20

// itemHeader describes one ring item:
//
//	+---------+------+-------+-----+----------+-------+
//	| len u32 |vb u16|flags u8|  0  | seqno u64| value |
//	+---------+------+-------+-----+----------+-------+
type itemHeader struct {
	vlen  int
	vb    uint16
	flags byte
	seqno uint64
}

// ring is a byte ring holding records in push order. Its capacity is limit
// bytes of items; the buffer grows on demand up to limit, so an idle
// channel does not pin its whole ring size in memory.
type ring struct {
	buf       []byte
	limit     int64
	head      int   // offset of the first item in buf
	used      int   // bytes of items, removed ones included
	items     int   // items, removed ones included
	live      int   // items not removed
	liveBytes int64 // value bytes of the live items
}

// ringMark is the tail state of a ring before a push, to undo it.
type ringMark struct {
	used, items, live int
	liveBytes         int64
}

func (r *ring) fits(vlen int) bool {
	return int64(r.used+itemHeaderLen+vlen) <= r.limit
}

func (r *ring) mark() ringMark {
	return ringMark{used: r.used, items: r.items, live: r.live, liveBytes: r.liveBytes}
}

// rollback forgets the items pushed after m.
func (r *ring) rollback(m ringMark) {
	r.used, r.items, r.live, r.liveBytes = m.used, m.items, m.live, m.liveBytes
}

// push appends a record. Unless force is set it must fit (see fits); force
// lets a restore exceed the limit.
func (r *ring) push(vb uint16, seqno uint64, value []byte, force bool) {
	need := itemHeaderLen + len(value)
	if len(r.buf)-r.used < need {
		r.grow(r.used+need, force)
	}
	var h [itemHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(value)))
	binary.LittleEndian.PutUint16(h[4:], vb)
	binary.LittleEndian.PutUint64(h[8:], seqno)
	tail := r.wrap(r.head + r.used)
	r.copyIn(tail, h[:])
	r.copyIn(r.wrap(tail+itemHeaderLen), value)
	r.used += need
	r.items++
	r.live++
	r.liveBytes += int64(len(value))
}

func (r *ring) grow(need int, force bool) {
	n := max(2*len(r.buf), need, minRingAlloc)
	if !force {
		n = max(min(n, int(r.limit)), need)
	}
	nb := make([]byte, n)
	r.copyOut(nb[:r.used], r.head)
	r.buf, r.head = nb, 0
}

func (r *ring) wrap(off int) int {
	if off >= len(r.buf) {
		return off - len(r.buf)
	}
	return off
}

// copyIn writes p at offset off, wrapping around the end of buf.
func (r *ring) copyIn(off int, p []byte) {
	n := copy(r.buf[off:], p)
	copy(r.buf, p[n:])
}

// copyOut fills p from offset off, wrapping around the end of buf.
func (r *ring) copyOut(p []byte, off int) {
	if len(p) == 0 {
		return
	}
	n := copy(p, r.buf[off:])
	copy(p[n:], r.buf)
}

func (r *ring) header(off int) itemHeader {
	var h [itemHeaderLen]byte
	r.copyOut(h[:], off)
	return itemHeader{
		vlen:  int(binary.LittleEndian.Uint32(h[0:])),
		vb:    binary.LittleEndian.Uint16(h[4:]),
		flags: h[6],
		seqno: binary.LittleEndian.Uint64(h[8:]),
	}
}

// appendValue appends the value of the item at off, whose header is h, to
// dst.
func (r *ring) appendValue(dst []byte, off int, h itemHeader) []byte {
	l := len(dst)
	dst = append(dst, make([]byte, h.vlen)...)
	r.copyOut(dst[l:], r.wrap(off+itemHeaderLen))
	return dst
}

// skipRemoved drops removed items from the head.
func (r *ring) skipRemoved() {
	for r.items > 0 {
		h := r.header(r.head)
		if h.flags&itemRemoved == 0 {
			return
		}
		r.advance(h)
	}
}

// first returns the header of the first live item.
func (r *ring) first() (itemHeader, bool) {
	r.skipRemoved()
	if r.live == 0 {
		return itemHeader{}, false
	}
	return r.header(r.head), true
}

// pop removes the first live item and appends its value to dst.
func (r *ring) pop(dst []byte) []byte {
	h, ok := r.first()
	if !ok {
		panic("queue: pop of an empty ring")
	}
	dst = r.appendValue(dst, r.head, h)
	r.advance(h)
	return dst
}

func (r *ring) advance(h itemHeader) {
	r.head = r.wrap(r.head + itemHeaderLen + h.vlen)
	r.used -= itemHeaderLen + h.vlen
	r.items--
	if h.flags&itemRemoved == 0 {
		r.live--
		r.liveBytes -= int64(h.vlen)
	}
	if r.items == 0 {
		r.head = 0
		if len(r.buf) > releaseAbove {
			r.buf = nil
		}
	}
}

// each calls fn for every live item from the head, with the item's offset,
// until fn returns false.
func (r *ring) each(fn func(off int, h itemHeader) bool) {
	off := r.head
	for range r.items {
		h := r.header(off)
		if h.flags&itemRemoved == 0 && !fn(off, h) {
			return
		}
		off = r.wrap(off + itemHeaderLen + h.vlen)
	}
}

// remove marks the live item at off, whose header is h, removed.
func (r *ring) remove(off int, h itemHeader) {
	r.buf[r.wrap(off+6)] |= itemRemoved
	r.live--
	r.liveBytes -= int64(h.vlen)
}
