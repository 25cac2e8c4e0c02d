package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

// Summary is what an Encoder wrote.
type Summary struct {
	Records   int64 // records written
	Bytes     int64 // key plus value bytes of those records
	FileBytes int64 // bytes of the file
	Blocks    int   // record blocks
}

// Encoder writes one dump file to an io.Writer, append-only. Records are
// gathered into blocks of about BlockSize raw bytes. Each full block is
// compressed (and checksummed) by a goroutine of its own, on up to
// GOMAXPROCS cores, and queued in file order to a writer goroutine, so that
// encoding, compressing and writing overlap; at most 2*GOMAXPROCS blocks
// are in memory.
//
// An Encoder is not safe for concurrent use. After NewEncoder succeeds,
// either Close or Abort must be called.
type Encoder struct {
	w      io.Writer
	vbs    int
	codec  Codec
	crc    uint32  // running CRC32C (unmasked) of every byte written
	sum    Summary // Records and Bytes by Add; FileBytes and Blocks by whoever writes
	seqnos []uint64
	seen   []bool // vBuckets given to Add

	raw          []byte // the block being filled
	blockRecords uint32
	runAt        int // offset in raw of the open run's header; -1 if none
	runVB        uint16
	runCount     uint32

	// The pipeline, started by the first full block. The writer goroutine
	// owns crc, sum.FileBytes and sum.Blocks until wdone is closed.
	free       chan *pendingBlock // blocks written, to fill again
	queue      chan *pendingBlock // blocks in file order, to the writer
	wdone      chan struct{}      // closed when the writer has returned
	made       int                // blocks allocated
	maxPending int
	closed     bool

	mu  sync.Mutex
	err error // sticky: the first error, of Add or of the writer
}

// pendingBlock is one record block on its way to the file.
type pendingBlock struct {
	raw     []byte
	chunk   []byte // chunk header and compressed payload
	records uint32
	done    chan struct{} // closed when chunk is ready
}

// errAborted stops the writer after Abort.
var errAborted = errors.New("dump: encoder aborted")

// NewEncoder writes h to w and returns an Encoder for the records. A zero
// h.Created is written as 0 and read back as the zero time.
func NewEncoder(w io.Writer, h Header) (*Encoder, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	if h.Codec == 0 {
		h.Codec = CodecZstd
	}
	maxPending := 2 * runtime.GOMAXPROCS(0)
	e := &Encoder{
		w:          w,
		vbs:        h.VBuckets,
		codec:      h.Codec,
		seqnos:     make([]uint64, h.VBuckets),
		seen:       make([]bool, h.VBuckets),
		runAt:      -1,
		maxPending: maxPending,
		free:       make(chan *pendingBlock, maxPending),
	}
	if err := e.write(h.appendTo(make([]byte, 0, headerFixed+len(h.Channel)+4))); err != nil {
		return nil, err
	}
	return e, nil
}

// Add appends records of vBucket vb, whose seqno at the snapshot is seqno.
// A vBucket may be added several times, always with the same seqno. Add
// copies what it needs: recs may be reused when it returns. Its signature
// is the callback of a Source's SnapshotChannel.
func (e *Encoder) Add(vb uint16, seqno uint64, recs []engine.Record) error {
	if err := e.error(); err != nil {
		return err
	}
	if e.closed {
		return errors.New("dump: Add after Close")
	}
	if int(vb) >= e.vbs {
		return e.fail(fmt.Errorf("%w: vbucket %d of %d", ErrInvalidRecord, vb, e.vbs))
	}
	if e.seen[vb] && e.seqnos[vb] != seqno {
		return e.fail(fmt.Errorf("%w: vbucket %d added with seqno %d after %d", ErrInvalidRecord, vb, seqno, e.seqnos[vb]))
	}
	e.seen[vb], e.seqnos[vb] = true, seqno
	for i := range recs {
		r := &recs[i]
		if err := e.check(vb, seqno, r); err != nil {
			return e.fail(err)
		}
		need := maxRecordHead + len(r.Value)
		if len(e.raw) > 0 && len(e.raw)+runHdrLen+need > BlockSize {
			if err := e.finishBlock(); err != nil {
				return err
			}
		}
		if e.runAt < 0 || e.runVB != vb {
			e.openRun(vb, seqno)
		}
		e.raw = binary.AppendUvarint(e.raw, uint64(len(r.Key)))
		e.raw = binary.AppendUvarint(e.raw, uint64(len(r.Value)))
		e.raw = binary.AppendUvarint(e.raw, r.Seqno)
		e.raw = binary.AppendVarint(e.raw, r.Expiry)
		e.raw = append(e.raw, r.Key...)
		e.raw = append(e.raw, r.Value...)
		e.runCount++
		e.blockRecords++
		e.sum.Records++
		e.sum.Bytes += int64(len(r.Key) + len(r.Value))
	}
	return nil
}

func (e *Encoder) check(vb uint16, seqno uint64, r *engine.Record) error {
	switch {
	case len(r.Key) == 0 || len(r.Key) > engine.MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes", ErrInvalidRecord, len(r.Key))
	case len(r.Value) > engine.MaxValueLen:
		return fmt.Errorf("%w: value of %d bytes", ErrInvalidRecord, len(r.Value))
	case r.Seqno > seqno:
		return fmt.Errorf("%w: record seqno %d above vbucket %d's seqno %d", ErrInvalidRecord, r.Seqno, vb, seqno)
	case vbucket.Of(r.Key, e.vbs) != vb:
		return fmt.Errorf("%w: key %q does not belong to vbucket %d", ErrInvalidRecord, r.Key, vb)
	}
	return nil
}

