package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"shoal/client"
	"shoal/internal/engine"
)

// chainLag records, per chain link (producer -> replica), how long after
// its write was sent each mutation of channel "lag" reached the replica's
// apply (the value's first 8 bytes are the send time, unix nanoseconds).
type chainLag struct {
	mu    sync.Mutex
	links map[string]*hdrhistogram.Histogram // microseconds, by "producer -> replica"
	on    atomic.Bool
}

// hook is the apply hook of the replica self, whose vBuckets' actives
// activeOf names.
func (l *chainLag) hook(self string, activeOf func(vb uint16) string) func(*engine.Mutation) error {
	return func(m *engine.Mutation) error {
		if !l.on.Load() || m.Channel != "lag" || len(m.Value) < 8 {
			return nil
		}
		lag := time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(m.Value))))
		link := activeOf(m.VBucket) + " -> " + self
		l.mu.Lock()
		defer l.mu.Unlock()
		h := l.links[link]
		if h == nil {
			h = hdrhistogram.New(1, 10_000_000, 3)
			l.links[link] = h
		}
		h.RecordValue(lag.Microseconds())
		return nil
	}
}

// benchSeconds is the length of each phase (SHOAL_BENCH_SECONDS, default 3).
func benchSeconds() time.Duration {
	var s int
	if _, err := fmt.Sscan(os.Getenv("SHOAL_BENCH_SECONDS"), &s); err != nil || s <= 0 {
		s = 3
	}
	return time.Duration(s) * time.Second
}

// BenchmarkChainLag measures, in a cluster of three in-process nodes on
// loopback with one replica and with two, the routed write throughput of
// 64 writers of 100-byte values (phase 1), then the replication lag of
// every chain link — from the moment a write is sent to the moment the
// replica applies it — under a paced load at half that throughput. The
// lag includes the write's own trip to its active; the writes' latency
// is reported next to it.
//
//	SHOAL_BENCH_SECONDS=5 go test ./internal/node -run '^$' -bench ChainLag -benchtime 1x
func BenchmarkChainLag(b *testing.B) {
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			for range b.N {
				chainLagRun(b, replicas)
			}
		})
	}
}

func chainLagRun(b *testing.B, replicas int) {
	lag := &chainLag{links: map[string]*hdrhistogram.Histogram{}}
	nodes, _ := startClusterWith(b, 3, func(_ int, nd *Node) {
		nd.rep.applyHook = lag.hook(nd.cfg.NodeID, func(vb uint16) string { return nd.table().Map().Active(vb) })
	}, "--replicas", fmt.Sprint(replicas), "--log-level", "warn")
	var seeds []string
	for _, nd := range nodes {
		seeds = append(seeds, nd.Addr().String())
	}
	c, err := client.Dial(b.Context(), strings.Join(seeds, ","), client.WithConnections(2))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	d := benchSeconds()
	const workers = 64
	value := make([]byte, 100)

	// Phase 1: as fast as 64 writers go.
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := make([]byte, 0, 16)
			for i := 0; time.Since(start) < d; i++ {
				key = fmt.Appendf(key[:0], "w%d-%d", w, i%2000)
				if _, err := c.Put(context.Background(), "bench", key, value); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	full := float64(n.Load()) / time.Since(start).Seconds()

	// Phase 2: half of it, paced, each value stamped with its send time.
	rate := full / 2
	lat := hdrhistogram.New(1, 10_000_000, 3)
	var mu sync.Mutex
	jobs := make(chan int, 1<<16)
	lag.on.Store(true)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, 100)
			for i := range jobs {
				sent := time.Now()
				binary.LittleEndian.PutUint64(v, uint64(sent.UnixNano()))
				if _, err := c.Put(context.Background(), "lag", fmt.Appendf(nil, "k%d", i%20000), v); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				lat.RecordValue(time.Since(sent).Microseconds())
				mu.Unlock()
			}
		}()
	}
	start = time.Now()
	for sent := 0; time.Since(start) < d; time.Sleep(500 * time.Microsecond) {
		for due := int(time.Since(start).Seconds() * rate); sent < due; sent++ {
			jobs <- sent
		}
	}
	close(jobs)
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // the last mutations reach the replicas
	lag.on.Store(false)

	b.ReportMetric(full, "writes/s")
	b.ReportMetric(float64(lat.ValueAtQuantile(50)), "write-p50-µs")
	b.ReportMetric(float64(lat.ValueAtQuantile(99)), "write-p99-µs")
	lag.mu.Lock()
	defer lag.mu.Unlock()
	all99 := hdrhistogram.New(1, 10_000_000, 3)
	for _, link := range slices.Sorted(func(yield func(string) bool) {
		for k := range lag.links {
			if !yield(k) {
				return
			}
		}
	}) {
		h := lag.links[link]
		all99.Merge(h)
		b.Logf("replicas=%d at %.0f writes/s (half of %.0f): %s: lag p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d samples)",
			replicas, rate, full, link, ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(99)), ms(h.Max()), h.TotalCount())
	}
	b.Logf("replicas=%d: writes p50 %.2f ms, p99 %.2f ms; every link: lag p50 %.2f ms, p99 %.2f ms",
		replicas, ms(lat.ValueAtQuantile(50)), ms(lat.ValueAtQuantile(99)), ms(all99.ValueAtQuantile(50)), ms(all99.ValueAtQuantile(99)))
	b.ReportMetric(float64(all99.ValueAtQuantile(50)), "lag-p50-µs")
	b.ReportMetric(float64(all99.ValueAtQuantile(99)), "lag-p99-µs")
	// The map spreads every node's replica vBuckets over both others: six
	// links (ordered pairs) with one replica as with two.
	if len(lag.links) != 6 {
		b.Errorf("%d chain links measured, want 6", len(lag.links))
	}
}

// ms converts microseconds to milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }
