package dump

import (
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// The zstd encoder and decoder are shared by every dump of the process:
// EncodeAll and DecodeAll are safe for concurrent use and keep one state per
// CPU (one encoder per compressing worker), so many files written or read at
// once do not multiply their memory.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithEncoderCRC(false), // chunks carry a CRC32C
			zstd.WithWindowSize(BlockSize))
		if err != nil {
			panic("dump: zstd encoder options: " + err.Error())
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(MaxBlockRaw),
			zstd.WithDecodeAllCapLimit(true), // never more than the chunk's raw length
			zstd.IgnoreChecksum(true))
		if err != nil {
			panic("dump: zstd decoder options: " + err.Error())
		}
		return d
	})
)

// compress appends raw compressed with c to dst.
func compress(c Codec, raw, dst []byte) []byte {
	if c == CodecS2 {
		n := len(dst)
		if room := s2.MaxEncodedLen(len(raw)); cap(dst)-n < room {
			dst = slices.Grow(dst, room)
		}
		out := s2.Encode(dst[n:cap(dst)], raw) // in place: there is room
		return dst[:n+len(out)]
	}
	return zstdEncoder().EncodeAll(raw, dst)
}

// decompress decodes a chunk payload of codec c into buf, which must come
// out exactly rawLen bytes long. It never allocates more than rawLen.
func decompress(c Codec, payload, buf []byte, rawLen uint32) ([]byte, error) {
	buf = slices.Grow(buf[:0], int(rawLen))
	switch c {
	case CodecZstd:
		out, err := zstdDecoder().DecodeAll(payload, buf[:0:rawLen])
		if err != nil {
			return buf, fmt.Errorf("cannot decompress: %w", err)
		}
		if len(out) != int(rawLen) {
			return buf, fmt.Errorf("decompressed to %d bytes, want %d", len(out), rawLen)
		}
		return out, nil
	case CodecS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return buf, fmt.Errorf("cannot decompress: %w", err)
		}
		if n != int(rawLen) {
			return buf, fmt.Errorf("s2 block of %d bytes, want %d", n, rawLen)
		}
		out, err := s2.Decode(buf[:rawLen], payload)
		if err != nil {
			return buf, fmt.Errorf("cannot decompress: %w", err)
		}
		return out, nil
	}
	return buf, fmt.Errorf("unknown codec %d", c)
}
