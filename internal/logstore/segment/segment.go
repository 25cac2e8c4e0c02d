// Package segment is the on-disk format of the log engine: one segment file
// holds the records of one channel whose timestamps fall into one time
// bucket [Start, Start+Span).
//
// A segment file begins with a 32-byte header:
//
//	+----------+---------+--------+--------+--------+--------+
//	|  magic   | version | flags  | start  |  span  |  CRC   |
//	| 8 bytes  | uint16  | uint16 | uint64 | uint64 | uint32 |
//	+----------+---------+--------+--------+--------+--------+
//	  0          8         10       12       20       28     32
//
// magic is "SHOALLOG", version is 1, start and span bound the timestamps the
// file may hold (in the unit of record timestamps, unix seconds in shoal),
// and CRC is the masked CRC-32C (Castagnoli) of bytes 0..28. All integers
// are little-endian. Flags:
//
//	FlagCompressed  the body is a sequence of compressed blocks (below);
//	                otherwise it is a sequence of frames
//	FlagMerged      the file was written by rewriting every file of its
//	                bucket with a lower generation: it supersedes them
//	FlagSorted      the records are in timestamp order (ties in append order)
//
// A plain (uncompressed) body is a sequence of frames, one per record:
//
//	+--------+--------+-----------+---------+--------+-------------+
//	|  CRC   | length | timestamp | vBucket | seqno  |   value     |
//	| uint32 | uint32 |  uint64   | uint16  | uint64 | length B    |
//	+--------+--------+-----------+---------+--------+-------------+
//	  0        4        8           16        18       26
//
// CRC is the masked CRC-32C of everything after it: bytes 4 to the end of
// the value. length counts only the value and is at most MaxValueLen. A
// frame is valid only when its CRC matches and its timestamp lies in the
// file's bucket and its vBucket is below the cluster's vBucket count; the
// second and third checks make a false resynchronisation after damage
// (below) astronomically unlikely.
//
// A compressed body is a sequence of blocks, each holding whole frames:
//
//	+--------+--------+--------+--------------------------+
//	|  CRC   |  clen  |  rlen  |  zstd frame (clen bytes) |
//	| uint32 | uint32 | uint32 |  decompresses to rlen B  |
//	+--------+--------+--------+--------------------------+
//	  0        4        8        12
//
// CRC is the masked CRC-32C of bytes 4 to the end of the zstd frame. A block
// is cut once it holds at least BlockTarget bytes of frames, so rlen is at
// most BlockTarget + FrameHeaderSize + MaxValueLen; clen is bounded likewise.
//
// Damage. Readers never trust a length before its CRC has matched. When a
// frame (or block) at offset p is invalid, the scanner looks for the next
// offset after p at which a valid frame begins. If it finds one, the bytes in
// between are reported as a damaged stretch and skipped; if none follows, the
// rest of the file is a torn tail. A torn tail is what a crash leaves behind
// an append that was not yet durable; the store cuts it when it opens.
//
// The CRC is masked as in LevelDB and pebble (internal/crc): computing the
// CRC of a string that contains embedded CRCs is problematic, so the stored
// value is rotated and offset.
package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"shoal/internal/engine"
)

// Sizes and limits of the format.
const (
	// HeaderSize is the size of the file header.
	HeaderSize = 32
	// FrameHeaderSize is the size of a frame before its value.
	FrameHeaderSize = 26
	// BlockHeaderSize is the size of a compressed block before its data.
	BlockHeaderSize = 12
	// MaxValueLen is the largest value a frame may carry.
	MaxValueLen = engine.MaxValueLen
	// BlockTarget is the number of frame bytes after which a compressed
	// block is cut.
	BlockTarget = 1 << 20
	// MaxBlockRaw bounds the decompressed size of a block.
	MaxBlockRaw = BlockTarget + FrameHeaderSize + MaxValueLen
	// MaxBlockData bounds the compressed size of a block (zstd's worst case
	// expansion of incompressible input is well under 1%).
	MaxBlockData = MaxBlockRaw + MaxBlockRaw/64 + 1024
	// Version is the format version this package writes and reads.
	Version = 1
)

// Magic opens every segment file.
const Magic = "SHOALLOG"

// Flags describe a segment file's body.
type Flags uint16

// Header flags.
const (
	FlagCompressed Flags = 1 << iota
	FlagMerged
	FlagSorted
	flagsKnown = FlagCompressed | FlagMerged | FlagSorted
)

// Errors returned by decoders.
var (
	// ErrBadHeader means the file header is not a valid version-1 header.
	ErrBadHeader = errors.New("segment: bad file header")
)

// Header is a segment file's header.
type Header struct {
	Flags Flags
	Start uint64 // first timestamp of the bucket
	Span  uint64 // width of the bucket; the file holds timestamps in [Start, Start+Span)
}

