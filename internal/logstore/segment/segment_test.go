package segment

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// same compares records or record slices (go-cmp is too slow for 10,000
// records).
func same[T Record | []Record](a, b T) bool {
	switch a := any(a).(type) {
	case Record:
		return sameRecord(a, any(b).(Record))
	case []Record:
		bb := any(b).([]Record)
		if len(a) != len(bb) {
			return false
		}
		for i := range a {
			if !sameRecord(a[i], bb[i]) {
				return false
			}
		}
	}
	return true
}

func sameRecord(a, b Record) bool {
	return a.Timestamp == b.Timestamp && a.VBucket == b.VBucket && a.Seqno == b.Seqno && bytes.Equal(a.Value, b.Value)
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Flags: FlagCompressed | FlagSorted, Start: 3600, Span: 3600}
	b := h.Append(nil)
	if len(b) != HeaderSize {
		t.Fatalf("header is %d bytes", len(b))
	}
	got, err := DecodeHeader(b)
	if err != nil || got != h {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 1
		if _, err := DecodeHeader(bad); !errors.Is(err, ErrBadHeader) {
			t.Fatalf("flip in byte %d accepted: %v", i, err)
		}
	}
	if _, err := DecodeHeader(b[:HeaderSize-1]); !errors.Is(err, ErrBadHeader) {
		t.Fatal("short header accepted")
	}
	if got := (Header{Start: ^uint64(0) - 5, Span: 100}).End(); got != ^uint64(0) {
		t.Fatalf("End does not saturate: %d", got)
	}
}

func TestFrameLayout(t *testing.T) {
	r := Record{Timestamp: 0x0102030405060708, VBucket: 0x0a0b, Seqno: 0x1112131415161718, Value: []byte("xyz")}
	b := AppendFrame(nil, &r)
	want := []byte{
		0, 0, 0, 0, // CRC, checked below
		3, 0, 0, 0, // length
		8, 7, 6, 5, 4, 3, 2, 1, // timestamp
		0x0b, 0x0a, // vBucket
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // seqno
		'x', 'y', 'z',
	}
	copy(want, b[:4])
	if !bytes.Equal(b, want) {
		t.Fatalf("frame %x\nwant  %x", b, want)
	}
	if Checksum(b[4:]) != uint32(b[0])|uint32(b[1])<<8|uint32(b[2])<<16|uint32(b[3])<<24 {
		t.Fatal("CRC does not cover bytes 4..end")
	}
	got, n, ok := DecodeFrame(b, nil)
	if !ok || n != len(b) || !same(got, r) {
		t.Fatalf("decoded %+v %d %v", got, n, ok)
	}
	if _, _, ok := DecodeFrame(b, func(ts uint64, vb uint16) bool { return vb < 10 }); ok {
		t.Fatal("validator ignored")
	}
}

func frames(n int) ([]byte, []Record) {
	var b []byte
	var recs []Record
	for i := range n {
		r := Record{Timestamp: uint64(i), VBucket: uint16(i % 4), Seqno: uint64(i + 1), Value: fmt.Appendf(nil, "value %d", i)}
		b = AppendFrame(b, &r)
		recs = append(recs, r)
	}
	return b, recs
}

func scanAll(b []byte, start int64) ([]Record, []Damage) {
	s := NewFrameScanner(bytes.NewReader(b), start, int64(len(b)), func(ts uint64, vb uint16) bool { return vb < 4 })
	var out []Record
	for s.Next() {
		r := *s.Record()
		r.Value = bytes.Clone(r.Value)
		out = append(out, r)
	}
	return out, s.Damage()
}

func TestScannerSkipsDamageAndFindsTail(t *testing.T) {
	b, recs := frames(20)
	size := FrameSize(len("value 10"))
	off5 := 5 * FrameSize(len("value 0"))
	// Damage in frame 5's value: skip exactly frame 5.
	bad := bytes.Clone(b)
	bad[off5+FrameHeaderSize+1] ^= 1
	got, dmg := scanAll(bad, 0)
	want := append(append([]Record{}, recs[:5]...), recs[6:]...)
	if !same(got, want) {
		t.Fatalf("after damage got %d records", len(got))
	}
	if len(dmg) != 1 || dmg[0] != (Damage{Offset: int64(off5), Length: int64(FrameSize(7))}) {
		t.Fatalf("damage %+v", dmg)
	}
	// A torn last frame is a tail.
	got, dmg = scanAll(b[:len(b)-3], 0)
	if !same(got, recs[:19]) || len(dmg) != 1 || !dmg[0].Tail || dmg[0].Length != int64(size-3) {
		t.Fatalf("torn: %d records, damage %+v", len(got), dmg)
	}
	// Garbage between frames, and a length that claims everything.
	bad = append(append(bytes.Clone(b[:off5]), bytes.Repeat([]byte{0xff}, 100)...), b[off5:]...)
	if got, dmg = scanAll(bad, 0); !same(got, recs) || len(dmg) != 1 || dmg[0].Length != 100 {
		t.Fatalf("garbage: %d records, damage %+v", len(got), dmg)
	}
}

