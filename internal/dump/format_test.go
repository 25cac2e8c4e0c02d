package dump

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

// encodeChannel returns the dump of channel ch of s, compressed with c.
func encodeChannel(t tb, s *fakeStore, ch string, c Codec) ([]byte, Summary) {
	t.Helper()
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, Header{Channel: ch, VBuckets: s.vbs, Created: time.Unix(1700000000, 5), Codec: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SnapshotChannel(ch, e.Add); err != nil {
		t.Fatal(err)
	}
	sum, err := e.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sum.FileBytes != int64(buf.Len()) {
		t.Fatalf("summary says %d bytes, wrote %d", sum.FileBytes, buf.Len())
	}
	return buf.Bytes(), sum
}

// decodeInto decodes b into a new store and checks Scan agrees with Decode.
func decodeInto(t tb, b []byte, vbs int) (*fakeStore, Info) {
	t.Helper()
	got := newFakeStore(vbs)
	info, err := Decode(bytes.NewReader(b), "test.dump", func(vb uint16, seqno uint64, recs []engine.Record) error {
		return got.Load(info0(b), vb, seqno, recs)
	})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	scanned, err := Scan(bytes.NewReader(b), "test.dump")
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if d := cmp.Diff(info, scanned); d != "" {
		t.Fatalf("Scan and Decode disagree (-decode +scan):\n%s", d)
	}
	return got, info
}

// info0 returns the channel named in a dump's header.
func info0(b []byte) string { return string(b[headerFixed : headerFixed+int(b[20])]) }

func TestRoundTrip(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		vbs := rapid.IntRange(1, 40).Draw(rt, "vbs")
		s := newFakeStore(vbs)
		ch := rapid.StringMatching(`[A-Za-z0-9_-]{1,20}`).Draw(rt, "channel")
		s.channel(ch)
		n := rapid.IntRange(0, 200).Draw(rt, "records")
		for i := range n {
			key := rapid.StringN(1, 250, 250).Draw(rt, fmt.Sprint("key", i))
			if len(key) == 0 || len(key) > 250 {
				continue
			}
			value := rapid.StringN(0, 3000, 3000).Draw(rt, fmt.Sprint("value", i))
			s.put(ch, key, value, rapid.Int64().Draw(rt, fmt.Sprint("expiry", i)))
		}
		codec := rapid.SampledFrom([]Codec{CodecZstd, CodecS2}).Draw(rt, "codec")
		b, sum := encodeChannel(rt, s, ch, codec)
		got, info := decodeInto(rt, b, vbs)
		sameData(rt, got, s)
		want := s.contents()[ch]
		if info.Records != int64(len(want)) || sum.Records != info.Records || sum.Bytes != info.Bytes {
			rt.Fatalf("info %+v, summary %+v, %d records", info, sum, len(want))
		}
		if info.Channel != ch || info.VBuckets != vbs || !info.Created.Equal(time.Unix(1700000000, 5)) || info.Codec != codec {
			rt.Fatalf("header %+v", info.Header)
		}
		for vb := range vbs {
			wantSeqno := uint64(0)
			if len(s.data[ch][vb]) > 0 {
				wantSeqno = s.seqno[vb]
			}
			if info.Seqnos[vb] != wantSeqno {
				rt.Fatalf("vbucket %d: seqno %d, want %d", vb, info.Seqnos[vb], wantSeqno)
			}
		}
	})
}

func TestManyBlocksAndLargeValue(t *testing.T) {
	for _, c := range []Codec{CodecZstd, CodecS2} {
		t.Run(c.String(), func(t *testing.T) { testManyBlocksAndLargeValue(t, c) })
	}
}

func testManyBlocksAndLargeValue(t *testing.T, c Codec) {
	s := newFakeStore(64)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		v := make([]byte, 300)
		for j := range v {
			v[j] = byte('a' + rng.IntN(26))
		}
		s.put("big", fmt.Sprintf("k%06d", i), string(v), 0)
	}
	s.put("big", "huge", strings.Repeat("x", 3*BlockSize), 0)
	b, sum := encodeChannel(t, s, "big", c)
	if sum.Blocks < 5 {
		t.Fatalf("%d blocks, want several", sum.Blocks)
	}
	got, info := decodeInto(t, b, 64)
	sameData(t, got, s)
	if info.Records != 20001 {
		t.Fatalf("%d records", info.Records)
	}
}

