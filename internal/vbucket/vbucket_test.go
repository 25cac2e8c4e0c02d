package vbucket

import "testing"

// TestMappingIsFixed pins the key→vBucket mapping: it is part of the
// protocol, and clients in other languages reproduce it. If this test
// fails, the change breaks every deployed client.
func TestMappingIsFixed(t *testing.T) {
	f := func(key string, n int, want uint16) {
		t.Helper()
		if got := Of([]byte(key), n); got != want {
			t.Fatalf("Of(%q, %d) = %d, want %d", key, n, got, want)
		}
		if got := OfString(key, n); got != want {
			t.Fatalf("OfString(%q, %d) = %d, want %d", key, n, got, want)
		}
	}
	// XXH64 seed 0 of "" is 0xef46db3751d8e999, of "a" 0xd24ec4f1a98c6e5b.
	f("", 1024, uint16(0xef46db3751d8e999%1024))
	f("a", 1024, uint16(0xd24ec4f1a98c6e5b%1024))
	f("alice", 1024, 73)
	f("key:000000000001", 1024, 71)
	f("alice", 64, 9)
	f("anything", 1, 0)
}
