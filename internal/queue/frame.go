package queue

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// frameHeaderLen is the size of a frame's crc and length fields.
const frameHeaderLen = 8

// magicLen is the length of the magic string every file starts with.
const magicLen = 8

// maxFrameLen bounds the length field of a frame read from disk: the largest
// value plus room for a push entry naming 255 channels.
const maxFrameLen = engine.MaxValueLen + 128<<10

// readChunk is how much of a frame is read (and allocated) at a time, so a
// length field that lies costs at most this much memory beyond the bytes
// that are really there.
const readChunk = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTorn reports a file that ends inside a frame: the tail a crash leaves.
var errTorn = errors.New("queue: file ends inside a frame")

// beginFrame appends the header placeholder and the type byte of a frame to
// dst. The caller appends the body and then calls finishFrame with the
// length dst had before beginFrame.
func beginFrame(dst []byte, typ byte) []byte {
	return append(dst, 0, 0, 0, 0, 0, 0, 0, 0, typ)
}

// finishFrame fills in the length and crc of the frame that starts at
// dst[start:].
func finishFrame(dst []byte, start int) []byte {
	f := dst[start:]
	binary.LittleEndian.PutUint32(f[4:], uint32(len(f)-frameHeaderLen))
	binary.LittleEndian.PutUint32(f[0:], crc32.Checksum(f[4:], castagnoli))
	return dst
}

// frameReader reads frames sequentially. It never allocates more than
// readChunk beyond the bytes actually present, whatever a length field says.
type frameReader struct {
	r   *bufio.Reader
	off int64 // file offset of the next frame
	buf []byte
}

func newFrameReader(r io.Reader, off int64) frameReader {
	return frameReader{r: bufio.NewReaderSize(r, 64<<10), off: off}
}

// next returns the type and body of the next frame. The body aliases an
// internal buffer valid until the next call. It returns io.EOF at a clean
// end, errTorn when the data ends inside a frame and an error wrapping
// ErrCorrupt for a bad length or checksum.
func (fr *frameReader) next() (byte, []byte, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, nil, errTorn
		}
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n == 0 || n > maxFrameLen {
		return 0, nil, fmt.Errorf("%w: frame length %d at offset %d", ErrCorrupt, n, fr.off)
	}
	fr.buf = fr.buf[:0]
	for left := int(n); left > 0; {
		c := min(left, readChunk)
		l := len(fr.buf)
		fr.buf = append(fr.buf, make([]byte, c)...)
		if _, err := io.ReadFull(fr.r, fr.buf[l:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return 0, nil, errTorn
			}
			return 0, nil, err
		}
		left -= c
	}
	crc := crc32.Update(crc32.Checksum(h[4:], castagnoli), castagnoli, fr.buf)
	if crc != binary.LittleEndian.Uint32(h[0:]) {
		return 0, nil, fmt.Errorf("%w: checksum mismatch at offset %d", ErrCorrupt, fr.off)
	}
	fr.off += frameHeaderLen + int64(n)
	return fr.buf[0], fr.buf[1:], nil
}

// offsetReader reads a file sequentially from an offset with ReadAt, so it
// sees bytes appended after it started and leaves the file offset alone.
type offsetReader struct {
	f   vfs.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// readMagic checks that f starts with magic (or one of others, older
// versions still read).
func readMagic(f vfs.File, magic string, others ...string) error {
	var b [magicLen]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		if err == io.EOF {
			return fmt.Errorf("%w: %q is too short for a header", ErrCorrupt, f.Name())
		}
		return fmt.Errorf("cannot read header of %q: %w", f.Name(), err)
	}
	if string(b[:]) != magic && !slices.Contains(others, string(b[:])) {
		return fmt.Errorf("%w: %q does not start with %q", ErrCorrupt, f.Name(), magic)
	}
	return nil
}

// appender appends whole frames to a file and never leaves part of one
// behind: a failed or short write is cut off again (or, when even that
// fails, before the next write).
type appender struct {
	f    vfs.File
	size int64 // bytes of complete writes
	torn bool  // bytes after size may exist and must be cut first
}

func (a *appender) write(b []byte) error {
	if a.torn {
		if err := a.cut(); err != nil {
			return err
		}
	}
	n, err := a.f.Write(b)
	if err == nil && n == len(b) {
		a.size += int64(n)
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	a.torn = true
	_ = a.cut() // retried before the next write when it fails now
	return fmt.Errorf("cannot write %q: %w", a.f.Name(), err)
}

// rollback forgets the bytes written after size.
func (a *appender) rollback(size int64) error {
	a.size = size
	a.torn = true
	return a.cut()
}

func (a *appender) cut() error {
	if err := a.f.Truncate(a.size); err != nil {
		return fmt.Errorf("cannot cut %q back to %d bytes: %w", a.f.Name(), a.size, err)
	}
	if _, err := a.f.Seek(a.size, io.SeekStart); err != nil {
		return fmt.Errorf("cannot seek %q to %d: %w", a.f.Name(), a.size, err)
	}
	a.torn = false
	return nil
}