// End returns the first timestamp after the bucket, saturating at 2^64-1.
func (h Header) End() uint64 {
	if e := h.Start + h.Span; e >= h.Start {
		return e
	}
	return ^uint64(0)
}

// Holds reports whether timestamp ts belongs to the bucket.
func (h Header) Holds(ts uint64) bool {
	return ts >= h.Start && (ts-h.Start) < h.Span
}

// Append appends the encoded header to dst.
func (h Header) Append(dst []byte) []byte {
	var b [HeaderSize]byte
	copy(b[:8], Magic)
	binary.LittleEndian.PutUint16(b[8:], Version)
	binary.LittleEndian.PutUint16(b[10:], uint16(h.Flags))
	binary.LittleEndian.PutUint64(b[12:], h.Start)
	binary.LittleEndian.PutUint64(b[20:], h.Span)
	binary.LittleEndian.PutUint32(b[28:], Checksum(b[:28]))
	return append(dst, b[:]...)
}

// DecodeHeader decodes a file header. It fails with ErrBadHeader when b is
// short, the magic, version or CRC do not match, a flag is unknown or the
// span is zero.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrBadHeader, len(b))
	}
	if string(b[:8]) != Magic {
		return Header{}, fmt.Errorf("%w: bad magic %q", ErrBadHeader, b[:8])
	}
	if got, want := binary.LittleEndian.Uint32(b[28:]), Checksum(b[:28]); got != want {
		return Header{}, fmt.Errorf("%w: CRC %#08x, want %#08x", ErrBadHeader, got, want)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != Version {
		return Header{}, fmt.Errorf("%w: version %d", ErrBadHeader, v)
	}
	h := Header{
		Flags: Flags(binary.LittleEndian.Uint16(b[10:])),
		Start: binary.LittleEndian.Uint64(b[12:]),
		Span:  binary.LittleEndian.Uint64(b[20:]),
	}
	if h.Flags&^flagsKnown != 0 {
		return Header{}, fmt.Errorf("%w: unknown flags %#04x", ErrBadHeader, uint16(h.Flags))
	}
	if h.Span == 0 {
		return Header{}, fmt.Errorf("%w: zero span", ErrBadHeader)
	}
	return h, nil
}

// Record is one log record as stored in a frame. Value may alias a buffer
// owned by whoever produced the Record.
type Record struct {
	Timestamp uint64
	VBucket   uint16
	Seqno     uint64
	Value     []byte
}

// FrameSize returns the encoded size of a frame holding a value of n bytes.
func FrameSize(n int) int { return FrameHeaderSize + n }

// AppendFrame appends the frame of r to dst. The caller guarantees
// len(r.Value) <= MaxValueLen.
func AppendFrame(dst []byte, r *Record) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, FrameHeaderSize)...)
	dst = append(dst, r.Value...)
	b := dst[n:]
	binary.LittleEndian.PutUint32(b[4:], uint32(len(r.Value)))
	binary.LittleEndian.PutUint64(b[8:], r.Timestamp)
	binary.LittleEndian.PutUint16(b[16:], r.VBucket)
	binary.LittleEndian.PutUint64(b[18:], r.Seqno)
	binary.LittleEndian.PutUint32(b, Checksum(b[4:]))
	return dst
}

// Validate tells whether a frame's timestamp and vBucket are plausible for
// the file being read (see the package comment). nil accepts all.
type Validate func(ts uint64, vb uint16) bool

// DecodeFrame decodes the frame at the start of b. It returns the record
// (whose Value aliases b), the frame's size, and ok=false when b does not
// start with a whole valid frame.
func DecodeFrame(b []byte, valid Validate) (r Record, n int, ok bool) {
	if len(b) < FrameHeaderSize {
		return Record{}, 0, false
	}
	vlen := binary.LittleEndian.Uint32(b[4:])
	if vlen > MaxValueLen || uint64(vlen) > uint64(len(b)-FrameHeaderSize) {
		return Record{}, 0, false
	}
	r = Record{
		Timestamp: binary.LittleEndian.Uint64(b[8:]),
		VBucket:   binary.LittleEndian.Uint16(b[16:]),
		Seqno:     binary.LittleEndian.Uint64(b[18:]),
	}
	if valid != nil && !valid(r.Timestamp, r.VBucket) {
		return Record{}, 0, false
	}
	n = FrameHeaderSize + int(vlen)
	if binary.LittleEndian.Uint32(b) != Checksum(b[4:n]) {
		return Record{}, 0, false
	}
	r.Value = b[FrameHeaderSize:n:n]
	return r, n, true
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the masked CRC-32C of b.
func Checksum(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}
