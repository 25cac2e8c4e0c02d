package client_test

import (
	"fmt"
	"testing"

	"shoal/client"
)

// BenchmarkRouting measures one node's throughput through a routing
// client and through one WithNoRouting, in the same run: a node in a
// cluster of its own (every vBucket active on it), 16 goroutines sharing
// one connection (pipelined), 100-byte values; and batches of 100 Gets in
// a Pipeline. The routed calls cost one hash and one table lookup more
// (the key's vBucket's active); run with -count to alternate them:
//
//	go test ./client -run '^$' -bench BenchmarkRouting -count 5
func BenchmarkRouting(b *testing.B) {
	addr := startClusterNode(b)
	direct := dial(b, addr, client.WithNoRouting())
	waitClusterMap(b, direct)
	routed := dial(b, addr)
	if routed.RoutingMap() == nil || direct.RoutingMap() != nil {
		b.Fatal("the clients do not route as they should")
	}
	ctx := b.Context()
	keys := make([][]byte, 10000)
	val := make([]byte, 100)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key:%012d", i)
		if _, err := routed.Put(ctx, "bench", keys[i], val); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		c    *client.Client
	}{{"routed", routed}, {"direct", direct}} {
		b.Run("get/"+c.name, func(b *testing.B) {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := c.c.Get(ctx, "bench", keys[i%len(keys)]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
		b.Run("put/"+c.name, func(b *testing.B) {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := c.c.Put(ctx, "bench", keys[i%len(keys)], val); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
		b.Run("pipeline-get/"+c.name, func(b *testing.B) {
			p := c.c.Pipeline()
			res := make([]*client.Result, 0, 100)
			for i := 0; i < b.N; {
				res = res[:0]
				for ; len(res) < 100 && i < b.N; i++ {
					res = append(res, p.Get("bench", keys[i%len(keys)]))
				}
				if err := p.Exec(ctx); err != nil {
					b.Fatal(err)
				}
				for _, r := range res {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
		})
	}
}
