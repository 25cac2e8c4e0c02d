package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Magic: MagicRequest, Version: Version, Opcode: OpPut, Flags: FlagMore, Status: StatusNotMyVBucket, VBucket: 1023, ID: 0xdeadbeef, BodyLen: 12345}
	b := AppendHeader(nil, h)
	if len(b) != HeaderLen {
		t.Fatalf("header is %d bytes", len(b))
	}
	got, err := ParseHeader(b)
	if err != nil || got != h {
		t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, h)
	}
	// The byte layout is the protocol: check it literally.
	want := []byte{0x53, 1, 0x10, 1, 3, 0, 0xff, 0x03, 0xef, 0xbe, 0xad, 0xde, 0x39, 0x30, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("bytes % x, want % x", b, want)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	f := func(b []byte, want error) {
		t.Helper()
		if _, err := ParseHeader(b); !errors.Is(err, want) {
			t.Fatalf("ParseHeader(% x) = %v, want %v", b, err, want)
		}
	}
	good := AppendHeader(nil, Header{Magic: MagicRequest, Version: Version})
	f(good[:15], ErrShortBuffer)
	bad := bytes.Clone(good)
	bad[0] = 'X'
	f(bad, ErrBadMagic)
	bad = bytes.Clone(good)
	bad[1] = 2
	f(bad, ErrBadVersion)
	huge := AppendHeader(nil, Header{Magic: MagicRequest, Version: Version, BodyLen: 0xffffffff})
	f(huge, ErrFrameTooBig)
	limit := AppendHeader(nil, Header{Magic: MagicRequest, Version: Version, BodyLen: MaxBody})
	if _, err := ParseHeader(limit); err != nil {
		t.Fatalf("a body of exactly MaxBody refused: %v", err)
	}
}

func TestBeginEndFrame(t *testing.T) {
	b, off := BeginFrame([]byte("prefix"), Header{Magic: MagicResponse, Version: Version, ID: 7})
	b = append(b, "hello"...)
	b = EndFrame(b, off)
	h, err := ParseHeader(b[off:])
	if err != nil || h.BodyLen != 5 || h.ID != 7 || string(b[off+HeaderLen:]) != "hello" {
		t.Fatalf("frame %+v %v %q", h, err, b)
	}
	PatchStatus(b, off, StatusNotFound)
	if h, _ := ParseHeader(b[off:]); h.Status != StatusNotFound {
		t.Fatalf("status not patched: %v", h.Status)
	}
}

func TestDecoder(t *testing.T) {
	b := AppendStr8(nil, "chan")
	b = AppendU8(b, 9)
	b = AppendU16(b, 0x1234)
	b = AppendU32(b, 0xdeadbeef)
	b = AppendU64(b, 1<<60)
	b = AppendBytes32(b, []byte("value"))
	b = AppendBytes8(b, []byte("k"))
	d := NewDecoder(b)
	if s := d.Bytes8(); string(s) != "chan" {
		t.Fatalf("Bytes8 = %q", s)
	}
	if d.U8() != 9 || d.U16() != 0x1234 || d.U32() != 0xdeadbeef || d.U64() != 1<<60 {
		t.Fatal("integers do not round-trip")
	}
	if v := d.Bytes32(); string(v) != "value" {
		t.Fatalf("Bytes32 = %q", v)
	}
	if k := d.Bytes8(); string(k) != "k" || d.Finish() != nil {
		t.Fatalf("tail %q %v", k, d.Finish())
	}
	// Reads past the end are sticky errors with zero values, never panics.
	d = NewDecoder([]byte{5, 'a'})
	if v := d.Bytes8(); v != nil || !errors.Is(d.Err(), ErrMalformed) {
		t.Fatalf("short str8: %q %v", v, d.Err())
	}
	if d.U64() != 0 || d.Bytes32() != nil {
		t.Fatal("reads after an error return values")
	}
	d = NewDecoder(AppendU32(nil, 0xffffffff))
	if d.Bytes32() != nil || d.Err() == nil {
		t.Fatal("a bytes32 claiming 4 GiB was accepted")
	}
	d = NewDecoder([]byte{1, 2})
	d.U8()
	if !errors.Is(d.Finish(), ErrTrailingData) {
		t.Fatal("trailing bytes not reported")
	}
}

