package client_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/diskspeed"
)

// logBenchWriters is the number of concurrent appenders.
const logBenchWriters = 50

// BenchmarkLogAppend appends 100-byte values through the client to an
// in-process node over loopback TCP, from 50 goroutines sharing one
// client, in both fsync modes: one record per LogPut, and 100 per
// LogPutBatch. MB/s counts value bytes; disk-MB/s what reaches the segment
// files (frames of 126 bytes); cpu-µs/record the CPU time of client and
// node together. Compare with BenchmarkDiskDD, run in the same directory.
func BenchmarkLogAppend(b *testing.B) {
	for _, mode := range []struct {
		name  string
		fsync time.Duration
	}{{"fsync=always", 0}, {"fsync=100ms", 100 * time.Millisecond}} {
		for _, per := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/records-per-request=%d", mode.name, per), func(b *testing.B) {
				benchLogAppend(b, mode.fsync, per)
			})
		}
	}
}

func benchLogAppend(b *testing.B, fsync time.Duration, per int) {
	n := startLogNode(b, fsync)
	c := dial(b, n.addr)
	ctx := b.Context()
	value := make([]byte, 100)
	const t0 = 1_700_000_000
	var next atomic.Int64
	b.SetBytes(int64(len(value)))
	cpu0 := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range logBenchWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs := make([]client.LogRecord, per)
			for i := next.Add(int64(per)); i-int64(per) < int64(b.N); i = next.Add(int64(per)) {
				ts := uint64(t0 + i/100_000)
				var err error
				if per == 1 {
					err = c.LogPut(ctx, "bench", ts, value)
				} else {
					k := min(per, b.N-int(i)+per)
					for j := range recs[:k] {
						recs[j] = client.LogRecord{Timestamp: ts, Value: value}
					}
					_, err = c.LogPutBatch(ctx, "bench", recs[:k])
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/sec, "records/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/record")
	b.ReportMetric(float64(b.N)*126/sec/1e6, "disk-MB/s")
	if st := n.log.Stats(); st.Fsyncs > 0 {
		b.ReportMetric(float64(b.N)/float64(st.Fsyncs), "records/fsync")
	}
}

// BenchmarkLogRange reads a channel of 200,000 records of 100 bytes whole
// through the client (LogAll), over loopback TCP.
func BenchmarkLogRange(b *testing.B) {
	n := startLogNode(b, 100*time.Millisecond)
	c := dial(b, n.addr)
	const total = 200_000
	recs := make([]client.LogRecord, 10_000)
	for i := 0; i < total; i += len(recs) {
		for j := range recs {
			recs[j] = client.LogRecord{Timestamp: uint64((i + j) / 10), Value: make([]byte, 100)}
		}
		if _, err := c.LogPutBatch(b.Context(), "bench", recs); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(total * 100)
	b.ResetTimer()
	for range b.N {
		got := 0
		for _, err := range c.LogAll(b.Context(), "bench").All() {
			if err != nil {
				b.Fatal(err)
			}
			got++
		}
		if got != total {
			b.Fatalf("read %d records", got)
		}
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "records/s")
}

// cpuTime is the process's user and system CPU time so far (client and
// node together): on a shared machine, CPU per record is steadier than
// throughput.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDiskDD measures the disk's own sequential write speed, for
// comparison with BenchmarkLogAppend: dd if=/dev/zero bs=1M count=512 oflag=direct in a
// temporary directory like the benchmark's data. dd-MB/s is the figure.
func BenchmarkDiskDD(b *testing.B) {
	dir := b.TempDir()
	var sum float64
	for range b.N {
		mbps, err := diskspeed.Write(dir, 512)
		if errors.Is(err, diskspeed.ErrNoDD) {
			b.Skip("no dd")
		}
		if err != nil {
			b.Fatal(err)
		}
		sum += mbps
	}
	b.ReportMetric(sum/float64(b.N), "dd-MB/s")
}
