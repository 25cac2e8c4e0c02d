package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// File name suffixes of a channel's dump files. TmpExt is the temporary
// file vfs.WriteFileAtomicFunc writes a dump to.
const (
	Ext       = ".dump"
	TmpExt    = Ext + vfs.AtomicTempSuffix
	BackupExt = ".dump.backup"
)

// Version is the format version this package writes and reads. Version 2
// added the codec byte of every chunk; version 1 files (zstd only) are
// not read.
const Version = 2

// Codec is the compression of a chunk's payload, named by every chunk, so
// that one reader reads files of either codec.
type Codec uint8

// Codecs.
const (
	// CodecZstd is one zstd frame (level SpeedFastest): the better ratio,
	// the default.
	CodecZstd Codec = 1
	// CodecS2 is one s2 block (klauspost/compress/s2): a lower ratio, but
	// it compresses several times faster than zstd, so a dump writes at disk
	// speed with fewer cores.
	CodecS2 Codec = 2
)

// String returns "zstd" or "s2".
func (c Codec) String() string {
	switch c {
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	}
	return fmt.Sprintf("Codec(%d)", uint8(c))
}

// ParseCodec parses "zstd" or "s2" (--dump-codec).
func ParseCodec(s string) (Codec, error) {
	for _, c := range []Codec{CodecZstd, CodecS2} {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("dump: unknown codec %q (want zstd or s2)", s)
}

// Set implements flag.Value.
func (c *Codec) Set(s string) error {
	v, err := ParseCodec(s)
	if err == nil {
		*c = v
	}
	return err
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (c *Codec) UnmarshalText(b []byte) error { return c.Set(string(b)) }

func (c Codec) valid() bool { return c == CodecZstd || c == CodecS2 }

// Block sizes.
const (
	// BlockSize is the raw size at which the writer closes a record block.
	BlockSize = 1 << 20
	// MaxBlockRaw is the largest raw (decompressed) block a reader accepts:
	// one record of the largest value (engine.MaxValueLen) with its run
	// header, varints and key, and room to spare (64 MiB + 64 KiB). It is
	// part of the format, so it is a number of its own, not derived from
	// the protocol's frame size. A block's buffers are never larger.
	MaxBlockRaw = 64<<20 + 64<<10
	// maxBlockComp bounds a chunk's compressed length; zstd expands
	// incompressible input by far less than this.
	maxBlockComp = MaxBlockRaw + MaxBlockRaw/8
)

// A block must hold one record of the largest value: this does not compile
// (a negative uint) if engine.MaxValueLen outgrows MaxBlockRaw.
const _ = uint(MaxBlockRaw - runHdrLen - maxRecordHead - engine.MaxValueLen)

const (
	magic         = "SHOALDMP"
	endMagic      = "SHOALEND"
	headerFixed   = 21 // magic, version, vbs, created, channel length
	chunkHdrLen   = 18
	footerLen     = 32
	runHdrLen     = 14
	chunkRecords  = 1
	chunkSeqnos   = 2
	minRecordLen  = 5                                          // four one-byte varints and a one-byte key
	maxRecordHead = 4*binary.MaxVarintLen64 + engine.MaxKeyLen // varints and the key
)

// Errors callers test with errors.Is.
var (
	// ErrCorrupt is matched by every *CorruptError: the file does not verify.
	ErrCorrupt = errors.New("dump: corrupt file")
	// ErrVBucketMismatch: the file was written by a node with another
	// vBucket count. Loading it would put records in the wrong vBuckets, so
	// it is refused whatever the OnCorrupt policy.
	ErrVBucketMismatch = errors.New("dump: vbucket count differs from the node's")
	// ErrInvalidRecord: the writer was given a record it cannot store (key
	// length, value length, seqno above its vBucket's, key not in the
	// vBucket, a second seqno for a vBucket).
	ErrInvalidRecord = errors.New("dump: invalid record")
)

// CorruptError reports a file that does not verify.
type CorruptError struct {
	File   string // the file's name as given to the reader
	Offset int64  // the file offset of the header, chunk or footer at fault
	Reason string
}

// Error implements error.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("dump %s: corrupt at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Header is what a dump file says about itself before its records.
type Header struct {
	Channel  string
	VBuckets int
	Created  time.Time
	// Codec is not in the header bytes: every chunk names its own. A
	// writer compresses every chunk with it (0 means CodecZstd); a reader
	// reports the trailer's.
	Codec Codec
}

// Info describes a verified dump file.
type Info struct {
	Header
	Records  int64    // records in the file
	Bytes    int64    // key plus value bytes of those records
	FileSize int64    // bytes of the file
	Seqnos   []uint64 // seqno of every vBucket at its snapshot; 0 = no record of the channel
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskCRC is pebble's CRC mask, so that a CRC over bytes that embed CRCs
// stays strong.
func maskCRC(c uint32) uint32 { return (c>>15 | c<<17) + 0xa282ead8 }

func (h Header) validate() error {
	if !engine.ValidChannelString(h.Channel) {
		return fmt.Errorf("dump: invalid channel name %q", h.Channel)
	}
	if h.Codec != 0 && !h.Codec.valid() {
		return fmt.Errorf("dump: unknown codec %d", h.Codec)
	}
	return checkVBuckets(h.VBuckets)
}

func checkVBuckets(n int) error {
	if n < 1 || n > vbucket.Max {
		return fmt.Errorf("dump: vbucket count %d out of range 1..%d", n, vbucket.Max)
	}
	return nil
}

func (h Header) appendTo(b []byte) []byte {
	start := len(b)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint16(b, uint16(h.VBuckets))
	var created int64
	if !h.Created.IsZero() {
		created = h.Created.UnixNano()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(created))
	b = append(b, byte(len(h.Channel)))
	b = append(b, h.Channel...)
	return binary.LittleEndian.AppendUint32(b, maskCRC(crc32.Checksum(b[start:], castagnoli)))
}

// chunkHeader is the decoded 18-byte header of a chunk.
type chunkHeader struct {
	typ     byte
	codec   Codec
	rawLen  uint32
	compLen uint32
	records uint32
	crc     uint32
}

func (c chunkHeader) put(b []byte) {
	b[0] = c.typ
	b[1] = byte(c.codec)
	binary.LittleEndian.PutUint32(b[2:], c.rawLen)
	binary.LittleEndian.PutUint32(b[6:], c.compLen)
	binary.LittleEndian.PutUint32(b[10:], c.records)
	binary.LittleEndian.PutUint32(b[14:], c.crc)
}

func parseChunkHeader(b []byte) chunkHeader {
	return chunkHeader{
		typ:     b[0],
		codec:   Codec(b[1]),
		rawLen:  binary.LittleEndian.Uint32(b[2:]),
		compLen: binary.LittleEndian.Uint32(b[6:]),
		records: binary.LittleEndian.Uint32(b[10:]),
		crc:     binary.LittleEndian.Uint32(b[14:]),
	}
}

// chunkCRC is the masked CRC32C of a chunk header's first 14 bytes and its
// payload.
func chunkCRC(hdr, payload []byte) uint32 {
	return maskCRC(crc32.Update(crc32.Checksum(hdr[:14], castagnoli), castagnoli, payload))
}
