package raftstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Layout of an encoded log entry; see the package comment.
const (
	logVersion     = 1
	offIndex       = 1
	offTerm        = 9
	offType        = 17
	offSec         = 18
	offNsec        = 26
	offDataLen     = 30
	offData        = 34
	lenFieldSize   = 4
	crcSize        = 4
	logOverhead    = offData + lenFieldSize + crcSize // 42: an entry with no data and no extensions
	maxPayloadSize = bolt.MaxValueSize - logOverhead
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodedLogSize is the length of l's encoding.
func encodedLogSize(l *raft.Log) int {
	return logOverhead + len(l.Data) + len(l.Extensions)
}

// appendLog appends the encoding of l to dst. It fails only when the entry
// is larger than bbolt can store.
func appendLog(dst []byte, l *raft.Log) ([]byte, error) {
	if err := checkPayload(len(l.Data), len(l.Extensions)); err != nil {
		return dst, fmt.Errorf("log %d: %w", l.Index, err)
	}
	start := len(dst)
	dst = append(dst, logVersion)
	dst = binary.BigEndian.AppendUint64(dst, l.Index)
	dst = binary.BigEndian.AppendUint64(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = binary.BigEndian.AppendUint64(dst, uint64(l.AppendedAt.Unix()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(l.AppendedAt.Nanosecond()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
}

// checkPayload fails if an entry with that much data and extensions would
// not fit in a bbolt value.
func checkPayload(dataLen, extLen int) error {
	if dataLen > maxPayloadSize || extLen > maxPayloadSize-dataLen {
		return fmt.Errorf("%d bytes of data and %d of extensions exceed the %d-byte limit: %w",
			dataLen, extLen, maxPayloadSize, ErrTooLarge)
	}
	return nil
}

// decodeLog decodes b, an encoded entry, into l, overwriting every field.
// b may be bbolt's memory: l keeps no reference to it. Any malformed input
// gives an error wrapping ErrCorrupt; at most len(b) bytes are allocated.
func decodeLog(b []byte, l *raft.Log) error {
	if len(b) < logOverhead {
		return fmt.Errorf("log entry of %d bytes, shorter than the %d-byte minimum: %w", len(b), logOverhead, ErrCorrupt)
	}
	body := b[:len(b)-crcSize]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(b[len(body):]); got != want {
		return fmt.Errorf("log entry checksum %08x, stored %08x: %w", got, want, ErrCorrupt)
	}
	if body[0] != logVersion {
		return fmt.Errorf("log entry format version %d, want %d: %w", body[0], logVersion, ErrCorrupt)
	}
	nsec := binary.BigEndian.Uint32(body[offNsec:])
	if nsec >= uint32(time.Second) {
		return fmt.Errorf("log entry AppendedAt nanoseconds %d out of range: %w", nsec, ErrCorrupt)
	}
	room := uint64(len(body) - offData - lenFieldSize) // bytes for data and extensions
	dataLen := uint64(binary.BigEndian.Uint32(body[offDataLen:]))
	if dataLen > room {
		return fmt.Errorf("log entry data length %d, only %d bytes left: %w", dataLen, room, ErrCorrupt)
	}
	extLen := uint64(binary.BigEndian.Uint32(body[offData+dataLen:]))
	if extLen != room-dataLen {
		return fmt.Errorf("log entry extensions length %d, %d bytes left: %w", extLen, room-dataLen, ErrCorrupt)
	}
	l.Index = binary.BigEndian.Uint64(body[offIndex:])
	l.Term = binary.BigEndian.Uint64(body[offTerm:])
	l.Type = raft.LogType(body[offType])
	l.AppendedAt = time.Unix(int64(binary.BigEndian.Uint64(body[offSec:])), int64(nsec)).UTC()
	l.Data, l.Extensions = nil, nil
	if room > 0 {
		buf := make([]byte, room)
		copy(buf, body[offData:offData+dataLen])
		copy(buf[dataLen:], body[offData+dataLen+lenFieldSize:])
		if dataLen > 0 {
			l.Data = buf[:dataLen:dataLen]
		}
		if extLen > 0 {
			l.Extensions = buf[dataLen:]
		}
	}
	return nil
}

// indexKey is the bucket key of a log index: big-endian, so that bbolt's
// byte order is index order.
func indexKey(i uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), i)
}

// keyIndex decodes a key of the logs bucket.
func keyIndex(k []byte) (uint64, error) {
	if len(k) != 8 {
		return 0, fmt.Errorf("log key of %d bytes, want 8: %w", len(k), ErrCorrupt)
	}
	return binary.BigEndian.Uint64(k), nil
}
