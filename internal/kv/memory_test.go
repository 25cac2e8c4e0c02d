package kv

import (
	"fmt"
	"runtime"
	"testing"
)

// benchKey writes the i-th 16-byte key ("key:%012d", as the Redis
// measurement of reference/perf_anchors.md §1.3) into b.
func benchKey(b []byte, i int) []byte {
	return fmt.Appendf(b[:0], "key:%012d", i)
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkOverhead loads 1M records of 16-byte keys and 100-byte values
// and reports the bytes per record beyond the 116 payload bytes, by
// MemoryUsage and by the Go heap (HeapInuse after GC).
func BenchmarkOverhead(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		h0 := heapInuse()
		s := newStore(b, Config{})
		key, val := make([]byte, 0, 16), make([]byte, 100)
		for i := range n {
			key = benchKey(key, i)
			if _, err := s.Put("bench", key, val, 0); err != nil {
				b.Fatal(err)
			}
		}
		h1 := heapInuse()
		b.ReportMetric(float64(s.MemoryUsage())/n-116, "usage-B/rec")
		b.ReportMetric(float64(int64(h1)-int64(h0))/n-116, "heap-B/rec")
		runtime.KeepAlive(s)
		s.Close()
	}
}
