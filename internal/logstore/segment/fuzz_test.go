package segment

import (
	"bytes"
	"testing"
)

// FuzzDecodeHeader: any input decodes or fails cleanly, and a decoded
// header re-encodes to the same bytes.
func FuzzDecodeHeader(f *testing.F) {
	f.Add(Header{Start: 7200, Span: 3600}.Append(nil))
	f.Add(Header{Flags: FlagCompressed | FlagMerged, Start: 1, Span: 1}.Append(nil))
	f.Add([]byte("SHOALLOG"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.Append(nil), b[:HeaderSize]) {
			t.Fatalf("header %+v does not re-encode to its input", h)
		}
	})
}

// FuzzScanPlain: scanning arbitrary bytes never panics, returns only
// frames whose re-encoding is in the input at the reported offset, and
// accounts for every byte (frames + damage = input).
func FuzzScanPlain(f *testing.F) {
	b, _ := frames(5)
	f.Add(b)
	f.Add(b[:len(b)-4])
	f.Add(append(bytes.Repeat([]byte{0xff}, 30), b...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewFrameScanner(bytes.NewReader(b), 0, int64(len(b)), func(ts uint64, vb uint16) bool { return vb < 64 })
		covered := int64(0)
		for s.Next() {
			r := s.Record()
			enc := AppendFrame(nil, r)
			off := s.Offset()
			if !bytes.Equal(b[off:off+int64(len(enc))], enc) {
				t.Fatalf("frame at %d does not match the input", off)
			}
			covered += int64(len(enc))
		}
		if s.Err() != nil {
			t.Fatal(s.Err())
		}
		for _, d := range s.Damage() {
			covered += d.Length
		}
		if covered != int64(len(b)) {
			t.Fatalf("frames and damage cover %d of %d bytes", covered, len(b))
		}
	})
}

// FuzzReadCompressed: a compressed body of arbitrary bytes never panics
// or allocates beyond the format's bounds.
func FuzzReadCompressed(f *testing.F) {
	enc, _ := NewEncoder()
	var buf bytes.Buffer
	bw := NewBlockWriter(&buf, enc)
	for i := range 50 {
		bw.Add(&Record{Timestamp: uint64(i), Seqno: uint64(i), Value: []byte("some value")})
	}
	bw.Flush()
	enc.Close()
	h := Header{Flags: FlagCompressed, Span: 1 << 62}
	f.Add(append(h.Append(nil), buf.Bytes()...))
	f.Add(h.Append(nil))
	dec, err := NewDecoder()
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := NewReader(bytes.NewReader(b), h, int64(len(b)), nil, dec)
		for rd.Next() {
			_ = rd.Record()
		}
		if rd.Err() != nil {
			t.Fatal(rd.Err())
		}
	})
}
