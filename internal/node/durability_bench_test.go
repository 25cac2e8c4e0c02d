package node

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"shoal/client"
)

// BenchmarkDurability measures the cost of majority writes against
// none in one run: three in-process nodes on loopback, one replica, 64
// writers of 100-byte values through a routing client; each level runs for
// SHOAL_BENCH_SECONDS (default 3), alternately none, majority, none,
// majority, and reports throughput and latency percentiles.
//
//	SHOAL_BENCH_SECONDS=5 go test ./internal/node -run '^$' -bench Durability -benchtime 1x
func BenchmarkDurability(b *testing.B) {
	for range b.N {
		nodes, _ := startClusterWith(b, 3, nil, "--replicas", "1", "--log-level", "warn")
		var seeds []string
		for _, nd := range nodes {
			seeds = append(seeds, nd.Addr().String())
		}
		c, err := client.Dial(b.Context(), strings.Join(seeds, ","), client.WithConnections(2))
		if err != nil {
			b.Fatal(err)
		}
		d := benchSeconds()
		for round := range 2 {
			for _, level := range []client.Durability{client.None, client.Majority} {
				ops, lat := durabilityRun(b, c, level, d)
				b.Logf("round %d %-8v %8.0f writes/s  p50 %6dµs  p99 %6dµs  p99.9 %6dµs", round, level, ops,
					lat.ValueAtQuantile(50), lat.ValueAtQuantile(99), lat.ValueAtQuantile(99.9))
				if round == 1 {
					b.ReportMetric(ops, level.String()+"-writes/s")
					b.ReportMetric(float64(lat.ValueAtQuantile(99)), level.String()+"-p99-µs")
				}
			}
		}
		c.Close()
	}
}

func durabilityRun(b *testing.B, c *client.Client, level client.Durability, d time.Duration) (float64, *hdrhistogram.Histogram) {
	const workers = 64
	lat := hdrhistogram.New(1, 10_000_000, 3)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var n int64
	value := make([]byte, 100)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := hdrhistogram.New(1, 10_000_000, 3)
			key := make([]byte, 0, 16)
			var k int64
			for i := 0; time.Since(start) < d; i++ {
				key = fmt.Appendf(key[:0], "w%d-%d", w, i%2000)
				t0 := time.Now()
				if _, err := c.Put(context.Background(), "bench", key, value, client.WithDurability(level)); err != nil {
					b.Error(err)
					return
				}
				local.RecordValue(time.Since(t0).Microseconds())
				k++
			}
			mu.Lock()
			lat.Merge(local)
			n += k
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), lat
}
