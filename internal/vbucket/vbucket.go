// Package vbucket maps keys to vBuckets. The mapping is part of the
// protocol and never changes: vbucket = xxhash64(key) mod V, where xxhash64
// is XXH64 with seed 0 and V is the cluster's vBucket count (default 1024).
package vbucket

import "github.com/cespare/xxhash/v2"

// Default is the default number of vBuckets of a cluster.
const Default = 1024

// Max is the largest vBucket count (vBucket ids are u16 on the wire).
const Max = 65535

// Of returns the vBucket of key among n vBuckets.
func Of(key []byte, n int) uint16 {
	return uint16(xxhash.Sum64(key) % uint64(n))
}

// OfString is Of for a string key.
func OfString(key string, n int) uint16 {
	return uint16(xxhash.Sum64String(key) % uint64(n))
}
