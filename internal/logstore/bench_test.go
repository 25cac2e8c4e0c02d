package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shoal/internal/diskspeed"
)

// benchWriters is the number of concurrent appenders.
const benchWriters = 50

// BenchmarkAppend appends 100-byte values from 50 goroutines in both fsync
// modes, one record per Append (perRecord) and 100 per Append (batched,
// as PutBatch does). MB/s counts value bytes; disk-MB/s counts what
// reaches the segment files (frames of 126 bytes).
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []struct {
		name  string
		fsync time.Duration
	}{{"fsync=always", 0}, {"fsync=100ms", DefaultFsyncInterval}} {
		for _, per := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/records-per-append=%d", mode.name, per), func(b *testing.B) {
				benchAppend(b, mode.fsync, per)
			})
		}
	}
}

func benchAppend(b *testing.B, fsync time.Duration, per int) {
	s, err := Open(Config{Dir: b.TempDir(), Fsync: fsync, MaintainEvery: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := make([]byte, 100)
	const t0 = 1_700_000_000
	var next atomic.Int64
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	var wg sync.WaitGroup
	for range benchWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs := make([]Rec, per)
			for n := next.Add(int64(per)); n-int64(per) < int64(b.N); n = next.Add(int64(per)) {
				k := min(per, b.N-int(n)+per)
				for i := range recs[:k] {
					recs[i] = Rec{Timestamp: t0 + uint64(n/100_000), Value: value}
				}
				if err := s.Append(context.Background(), "bench", recs[:k], nil); err != nil {
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
	b.ReportMetric(float64(b.N)*126/sec/1e6, "disk-MB/s")
	if st := s.Stats(); st.Fsyncs > 0 {
		b.ReportMetric(float64(b.N)/float64(st.Fsyncs), "records/fsync")
	}
}

// BenchmarkRange reads a channel of 200,000 records of 100 bytes, whole,
// from a segment in timestamp order and from one whose records arrived
// slightly out of order (the index-and-sort path).
func BenchmarkRange(b *testing.B) {
	for _, shuffled := range []bool{false, true} {
		b.Run(fmt.Sprintf("out-of-order=%v", shuffled), func(b *testing.B) {
			s, err := Open(Config{Dir: b.TempDir(), Fsync: time.Hour, MaintainEvery: -1, SegmentSpan: 24 * time.Hour,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const n = 200_000
			value := make([]byte, 100)
			var recs []Rec
			for i := range n {
				ts := uint64(i / 10)
				if shuffled && i%3 == 0 {
					ts += 5
				}
				recs = append(recs, Rec{Timestamp: ts, Value: value})
				if len(recs) == 10_000 {
					if err := s.Append(context.Background(), "bench", recs, nil); err != nil {
						b.Fatal(err)
					}
					recs = recs[:0]
				}
			}
			b.SetBytes(n * int64(len(value)))
			b.ResetTimer()
			for range b.N {
				it, err := s.Range("bench", 0, 1<<40, Filter{}, Position{})
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				for {
					batch, err := it.Next(DefaultBatchBytes)
					if err != nil {
						b.Fatal(err)
					}
					if batch == nil {
						break
					}
					got += len(batch)
				}
				it.Close()
				if got != n {
					b.Fatalf("read %d records", got)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkDiskDD measures the disk's own sequential write speed, for
// comparison with BenchmarkAppend: dd if=/dev/zero bs=1M count=512 oflag=direct in a
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
