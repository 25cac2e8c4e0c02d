package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Damage is a stretch of a file that holds no valid frame or block.
type Damage struct {
	Offset int64 // where the stretch begins
	Length int64 // its length in bytes
	Tail   bool  // no valid unit follows: a torn or truncated tail
}

// windowSize is how much a scanner reads at a time.
const windowSize = 256 << 10

// errShort is returned by window.at when the bytes asked for run past end.
var errShort = errors.New("segment: past end")

// window reads the byte range [0, end) of a file through a sliding buffer.
type window struct {
	r   io.ReaderAt
	end int64
	buf []byte
	off int64 // file offset of buf[0]
}

// at returns the n bytes at off, valid until the next call. It fails with
// errShort when they run past end, and with the read error otherwise.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 || off > w.end || int64(n) > w.end-off {
		return nil, errShort
	}
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) {
		return w.buf[off-w.off : off-w.off+int64(n)], nil
	}
	size := max(n, windowSize)
	if rem := w.end - off; int64(size) > rem {
		size = int(rem)
	}
	if cap(w.buf) < size {
		w.buf = make([]byte, size)
	}
	w.buf = w.buf[:size]
	m, err := w.r.ReadAt(w.buf, off)
	if m < size {
		w.buf = w.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cannot read %d bytes at offset %d: %w", size, off, err)
	}
	w.off = off
	return w.buf[:n], nil
}

// scanner walks a file unit by unit (frames or blocks), resynchronising
// after damage. try reports whether a valid unit of size n starts at off.
type scanner struct {
	w      window
	pos    int64
	try    func(off int64) (n int64, ok bool, err error)
	damage []Damage
	err    error
}

// next returns the offset and size of the next valid unit, or ok=false at
// the end or on a read error.
func (s *scanner) next() (off, n int64, ok bool) {
	for s.err == nil && s.pos < s.w.end {
		n, ok, err := s.try(s.pos)
		if err != nil {
			s.err = err
			break
		}
		if ok {
			off = s.pos
			s.pos += n
			return off, n, true
		}
		bad := s.pos
		p, err := s.resync(bad + 1)
		if err != nil {
			s.err = err
			break
		}
		if p < 0 {
			s.damage = append(s.damage, Damage{Offset: bad, Length: s.w.end - bad, Tail: true})
			s.pos = s.w.end
			break
		}
		s.damage = append(s.damage, Damage{Offset: bad, Length: p - bad})
		s.pos = p
	}
	return 0, 0, false
}

// resync returns the first offset at or after from where a valid unit
// starts, or -1.
func (s *scanner) resync(from int64) (int64, error) {
	for p := from; p < s.w.end; p++ {
		_, ok, err := s.try(p)
		if err != nil {
			return 0, err
		}
		if ok {
			return p, nil
		}
	}
	return -1, nil
}

// FrameScanner reads the frames of a plain body.
type FrameScanner struct {
	sc    scanner
	valid Validate
	rec   Record
	off   int64
}

// NewFrameScanner scans the frames in [start, end) of r. Frames refused by
// valid count as damage.
func NewFrameScanner(r io.ReaderAt, start, end int64, valid Validate) *FrameScanner {
	s := &FrameScanner{valid: valid}
	s.sc = scanner{w: window{r: r, end: end}, pos: start, try: s.try}
	return s
}

func (s *FrameScanner) try(off int64) (int64, bool, error) {
	h, err := s.sc.w.at(off, FrameHeaderSize)
	if err != nil {
		return 0, false, ignoreShort(err)
	}
	vlen := binary.LittleEndian.Uint32(h[4:])
	if vlen > MaxValueLen {
		return 0, false, nil
	}
	if s.valid != nil && !s.valid(binary.LittleEndian.Uint64(h[8:]), binary.LittleEndian.Uint16(h[16:])) {
		return 0, false, nil
	}
	b, err := s.sc.w.at(off, FrameHeaderSize+int(vlen))
	if err != nil {
		return 0, false, ignoreShort(err)
	}
	r, n, ok := DecodeFrame(b, nil)
	if !ok {
		return 0, false, nil
	}
	s.rec = r
	return int64(n), true, nil
}

// Next advances to the next valid frame. It returns false at the end or on
// a read error (see Err).
func (s *FrameScanner) Next() bool {
	off, _, ok := s.sc.next()
	s.off = off
	return ok
}

// Record returns the current frame's record. Its Value is valid until the
// next call to Next.
func (s *FrameScanner) Record() *Record { return &s.rec }

// Offset returns the file offset of the current frame.
func (s *FrameScanner) Offset() int64 { return s.off }

// Damage returns the damaged stretches met so far.
func (s *FrameScanner) Damage() []Damage { return s.sc.damage }

// Err returns the read error that stopped the scan, if any.
func (s *FrameScanner) Err() error { return s.sc.err }