func TestEmptyChannel(t *testing.T) {
	s := newFakeStore(8)
	b, sum := encodeChannel(t, s, "empty", CodecZstd)
	if sum.Records != 0 || sum.Blocks != 0 {
		t.Fatalf("summary %+v", sum)
	}
	_, info := decodeInto(t, b, 8)
	if info.Records != 0 || info.Channel != "empty" || len(info.Seqnos) != 8 {
		t.Fatalf("info %+v", info)
	}
}

func TestEncoderRejectsInvalidInput(t *testing.T) {
	const vbs = 16
	key := []byte("k1")
	vb := vbucket.Of(key, vbs)
	other := (vb + 1) % vbs
	cases := map[string]func(e *Encoder) error{
		"empty key": func(e *Encoder) error { return e.Add(vb, 5, []engine.Record{{Key: nil, Seqno: 1}}) },
		"long key": func(e *Encoder) error {
			k := bytes.Repeat([]byte("k"), 251)
			return e.Add(vbucket.Of(k, vbs), 5, []engine.Record{{Key: k}})
		},
		"seqno above":    func(e *Encoder) error { return e.Add(vb, 5, []engine.Record{{Key: key, Seqno: 6}}) },
		"wrong vbucket":  func(e *Encoder) error { return e.Add(other, 5, []engine.Record{{Key: key, Seqno: 1}}) },
		"vbucket range":  func(e *Encoder) error { return e.Add(vbs, 5, nil) },
		"seqno changed":  func(e *Encoder) error { _ = e.Add(vb, 5, nil); return e.Add(vb, 6, nil) },
		"sticky failure": func(e *Encoder) error { _ = e.Add(vbs, 5, nil); return e.Add(vb, 5, []engine.Record{{Key: key}}) },
	}
	for name, add := range cases {
		t.Run(name, func(t *testing.T) {
			e, err := NewEncoder(&bytes.Buffer{}, Header{Channel: "c", VBuckets: vbs})
			if err != nil {
				t.Fatal(err)
			}
			if err := add(e); !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("Add: %v, want ErrInvalidRecord", err)
			}
			if _, err := e.Close(); !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("Close: %v, want the Add error", err)
			}
		})
	}
	for _, h := range []Header{{Channel: "bad name", VBuckets: 4}, {Channel: "", VBuckets: 4}, {Channel: "c", VBuckets: 0}, {Channel: "c", VBuckets: vbucket.Max + 1}} {
		if _, err := NewEncoder(&bytes.Buffer{}, h); err == nil {
			t.Errorf("NewEncoder(%+v) accepted", h)
		}
	}
}

// smallDump returns a valid dump of a few records.
func smallDump(t tb, c Codec) []byte {
	s := newFakeStore(4)
	for i := range 30 {
		s.put("ch", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i), int64(i))
	}
	b, _ := encodeChannel(t, s, "ch", c)
	return b
}

// mustCorrupt checks err is a *CorruptError naming the file, at an offset
// no later than maxOff.
func mustCorrupt(t *testing.T, err error, maxOff int64, what string) *CorruptError {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: %v, want a CorruptError", what, err)
	}
	if ce.File != "x.dump" || !strings.Contains(err.Error(), "x.dump") || ce.Offset > maxOff || ce.Offset < 0 {
		t.Fatalf("%s: %v: file %q offset %d (want <= %d)", what, err, ce.File, ce.Offset, maxOff)
	}
	return ce
}

func TestEveryDamageIsDetected(t *testing.T) {
	for _, c := range []Codec{CodecZstd, CodecS2} {
		t.Run(c.String(), func(t *testing.T) { testEveryDamageIsDetected(t, smallDump(t, c)) })
	}
}

