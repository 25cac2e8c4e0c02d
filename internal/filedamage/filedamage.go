// Package filedamage damages files the way disks, crashes and people do,
// for the tests of the checks and recoveries of a node's files. Only
// tests import it.
package filedamage

import (
	"bytes"
	"os"
	"testing"
)

// Append appends b to path (stray bytes after the file's end).
func Append(t testing.TB, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Stray is n bytes of "KLMN…", bytes no file of a node starts a frame or
// document with.
func Stray(n int) []byte { return bytes.Repeat([]byte("KLMN"), n/4+1)[:n] }

// Flip changes one bit of the byte in the middle of path (damage in the
// middle).
func Flip(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatalf("%s is empty: nothing to flip", path)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
