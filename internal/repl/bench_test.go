package repl

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"shoal/client"
	"shoal/internal/engine"
)

// lagRecorder is the replica's engine in the benchmark: mutations of
// channel "lag" carry the time their write was sent (unix nanoseconds in
// their first 8 value bytes); Apply records how long ago that was.
type lagRecorder struct {
	engine.Engine
	mu   sync.Mutex
	hist *hdrhistogram.Histogram // microseconds
}

func (l *lagRecorder) Apply(m *engine.Mutation) error {
	if err := l.Engine.Apply(m); err != nil {
		return err
	}
	if m.Channel == "lag" && len(m.Value) >= 8 {
		lag := time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(m.Value))))
		l.mu.Lock()
		l.hist.RecordValue(lag.Microseconds())
		l.mu.Unlock()
	}
	return nil
}

// benchDuration is the length of each phase (SHOAL_BENCH_SECONDS, default 3).
func benchDuration() time.Duration {
	var s int
	if _, err := fmt.Sscan(os.Getenv("SHOAL_BENCH_SECONDS"), &s); err != nil || s <= 0 {
		s = 3
	}
	return time.Duration(s) * time.Second
}

// benchWorkers is the number of concurrent writers (requests in flight).
const benchWorkers = 64

// maxWrites runs benchWorkers writers of 100-byte values through the
// client for d and returns the writes per second.
func maxWrites(b *testing.B, c *client.Client, d time.Duration) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	value := make([]byte, 100)
	for w := range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := make([]byte, 0, 16)
			for i := 0; time.Now().Before(end); i++ {
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
	return float64(n.Load()) / time.Since(start).Seconds()
}

// pacedWrites writes at rate for d, each value stamped with its send
// time, and returns the histogram of the writes' latencies (microseconds).
func pacedWrites(b *testing.B, c *client.Client, rate float64, d time.Duration) *hdrhistogram.Histogram {
	jobs := make(chan int, 1<<16)
	lat := hdrhistogram.New(1, 10_000_000, 3)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			value := make([]byte, 100)
			for i := range jobs {
				key := fmt.Appendf(nil, "k%d", i%20000)
				sent := time.Now()
				binary.LittleEndian.PutUint64(value, uint64(sent.UnixNano()))
				if _, err := c.Put(context.Background(), "lag", key, value); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				lat.RecordValue(time.Since(sent).Microseconds())
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	sent := 0
	for now := start; now.Sub(start) < d; now = time.Now() {
		for due := int(now.Sub(start).Seconds() * rate); sent < due; sent++ {
			jobs <- sent
		}
		time.Sleep(500 * time.Microsecond)
	}
	close(jobs)
	wg.Wait()
	return lat
}

// caughtUp waits until the replica has every vBucket's high seqno.
func caughtUp(b *testing.B, a, r *side, rep *Replicator) {
	eventually(b, time.Minute, "replica caught up", func() (bool, string) {
		for vb := range uint16(testVBuckets) {
			if ha, hr := a.kv.HighSeqno(vb), r.kv.HighSeqno(vb); ha != hr {
				return false, fmt.Sprintf("vb %d: %d vs %d", vb, ha, hr)
			}
		}
		st := rep.Status(false)
		return st.CaughtUp == st.VBuckets, fmt.Sprintf("%+v", st)
	})
}

// BenchmarkReplication measures in one run, through a real data port
// (client -> server -> kv engine) on loopback, with 64 writers of 100-byte
// values: the active's write throughput alone, then with a replica
// attached (a Replicator into a second kv engine in the same process),
// then the replication lag (write sent -> applied on the replica) under a
// steady load at half the throughput alone, and at half the throughput
// with the replica. Run it once:
//
//	go test ./internal/repl -run '^$' -bench Replication -benchtime 1x
func BenchmarkReplication(b *testing.B) {
	d := benchDuration()
	a := newSide(b, "node-a", b.TempDir(), false, false)
	addr := a.serve(nil)
	c, err := client.Dial(context.Background(), addr, client.WithConnections(2))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for range b.N {
		alone := maxWrites(b, c, d)

		r := newSide(b, "node-b", b.TempDir(), false, false)
		rec := &lagRecorder{Engine: r.kv, hist: hdrhistogram.New(1, 10_000_000, 3)}
		rep := r.replicate(addr, "kv", rec, func(cfg *Config) { cfg.Options.NoopInterval = time.Second })
		caughtUp(b, a, r, rep)
		replicated := maxWrites(b, c, d)
		caughtUp(b, a, r, rep)

		lagAt := func(rate float64, name string) {
			caughtUp(b, a, r, rep)
			rec.mu.Lock()
			rec.hist.Reset()
			rec.mu.Unlock()
			writes := pacedWrites(b, c, rate, d)
			caughtUp(b, a, r, rep)
			rec.mu.Lock()
			lag := rec.hist
			b.ReportMetric(rate, name+"-writes/s")
			b.ReportMetric(float64(lag.ValueAtQuantile(50)), name+"-lag-p50-µs")
			b.ReportMetric(float64(lag.ValueAtQuantile(99)), name+"-lag-p99-µs")
			b.ReportMetric(float64(lag.Max()), name+"-lag-max-µs")
			b.ReportMetric(float64(writes.ValueAtQuantile(50)), name+"-write-p50-µs")
			b.ReportMetric(float64(writes.ValueAtQuantile(99)), name+"-write-p99-µs")
			b.Logf("%s: %d lag samples, %d writes", name, lag.TotalCount(), writes.TotalCount())
			rec.mu.Unlock()
		}
		b.ReportMetric(alone, "writes/s-alone")
		b.ReportMetric(replicated, "writes/s-replicated")
		b.ReportMetric(100*(1-replicated/alone), "%-cost")
		lagAt(alone/2, "half-alone")
		lagAt(replicated/2, "half-replicated")
		sameKV(b, a.kv, r.kv, rep)
		rep.Stop()
	}
}
