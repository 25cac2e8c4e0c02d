package dump

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"slices"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

// Scan verifies the framing and every checksum of the dump read from r
// without decompressing its record blocks, and returns what its header,
// trailer and footer say. name is used in errors. A file that passes Scan
// was written whole by a writer of this format; only a forged file (valid
// CRCs over invalid content) can still fail Decode.
func Scan(r io.Reader, name string) (Info, error) {
	d := newReader(r, name)
	if err := d.readHeader(); err != nil {
		return Info{}, err
	}
	var buf []byte
	for {
		ch, payload, at, err := d.readChunk(buf)
		if err != nil {
			return Info{}, err
		}
		buf = payload
		if ch.typ == chunkSeqnos {
			if err := d.readSeqnos(at, ch, payload); err != nil {
				return Info{}, err
			}
			break
		}
	}
	return d.readFooter(-1)
}

// Decode reads the dump from r, verifying everything Scan does and every
// record, and calls fn for each run of records of one vBucket, in file
// order, with the vBucket's seqno at the snapshot. The records alias a
// buffer that is reused when fn returns. An error from fn ends Decode with
// that error. Corruption found late is reported after fn has seen the
// records before it: a caller that must not apply part of a damaged file
// calls Scan first.
func Decode(r io.Reader, name string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) (Info, error) {
	d := newReader(r, name)
	if err := d.readHeader(); err != nil {
		return Info{}, err
	}
	p := &blockParser{d: d, fn: fn, runSeqno: make([]uint64, d.hdr.VBuckets), runSeen: make([]bool, d.hdr.VBuckets)}
	if err := d.decodeBlocks(p); err != nil {
		return Info{}, err
	}
	for vb, seen := range p.runSeen {
		if seen && p.runSeqno[vb] != d.seqnos[vb] {
			return Info{}, d.corrupt(d.trailerAt, "vbucket %d: trailer seqno %d, runs seqno %d", vb, d.seqnos[vb], p.runSeqno[vb])
		}
	}
	return d.readFooter(p.bytes)
}

// reader reads a dump sequentially, keeping the offset and the running
// file CRC.
type reader struct {
	r         *bufio.Reader
	name      string
	off       int64
	crc       uint32
	hdr       Header
	chunks    uint32
	records   int64 // sum of the record counts of the chunks read
	seqnos    []uint64
	trailerAt int64
	chunkBuf  [chunkHdrLen]byte
}

func newReader(r io.Reader, name string) *reader {
	return &reader{r: bufio.NewReaderSize(r, 256<<10), name: name}
}

func (d *reader) corrupt(at int64, format string, args ...any) error {
	return &CorruptError{File: d.name, Offset: at, Reason: fmt.Sprintf(format, args...)}
}

// readFull reads len(b) bytes that belong to the structure at offset at.
func (d *reader) readFull(b []byte, at int64, what string) error {
	n, err := io.ReadFull(d.r, b)
	d.crc = crc32.Update(d.crc, castagnoli, b[:n])
	d.off += int64(n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return d.corrupt(at, "truncated in %s (file ends at offset %d)", what, d.off)
	default:
		return fmt.Errorf("cannot read dump %s at offset %d: %w", d.name, d.off, err)
	}
}

// readPayload reads n bytes into buf, growing it only as the bytes
// arrive, so a length claimed by a damaged file costs no more memory than
// the file holds.
func (d *reader) readPayload(buf []byte, n int, at int64) ([]byte, error) {
	buf = buf[:0]
	for len(buf) < n {
		step := min(n-len(buf), 1<<20)
		buf = slices.Grow(buf, step)
		if err := d.readFull(buf[len(buf):len(buf)+step], at, "chunk payload"); err != nil {
			return buf, err
		}
		buf = buf[:len(buf)+step]
	}
	return buf, nil
}