func TestCompressedBodyRoundTrip(t *testing.T) {
	enc, err := NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	h := Header{Flags: FlagCompressed | FlagSorted, Start: 0, Span: 1 << 40}
	var file bytes.Buffer
	file.Write(h.Append(nil))
	bw := NewBlockWriter(&file, enc)
	var want []Record
	big := bytes.Repeat([]byte("0123456789"), 30)
	for i := range 10000 { // ~3 blocks
		r := Record{Timestamp: uint64(i), VBucket: 1, Seqno: uint64(i + 1), Value: append(fmt.Appendf(nil, "%d", i), big...)}
		if err := bw.Add(&r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if bw.Written() != int64(file.Len()-HeaderSize) {
		t.Fatalf("Written %d, file body %d", bw.Written(), file.Len()-HeaderSize)
	}
	read := func(b []byte) ([]Record, []Damage) {
		rd := NewReader(bytes.NewReader(b), h, int64(len(b)), nil, dec)
		var out []Record
		var pos []Pos
		for rd.Next() {
			r := *rd.Record()
			r.Value = bytes.Clone(r.Value)
			out = append(out, r)
			pos = append(pos, rd.Pos())
		}
		if rd.Err() != nil {
			t.Fatal(rd.Err())
		}
		// Pos finds the record again.
		if len(pos) > 0 {
			p := pos[len(pos)-1]
			raw, err := ReadBlockAt(bytes.NewReader(b), p.Off, int64(len(b)), dec, nil)
			if err != nil {
				t.Fatal(err)
			}
			sc := NewFrameScanner(bytes.NewReader(raw), 0, int64(len(raw)), nil)
			for range p.Idx + 1 {
				sc.Next()
			}
			if !same(*sc.Record(), out[len(out)-1]) {
				t.Fatal("Pos does not locate the record")
			}
		}
		return out, rd.Damage()
	}
	got, dmg := read(file.Bytes())
	if !same(got, want) || len(dmg) != 0 {
		t.Fatalf("round trip: %d records, damage %+v", len(got), dmg)
	}
	if file.Len() > 600_000 {
		t.Fatalf("compressed to %d bytes: not compressed", file.Len())
	}
	// A flipped bit costs its block, not the others.
	bad := bytes.Clone(file.Bytes())
	bad[HeaderSize+100] ^= 1
	got, dmg = read(bad)
	if len(got) == 0 || len(got) >= len(want) || len(dmg) != 1 || dmg[0].Tail || !same(got, want[len(want)-len(got):]) {
		t.Fatalf("flipped: %d records, damage %+v", len(got), dmg)
	}
	// A truncated file loses its last block as a tail.
	got, dmg = read(file.Bytes()[:file.Len()-10])
	if len(got) == 0 || !same(got, want[:len(got)]) || len(dmg) != 1 || !dmg[0].Tail {
		t.Fatalf("truncated: %d records, damage %+v", len(got), dmg)
	}
}

func TestReadFrameAt(t *testing.T) {
	b, recs := frames(3)
	off := int64(FrameSize(7))
	r, err := ReadFrameAt(bytes.NewReader(b), off, int64(len(b)), nil)
	if err != nil || !same(r, recs[1]) {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := ReadFrameAt(bytes.NewReader(b), off+1, int64(len(b)), nil); !errors.Is(err, ErrDamaged) {
		t.Fatalf("misaligned read: %v", err)
	}
	if _, err := ReadFrameAt(bytes.NewReader(b), off, off+10, nil); !errors.Is(err, ErrDamaged) {
		t.Fatalf("read past end: %v", err)
	}
}
