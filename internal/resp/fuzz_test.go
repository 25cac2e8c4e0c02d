package resp

import (
	"bytes"
	"testing"
)

// FuzzParse feeds the parser hostile input: it must not panic, must
// consume only what it was given, return arguments inside the input,
// and parse a command the same whole or byte by byte.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"PING\r\n", "set k \"a\\x41\\n\" 'b'\r\n", "*0\r\n", "*-1\r\n", "\r\n",
		"*1\r\n$-1\r\n", "*2\r\n$3\r\nGET\r\n$99999\r\n", "*9999999999\r\n", "$3\r\nabc\r\n",
		"*1\r\n$4\r\nPINGxx", "\x16\x03\x01\x00", "set \"unbalanced\r\n", "*\r\n", "*1\r\n$\r\n",
	} {
		f.Add([]byte(s))
	}
	p := Parser{MaxBulk: 64, MaxCommand: 256}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		buf := bytes.Clone(in)
		args, n, need, err := p.Parse(buf, nil)
		if n < 0 || n > len(buf) {
			t.Fatalf("consumed %d of %d", n, len(buf))
		}
		if err != nil {
			return
		}
		if n == 0 {
			if len(args) != 0 || need < 0 || need > p.MaxCommand+64 && need > len(buf)+1 {
				t.Fatalf("incomplete: %d args, need %d", len(args), need)
			}
			return
		}
		total := 0
		for _, a := range args {
			if len(a) > p.MaxBulk && orig[0] == '*' {
				t.Fatalf("argument of %d bytes over MaxBulk", len(a))
			}
			total += len(a)
		}
		if total > n {
			t.Fatalf("arguments of %d bytes from %d consumed", total, n)
		}
		if orig[0] != '*' {
			return // inline commands are unescaped in place
		}
		// Byte by byte: incomplete until the whole command is there.
		for i := 0; i < n; i++ {
			_, m, _, err := p.Parse(bytes.Clone(orig[:i]), nil)
			if err != nil || m != 0 {
				t.Fatalf("prefix %d of %d: consumed %d, err %v", i, n, m, err)
			}
		}
		again, m, _, _ := p.Parse(bytes.Clone(orig[:n]), nil)
		if m != n || len(again) != len(args) {
			t.Fatalf("again: %d args, %d bytes; first %d, %d", len(again), m, len(args), n)
		}
	})
}