func (e *Encoder) openRun(vb uint16, seqno uint64) {
	e.closeRun()
	e.runAt, e.runVB, e.runCount = len(e.raw), vb, 0
	e.raw = binary.LittleEndian.AppendUint16(e.raw, vb)
	e.raw = binary.LittleEndian.AppendUint64(e.raw, seqno)
	e.raw = binary.LittleEndian.AppendUint32(e.raw, 0) // count, patched by closeRun
}

func (e *Encoder) closeRun() {
	if e.runAt >= 0 {
		binary.LittleEndian.PutUint32(e.raw[e.runAt+10:], e.runCount)
		e.runAt = -1
	}
}

// finishBlock hands the block being filled to a compressing goroutine and
// queues it to the writer, waiting for a free block when maxPending are in
// flight.
func (e *Encoder) finishBlock() error {
	e.closeRun()
	p := e.takeBlock()
	p.raw, e.raw = e.raw, p.raw[:0]
	p.records, e.blockRecords = e.blockRecords, 0
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.chunk = makeChunk(e.codec, chunkRecords, p.raw, p.records, p.chunk)
	}()
	if e.queue == nil {
		e.queue, e.wdone = make(chan *pendingBlock, e.maxPending), make(chan struct{})
		go e.writer()
	}
	e.queue <- p
	return e.error()
}

// takeBlock returns a block to fill: a written one, or a new one while
// fewer than maxPending exist.
func (e *Encoder) takeBlock() *pendingBlock {
	select {
	case p := <-e.free:
		return p
	default:
	}
	if e.made < e.maxPending {
		e.made++
		return &pendingBlock{raw: make([]byte, 0, BlockSize+BlockSize/4)}
	}
	return <-e.free
}

// writer writes the queued blocks in order. After an error it goes on
// taking them, without writing, so that the filler never waits forever.
func (e *Encoder) writer() {
	defer close(e.wdone)
	for p := range e.queue {
		<-p.done
		if e.error() == nil {
			if err := e.write(p.chunk); err == nil {
				e.sum.Blocks++
			}
		}
		e.free <- p
	}
}

// makeChunk appends to dst[:0] a chunk of type typ: its header and raw
// compressed with c.
func makeChunk(c Codec, typ byte, raw []byte, records uint32, dst []byte) []byte {
	dst = compress(c, raw, append(dst[:0], make([]byte, chunkHdrLen)...))
	payload := dst[chunkHdrLen:]
	ch := chunkHeader{typ: typ, codec: c, rawLen: uint32(len(raw)), compLen: uint32(len(payload)), records: records}
	ch.put(dst)
	ch.crc = chunkCRC(dst, payload)
	ch.put(dst)
	return dst
}

// write writes b, keeping the file CRC and size.
func (e *Encoder) write(b []byte) error {
	n, err := e.w.Write(b)
	e.crc = crc32.Update(e.crc, castagnoli, b[:n])
	e.sum.FileBytes += int64(n)
	if err != nil {
		return e.fail(err)
	}
	return nil
}

func (e *Encoder) error() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (e *Encoder) fail(err error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
	}
	return e.err
}

// Close writes the remaining blocks, the trailer and the footer, and
// returns what was written. It does not sync or close the writer. After an
// error from Add, Close releases the Encoder and returns that error.
func (e *Encoder) Close() (Summary, error) {
	if e.closed {
		return e.sum, errors.New("dump: Close called twice")
	}
	if e.error() == nil && len(e.raw) > 0 {
		e.finishBlock()
	}
	e.stop()
	if err := e.error(); err != nil {
		return e.sum, err
	}
	seqnos := make([]byte, 0, 8*e.vbs)
	for _, s := range e.seqnos {
		seqnos = binary.LittleEndian.AppendUint64(seqnos, s)
	}
	if err := e.write(makeChunk(e.codec, chunkSeqnos, seqnos, 0, nil)); err != nil {
		return e.sum, err
	}
	var f [footerLen]byte
	binary.LittleEndian.PutUint64(f[0:], uint64(e.sum.Records))
	binary.LittleEndian.PutUint64(f[8:], uint64(e.sum.Bytes))
	binary.LittleEndian.PutUint32(f[16:], uint32(e.sum.Blocks+1))
	if err := e.write(f[:20]); err != nil {
		return e.sum, err
	}
	binary.LittleEndian.PutUint32(f[20:], maskCRC(e.crc))
	copy(f[24:], endMagic)
	return e.sum, e.write(f[20:])
}

// stop waits for the writer to write (or, after an error, drop) the queued
// blocks and releases the buffers.
func (e *Encoder) stop() {
	if e.queue != nil {
		close(e.queue)
		<-e.wdone
		e.queue = nil
	}
	e.free, e.raw = nil, nil
	e.closed = true
}

// Abort waits for the blocks being compressed and drops them; nothing more
// is written. It is safe to call after Close.
func (e *Encoder) Abort() {
	if e.closed {
		return
	}
	e.fail(errAborted)
	e.stop()
}