// BlockScanner reads the blocks of a compressed body.
type BlockScanner struct {
	sc   scanner
	data []byte
	rlen int
	off  int64
	size int64
}

// NewBlockScanner scans the blocks in [start, end) of r.
func NewBlockScanner(r io.ReaderAt, start, end int64) *BlockScanner {
	s := &BlockScanner{}
	s.sc = scanner{w: window{r: r, end: end}, pos: start, try: s.try}
	return s
}

func (s *BlockScanner) try(off int64) (int64, bool, error) {
	h, err := s.sc.w.at(off, BlockHeaderSize)
	if err != nil {
		return 0, false, ignoreShort(err)
	}
	clen := binary.LittleEndian.Uint32(h[4:])
	rlen := binary.LittleEndian.Uint32(h[8:])
	if clen > MaxBlockData || rlen > MaxBlockRaw || rlen == 0 {
		return 0, false, nil
	}
	b, err := s.sc.w.at(off, BlockHeaderSize+int(clen))
	if err != nil {
		return 0, false, ignoreShort(err)
	}
	if binary.LittleEndian.Uint32(b) != Checksum(b[4:]) {
		return 0, false, nil
	}
	s.data, s.rlen = b[BlockHeaderSize:], int(rlen)
	return int64(len(b)), true, nil
}

// Next advances to the next block whose CRC matches.
func (s *BlockScanner) Next() bool {
	off, n, ok := s.sc.next()
	s.off, s.size = off, n
	return ok
}

// Offset returns the file offset of the current block.
func (s *BlockScanner) Offset() int64 { return s.off }

// Size returns the size of the current block, header included.
func (s *BlockScanner) Size() int64 { return s.size }

// Decode decompresses the current block into dst[:0] (grown as needed) and
// checks its length against the block header.
func (s *BlockScanner) Decode(dec *zstd.Decoder, dst []byte) ([]byte, error) {
	if cap(dst) < s.rlen {
		dst = make([]byte, 0, s.rlen)
	}
	out, err := dec.DecodeAll(s.data, dst[:0:s.rlen])
	if err != nil {
		return dst[:0], fmt.Errorf("cannot decompress block at offset %d: %w", s.off, err)
	}
	if len(out) != s.rlen {
		return dst[:0], fmt.Errorf("block at offset %d decompressed to %d bytes, header says %d", s.off, len(out), s.rlen)
	}
	return out, nil
}

// Damage returns the damaged stretches met so far.
func (s *BlockScanner) Damage() []Damage { return s.sc.damage }

// Err returns the read error that stopped the scan, if any.
func (s *BlockScanner) Err() error { return s.sc.err }

func ignoreShort(err error) error {
	if errors.Is(err, errShort) {
		return nil
	}
	return err
}

// Pos locates a record in a segment file: the frame's offset in a plain
// body, or the block's offset and the record's index in the block in a
// compressed one.
type Pos struct {
	Off int64
	Idx int
}

// Reader yields the valid records of one segment file in file order,
// whichever its form, skipping damage.
type Reader struct {
	compressed bool
	valid      Validate
	dec        *zstd.Decoder
	frames     *FrameScanner // over the file, or over the current block
	blocks     *BlockScanner
	raw        []byte
	pos        Pos
	damage     []Damage
	err        error
}

// NewReader reads the body of a segment file r of size bytes whose header
// is h. dec is needed for compressed files.
func NewReader(r io.ReaderAt, h Header, size int64, valid Validate, dec *zstd.Decoder) *Reader {
	rd := &Reader{compressed: h.Flags&FlagCompressed != 0, valid: valid, dec: dec}
	if rd.compressed {
		rd.blocks = NewBlockScanner(r, HeaderSize, size)
	} else {
		rd.frames = NewFrameScanner(r, HeaderSize, size, valid)
	}
	return rd
}

// Next advances to the next valid record.
func (rd *Reader) Next() bool {
	if !rd.compressed {
		if !rd.frames.Next() {
			rd.err = rd.frames.Err()
			return false
		}
		rd.pos = Pos{Off: rd.frames.Offset()}
		return true
	}
	for {
		if rd.frames != nil {
			if rd.frames.Next() {
				rd.pos.Idx++
				return true
			}
			if len(rd.frames.Damage()) > 0 {
				rd.damage = append(rd.damage, Damage{Offset: rd.blocks.Offset(), Length: rd.blocks.Size()})
			}
			rd.frames = nil
		}
		if !rd.blocks.Next() {
			rd.err = rd.blocks.Err()
			return false
		}
		raw, err := rd.blocks.Decode(rd.dec, rd.raw)
		rd.raw = raw
		if errors.Is(err, zstd.ErrDecoderClosed) {
			rd.err = err
			return false
		}
		if err != nil {
			rd.damage = append(rd.damage, Damage{Offset: rd.blocks.Offset(), Length: rd.blocks.Size()})
			continue
		}
		rd.frames = NewFrameScanner(bytes.NewReader(raw), 0, int64(len(raw)), rd.valid)
		rd.pos = Pos{Off: rd.blocks.Offset(), Idx: -1}
	}
}