func (d *reader) readHeader() error {
	var b [headerFixed + engine.MaxChannelLen + 4]byte
	if err := d.readFull(b[:headerFixed], 0, "header"); err != nil {
		return err
	}
	if string(b[:8]) != magic {
		return d.corrupt(0, "bad magic %q (not a dump file)", b[:8])
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != Version {
		return d.corrupt(8, "unsupported format version %d (this reader reads %d)", v, Version)
	}
	vbs := int(binary.LittleEndian.Uint16(b[10:]))
	created := int64(binary.LittleEndian.Uint64(b[12:]))
	n := int(b[20])
	rest := b[headerFixed : headerFixed+n+4]
	if err := d.readFull(rest, 0, "header"); err != nil {
		return err
	}
	want := maskCRC(crc32.Checksum(b[:headerFixed+n], castagnoli))
	if got := binary.LittleEndian.Uint32(rest[n:]); got != want {
		return d.corrupt(0, "header checksum %#x, want %#x", got, want)
	}
	d.hdr = Header{Channel: string(rest[:n]), VBuckets: vbs}
	if created != 0 {
		d.hdr.Created = time.Unix(0, created)
	}
	if err := d.hdr.validate(); err != nil {
		return d.corrupt(0, "%v", err)
	}
	return nil
}

// readChunk reads the next chunk into buf and verifies its CRC.
func (d *reader) readChunk(buf []byte) (chunkHeader, []byte, int64, error) {
	at := d.off
	if err := d.readFull(d.chunkBuf[:], at, "chunk header"); err != nil {
		return chunkHeader{}, buf, at, err
	}
	ch := parseChunkHeader(d.chunkBuf[:])
	if err := d.checkChunkHeader(ch); err != nil {
		return ch, buf, at, d.corrupt(at, "%v", err)
	}
	payload, err := d.readPayload(buf, int(ch.compLen), at)
	if err != nil {
		return ch, payload, at, err
	}
	if want := chunkCRC(d.chunkBuf[:], payload); ch.crc != want {
		return ch, payload, at, d.corrupt(at, "chunk checksum %#x, want %#x", ch.crc, want)
	}
	d.chunks++
	d.records += int64(ch.records)
	return ch, payload, at, nil
}

func (d *reader) checkChunkHeader(ch chunkHeader) error {
	switch {
	case !ch.codec.valid():
		return fmt.Errorf("unknown codec %d", ch.codec)
	case ch.compLen > maxBlockComp:
		return fmt.Errorf("compressed length %d over the limit %d", ch.compLen, maxBlockComp)
	case ch.typ == chunkSeqnos && (ch.rawLen != uint32(8*d.hdr.VBuckets) || ch.records != 0):
		return fmt.Errorf("trailer of %d bytes and %d records, want %d bytes and none", ch.rawLen, ch.records, 8*d.hdr.VBuckets)
	case ch.typ == chunkSeqnos:
		return nil
	case ch.typ != chunkRecords:
		return fmt.Errorf("unknown chunk type %d", ch.typ)
	case ch.rawLen > MaxBlockRaw:
		return fmt.Errorf("block of %d bytes over the limit %d", ch.rawLen, MaxBlockRaw)
	case ch.records == 0 || uint64(ch.records)*minRecordLen+runHdrLen > uint64(ch.rawLen):
		return fmt.Errorf("%d records cannot fit a block of %d bytes", ch.records, ch.rawLen)
	}
	return nil
}

func (d *reader) readSeqnos(at int64, ch chunkHeader, payload []byte) error {
	raw, err := decompress(ch.codec, payload, nil, ch.rawLen)
	if err != nil {
		return d.corrupt(at, "trailer: %v", err)
	}
	d.seqnos = make([]uint64, d.hdr.VBuckets)
	for i := range d.seqnos {
		d.seqnos[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	d.trailerAt = at
	d.hdr.Codec = ch.codec
	return nil
}

// readFooter reads and checks the footer and that nothing follows it.
// bytes is the key plus value total the caller counted, or -1.
func (d *reader) readFooter(bytes int64) (Info, error) {
	at := d.off
	var f [footerLen]byte
	if err := d.readFull(f[:20], at, "footer"); err != nil {
		return Info{}, err
	}
	fileCRC := maskCRC(d.crc)
	if err := d.readFull(f[20:], at, "footer"); err != nil {
		return Info{}, err
	}
	records := int64(binary.LittleEndian.Uint64(f[0:]))
	footBytes := int64(binary.LittleEndian.Uint64(f[8:]))
	chunks := binary.LittleEndian.Uint32(f[16:])
	switch {
	case string(f[24:]) != endMagic:
		return Info{}, d.corrupt(at, "bad end magic %q", f[24:])
	case binary.LittleEndian.Uint32(f[20:]) != fileCRC:
		return Info{}, d.corrupt(at, "file checksum %#x, want %#x", binary.LittleEndian.Uint32(f[20:]), fileCRC)
	case chunks != d.chunks:
		return Info{}, d.corrupt(at, "footer counts %d chunks, file has %d", chunks, d.chunks)
	case records != d.records:
		return Info{}, d.corrupt(at, "footer counts %d records, blocks have %d", records, d.records)
	case footBytes < 0 || bytes >= 0 && footBytes != bytes:
		return Info{}, d.corrupt(at, "footer counts %d bytes, records have %d", footBytes, bytes)
	}
	if n, _ := d.r.Read(f[:1]); n > 0 {
		return Info{}, d.corrupt(d.off, "data after the footer")
	}
	return Info{Header: d.hdr, Records: records, Bytes: footBytes, FileSize: d.off, Seqnos: d.seqnos}, nil
}

// decodeJob is one record block being decompressed.
type decodeJob struct {
	at        int64
	ch        chunkHeader
	comp, raw []byte
	err       error
	done      chan struct{}
}

// decodeBlocks reads the record blocks and the trailer, decompressing up to
// 2*GOMAXPROCS blocks in parallel while p parses them in file order.
func (d *reader) decodeBlocks(p *blockParser) error {
	depth := 2 * runtime.GOMAXPROCS(0)
	var pending, spare []*decodeJob
	defer func() {
		for _, j := range pending {
			<-j.done
		}
	}()
	trailer := false
	for {
		for !trailer && len(pending) < depth {
			j := &decodeJob{}
			if n := len(spare); n > 0 {
				j, spare = spare[n-1], spare[:n-1]
			}
			ch, payload, at, err := d.readChunk(j.comp)
			j.comp = payload
			if err != nil {
				return err
			}
			if ch.typ == chunkSeqnos {
				if err := d.readSeqnos(at, ch, payload); err != nil {
					return err
				}
				trailer = true
				break
			}
			j.at, j.ch, j.err, j.done = at, ch, nil, make(chan struct{})
			go func() {
				defer close(j.done)
				j.raw, j.err = decompress(j.ch.codec, j.comp, j.raw, j.ch.rawLen)
			}()
			pending = append(pending, j)
		}
		if len(pending) == 0 {
			return nil
		}
		j := pending[0]
		pending = pending[1:]
		<-j.done
		if j.err != nil {
			return d.corrupt(j.at, "%v", j.err)
		}
		if err := p.parse(j.at, j.raw, j.ch.records); err != nil {
			return err
		}
		spare = append(spare, j)
	}
}

// blockParser checks the runs and records of decompressed blocks and hands
// them to fn.
type blockParser struct {
	d        *reader
	fn       func(vb uint16, seqno uint64, recs []engine.Record) error
	runSeqno []uint64
	runSeen  []bool
	recs     []engine.Record
	bytes    int64
}

func (p *blockParser) parse(at int64, raw []byte, records uint32) error {
	vbs := p.d.hdr.VBuckets
	var total uint64
	pos := 0
	bad := func(format string, args ...any) error {
		return p.d.corrupt(at, "block byte %d: %s", pos, fmt.Sprintf(format, args...))
	}
	for pos < len(raw) {
		if len(raw)-pos < runHdrLen {
			return bad("truncated run header")
		}
		vb := binary.LittleEndian.Uint16(raw[pos:])
		seqno := binary.LittleEndian.Uint64(raw[pos+2:])
		count := binary.LittleEndian.Uint32(raw[pos+10:])
		switch {
		case int(vb) >= vbs:
			return bad("vbucket %d of %d", vb, vbs)
		case p.runSeen[vb] && p.runSeqno[vb] != seqno:
			return bad("vbucket %d has runs with seqnos %d and %d", vb, p.runSeqno[vb], seqno)
		case count == 0 || uint64(count)*minRecordLen > uint64(len(raw)-pos-runHdrLen):
			return bad("run of %d records cannot fit", count)
		}
		p.runSeen[vb], p.runSeqno[vb] = true, seqno
		pos += runHdrLen
		p.recs = p.recs[:0]
		for range count {
			var r engine.Record
			var err error
			if r, pos, err = readRecord(raw, pos, seqno); err != nil {
				return bad("%v", err)
			}
			if vbucket.Of(r.Key, vbs) != vb {
				return bad("key %q does not belong to vbucket %d", r.Key, vb)
			}
			p.bytes += int64(len(r.Key) + len(r.Value))
			p.recs = append(p.recs, r)
		}
		total += uint64(count)
		if err := p.fn(vb, seqno, p.recs); err != nil {
			return err
		}
	}
	if total != uint64(records) {
		return p.d.corrupt(at, "block holds %d records, its header says %d", total, records)
	}
	return nil
}

// readRecord decodes the record at raw[pos:] of a run whose seqno is
// runSeqno and returns it with the position after it.
func readRecord(raw []byte, pos int, runSeqno uint64) (engine.Record, int, error) {
	var v [3]uint64
	for i := range v {
		x, n := binary.Uvarint(raw[pos:])
		if n <= 0 {
			return engine.Record{}, pos, errors.New("bad varint")
		}
		v[i], pos = x, pos+n
	}
	expiry, n := binary.Varint(raw[pos:])
	if n <= 0 {
		return engine.Record{}, pos, errors.New("bad varint")
	}
	pos += n
	keyLen, valueLen, seqno := v[0], v[1], v[2]
	switch {
	case keyLen == 0 || keyLen > engine.MaxKeyLen:
		return engine.Record{}, pos, fmt.Errorf("key of %d bytes", keyLen)
	case valueLen > engine.MaxValueLen:
		return engine.Record{}, pos, fmt.Errorf("value of %d bytes over the limit", valueLen)
	case keyLen+valueLen > uint64(len(raw)-pos):
		return engine.Record{}, pos, errors.New("record past the block end")
	case seqno > runSeqno:
		return engine.Record{}, pos, fmt.Errorf("record seqno %d above the vbucket's %d", seqno, runSeqno)
	}
	k := pos + int(keyLen)
	end := k + int(valueLen)
	return engine.Record{Key: raw[pos:k:k], Value: raw[k:end:end], Seqno: seqno, Expiry: expiry}, end, nil
}
