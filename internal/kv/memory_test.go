package kv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// benchKey writes the i-th 16-byte key ("key:%012d", as the Redis
// measurement of reference/perf_anchors.md §1.3) into b.
func benchKey(b []byte, i int) []byte {
	b = append(b[:0], "key:000000000000"...)
	for j := len(b) - 1; i > 0 && j >= 4; j-- {
		b[j] = byte('0' + i%10)
		i /= 10
	}
	return b
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

// TestMemoryGivenBack loads records, removes 90% of them and checks that
// MemoryUsage and the Go heap go down: at once (chunks that turn to
// garbage are evacuated; tombstones remain), and again once the tombstones
// are purged (indexes shrink, tails are trimmed).
func TestMemoryGivenBack(t *testing.T) {
	const n = 200_000
	clock := newFakeClock()
	h0 := heapInuse()
	s := newStore(t, Config{Now: clock.Now})
	key, val := make([]byte, 0, 16), make([]byte, 100)
	for i := range n {
		if _, err := s.Put("c", benchKey(key, i), val, 0); err != nil {
			t.Fatal(err)
		}
	}
	m1, h1 := s.MemoryUsage(), heapInuse()-h0
	for i := range n {
		if i%10 != 0 {
			if ok, err := s.Remove("c", benchKey(key, i)); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
	}
	m2, h2 := s.MemoryUsage(), heapInuse()-h0
	clock.Add(2 * time.Minute)
	sweepAll(s)
	m3, h3 := s.MemoryUsage(), heapInuse()-h0
	t.Logf("MemoryUsage %d -> %d -> %d; heap %d -> %d -> %d", m1, m2, m3, h1, h2, h3)
	if m2 > m1/2 || h2 > h1*2/3 {
		t.Errorf("after removing 90%%: usage %d of %d, heap %d of %d", m2, m1, h2, h1)
	}
	if m3 > m1/6 || h3 > h1/3 {
		t.Errorf("after purging tombstones: usage %d of %d, heap %d of %d", m3, m1, h3, h1)
	}
	if err := checkStore(s); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Size(); r != n/10 {
		t.Fatalf("%d records left", r)
	}
	// Removing the channel gives back everything but the channel removal
	// records.
	s.RemoveChannel("c")
	if m := s.MemoryUsage(); m != 0 {
		t.Fatalf("MemoryUsage %d after RemoveChannel", m)
	}
	runtime.KeepAlive(s)
}

func TestMemoryLimit(t *testing.T) {
	clock := newFakeClock()
	const limit = 1 << 20
	s := newStore(t, Config{VBuckets: 16, MemoryLimit: limit, Now: clock.Now, TombstoneTTL: time.Second})
	val := make([]byte, 100)
	n := 0
	for ; ; n++ {
		_, err := s.Put("c", fmt.Appendf(nil, "k%d", n), val, 0)
		if errors.Is(err, ErrOutOfMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if s.MemoryUsage() > limit {
			t.Fatalf("MemoryUsage %d over the limit", s.MemoryUsage())
		}
	}
	if n < 5000 {
		t.Fatalf("only %d records fit in 1 MiB", n)
	}
	// Reads, removals and scans go on; writes needing memory fail.
	if _, _, err := s.Get("c", []byte("k1"), nil); err != nil || !s.Exists("c", []byte("k1")) {
		t.Fatal("Get at the limit:", err)
	}
	for i := 0; ; i++ { // new channels cost memory too
		_, err := s.Put(fmt.Sprint("ch", i), []byte("k"), nil, 0)
		if errors.Is(err, ErrOutOfMemory) {
			break
		}
		if err != nil || i == 1000 || s.MemoryUsage() > limit {
			t.Fatalf("Put into new channels at the limit: %v, usage %d", err, s.MemoryUsage())
		}
	}
	_, cas, _ := s.Get("c", []byte("k1"), nil)
	if _, err := s.Update("c", []byte("k1"), make([]byte, 9000), cas, 0); !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("Update growing a record at the limit: %v", err)
	}
	if _, err := s.Update("c", []byte("k1"), make([]byte, 100), cas, 0); err != nil {
		t.Fatalf("Update in place at the limit: %v", err)
	}
	vb := s.locateVB([]byte("k2"))
	if err := s.Load("c", vb, 0, []Record{{Key: []byte("k2"), Value: make([]byte, 9000), Seqno: 1 << 40}}); !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("Load at the limit: %v", err)
	}
	scanned := 0
	s.Scan("c", 0, nil, func(Record) bool { scanned++; return true })
	if scanned == 0 {
		t.Fatal("Scan at the limit")
	}
	for i := range n / 2 {
		if ok, err := s.Remove("c", fmt.Appendf(nil, "k%d", i)); !ok || err != nil {
			t.Fatalf("Remove at the limit: %v %v", ok, err)
		}
	}
	clock.Add(2 * time.Second)
	sweepAll(s)
	if _, err := s.Put("c", []byte("again"), val, 0); err != nil {
		t.Fatalf("Put after freeing memory: %v", err)
	}
	if err := checkStore(s); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkOverheadChurn is BenchmarkOverhead after churn: 1M records,
// then 500k removals each followed by the put of a new key (values of
// 90..109 bytes), then a tombstone purge. It reports the steady-state
// overhead, arena garbage included.
func BenchmarkOverheadChurn(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		clock := newFakeClock()
		h0 := heapInuse()
		s := newStore(b, Config{Now: clock.Now})
		key, val := make([]byte, 0, 16), make([]byte, 110)
		for i := range n {
			s.Put("bench", benchKey(key, i), val[:100], 0)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		live := make([]int, n)
		for i := range live {
			live[i] = i
		}
		for i := range n / 2 {
			j := rng.IntN(n)
			s.Remove("bench", benchKey(key, live[j]))
			live[j] = n + i
			s.Put("bench", benchKey(key, live[j]), val[:90+rng.IntN(20)], 0)
		}
		clock.Add(2 * time.Minute)
		sweepAll(s)
		records, bytes := s.Size()
		h1 := heapInuse()
		b.ReportMetric(float64(s.MemoryUsage()-bytes)/float64(records), "usage-B/rec")
		b.ReportMetric(float64(int64(h1)-int64(h0)-bytes)/float64(records), "heap-B/rec")
		runtime.KeepAlive(s)
		s.Close()
	}
}

// loadStore returns a store holding n 16 B/100 B records in channel "bench".
func loadStore(b *testing.B, n int) *Store {
	s := newStore(b, Config{})
	key, val := make([]byte, 0, 16), make([]byte, 100)
	for i := range n {
		if _, err := s.Put("bench", benchKey(key, i), val, 0); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

const benchRecords = 1 << 20

func BenchmarkPut(b *testing.B) {
	s := newStore(b, Config{})
	key, val := make([]byte, 0, 16), make([]byte, 100)
	b.SetBytes(116)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Put("bench", benchKey(key, i%benchRecords), val, 0)
		i++
	}
}

func BenchmarkGet(b *testing.B) {
	s := loadStore(b, benchRecords)
	key, dst := make([]byte, 0, 16), make([]byte, 0, 128)
	b.SetBytes(116)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := s.Get("bench", benchKey(key, (i*7919)%benchRecords), dst[:0]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkAddExisting: Add of keys that hold live records (ErrExists):
// the lookup that Add, Update and Expire share.
func BenchmarkAddExisting(b *testing.B) {
	s := loadStore(b, benchRecords)
	key, val := make([]byte, 0, 16), make([]byte, 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Add("bench", benchKey(key, (i*7919)%benchRecords), val, 0); err != ErrExists {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUpdate: Update with the record's CAS (a compare-and-swap
// write that keeps the expiry).
func BenchmarkUpdate(b *testing.B) {
	const n = 1 << 16
	s := loadStore(b, n)
	key, val := make([]byte, 0, 16), make([]byte, 100)
	cas := make([]uint64, n)
	for i := range cas {
		_, c, _, err := s.GetWithExpiry("bench", benchKey(key, i), nil)
		if err != nil {
			b.Fatal(err)
		}
		cas[i] = c
	}
	b.SetBytes(116)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := (i * 7919) % n
		c, err := s.Update("bench", benchKey(key, k), val, cas[k], 0)
		if err != nil {
			b.Fatal(err)
		}
		cas[k] = c
		i++
	}
}

// BenchmarkExpire: Expire of live records (a write of the same value).
func BenchmarkExpire(b *testing.B) {
	const n = 1 << 16
	s := loadStore(b, n)
	key := make([]byte, 0, 16)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Expire("bench", benchKey(key, (i*7919)%n), time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s := loadStore(b, benchRecords)
	b.SetBytes(116)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key, dst := make([]byte, 0, 16), make([]byte, 0, 128)
		i := rand.IntN(benchRecords)
		for pb.Next() {
			if _, _, err := s.Get("bench", benchKey(key, (i*7919)%benchRecords), dst[:0]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkRemove(b *testing.B) {
	s := loadStore(b, benchRecords)
	key := make([]byte, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%benchRecords == 0 && i > 0 {
			b.StopTimer()
			s = loadStore(b, benchRecords)
			b.StartTimer()
		}
		s.Remove("bench", benchKey(key, i%benchRecords))
	}
}

// BenchmarkScan reports the cost per record of Scan over whole vBuckets
// (1M records spread over 1024 vBuckets).
func BenchmarkScan(b *testing.B) {
	s := loadStore(b, benchRecords)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; n < b.N; i++ {
		s.Scan("bench", uint16(i%1024), nil, func(Record) bool { n++; return true })
	}
}

// BenchmarkSnapshotPause measures the lock hold of SnapshotChannel per
// vBucket (about 1000 records each): the pause writers of that vBucket see.
func BenchmarkSnapshotPause(b *testing.B) {
	s := loadStore(b, benchRecords)
	var recs []Record
	var buf []byte
	var worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		recs, buf, _, _ = s.copyChannel(s.parts[i%1024], "bench", recs[:0], buf[:0])
		worst = max(worst, time.Since(start))
	}
	b.ReportMetric(float64(worst.Microseconds()), "max-µs")
}
