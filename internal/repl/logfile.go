package repl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"shoal/internal/stream"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// Failover log file layout; see the package comment.
const (
	logMagic      = "SHFL"
	logVersion    = 1
	logFlagClean  = 0x01
	logHeaderLen  = 8
	logTrailerLen = 4
	logEntryLen   = 16
	logVBFixedLen = 9 // high u64, n u8
)

// ErrCorruptLog reports a failover log file that does not decode.
var ErrCorruptLog = errors.New("repl: corrupt failover log file")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// logFile is a decoded failover log file.
type logFile struct {
	clean bool
	highs []uint64
	logs  [][]stream.FailoverEntry
}

// maxLogFileLen bounds the file of n vBuckets.
func maxLogFileLen(n int) int64 {
	return logHeaderLen + int64(n)*(logVBFixedLen+MaxLogEntries*logEntryLen) + logTrailerLen
}

// encodeLogFile encodes logs; highs non-nil marks a clean shutdown.
func encodeLogFile(logs [][]stream.FailoverEntry, highs []uint64) []byte {
	size := logHeaderLen + logTrailerLen
	for _, l := range logs {
		size += logVBFixedLen + len(l)*logEntryLen
	}
	b := make([]byte, 0, size)
	b = append(b, logMagic...)
	var flags byte
	if highs != nil {
		flags |= logFlagClean
	}
	b = append(b, logVersion, flags)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(logs)))
	for vb, l := range logs {
		var high uint64
		if highs != nil {
			high = highs[vb]
		}
		b = binary.LittleEndian.AppendUint64(b, high)
		b = append(b, byte(len(l)))
		for _, e := range l {
			b = binary.LittleEndian.AppendUint64(b, e.UUID)
			b = binary.LittleEndian.AppendUint64(b, e.Seqno)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeLogFile decodes a file that must hold vbuckets vBuckets.
func decodeLogFile(b []byte, vbuckets int) (logFile, error) {
	var f logFile
	if len(b) < logHeaderLen+logTrailerLen {
		return f, fmt.Errorf("%w: %d bytes", ErrCorruptLog, len(b))
	}
	body, sum := b[:len(b)-logTrailerLen], binary.LittleEndian.Uint32(b[len(b)-logTrailerLen:])
	switch {
	case string(b[:4]) != logMagic:
		return f, fmt.Errorf("%w: bad magic %q", ErrCorruptLog, b[:4])
	case crc32.Checksum(body, castagnoli) != sum:
		return f, fmt.Errorf("%w: checksum mismatch", ErrCorruptLog)
	case b[4] != logVersion:
		return f, fmt.Errorf("%w: version %d", ErrCorruptLog, b[4])
	case b[5]&^logFlagClean != 0:
		return f, fmt.Errorf("%w: flags %#x", ErrCorruptLog, b[5])
	}
	if n := int(binary.LittleEndian.Uint16(b[6:])); n != vbuckets {
		return f, fmt.Errorf("%w: %d vbuckets, the node has %d", ErrCorruptLog, n, vbuckets)
	}
	f.clean = b[5]&logFlagClean != 0
	f.highs = make([]uint64, vbuckets)
	f.logs = make([][]stream.FailoverEntry, vbuckets)
	p := body[logHeaderLen:]
	for vb := range vbuckets {
		if len(p) < logVBFixedLen {
			return f, fmt.Errorf("%w: truncated at vbucket %d", ErrCorruptLog, vb)
		}
		f.highs[vb] = binary.LittleEndian.Uint64(p)
		n := int(p[8])
		p = p[logVBFixedLen:]
		if n > MaxLogEntries || len(p) < n*logEntryLen {
			return f, fmt.Errorf("%w: vbucket %d claims %d entries", ErrCorruptLog, vb, n)
		}
		if n > 0 {
			l := make([]stream.FailoverEntry, n)
			for i := range l {
				l[i] = stream.FailoverEntry{UUID: binary.LittleEndian.Uint64(p), Seqno: binary.LittleEndian.Uint64(p[8:])}
				if l[i].UUID == 0 {
					return f, fmt.Errorf("%w: vbucket %d has uuid 0", ErrCorruptLog, vb)
				}
				p = p[logEntryLen:]
			}
			f.logs[vb] = l
		}
	}
	if len(p) != 0 {
		return f, fmt.Errorf("%w: %d trailing bytes", ErrCorruptLog, len(p))
	}
	return f, nil
}

// readLogFile reads and decodes path; a missing file is os.ErrNotExist.
func readLogFile(fs vfs.FS, path string, vbuckets int) (logFile, error) {
	file, err := fs.Open(path)
	if err != nil {
		return logFile{}, err
	}
	defer file.Close()
	limit := maxLogFileLen(vbuckets)
	b, err := io.ReadAll(io.LimitReader(file, limit+1))
	if err != nil {
		return logFile{}, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return logFile{}, fmt.Errorf("%w: %s is over %d bytes", ErrCorruptLog, path, limit)
	}
	return decodeLogFile(b, vbuckets)
}

// VerifyLogFile checks, offline, that the failover log file at path
// decodes, whatever its vBucket count (a missing file is
// os.ErrNotExist). A node that finds its file damaged starts a new history
// for every vBucket (its consumers roll back) and rewrites it.
func VerifyLogFile(fs vfs.FS, path string) error {
	if fs == nil {
		fs = vfs.Default
	}
	file, err := fs.Open(path)
	if err != nil {
		return err
	}
	var h [logHeaderLen]byte
	_, err = file.ReadAt(h[:], 0)
	file.Close()
	if err != nil {
		return fmt.Errorf("%w: %s: no header: %v", ErrCorruptLog, path, err)
	}
	n := int(binary.LittleEndian.Uint16(h[6:]))
	if n < 1 || n > vbucket.Max {
		return fmt.Errorf("%w: %s: %d vbuckets", ErrCorruptLog, path, n)
	}
	_, err = readLogFile(fs, path, n)
	return err
}