// Record returns the current record; its Value is valid until Next.
func (rd *Reader) Record() *Record { return rd.frames.Record() }

// Pos returns the location of the current record.
func (rd *Reader) Pos() Pos { return rd.pos }

// Damage returns the damaged stretches met so far, in file offsets.
func (rd *Reader) Damage() []Damage {
	if rd.compressed {
		d := append([]Damage(nil), rd.blocks.Damage()...)
		return append(d, rd.damage...)
	}
	return rd.frames.Damage()
}

// Err returns the read error that stopped the reader, if any.
func (rd *Reader) Err() error { return rd.err }

// NewDecoder returns a zstd decoder suited to DecodeAll of blocks: bounded
// output, no background goroutines. Close it when done.
func NewDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxBlockRaw))
}

// NewEncoder returns a zstd encoder for EncodeAll of blocks. Close it when
// done.
func NewEncoder() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
}

// BlockWriter writes a compressed body: it gathers frames and emits a
// block each time BlockTarget bytes of them have gathered.
type BlockWriter struct {
	w   io.Writer
	enc *zstd.Encoder
	raw []byte
	out []byte
	n   int64
}

// NewBlockWriter returns a BlockWriter writing to w.
func NewBlockWriter(w io.Writer, enc *zstd.Encoder) *BlockWriter {
	return &BlockWriter{w: w, enc: enc}
}

// Add adds the frame of r.
func (bw *BlockWriter) Add(r *Record) error {
	bw.raw = AppendFrame(bw.raw, r)
	if len(bw.raw) >= BlockTarget {
		return bw.Flush()
	}
	return nil
}

// Flush writes the frames gathered so far as one block.
func (bw *BlockWriter) Flush() error {
	if len(bw.raw) == 0 {
		return nil
	}
	out := append(bw.out[:0], make([]byte, BlockHeaderSize)...)
	out = bw.enc.EncodeAll(bw.raw, out)
	binary.LittleEndian.PutUint32(out[4:], uint32(len(out)-BlockHeaderSize))
	binary.LittleEndian.PutUint32(out[8:], uint32(len(bw.raw)))
	binary.LittleEndian.PutUint32(out, Checksum(out[4:]))
	bw.out = out
	bw.raw = bw.raw[:0]
	n, err := bw.w.Write(out)
	bw.n += int64(n)
	return err
}

// Written returns the bytes written to the underlying writer so far.
func (bw *BlockWriter) Written() int64 { return bw.n }

// ErrDamaged means the frame or block expected at an offset is not valid.
var ErrDamaged = errors.New("segment: damaged frame or block")

// ReadFrameAt reads the frame at off of a plain body that ends at end.
// The record's Value is freshly allocated.
func ReadFrameAt(r io.ReaderAt, off, end int64, valid Validate) (Record, error) {
	var h [FrameHeaderSize]byte
	if off < 0 || end-off < FrameHeaderSize {
		return Record{}, fmt.Errorf("%w: no frame at offset %d", ErrDamaged, off)
	}
	if _, err := r.ReadAt(h[:], off); err != nil {
		return Record{}, fmt.Errorf("cannot read frame at offset %d: %w", off, err)
	}
	vlen := binary.LittleEndian.Uint32(h[4:])
	if vlen > MaxValueLen || int64(vlen) > end-off-FrameHeaderSize {
		return Record{}, fmt.Errorf("%w: bad length at offset %d", ErrDamaged, off)
	}
	b := make([]byte, FrameHeaderSize+int(vlen))
	if _, err := r.ReadAt(b, off); err != nil {
		return Record{}, fmt.Errorf("cannot read frame at offset %d: %w", off, err)
	}
	rec, _, ok := DecodeFrame(b, valid)
	if !ok {
		return Record{}, fmt.Errorf("%w: bad frame at offset %d", ErrDamaged, off)
	}
	return rec, nil
}

// ReadBlockAt reads and decompresses the block at off of a compressed body
// that ends at end, into dst[:0] (grown as needed).
func ReadBlockAt(r io.ReaderAt, off, end int64, dec *zstd.Decoder, dst []byte) ([]byte, error) {
	s := NewBlockScanner(r, off, end)
	n, ok, err := s.try(off)
	if err != nil {
		return dst[:0], err
	}
	if !ok {
		return dst[:0], fmt.Errorf("%w: bad block at offset %d", ErrDamaged, off)
	}
	s.off, s.size = off, n
	return s.Decode(dec, dst)
}
