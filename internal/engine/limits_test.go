package engine

import (
	"bytes"
	"testing"
)

func TestValidChannel(t *testing.T) {
	for _, ok := range []string{"a", "users", "A-b_9", "Zz09", string(bytes.Repeat([]byte("x"), MaxChannelLen))} {
		if !ValidChannel([]byte(ok)) || !ValidChannelString(ok) {
			t.Fatalf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "a b", "ü", "a/b", "a.b", "a\x00", "@", "[", "`", "{", string(bytes.Repeat([]byte("x"), MaxChannelLen+1))} {
		if ValidChannel([]byte(bad)) || ValidChannelString(bad) {
			t.Fatalf("%q accepted", bad)
		}
	}
}

// TestChannelBytes checks every byte value against the documented set,
// [A-Za-z0-9_-].
func TestChannelBytes(t *testing.T) {
	const allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	for c := range 256 {
		want := bytes.IndexByte([]byte(allowed), byte(c)) >= 0
		if got := ValidChannel([]byte{byte(c)}); got != want {
			t.Fatalf("byte %#x: valid %v, want %v", c, got, want)
		}
		if got := ValidChannelString(string([]byte{byte(c)})); got != want {
			t.Fatalf("byte %#x (string): valid %v, want %v", c, got, want)
		}
	}
}
