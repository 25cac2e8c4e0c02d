package queue

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// benchPushPop has 50 goroutines each push a 100-byte value to one hot
// channel and pop one, like redis-benchmark -c 50 -t lpush,rpop.
func benchPushPop(b *testing.B, cfg Config) {
	cfg.Logger = quiet
	s := mustOpen(b, cfg)
	defer s.Close()
	value := make([]byte, 100)
	ch := []string{"bench"}
	b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var buf []byte
		for pb.Next() {
			if err := s.Push(context.Background(), ch, value, nil); err != nil {
				b.Error(err)
				return
			}
			var err error
			if buf, err = s.Pop("bench", buf[:0]); err != nil && !errors.Is(err, ErrEmpty) {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(2*b.N)/time.Since(start).Seconds(), "ops/s")
}

func BenchmarkPushPopMemory(b *testing.B) {
	benchPushPop(b, Config{Dir: b.TempDir(), IndexInterval: -1})
}

func BenchmarkPushPopJournalInterval(b *testing.B) {
	benchPushPop(b, Config{Dir: b.TempDir(), Durability: DurabilityJournal, FsyncInterval: 10 * time.Millisecond})
}

func BenchmarkPushPopJournalAlways(b *testing.B) {
	benchPushPop(b, Config{Dir: b.TempDir(), Durability: DurabilityJournal})
}

// benchConsume drains b.N queued 100-byte records through a consumer in
// batches of 100 000 bytes (swarm's Consume batch size). Records are queued
// 200 000 at a time with the timer stopped.
func benchConsume(b *testing.B, ringSize int64) {
	s := mustOpen(b, Config{Dir: b.TempDir(), RingSize: ringSize, IndexInterval: -1, Logger: quiet})
	defer s.Close()
	c, err := s.Subscribe("bench", "")
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	var buf []byte
	var took time.Duration
	for left := b.N; left > 0; {
		chunk := min(left, 200_000)
		left -= chunk
		b.StopTimer()
		for range chunk {
			if err := s.Push(context.Background(), []string{"bench"}, value, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		for got := 0; got < chunk; {
			var n int
			if buf, n, err = c.Next(buf[:0], 100_000); err != nil {
				b.Fatal(err)
			}
			got += n
		}
		took += time.Since(start)
	}
	b.ReportMetric(float64(b.N)/took.Seconds(), "records/s")
}

// BenchmarkConsume reads from the memory ring.
func BenchmarkConsume(b *testing.B) { benchConsume(b, DefaultRingSize) }

// BenchmarkConsumeOverflow reads almost everything from the disk overflow
// (a 1 MiB ring).
func BenchmarkConsumeOverflow(b *testing.B) { benchConsume(b, 1<<20) }

// benchPush pushes b.N 100-byte records to one channel from one goroutine,
// nothing popping them.
func benchPush(b *testing.B, ringSize int64) {
	s := mustOpen(b, Config{Dir: b.TempDir(), RingSize: ringSize, IndexInterval: -1, Logger: quiet})
	defer s.Close()
	value := make([]byte, 100)
	ch := []string{"bench"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.Push(context.Background(), ch, value, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// BenchmarkPushBigRing pushes into a 4 GiB ring growing from empty (b.N
// records: 2 million are about 230 MB).
func BenchmarkPushBigRing(b *testing.B) { benchPush(b, 4<<30) }

// BenchmarkPushOverflow pushes into a full 64 KiB ring: every record goes
// to the disk overflow.
func BenchmarkPushOverflow(b *testing.B) { benchPush(b, 64<<10) }

// BenchmarkPushBatchOverflow is BenchmarkPushOverflow in batches of 16
// pushes (PushBatch, as a server pushes a pipelined read batch).
func BenchmarkPushBatchOverflow(b *testing.B) {
	s := mustOpen(b, Config{Dir: b.TempDir(), RingSize: 64 << 10, IndexInterval: -1, Logger: quiet})
	defer s.Close()
	batch := make([]BatchPush, 16)
	for i := range batch {
		batch[i] = BatchPush{Channels: []string{"bench"}, Value: make([]byte, 100), VBucket: -1}
	}
	var errs []error
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += len(batch) {
		errs = s.PushBatch(context.Background(), batch[:min(len(batch), b.N-n)], errs)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
