package dump

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The zstd encoder and decoder are shared by every dump of the process:
// EncodeAll and DecodeAll are safe for concurrent use and keep one state per
// CPU, so many files written or read at once do not multiply their memory.
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
