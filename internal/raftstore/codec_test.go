package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// sameLog reports whether a and b are equal as stored: AppendedAt compared
// as an instant, nil and empty slices alike.
func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func mustEncode(t testing.TB, l *raft.Log) []byte {
	t.Helper()
	b, err := appendLog(nil, l)
	if err != nil {
		t.Fatalf("appendLog: %v", err)
	}
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	cases := []raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg")},
		{Index: math.MaxUint64, Term: math.MaxUint64, Type: raft.LogType(255), Data: []byte{0}, Extensions: []byte("ext"), AppendedAt: time.Now()},
		{Index: 7, Term: 3, Type: raft.LogCommand, Extensions: []byte{1, 2}, AppendedAt: time.Unix(-1e12, 999_999_999)},
		{Index: 8, Term: 3, AppendedAt: time.Unix(1<<62, 5).In(time.FixedZone("x", 3600))},
	}
	for i, in := range cases {
		b := mustEncode(t, &in)
		if len(b) != encodedLogSize(&in) {
			t.Errorf("case %d: encoded %d bytes, encodedLogSize says %d", i, len(b), encodedLogSize(&in))
		}
		// Decode into a dirty Log: every field must be overwritten.
		out := raft.Log{Index: 99, Term: 99, Type: 9, Data: []byte("old"), Extensions: []byte("old"), AppendedAt: time.Now()}
		if err := decodeLog(b, &out); err != nil {
			t.Fatalf("case %d: decode: %v", i, err)
		}
		if !sameLog(&in, &out) {
			t.Errorf("case %d: decoded %+v, want %+v", i, out, in)
		}
		if in.AppendedAt.IsZero() && out.AppendedAt != (time.Time{}) {
			t.Errorf("case %d: zero AppendedAt decoded as %#v", i, out.AppendedAt)
		}
		if re := mustEncode(t, &out); !bytes.Equal(re, b) {
			t.Errorf("case %d: re-encoding differs:\n%x\n%x", i, re, b)
		}
	}
}

// TestCodecLayout pins the documented byte layout.
func TestCodecLayout(t *testing.T) {
	l := raft.Log{Index: 0x0102030405060708, Term: 0x1112131415161718, Type: raft.LogBarrier,
		Data: []byte("ab"), Extensions: []byte("c"), AppendedAt: time.Unix(0x21222324, 0x31323334)}
	want := []byte{1,
		1, 2, 3, 4, 5, 6, 7, 8,
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
		byte(raft.LogBarrier),
		0, 0, 0, 0, 0x21, 0x22, 0x23, 0x24,
		0x31, 0x32, 0x33, 0x34,
		0, 0, 0, 2, 'a', 'b',
		0, 0, 0, 1, 'c'}
	want = binary.BigEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	if got := mustEncode(t, &l); !bytes.Equal(got, want) {
		t.Fatalf("encoding\n got %x\nwant %x", got, want)
	}
}

// withCRC returns b with its last 4 bytes replaced by the right checksum,
// so that tests and the fuzzer reach the checks behind the checksum.
func withCRC(b []byte) []byte {
	if len(b) < crcSize {
		return b
	}
	out := bytes.Clone(b)
	body := out[:len(out)-crcSize]
	binary.BigEndian.PutUint32(out[len(body):], crc32.Checksum(body, castagnoli))
	return out
}

func TestDecodeCorrupt(t *testing.T) {
	good := mustEncode(t, &raft.Log{Index: 5, Term: 2, Data: []byte("hello"), Extensions: []byte("x")})
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":      nil,
		"short":      good[:logOverhead-1],
		"truncated":  good[:len(good)-1],
		"trailing":   withCRC(append(bytes.Clone(good), 0)),
		"bit flip":   mod(func(b []byte) []byte { b[offData] ^= 1; return b }),
		"bad crc":    mod(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }),
		"version 0":  withCRC(mod(func(b []byte) []byte { b[0] = 0; return b })),
		"version 2":  withCRC(mod(func(b []byte) []byte { b[0] = 2; return b })),
		"nanos 1e9":  withCRC(mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offNsec:], 1e9); return b })),
		"data huge":  withCRC(mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offDataLen:], math.MaxUint32); return b })),
		"data +1":    withCRC(mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offDataLen:], 6); return b })),
		"data -1":    withCRC(mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offDataLen:], 4); return b })),
		"ext huge":   withCRC(mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offData+5:], math.MaxUint32); return b })),
		"ext short":  withCRC(mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[offData+5:], 0); return b })),
		"garbage":    []byte("this is not a log entry at all, just some text"),
		"all ones":   bytes.Repeat([]byte{0xff}, 100),
		"all zeroes": make([]byte, 100),
	}
	for name, b := range cases {
		var l raft.Log
		err := decodeLog(b, &l)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: decode error %v, want one wrapping ErrCorrupt", name, err)
		}
	}
}

func TestCheckPayload(t *testing.T) {
	for _, c := range []struct {
		data, ext int
		ok        bool
	}{
		{0, 0, true},
		{maxPayloadSize, 0, true},
		{0, maxPayloadSize, true},
		{maxPayloadSize / 2, maxPayloadSize - maxPayloadSize/2, true},
		{maxPayloadSize + 1, 0, false},
		{0, maxPayloadSize + 1, false},
		{maxPayloadSize, 1, false},
		{math.MaxInt, math.MaxInt, false},
	} {
		err := checkPayload(c.data, c.ext)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrTooLarge)) {
			t.Errorf("checkPayload(%d, %d) = %v, want ok=%v", c.data, c.ext, err, c.ok)
		}
	}
	if encodedLogSize(&raft.Log{Data: make([]byte, 3), Extensions: make([]byte, 4)})+0 != logOverhead+7 {
		t.Error("encodedLogSize")
	}
}

func FuzzDecodeLog(f *testing.F) {
	for _, l := range []raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg")},
		{Index: 3, Term: 2, Data: []byte("data"), Extensions: []byte("ext"), AppendedAt: time.Unix(1700000000, 123)},
	} {
		b, err := appendLog(nil, &l)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, logOverhead))
	f.Fuzz(func(t *testing.T, b []byte) {
		// As given (almost always a checksum failure), and with the right
		// checksum, which lets the fuzzer explore the field checks.
		for _, in := range [][]byte{b, withCRC(b)} {
			var l raft.Log
			if err := decodeLog(in, &l); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error %v does not wrap ErrCorrupt", err)
				}
				continue
			}
			if n := len(l.Data) + len(l.Extensions); n > len(in) {
				t.Fatalf("decoded %d payload bytes from %d", n, len(in))
			}
			re, err := appendLog(nil, &l)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(re, in) {
				t.Fatalf("re-encoding differs:\n in %x\n re %x", in, re)
			}
		}
	})
}
