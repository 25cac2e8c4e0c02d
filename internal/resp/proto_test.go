package resp

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

var testParser = Parser{MaxBulk: 1 << 10, MaxCommand: 1 << 16}

func args(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func TestParseCommands(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want [][]byte
		n    int
	}{
		{"*1\r\n$4\r\nPING\r\n", args("PING"), 14},
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", args("SET", "k", ""), 26},
		{"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n", args("GET", "k"), 20},
		{"*0\r\n", args(), 4},
		{"*-1\r\n", args(), 5},
		{"PING\r\n", args("PING"), 6},
		{"PING\n", args("PING"), 5},
		{"  set  k   v \r\n", args("set", "k", "v"), 15},
		{"\r\n", args(), 2},
		{`set k "a b\n\x41"` + "\r\n", args("set", "k", "a b\nA"), 19},
		{`set k 'it\'s'` + "\r\n", args("set", "k", "it's"), 15},
		{`set k ""` + "\r\n", args("set", "k", ""), 10},
	} {
		got, n, _, err := testParser.Parse([]byte(tc.in), nil)
		if err != nil || n != tc.n || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("Parse(%q) = %q, %d, %v; want %q, %d", tc.in, got, n, err, tc.want, tc.n)
		}
	}
}

func TestParseIncomplete(t *testing.T) {
	full := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"
	for i := 0; i < len(full); i++ {
		_, n, need, err := testParser.Parse([]byte(full[:i]), nil)
		if err != nil || n != 0 {
			t.Fatalf("prefix %q: n %d err %v", full[:i], n, err)
		}
		if need > len(full) {
			t.Fatalf("prefix %q: need %d > %d", full[:i], need, len(full))
		}
	}
	// A big bulk string tells how much it needs.
	_, _, need, _ := testParser.Parse([]byte("*2\r\n$3\r\nGET\r\n$1000\r\nabc"), nil)
	if need != 13+7+1000+2 {
		t.Fatalf("need %d", need)
	}
	if _, n, _, err := testParser.Parse([]byte("GET k"), nil); n != 0 || err != nil {
		t.Fatalf("inline without newline: %d %v", n, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"*x\r\n", errBadCount},
		{"*2000000\r\n", errBadCount},
		{"*99999999999999999999\r\n", errBadCount},
		{"*1\r\n+PING\r\n", errExpectedBulk},
		{"*1\r\n$-1\r\n", errBadBulkLen},
		{"*1\r\n$2000\r\n", errBadBulkLen},
		{"*1\r\n$9999999999999999999999\r\n", errBadBulkLen},
		{"*1\r\n$4\r\nPINGxx", errBadCRLF},
		{"*1\r\n$4x\r\n", errBadBulkLen},
		{"*1\r\r$4\r\n", errBadCount},
		{`set k "abc` + "\r\n", errUnbalanced},
		{`set k "abc"d` + "\r\n", errUnbalanced},
		{"set " + strings.Repeat("k", MaxInline) + "\r\n", errInlineTooBig},
		{strings.Repeat("k", MaxInline+1), errInlineTooBig},
	} {
		_, _, _, err := testParser.Parse([]byte(tc.in), nil)
		if !errors.Is(err, tc.want) {
			t.Errorf("Parse(%.40q): %v, want %v", tc.in, err, tc.want)
		}
	}
	// The command limit counts the whole command.
	p := Parser{MaxBulk: 100, MaxCommand: 150}
	in := "*3\r\n$3\r\nSET\r\n$80\r\n" + strings.Repeat("k", 80) + "\r\n$80\r\n" + strings.Repeat("v", 80) + "\r\n"
	if _, _, _, err := p.Parse([]byte(in), nil); !errors.Is(err, errCmdTooBig) {
		t.Fatalf("over MaxCommand: %v", err)
	}
}

func TestAppendAnswers(t *testing.T) {
	var b []byte
	b = AppendSimple(b, "OK")
	b = AppendError(b, "ERR a\r\nb")
	b = AppendInt(b, -42)
	b = AppendBulk(b, []byte("hi"))
	b = AppendNull(b, 2)
	b = AppendNull(b, 3)
	b = AppendMap(b, 1, 2)
	b = AppendMap(b, 1, 3)
	b = AppendVerbatim(b, "x", 3)
	want := "+OK\r\n-ERR a  b\r\n:-42\r\n$2\r\nhi\r\n$-1\r\n_\r\n*2\r\n%1\r\n=5\r\ntxt:x\r\n"
	if string(b) != want {
		t.Fatalf("%q\nwant %q", b, want)
	}
}

func TestNextElem(t *testing.T) {
	in := []byte("*2\r\n$1\r\n7\r\n*3\r\n$1\r\na\r\n$-1\r\n:5\r\n+rest\r\n")
	e, rest, err := nextElem(in, 0)
	if err != nil || string(rest) != "+rest\r\n" || !bytes.HasPrefix(in, e) {
		t.Fatalf("%q %q %v", e, rest, err)
	}
	for _, bad := range []string{"", "*", "*2\r\n:1\r\n", "$5\r\nab\r\n", "?x\r\n", strings.Repeat("*1\r\n", 20) + ":1\r\n"} {
		if _, _, err := nextElem([]byte(bad), 0); err == nil {
			t.Errorf("nextElem(%q): no error", bad)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "anything", true},
		{"user:*", "user:1", true},
		{"user:*", "users", false},
		{"h?llo", "hello", true},
		{"h?llo", "hllo", false},
		{"h[ae]llo", "hallo", true},
		{"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true},
		{"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true},
		{`h\*llo`, "h*llo", true},
		{`h\*llo`, "hello", false},
		{"*a*b*c", "xxaxxbxxc", true},
		{"*a*b*c", "xxaxxbxx", false},
		{"[", "[", true},
		{"", "", true},
		{"a*", "", false},
	} {
		if got := globMatch([]byte(tc.p), []byte(tc.s)); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
	// A pathological pattern stays fast.
	p := []byte(strings.Repeat("*a", 50) + "b")
	s := []byte(strings.Repeat("a", 5000))
	if globMatch(p, s) {
		t.Fatal("matched")
	}
}
