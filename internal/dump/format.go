package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// File name suffixes of a channel's dump files.
const (
	Ext       = ".dump"
	TmpExt    = ".dump.tmp"
	BackupExt = ".dump.backup"
)

// Version is the format version this package writes and reads.
const Version = 1

// Block sizes.
const (
	// BlockSize is the raw size at which the writer closes a record block.
	BlockSize = 1 << 20
	// MaxBlockRaw is the largest raw (decompressed) block a reader accepts:
	// one record of the largest value the protocol carries, with room to
	// spare. A block's buffers are never larger.
	MaxBlockRaw = wire.MaxBody + 64<<10
	// maxBlockComp bounds a chunk's compressed length; zstd expands
	// incompressible input by far less than this.
	maxBlockComp = MaxBlockRaw + MaxBlockRaw/8
)

const (
	magic         = "SHOALDMP"
	endMagic      = "SHOALEND"
	headerFixed   = 21 // magic, version, vbs, created, channel length
	chunkHdrLen   = 17
	footerLen     = 32
	runHdrLen     = 14
	chunkRecords  = 1
	chunkSeqnos   = 2
	minRecordLen  = 5                                        // four one-byte varints and a one-byte key
	maxRecordHead = 4*binary.MaxVarintLen64 + wire.MaxKeyLen // varints and the key
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
	if !wire.ValidChannelString(h.Channel) {
		return fmt.Errorf("dump: invalid channel name %q", h.Channel)
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

// chunkHeader is the decoded 17-byte header of a chunk.
type chunkHeader struct {
	typ     byte
	rawLen  uint32
	compLen uint32
	records uint32
	crc     uint32
}

func (c chunkHeader) put(b []byte) {
	b[0] = c.typ
	binary.LittleEndian.PutUint32(b[1:], c.rawLen)
	binary.LittleEndian.PutUint32(b[5:], c.compLen)
	binary.LittleEndian.PutUint32(b[9:], c.records)
	binary.LittleEndian.PutUint32(b[13:], c.crc)
}

func parseChunkHeader(b []byte) chunkHeader {
	return chunkHeader{
		typ:     b[0],
		rawLen:  binary.LittleEndian.Uint32(b[1:]),
		compLen: binary.LittleEndian.Uint32(b[5:]),
		records: binary.LittleEndian.Uint32(b[9:]),
		crc:     binary.LittleEndian.Uint32(b[13:]),
	}
}

// chunkCRC is the masked CRC32C of a chunk header's first 13 bytes and its
// payload.
func chunkCRC(hdr, payload []byte) uint32 {
	return maskCRC(crc32.Update(crc32.Checksum(hdr[:13], castagnoli), castagnoli, payload))
}
