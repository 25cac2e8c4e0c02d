package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"

	"shoal/internal/kv"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Summary is what an Encoder wrote.
type Summary struct {
	Records   int64 // records written
	Bytes     int64 // key plus value bytes of those records
	FileBytes int64 // bytes of the file
	Blocks    int   // record blocks
}

// Encoder writes one dump file to an io.Writer, append-only. Records are
// gathered into blocks of about BlockSize raw bytes that are compressed in
// parallel (on up to GOMAXPROCS cores, with at most 2*GOMAXPROCS blocks in
// memory) and written in order.
//
// An Encoder is not safe for concurrent use. After NewEncoder succeeds,
// either Close or Abort must be called.
type Encoder struct {
	w      io.Writer
	vbs    int
	codec  Codec
	crc    uint32 // running CRC32C (unmasked) of every byte written
	err    error  // sticky: the first error
	sum    Summary
	seqnos []uint64
	seen   []bool // vBuckets given to Add

	raw          []byte // the block being filled
	blockRecords uint32
	runAt        int // offset in raw of the open run's header; -1 if none
	runVB        uint16
	runCount     uint32

	pending    []*pendingBlock // blocks being compressed, in file order
	maxPending int
	spare      []*pendingBlock
	chunkHdr   [chunkHdrLen]byte
	closed     bool
}

type pendingBlock struct {
	raw, comp []byte
	records   uint32
	done      chan struct{}
}

// NewEncoder writes h to w and returns an Encoder for the records. A zero
// h.Created is written as 0 and read back as the zero time.
func NewEncoder(w io.Writer, h Header) (*Encoder, error) {
	if err := h.validate(); err != nil {
		return nil, err
	}
	if h.Codec == 0 {
		h.Codec = CodecZstd
	}
	e := &Encoder{
		w:          w,
		vbs:        h.VBuckets,
		codec:      h.Codec,
		seqnos:     make([]uint64, h.VBuckets),
		seen:       make([]bool, h.VBuckets),
		runAt:      -1,
		maxPending: 2 * runtime.GOMAXPROCS(0),
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
func (e *Encoder) Add(vb uint16, seqno uint64, recs []kv.Record) error {
	if e.err != nil {
		return e.err
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

func (e *Encoder) check(vb uint16, seqno uint64, r *kv.Record) error {
	switch {
	case len(r.Key) == 0 || len(r.Key) > wire.MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes", ErrInvalidRecord, len(r.Key))
	case len(r.Value) > wire.MaxValueLen:
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
// writes the oldest pending block once maxPending are in flight.
func (e *Encoder) finishBlock() error {
	e.closeRun()
	p := e.takeSpare()
	p.raw, e.raw = e.raw, p.raw[:0]
	p.records, e.blockRecords = e.blockRecords, 0
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		p.comp = compress(e.codec, p.raw, p.comp)
	}()
	e.pending = append(e.pending, p)
	if len(e.pending) >= e.maxPending {
		return e.writeOldest()
	}
	return nil
}

func (e *Encoder) takeSpare() *pendingBlock {
	if n := len(e.spare); n > 0 {
		p := e.spare[n-1]
		e.spare = e.spare[:n-1]
		return p
	}
	return &pendingBlock{raw: make([]byte, 0, BlockSize+BlockSize/4)}
}

func (e *Encoder) writeOldest() error {
	p := e.pending[0]
	e.pending = e.pending[1:]
	<-p.done
	err := e.writeChunk(chunkRecords, len(p.raw), p.comp, p.records)
	e.spare = append(e.spare, p)
	e.sum.Blocks++
	return err
}

func (e *Encoder) writeChunk(typ byte, rawLen int, comp []byte, records uint32) error {
	ch := chunkHeader{typ: typ, codec: e.codec, rawLen: uint32(rawLen), compLen: uint32(len(comp)), records: records}
	ch.put(e.chunkHdr[:])
	ch.crc = chunkCRC(e.chunkHdr[:], comp)
	ch.put(e.chunkHdr[:])
	if err := e.write(e.chunkHdr[:]); err != nil {
		return err
	}
	return e.write(comp)
}

func (e *Encoder) write(b []byte) error {
	if e.err != nil {
		return e.err
	}
	n, err := e.w.Write(b)
	e.crc = crc32.Update(e.crc, castagnoli, b[:n])
	e.sum.FileBytes += int64(n)
	if err != nil {
		return e.fail(err)
	}
	return nil
}

func (e *Encoder) fail(err error) error {
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
	if e.err == nil && len(e.raw) > 0 {
		e.err = e.finishBlock()
	}
	for len(e.pending) > 0 && e.err == nil {
		e.err = e.writeOldest()
	}
	e.Abort()
	if e.err != nil {
		return e.sum, e.err
	}
	seqnos := make([]byte, 0, 8*e.vbs)
	for _, s := range e.seqnos {
		seqnos = binary.LittleEndian.AppendUint64(seqnos, s)
	}
	if err := e.writeChunk(chunkSeqnos, len(seqnos), compress(e.codec, seqnos, nil), 0); err != nil {
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

// Abort waits for the blocks being compressed and drops them; nothing more
// is written. It is safe to call after Close.
func (e *Encoder) Abort() {
	for _, p := range e.pending {
		<-p.done
	}
	e.pending, e.spare, e.raw = nil, nil, nil
	e.closed = true
}
