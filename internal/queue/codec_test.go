package queue

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestFieldCodec(t *testing.T) {
	b := appendStr8(nil, "chan")
	b = appendU8(b, 9)
	b = appendU16(b, 0x1234)
	b = appendU32(b, 0xdeadbeef)
	b = appendU64(b, 1<<60)
	b = appendU32(b, 5)
	b = append(b, "value"...)
	b = append(b, "rest"...)
	want := []byte("\x04chan\x09\x34\x12\xef\xbe\xad\xde\x00\x00\x00\x00\x00\x00\x00\x10\x05\x00\x00\x00valuerest")
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded % x\n   want % x", b, want)
	}
	d := newFieldDecoder(b)
	if s := d.bytes8(); string(s) != "chan" {
		t.Fatalf("bytes8 = %q", s)
	}
	if d.u8() != 9 || d.u16() != 0x1234 || d.u32() != 0xdeadbeef || d.u64() != 1<<60 {
		t.Fatal("integers do not round-trip")
	}
	if v := d.bytes32(); string(v) != "value" || d.len() != 4 {
		t.Fatalf("bytes32 = %q, %d left", v, d.len())
	}
	if r := d.rest(); string(r) != "rest" || d.finish() != nil {
		t.Fatalf("rest %q %v", r, d.finish())
	}
	if got := appendStr8(nil, strings.Repeat("x", 300)); len(got) != 256 || got[0] != 255 {
		t.Fatalf("a long str8 is %d bytes with length %d", len(got), got[0])
	}
}

func TestFieldDecoderErrors(t *testing.T) {
	// Reads past the end are sticky errors with zero values, never panics.
	d := newFieldDecoder([]byte{5, 'a'})
	if v := d.bytes8(); v != nil || !errors.Is(d.err, errShortBody) {
		t.Fatalf("short str8: %q %v", v, d.err)
	}
	if d.u64() != 0 || d.bytes32() != nil || d.u8() != 0 || !errors.Is(d.finish(), errShortBody) {
		t.Fatal("reads after an error return values")
	}
	d = newFieldDecoder(appendU32(nil, 0xffffffff))
	if d.bytes32() != nil || d.err == nil {
		t.Fatal("a bytes32 claiming 4 GiB was accepted")
	}
	d = newFieldDecoder([]byte{1, 2})
	d.u8()
	if !errors.Is(d.finish(), errTrailingData) {
		t.Fatal("trailing bytes not reported")
	}
}
