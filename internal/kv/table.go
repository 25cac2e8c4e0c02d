package kv

import (
	"bytes"
	"errors"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Index slot layout (see the package comment).
const (
	hintBits  = 22
	chunkBits = 25
	offBits   = 16
	slotUsed  = uint64(1) << 63
	hintShift = chunkBits + offBits // 41
	hintMask  = 1<<hintBits - 1
	refMask   = 1<<hintShift - 1
	offMask   = 1<<offBits - 1
	maxChunks = 1 << chunkBits
)

// Arena and index sizing.
const (
	minSlots  = 8
	minChunk  = 256
	spanChunk = 8 << 10  // chunk size of tables past 32 KiB
	maxChunk  = 16 << 10 // records above maxChunk/2 get a chunk of their own
	// tableOverhead approximates a table's fixed cost (struct, map entry).
	tableOverhead = 256
	chunkDescSize = int64(unsafe.Sizeof(chunk{}))
)

// hintedSlots is the largest index whose home slots come from the stored
// hint alone (a variable so that tests can exercise larger tables).
var hintedSlots = uint64(1) << hintBits

// evacuateAt: a chunk is evacuated when more than 1/evacuateAt of it is
// garbage. 4 keeps chunk garbage near 15% of the arena under remove+insert
// churn, for three bytes copied per byte reclaimed (see docs/design.md).
const evacuateAt = 4

// errTableFull is returned when a table would need more than maxChunks
// chunks; callers report it as ErrOutOfMemory.
var errTableFull = errors.New("kv: table has too many chunks")

// mix spreads a key hash over all 64 bits (Fibonacci hashing). The vBucket
// uses xxhash mod V, so the keys of one table share their low bits: the
// index must not use them directly.
func mix(h uint64) uint64 { return h * 0x9E3779B97F4A7C15 }

// memAccount is the store-wide count of bytes that MemoryUsage reports.
type memAccount struct {
	used  atomic.Int64
	limit int64 // 0 = none
}

// fits reports whether n more bytes stay within the limit.
func (a *memAccount) fits(n int64) bool {
	return a.limit == 0 || n <= 0 || a.used.Load()+n <= a.limit
}

// chunk is one arena slab: records are appended to buf up to cap(buf).
type chunk struct {
	buf     []byte
	garbage int // bytes of dead records in buf
}

// table holds the records of one channel in one vBucket: an arena of chunks
// and an open-addressing (linear probing, backward-shift deletion) index of
// uint64 slots. It is guarded by its partition's lock.
type table struct {
	name      string
	slots     []uint64
	count     int   // occupied slots: live records, expired ones not yet swept, tombstones
	live      int   // records that are not tombstones
	timed     int   // records with a time stamp: tombstones and records that expire
	liveBytes int64 // key+value bytes of those
	chunks    []chunk
	free      []int32 // indices of freed chunks, reused first
	retired   []int32 // former tail chunks to check for evacuation
	tail      int     // chunk appended to; -1 = none
	chunkMem  int64   // bytes of chunk buffers
	data      int64   // bytes of the records the index refers to
	mem       int64   // everything this table adds to MemoryUsage
	acct      *memAccount
}

func newTable(name string, acct *memAccount) *table {
	t := &table{name: name, slots: make([]uint64, minSlots), tail: -1, acct: acct}
	t.addMem(tableOverhead + minSlots*8)
	return t
}

func (t *table) addMem(d int64) {
	t.mem += d
	t.acct.used.Add(d)
}

// release removes the table's memory from the account; the table must not
// be used afterwards.
func (t *table) release() {
	t.acct.used.Add(-t.mem)
	t.mem = 0
}

// posOf is the home slot of a key whose mixed hash is m. For tables of up
// to hintedSlots slots it depends only on the hint stored in the slot, so
// moving a slot never needs the key.
func (t *table) posOf(m uint64) int {
	n := uint64(len(t.slots))
	if n <= hintedSlots {
		return int(((m >> (64 - hintBits)) * n) >> hintBits)
	}
	hi, _ := bits.Mul64(m, n)
	return int(hi)
}

// home is the home slot of the entry in slot value s.
func (t *table) home(s uint64) int {
	n := uint64(len(t.slots))
	if n <= hintedSlots {
		return int((((s >> hintShift) & hintMask) * n) >> hintBits)
	}
	return t.posOf(mix(xxhash.Sum64(t.keyAt(s & refMask))))
}

// at returns the encoded bytes starting at ref.
func (t *table) at(ref uint64) []byte {
	return t.chunks[ref>>offBits].buf[ref&offMask:]
}

func (t *table) keyAt(ref uint64) []byte {
	b := t.at(ref)
	n := fixedHeader + int(b[9])
	return b[fixedHeader:n:n]
}

// recAt decodes the record of slot i.
func (t *table) recAt(i int) rec { return parseRec(t.at(t.slots[i] & refMask)) }

// find returns the slot holding key (m = mix(xxhash(key))), or the empty
// slot where it would go.
func (t *table) find(key []byte, m uint64) (int, bool) {
	hint := m >> (64 - hintBits)
	i := t.posOf(m)
	for {
		s := t.slots[i]
		if s == 0 {
			return i, false
		}
		if (s>>hintShift)&hintMask == hint && bytes.Equal(t.keyAt(s&refMask), key) {
			return i, true
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// needsGrow reports whether one more entry would exceed the load factor 4/5.
func (t *table) needsGrow() bool { return (t.count+1)*5 > len(t.slots)*4 }

// resize rehashes the index into n slots.
func (t *table) resize(n int) {
	old := t.slots
	t.slots = make([]uint64, n)
	t.addMem(int64(n-len(old)) * 8)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := t.home(s)
		for t.slots[i] != 0 {
			if i++; i == n {
				i = 0
			}
		}
		t.slots[i] = s
	}
}

// shrink gives index memory back when the load fell under 1/5.
func (t *table) shrink() {
	if len(t.slots) > minSlots && t.count*5 < len(t.slots) {
		t.resize(max(minSlots, 2*t.count))
	}
}

// chunkSize picks the size of a new chunk for an n-byte record: a chunk of
// its own above maxChunk/2; else, while the table is small, a power of two
// near a quarter of its records' bytes; past that spanChunk (or the next
// power of two holding two such records). Go gives size classes of 8 KiB
// and up a span per object, so freeing such a chunk frees its span: smaller
// chunks would share spans and fragment the heap after removals.
func (t *table) chunkSize(n int) (size int, dedicated bool) {
	if n > maxChunk/2 {
		return n, true
	}
	size = minChunk
	for size < spanChunk && int64(size) < t.data/4 {
		size *= 2
	}
	for size < 2*n {
		size *= 2
	}
	return size, false
}

// cost is the number of bytes MemoryUsage grows by if a record of n bytes
// is written at slot i (found: over the entry there; else in a new slot).
func (t *table) cost(n, i int, found bool) int64 {
	if found && t.recAt(i).size == n {
		return 0 // in place
	}
	var c int64
	if !found && t.needsGrow() {
		c += int64(len(t.slots)/2) * 8
	}
	if t.tail >= 0 {
		if b := t.chunks[t.tail].buf; cap(b)-len(b) >= n {
			return c
		}
	}
	size, _ := t.chunkSize(n)
	return c + int64(size) + chunkDescSize
}

func (t *table) newChunk(size int) (int, error) {
	var ci int
	if k := len(t.free); k > 0 {
		ci = int(t.free[k-1])
		t.free = t.free[:k-1]
	} else {
		if len(t.chunks) >= maxChunks {
			return 0, errTableFull
		}
		c := cap(t.chunks)
		t.chunks = append(t.chunks, chunk{})
		t.addMem(int64(cap(t.chunks)-c) * chunkDescSize)
		ci = len(t.chunks) - 1
	}
	t.chunks[ci] = chunk{buf: make([]byte, 0, size)}
	t.chunkMem += int64(size)
	t.addMem(int64(size))
	return ci, nil
}

func (t *table) freeChunk(ci int) {
	size := int64(cap(t.chunks[ci].buf))
	t.chunkMem -= size
	t.addMem(-size)
	t.chunks[ci] = chunk{}
	t.free = append(t.free, int32(ci))
}

// alloc reserves n bytes in the arena and returns their ref and bytes.
func (t *table) alloc(n int) (uint64, []byte, error) {
	if t.tail >= 0 {
		c := &t.chunks[t.tail]
		if l := len(c.buf); cap(c.buf)-l >= n {
			c.buf = c.buf[:l+n]
			return uint64(t.tail)<<offBits | uint64(l), c.buf[l : l+n : l+n], nil
		}
	}
	size, dedicated := t.chunkSize(n)
	ci, err := t.newChunk(size)
	if err != nil {
		return 0, nil, err
	}
	c := &t.chunks[ci]
	c.buf = c.buf[:n]
	if !dedicated {
		if t.tail >= 0 {
			t.retired = append(t.retired, int32(t.tail))
		}
		t.tail = ci
	}
	return uint64(ci) << offBits, c.buf[:n:n], nil
}

// garbage records that the n-byte record at ref is dead, and evacuates its
// chunk when more than 1/evacuateAt of it is dead.
func (t *table) garbage(ref uint64, n int) {
	ci := int(ref >> offBits)
	c := &t.chunks[ci]
	c.garbage += n
	t.data -= int64(n)
	if ci != t.tail && c.garbage > cap(c.buf)/evacuateAt {
		t.evacuate(ci)
	}
}

// evacuate copies the live records of chunk ci to the tail and frees it.
func (t *table) evacuate(ci int) {
	buf := t.chunks[ci].buf
	for off := 0; off < len(buf); {
		b := buf[off:]
		n := fixedHeader + int(b[9])
		key := b[fixedHeader:n:n]
		size := parseRec(b).size
		if i, ok := t.find(key, mix(xxhash.Sum64(key))); ok && t.slots[i]&refMask == uint64(ci)<<offBits|uint64(off) {
			ref, dst, err := t.alloc(size)
			if err != nil {
				return // out of chunk ids: keep the chunk
			}
			copy(dst, b[:size])
			t.slots[i] = t.slots[i]&^refMask | ref
		}
		off += size
	}
	t.freeChunk(ci)
}

// settle evacuates retired tail chunks that collected too much garbage
// while they were the tail. It runs at the end of every mutation, when no
// caller holds a ref. Evacuation moves only live records and creates no
// garbage, so it cannot cascade.
func (t *table) settle() {
	for len(t.retired) > 0 {
		ci := int(t.retired[len(t.retired)-1])
		t.retired = t.retired[:len(t.retired)-1]
		if c := &t.chunks[ci]; ci != t.tail && c.buf != nil && c.garbage > cap(c.buf)/evacuateAt {
			t.evacuate(ci)
		}
	}
}

// trimTail evacuates the tail chunk when more of it is garbage than live:
// after mass removals the tail gives its memory back too (other chunks are
// evacuated as they turn into garbage). The sweeper calls it.
func (t *table) trimTail() {
	if t.tail < 0 || 2*t.chunks[t.tail].garbage <= len(t.chunks[t.tail].buf) {
		return
	}
	ci := t.tail
	t.tail = -1
	t.evacuate(ci)
	t.settle()
}

// compactChunks renumbers the chunks when most descriptors are unused, so
// that the descriptor array shrinks after mass removals. It rewrites every
// slot's ref.
func (t *table) compactChunks() {
	used := len(t.chunks) - len(t.free)
	if cap(t.chunks) < 8 || cap(t.chunks) <= 2*used {
		return
	}
	renum := make([]int32, len(t.chunks))
	chunks := make([]chunk, 0, used)
	for ci, c := range t.chunks {
		if c.buf != nil {
			renum[ci] = int32(len(chunks))
			chunks = append(chunks, c)
		}
	}
	for i, s := range t.slots {
		if s != 0 {
			ref := s & refMask
			t.slots[i] = s&^refMask | uint64(renum[ref>>offBits])<<offBits | ref&offMask
		}
	}
	if t.tail >= 0 {
		t.tail = int(renum[t.tail])
	}
	for i, ci := range t.retired {
		t.retired[i] = renum[ci]
	}
	t.addMem(int64(cap(chunks)-cap(t.chunks)) * chunkDescSize)
	t.chunks, t.free = chunks, nil
}

// set writes a new version of key. i and found come from find (m is the
// key's mixed hash). The caller has checked the memory limit.
func (t *table) set(i int, found bool, m, seqno uint64, flags byte, key, value []byte, stamp uint32) error {
	size := recSize(len(key), len(value), flags)
	var old rec
	var oldRef uint64
	if found {
		oldRef = t.slots[i] & refMask
		old = parseRec(t.at(oldRef))
		if old.size == size { // same shape: overwrite in place, no garbage
			putRec(t.at(oldRef)[:size], seqno, flags, key, value, stamp)
			t.account(&old, -1)
			t.account(&rec{flags: flags, key: key, value: value}, 1)
			return nil
		}
	} else if t.needsGrow() {
		t.resize(len(t.slots) * 3 / 2)
		i, _ = t.find(key, m)
	}
	ref, dst, err := t.alloc(size)
	if err != nil {
		return err
	}
	putRec(dst, seqno, flags, key, value, stamp)
	t.data += int64(size)
	if found {
		t.slots[i] = t.slots[i]&^refMask | ref
		t.account(&old, -1)
		t.garbage(oldRef, old.size)
	} else {
		t.slots[i] = slotUsed | (m>>(64-hintBits))<<hintShift | ref
		t.count++
	}
	t.account(&rec{flags: flags, key: key, value: value}, 1)
	t.settle()
	return nil
}

// drop removes the entry of slot i from the index (a purged tombstone).
func (t *table) drop(i int) {
	ref := t.slots[i] & refMask
	r := parseRec(t.at(ref))
	t.account(&r, -1)
	n := len(t.slots)
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		s := t.slots[j]
		if s == 0 {
			break
		}
		// s may move back to i when i lies cyclically between its home and j.
		if (j-t.home(s)+n)%n >= (j-i+n)%n {
			t.slots[i] = s
			i = j
		}
	}
	t.slots[i] = 0
	t.count--
	t.garbage(ref, r.size)
	t.settle()
}

// account adds (sign 1) or removes (sign -1) r from the live statistics
// and the count of timed records (what the sweeper looks for).
func (t *table) account(r *rec, sign int) {
	if r.flags&flagTime != 0 {
		t.timed += sign
	}
	if r.flags&flagTomb == 0 {
		t.live += sign
		t.liveBytes += int64(sign * (len(r.key) + len(r.value)))
	}
}