func testEveryDamageIsDetected(t *testing.T, b []byte) {
	nop := func(uint16, uint64, []engine.Record) error { return nil }
	for i := range b {
		d := bytes.Clone(b)
		d[i] ^= 1 << (i % 8)
		_, err := Scan(bytes.NewReader(d), "x.dump")
		mustCorrupt(t, err, int64(i), fmt.Sprintf("Scan, bit flipped at %d", i))
		_, err = Decode(bytes.NewReader(d), "x.dump", nop)
		mustCorrupt(t, err, int64(i), fmt.Sprintf("Decode, bit flipped at %d", i))
	}
	for n := range len(b) {
		_, err := Scan(bytes.NewReader(b[:n]), "x.dump")
		if ce := mustCorrupt(t, err, int64(n), fmt.Sprintf("truncated to %d", n)); !strings.Contains(ce.Reason, "truncated") {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	_, err := Scan(bytes.NewReader(append(bytes.Clone(b), 0)), "x.dump")
	mustCorrupt(t, err, int64(len(b)), "trailing byte")
}

func TestDamageInLargeFile(t *testing.T) {
	s := newFakeStore(32)
	s.fill("big", 40000, 100)
	b, _ := encodeChannel(t, s, "big", CodecS2)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		i := rng.IntN(len(b))
		d := bytes.Clone(b)
		d[i] ^= 0x10
		_, err := Scan(bytes.NewReader(d), "x.dump")
		mustCorrupt(t, err, int64(i), fmt.Sprintf("bit flipped at %d", i))
	}
}

// forged is a record block of a hand-made file: its CRCs are right, its
// content need not be.
type forged struct {
	raw     []byte
	records uint32
	rawLen  int // if not 0, the raw length claimed
	payload []byte
}

// run encodes a run header and records (key, value, seqno); count < 0
// means len(recs).
func run(vb uint16, seqno uint64, count int, recs ...engine.Record) []byte {
	if count < 0 {
		count = len(recs)
	}
	b := binary.LittleEndian.AppendUint16(nil, vb)
	b = binary.LittleEndian.AppendUint64(b, seqno)
	b = binary.LittleEndian.AppendUint32(b, uint32(count))
	for _, r := range recs {
		b = binary.AppendUvarint(b, uint64(len(r.Key)))
		b = binary.AppendUvarint(b, uint64(len(r.Value)))
		b = binary.AppendUvarint(b, r.Seqno)
		b = binary.AppendVarint(b, r.Expiry)
		b = append(b, r.Key...)
		b = append(b, r.Value...)
	}
	return b
}

// forge builds a file of channel "ch" with vbs vBuckets from blocks and a
// trailer of seqnos, with every CRC and record count right and a footer
// claiming keyValueBytes.
func forge(vbs int, seqnos []uint64, keyValueBytes uint64, blocks ...forged) []byte {
	b := Header{Channel: "ch", VBuckets: vbs}.appendTo(nil)
	var records uint64
	chunk := func(typ byte, rawLen int, payload []byte, n uint32) {
		var h [chunkHdrLen]byte
		c := chunkHeader{typ: typ, codec: CodecZstd, rawLen: uint32(rawLen), compLen: uint32(len(payload)), records: n}
		c.put(h[:])
		c.crc = chunkCRC(h[:], payload)
		c.put(h[:])
		b = append(b, h[:]...)
		b = append(b, payload...)
	}
	for _, f := range blocks {
		payload := f.payload
		if payload == nil {
			payload = compress(CodecZstd, f.raw, nil)
		}
		rawLen := len(f.raw)
		if f.rawLen != 0 {
			rawLen = f.rawLen
		}
		chunk(chunkRecords, rawLen, payload, f.records)
		records += uint64(f.records)
	}
	var t []byte
	for _, s := range seqnos {
		t = binary.LittleEndian.AppendUint64(t, s)
	}
	chunk(chunkSeqnos, len(t), compress(CodecZstd, t, nil), 0)
	b = binary.LittleEndian.AppendUint64(b, records)
	b = binary.LittleEndian.AppendUint64(b, keyValueBytes)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(blocks)+1))
	b = binary.LittleEndian.AppendUint32(b, maskCRC(crc32.Checksum(b, castagnoli)))
	return append(b, endMagic...)
}

