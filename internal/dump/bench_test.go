package dump

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shoal/internal/diskspeed"
	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// The benchmark data: 16-byte keys "key:%012d" and 100-byte values, 60
// random hex digits then 40 bytes of fixed JSON-like text, so that zstd has
// something but not everything to compress.
const (
	benchVBuckets = vbucket.Default
	benchKeyLen   = 16
	benchValueLen = 100
	benchRecLen   = benchKeyLen + benchValueLen
	benchTail     = `","state":"active","region":"eu-west"}  `
)

// benchSource is a Source of one channel, "bench", packed per vBucket, that
// copies a vBucket under its lock as the kv engine does and records how
// long it held the lock.
type benchSource struct {
	vbs     []benchVB
	records int

	mu     sync.Mutex
	pauses []time.Duration
}

type benchVB struct {
	mu    sync.Mutex
	data  []byte // records of benchRecLen bytes: key, value
	seqno uint64
}

func newBenchSource(n int) *benchSource {
	s := &benchSource{vbs: make([]benchVB, benchVBuckets), records: n}
	per := (n/benchVBuckets + n/benchVBuckets/8 + 8) * benchRecLen
	for i := range s.vbs {
		s.vbs[i].data = make([]byte, 0, per)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const hex = "0123456789abcdef"
	var rec [benchRecLen]byte
	copy(rec[:], "key:")
	copy(rec[benchKeyLen+60:], benchTail)
	for i := range n {
		for j, x := benchKeyLen-1, i; j >= len("key:"); j, x = j-1, x/10 {
			rec[j] = byte('0' + x%10)
		}
		for j := benchKeyLen; j < benchKeyLen+60; j++ {
			rec[j] = hex[rng.Uint32()&15]
		}
		v := &s.vbs[vbucket.Of(rec[:benchKeyLen], benchVBuckets)]
		v.data = append(v.data, rec[:]...)
		v.seqno++
	}
	return s
}

func (s *benchSource) ChannelNames() []string { return []string{"bench"} }

func (s *benchSource) SnapshotChannel(_ string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error {
	var scratch []byte
	var recs []engine.Record
	for i := range s.vbs {
		v := &s.vbs[i]
		v.mu.Lock()
		start := time.Now()
		scratch = append(scratch[:0], v.data...)
		recs = recs[:0]
		for off, seq := 0, uint64(1); off < len(scratch); off, seq = off+benchRecLen, seq+1 {
			recs = append(recs, engine.Record{Key: scratch[off : off+benchKeyLen], Value: scratch[off+benchKeyLen : off+benchRecLen], Seqno: seq})
		}
		pause := time.Since(start)
		seqno := v.seqno
		v.mu.Unlock()
		s.mu.Lock()
		s.pauses = append(s.pauses, pause)
		s.mu.Unlock()
		if err := fn(uint16(i), seqno, recs); err != nil {
			return err
		}
	}
	return nil
}

// pauseP99 returns the 99th percentile and the longest lock hold.
func (s *benchSource) pauseP99() (p99, longest time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := slices.Clone(s.pauses)
	slices.Sort(p)
	if len(p) == 0 {
		return 0, 0
	}
	return p[len(p)*99/100], p[len(p)-1]
}

// countingSink counts what it is given and reads every key byte, without
// storing: the loader's own cost.
type countingSink struct {
	records, bytes atomic.Int64
	check          atomic.Uint64
}

func (s *countingSink) Load(_ string, _ uint16, _ uint64, recs []engine.Record) error {
	var n, sum uint64
	for _, r := range recs {
		n += uint64(len(r.Key) + len(r.Value))
		sum += uint64(r.Key[len(r.Key)-1])
	}
	s.records.Add(int64(len(recs)))
	s.bytes.Add(int64(n))
	s.check.Add(sum)
	return nil
}

func BenchmarkEncode(b *testing.B) {
	src := newBenchSource(100_000)
	b.SetBytes(int64(src.records * benchRecLen))
	for b.Loop() {
		e, err := NewEncoder(io.Discard, Header{Channel: "bench", VBuckets: benchVBuckets})
		if err != nil {
			b.Fatal(err)
		}
		if err := src.SnapshotChannel("bench", e.Add); err != nil {
			b.Fatal(err)
		}
		if _, err := e.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(src.records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkDecode(b *testing.B) {
	src := newBenchSource(100_000)
	var buf bytes.Buffer
	e, err := NewEncoder(&buf, Header{Channel: "bench", VBuckets: benchVBuckets})
	if err != nil {
		b.Fatal(err)
	}
	if err := src.SnapshotChannel("bench", e.Add); err != nil {
		b.Fatal(err)
	}
	if _, err := e.Close(); err != nil {
		b.Fatal(err)
	}
	sink := &countingSink{}
	b.SetBytes(int64(src.records * benchRecLen))
	for b.Loop() {
		if _, err := Decode(bytes.NewReader(buf.Bytes()), "bench", func(vb uint16, seqno uint64, recs []engine.Record) error {
			return sink.Load("bench", vb, seqno, recs)
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(src.records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// benchRecordsEnv opts in to BenchmarkDumpLarge and gives its record count.
const benchRecordsEnv = "SHOAL_DUMP_BENCH_RECORDS"

// BenchmarkDumpLarge writes and loads a dump of $SHOAL_DUMP_BENCH_RECORDS
// records (10 million for the figures) with each codec in a
// directory on disk ($SHOAL_DUMP_BENCH_DIR, else a temporary one), next to
// the disk's own sequential speed measured by dd with O_DIRECT in the same
// directory.
func BenchmarkDumpLarge(b *testing.B) {
	n, err := strconv.Atoi(os.Getenv(benchRecordsEnv))
	if err != nil || n <= 0 {
		b.Skipf("set %s=10000000 to run", benchRecordsEnv)
	}
	dir := os.Getenv("SHOAL_DUMP_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	src := newBenchSource(n)
	for _, codec := range []Codec{CodecZstd, CodecS2} {
		b.Run(codec.String(), func(b *testing.B) { benchDumpLarge(b, src, dir, codec) })
	}
}

func benchDumpLarge(b *testing.B, src *benchSource, dir string, codec Codec) {
	n := src.records
	raw := float64(n * benchRecLen)
	const mb = 1e6
	for i := 0; i < b.N; i++ {
		ddWrite, ddRead := ddSpeeds(b, dir)
		b.Logf("disk (dd, O_DIRECT, 1 GiB): write %.0f MB/s, read %.0f MB/s", ddWrite, ddRead)
		src.mu.Lock()
		src.pauses = src.pauses[:0]
		src.mu.Unlock()
		start, cpu0 := time.Now(), cpuTime()
		sum, err := WriteFile(vfs.Default, dir, Header{Channel: "bench", VBuckets: benchVBuckets, Created: start, Codec: codec}, func(e *Encoder) error {
			return src.SnapshotChannel("bench", e.Add)
		})
		if err != nil {
			b.Fatal(err)
		}
		write, writeCPU := time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds()
		os.Remove(filepath.Join(dir, "bench"+BackupExt))

		sink := &countingSink{}
		start, cpu0 = time.Now(), cpuTime()
		if _, err := Load(context.Background(), LoadConfig{Dir: dir, VBuckets: benchVBuckets, Sink: sink, Logger: (&logBuffer{}).logger()}); err != nil {
			b.Fatal(err)
		}
		load, loadCPU := time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds()
		if sink.records.Load() != int64(n) {
			b.Fatalf("loaded %d records of %d", sink.records.Load(), n)
		}
		file := float64(sum.FileBytes)
		p99, longest := src.pauseP99()
		b.ReportMetric(float64(n)/write, "write-records/s")
		b.ReportMetric(file/mb/write, "write-file-MB/s")
		b.ReportMetric(float64(n)/load, "load-records/s")
		b.ReportMetric(float64(p99.Microseconds()), "pause-p99-µs")
		b.Logf("%s: %d records (%.0f MB raw) -> %.0f MB file (ratio %.2f), GOMAXPROCS %d",
			codec, n, raw/mb, file/mb, raw/file, runtime.GOMAXPROCS(0))
		b.Logf("dump write: %.2f s (%.2f CPU s), %.2f M records/s, %.0f MB/s raw, %.0f MB/s to disk = %.0f%% of the disk's write speed",
			write, writeCPU, float64(n)/write/1e6, raw/mb/write, file/mb/write, 100*file/mb/write/ddWrite)
		b.Logf("dump load:  %.2f s (%.2f CPU s), %.2f M records/s, %.0f MB/s raw, %.0f MB/s of file (verify pass + decode pass; file in page cache)",
			load, loadCPU, float64(n)/load/1e6, raw/mb/load, file/mb/load)
		b.Logf("per-vBucket snapshot pause (copy under the vBucket lock, %d vBuckets, ~%d records each): p99 %v, max %v",
			benchVBuckets, n/benchVBuckets, p99, longest)
	}
}

// ddSpeeds measures the sequential write and read speed (MB/s) of dir's
// disk with dd and O_DIRECT.
func ddSpeeds(b *testing.B, dir string) (write, read float64) {
	write, read, err := diskspeed.WriteRead(dir, 1024)
	if err != nil {
		b.Fatal(err)
	}
	return write, read
}

// cpuTime returns the user plus system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentiles returns the 99th percentile and the largest of d.
func percentiles(d []time.Duration) (p99, longest time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*99/100], d[len(d)-1]
}

// BenchmarkKVSnapshotPause dumps a kv.Store (the node's path) of
// $SHOAL_DUMP_BENCH_RECORDS records in one channel while a writer puts to
// the same channel, and reports what the dump costs writers: the writer's
// Put latency p99 and max during the dump, next to the same writer without
// a dump, and the per-vBucket copy time under the lock (measured from
// outside: the gap between two SnapshotChannel callbacks).
func BenchmarkKVSnapshotPause(b *testing.B) {
	n, err := strconv.Atoi(os.Getenv(benchRecordsEnv))
	if err != nil || n <= 0 {
		b.Skipf("set %s=10000000 to run", benchRecordsEnv)
	}
	store, err := kv.New(kv.Config{VBuckets: benchVBuckets})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	src := newBenchSource(n)
	for i := range src.vbs {
		d := src.vbs[i].data
		for off := 0; off < len(d); off += benchRecLen {
			if _, err := store.Put("bench", d[off:off+benchKeyLen], d[off+benchKeyLen:off+benchRecLen], 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	src = nil // only the store holds the records now
	runtime.GC()

	// writer puts as fast as it can (one core) until stop, and returns
	// the latency of each Put.
	writer := func(stop <-chan struct{}) []time.Duration {
		var lat []time.Duration
		key := []byte("key:000000000000")
		value := bytes.Repeat([]byte("w"), benchValueLen)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return lat
			default:
			}
			for j, x := benchKeyLen-1, i%n; j >= len("key:"); j, x = j-1, x/10 {
				key[j] = byte('0' + x%10)
			}
			t0 := time.Now()
			if _, err := store.Put("bench", key, value, 0); err != nil {
				panic(err)
			}
			lat = append(lat, time.Since(t0))
		}
	}
	during := func(fn func()) []time.Duration {
		stop := make(chan struct{})
		res := make(chan []time.Duration)
		go func() { res <- writer(stop) }()
		fn()
		close(stop)
		return <-res
	}
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		var gaps []time.Duration
		var took time.Duration
		withDump := during(func() {
			start := time.Now()
			last := start
			_, err := WriteFile(vfs.Default, dir, Header{Channel: "bench", VBuckets: benchVBuckets, Created: start}, func(e *Encoder) error {
				return store.SnapshotChannel("bench", func(vb uint16, seqno uint64, recs []engine.Record) error {
					gaps = append(gaps, time.Since(last))
					err := e.Add(vb, seqno, recs)
					last = time.Now()
					return err
				})
			})
			if err != nil {
				b.Fatal(err)
			}
			took = time.Since(start)
		})
		alone := during(func() { time.Sleep(took) })
		dp99, dmax := percentiles(withDump)
		ap99, amax := percentiles(alone)
		gp99, gmax := percentiles(gaps)
		b.ReportMetric(float64(dp99.Microseconds()), "put-p99-during-dump-µs")
		b.ReportMetric(float64(gp99.Microseconds()), "copy-p99-µs")
		b.Logf("%d records, dump %.2f s, GOMAXPROCS %d", n, took.Seconds(), runtime.GOMAXPROCS(0))
		b.Logf("writer Put latency during the dump: p99 %v, max %v (%d puts); without a dump: p99 %v, max %v (%d puts)",
			dp99, dmax, len(withDump), ap99, amax, len(alone))
		b.Logf("per-vBucket copy (gap between SnapshotChannel callbacks, ~%d records each): p99 %v, max %v",
			n/benchVBuckets, gp99, gmax)
	}
}
