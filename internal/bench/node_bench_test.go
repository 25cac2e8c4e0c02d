package bench

import (
	"context"
	"fmt"
	"testing"

	"shoal/client"
)

// BenchmarkNode loads a node running in this process, for CPU and
// allocation profiles of the server under the vs-redis shapes:
//
//	go test -run XXX -bench Node -cpuprofile cpu.out -memprofile mem.out ./internal/bench
//	go tool pprof -focus 'internal/(server|kv)' -top cpu.out
//
// One b.N iteration is one request. The key space (100,000 keys) is loaded
// first, so every get hits.
func BenchmarkNode(b *testing.B) {
	addr := startNode(b)
	s := NewShoal(addr, func(ctx context.Context) (*client.Client, error) { return client.Dial(ctx, addr) })
	o := DefaultOptions()
	o.Workload, o.Keys, o.Conns, o.Pipeline = Load, 100_000, 8, 64
	if _, err := Run(b.Context(), s, o); err != nil {
		b.Fatal(err)
	}
	for _, w := range []Workload{Get, Set} {
		for _, p := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/50x%d", w, p), func(b *testing.B) {
				o.Workload, o.Conns, o.Pipeline, o.Warmup, o.Requests = w, 50, p, 0, int64(b.N)
				res, err := Run(b.Context(), s, o)
				if err != nil || res.Errors != 0 {
					b.Fatalf("%+v, %v", res, err)
				}
				b.ReportMetric(res.P99Ms, "p99-ms")
			})
		}
	}
}
