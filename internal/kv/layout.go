package kv

import (
	"encoding/binary"
	"math"
	"time"
)

// Record header flags (byte 8 of an encoded record).
const (
	flagTomb    byte = 1 << 0 // a tombstone: no vlen, no value
	flagExpired byte = 1 << 1 // a tombstone left by expiry rather than by a removal
	flagTime    byte = 1 << 2 // a u32 time stamp follows the key (and vlen)
)

// fixedHeader is the size of the part of a record before the key:
// seqno u64, flags u8, klen u8.
const fixedHeader = 10

// stampEpoch is the unix time of stamp 0: 2020-01-01T00:00:00Z. Stamps are
// u32 seconds since then, good until 2156.
const stampEpoch = 1577836800

// toStamp converts unix seconds to a stamp. Times at or before the epoch
// become stamp 1 (long past; 0 means "never" in an expiry); times past the
// range saturate.
func toStamp(unix int64) uint32 {
	if unix <= stampEpoch {
		return 1
	}
	if d := unix - stampEpoch; d < math.MaxUint32 {
		return uint32(d)
	}
	return math.MaxUint32
}

// fromStamp converts a stamp back to unix seconds.
func fromStamp(s uint32) int64 { return stampEpoch + int64(s) }

// expiryStamp is the stamp of the first whole second at or after now+ttl:
// a record lives at least ttl.
func expiryStamp(now time.Time, ttl time.Duration) uint32 {
	at := now.Add(ttl)
	sec := at.Unix()
	if at.Nanosecond() > 0 {
		sec++
	}
	return toStamp(sec)
}

// uvarintLen is the encoded length of v as a uvarint.
func uvarintLen(v int) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// recSize is the encoded size of a record.
func recSize(klen, vlen int, flags byte) int {
	n := fixedHeader + klen
	if flags&flagTomb == 0 {
		n += uvarintLen(vlen) + vlen
	}
	if flags&flagTime != 0 {
		n += 4
	}
	return n
}

// putRec encodes a record into dst, which has exactly recSize bytes.
func putRec(dst []byte, seqno uint64, flags byte, key, value []byte, stamp uint32) {
	binary.LittleEndian.PutUint64(dst, seqno)
	dst[8] = flags
	dst[9] = byte(len(key))
	n := fixedHeader + copy(dst[fixedHeader:], key)
	if flags&flagTomb == 0 {
		n += binary.PutUvarint(dst[n:], uint64(len(value)))
	}
	if flags&flagTime != 0 {
		binary.LittleEndian.PutUint32(dst[n:], stamp)
		n += 4
	}
	copy(dst[n:], value)
}

// rec is a decoded record; key and value alias the arena.
type rec struct {
	seqno uint64
	flags byte
	stamp uint32 // expiry of a live record, removal time of a tombstone; 0 = none
	key   []byte
	value []byte
	size  int // encoded size
}

// parseRec decodes the record at the start of b. The arena is written only
// by putRec, so a malformed record is a broken invariant and panics.
func parseRec(b []byte) rec {
	r := rec{seqno: binary.LittleEndian.Uint64(b), flags: b[8]}
	n := fixedHeader + int(b[9])
	r.key = b[fixedHeader:n:n]
	vlen := 0
	if r.flags&flagTomb == 0 {
		v, w := binary.Uvarint(b[n:])
		vlen, n = int(v), n+w
	}
	if r.flags&flagTime != 0 {
		r.stamp = binary.LittleEndian.Uint32(b[n:])
		n += 4
	}
	r.value = b[n : n+vlen : n+vlen]
	r.size = n + vlen
	return r
}

// tomb reports whether r is a tombstone.
func (r *rec) tomb() bool { return r.flags&flagTomb != 0 }

// expiry returns the unix expiry of a live record, 0 for none.
func (r *rec) expiry() int64 {
	if r.flags&(flagTime|flagTomb) != flagTime {
		return 0
	}
	return fromStamp(r.stamp)
}

// liveAt reports whether r is a live record that has not expired at unix
// time now.
func (r *rec) liveAt(now int64) bool {
	if r.flags&flagTomb != 0 {
		return false
	}
	return r.flags&flagTime == 0 || now < fromStamp(r.stamp)
}