func TestNames(t *testing.T) {
	if OpPut.String() != "Put" || Opcode(0xEE).String() != "Opcode(0xee)" || OpPut.Known() == false || Opcode(0xEE).Known() {
		t.Fatal("opcode names")
	}
	if StatusNotFound.String() != "not found" || Status(999).String() != "status(999)" {
		t.Fatal("status names")
	}
}

// FuzzDecode feeds arbitrary bytes to the header parser and to every
// decoder method: nothing may panic, and no field may be longer than the
// input.
func FuzzDecode(f *testing.F) {
	f.Add(AppendHeader(nil, Header{Magic: MagicRequest, Version: Version, Opcode: OpPut, BodyLen: 5}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 1, 2})
	f.Add(AppendBytes32(AppendStr8(nil, "chan"), []byte("v")))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := ParseHeader(b); err == nil && h.BodyLen > MaxBody {
			t.Fatalf("accepted body length %d", h.BodyLen)
		}
		d := NewDecoder(b)
		for i := 0; d.Err() == nil && d.Len() > 0 && i < 64; i++ {
			switch b[i%len(b)] % 6 {
			case 0:
				d.U8()
			case 1:
				d.U16()
			case 2:
				d.U32()
			case 3:
				d.U64()
			case 4:
				if v := d.Bytes8(); len(v) > len(b) {
					t.Fatal("Bytes8 longer than the input")
				}
			case 5:
				if v := d.Bytes32(); len(v) > len(b) {
					t.Fatal("Bytes32 longer than the input")
				}
			}
		}
		d.Finish()
	})
}

func BenchmarkParseHeader(b *testing.B) {
	hb := AppendHeader(nil, Header{Magic: MagicRequest, Version: Version, Opcode: OpGet, ID: 1, BodyLen: 30})
	for b.Loop() {
		if _, err := ParseHeader(hb); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodePut(b *testing.B) {
	buf := make([]byte, 0, 256)
	key, val := []byte("key:000000000001"), bytes.Repeat([]byte("x"), 100)
	b.SetBytes(int64(HeaderLen + 1 + 5 + 1 + len(key) + 4 + len(val)))
	for b.Loop() {
		out, off := BeginFrame(buf[:0], Header{Magic: MagicRequest, Version: Version, Opcode: OpPut, ID: 1})
		out = AppendStr8(out, "users")
		out = AppendBytes8(out, key)
		out = AppendU32(out, 0)
		out = append(out, val...)
		EndFrame(out, off)
	}
}

func TestRoundTrip(t *testing.T) {
	answer := func(st Status, body string) []byte {
		b, off := BeginFrame(nil, Header{Magic: MagicResponse, Version: Version, Opcode: OpJoin, ID: 7, Status: st})
		return EndFrame(append(b, body...), off)
	}
	for _, tc := range []struct {
		answer []byte
		want   string
		err    string
	}{
		{answer(StatusOK, "hello"), "hello", ""},
		{answer(StatusRefused, "another cluster"), "", "Join: refused: another cluster"},
		{answer(StatusOK, "an answer far too long for the limit"), "", "unexpected Join answer"},
	} {
		var sent bytes.Buffer
		got, err := RoundTrip(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(tc.answer), &sent}, OpJoin, 7, []byte("{}"), 20)
		if tc.err == "" && (err != nil || string(got) != tc.want) || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("answer %q: %q, %v", tc.answer, got, err)
		}
		if h, _ := ParseHeader(sent.Bytes()); h.Opcode != OpJoin || h.ID != 7 || h.BodyLen != 2 {
			t.Errorf("request sent: %v", h)
		}
	}
	var se *StatusError
	_, err := RoundTrip(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(answer(StatusNoQuorum, "")), io.Discard}, OpJoin, 7, nil, 10)
	if !errors.As(err, &se) || se.Status != StatusNoQuorum {
		t.Fatalf("status error: %v", err)
	}
}
