package client_test

import (
	"fmt"
	"testing"

	"shoal/internal/server"
)

// BenchmarkGet measures Get round trips through the client and an
// in-process node over loopback TCP, from many goroutines sharing one
// connection (pipelined).
func BenchmarkGet(b *testing.B) {
	n := startNode(b, server.Config{}, "")
	c := dial(b, n.addr)
	ctx := b.Context()
	keys := make([][]byte, 10000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key:%012d", i)
		c.Put(ctx, "bench", keys[i], make([]byte, 100))
	}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Get(ctx, "bench", keys[i%len(keys)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkPut is BenchmarkGet for Put.
func BenchmarkPut(b *testing.B) {
	n := startNode(b, server.Config{}, "")
	c := dial(b, n.addr)
	ctx := b.Context()
	val := make([]byte, 100)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Put(ctx, "bench", fmt.Appendf(nil, "key:%012d", i%100000), val); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