func TestForgedContentFailsDecode(t *testing.T) {
	const vbs = 4
	k := []byte("key")
	vb := vbucket.Of(k, vbs)
	rec := engine.Record{Key: k, Value: []byte("v"), Seqno: 3}
	seqnos := make([]uint64, vbs)
	seqnos[vb] = 5
	other := (vb + 1) % vbs
	cases := map[string][]byte{
		"key in another vbucket": forge(vbs, seqnos, 4, forged{raw: run(other, 5, -1, rec), records: 1}),
		"record seqno above run": forge(vbs, seqnos, 4, forged{raw: run(vb, 2, -1, rec), records: 1}),
		"run count over header":  forge(vbs, seqnos, 4, forged{raw: append(run(vb, 5, -1, rec), run(vb, 5, -1, rec)...), records: 1}),
		"run count too big":      forge(vbs, seqnos, 4, forged{raw: run(vb, 5, 2, rec), records: 1}),
		"two seqnos for a vb":    forge(vbs, seqnos, 4, forged{raw: run(vb, 5, -1, rec), records: 1}, forged{raw: run(vb, 6, -1, rec), records: 1}),
		"trailer disagrees":      forge(vbs, make([]uint64, vbs), 4, forged{raw: run(vb, 5, -1, rec), records: 1}),
		"vbucket out of range":   forge(vbs, seqnos, 4, forged{raw: run(vbs, 5, -1, rec), records: 1}),
		"empty key":              forge(vbs, seqnos, 4, forged{raw: run(vb, 5, -1, engine.Record{Value: []byte("vvvvvv")}), records: 1}),
		"raw length lies":        forge(vbs, seqnos, 4, forged{raw: run(vb, 5, -1, rec), records: 1, rawLen: 100}),
		"not zstd":               forge(vbs, seqnos, 4, forged{raw: run(vb, 5, -1, rec), records: 1, payload: []byte("garbage, not a zstd frame")}),
		"bytes total wrong":      forge(vbs, seqnos, 99, forged{raw: run(vb, 5, -1, rec), records: 1}),
		"run header cut":         forge(vbs, seqnos, 4, forged{raw: append(run(vb, 5, -1, rec), 1, 2, 3, 4, 5, 6), records: 1}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Scan(bytes.NewReader(b), "x.dump"); err != nil {
				t.Fatalf("Scan: %v (the forged file should pass it)", err)
			}
			_, err := Decode(bytes.NewReader(b), "x.dump", func(uint16, uint64, []engine.Record) error { return nil })
			mustCorrupt(t, err, int64(len(b)), "Decode")
		})
	}
	// The same construction with honest content decodes, so the cases
	// above fail for the reason they name.
	honest := forge(vbs, seqnos, 4, forged{raw: run(vb, 5, -1, rec), records: 1})
	got, _ := decodeInto(t, honest, vbs)
	if r := got.contents()["ch"]["key"]; string(r.Value) != "v" || r.Seqno != 3 {
		t.Fatalf("honest forged file decoded to %+v", r)
	}
}

func TestHostileLengthsDoNotAllocate(t *testing.T) {
	// A chunk header claiming a huge payload in a tiny file: the reader
	// fails on the missing bytes without allocating the claimed size.
	b := Header{Channel: "ch", VBuckets: 4}.appendTo(nil)
	var h [chunkHdrLen]byte
	chunkHeader{typ: chunkRecords, codec: CodecS2, rawLen: MaxBlockRaw, compLen: maxBlockComp, records: 1}.put(h[:])
	b = append(b, h[:]...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Scan(bytes.NewReader(b), "x.dump")
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Scan: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
		t.Fatalf("Scan of a %d-byte file allocated %d bytes", len(b), n)
	}
}

func TestAddOneRecordAtATime(t *testing.T) {
	// The external dumper gets records one by one from GetAll, in no
	// vBucket order, and adds them one at a time.
	const vbs = 8
	s := newFakeStore(vbs)
	s.fill("ch", 500, 20)
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, Header{Channel: "ch", VBuckets: vbs})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s.contents()["ch"] { // map order: vBuckets interleaved
		vb := vbucket.Of(r.Key, vbs)
		if err := e.Add(vb, s.seqno[vb], []engine.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := decodeInto(t, buf.Bytes(), vbs)
	sameData(t, got, s)
}
