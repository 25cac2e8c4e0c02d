package client_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/queue"
	"shoal/internal/server"
)

// benchNode returns the address of the node to measure: an in-process
// node with qcfg, or the node at $SHOAL_BENCH_ADDR (a real shoald started
// with the durability the sub-benchmark names), and a channel name of its
// own, removed at the end.
func benchNode(b *testing.B, qcfg queue.Config) (addr, channel string) {
	channel = fmt.Sprintf("bench%d", time.Now().UnixNano())
	if addr = os.Getenv("SHOAL_BENCH_ADDR"); addr == "" {
		qcfg.Dir = b.TempDir()
		return startNodeIn(b, server.Config{}, "", qcfg).addr, channel
	}
	b.Cleanup(func() {
		if c, err := client.Dial(context.Background(), addr); err == nil {
			c.RemoveChannel(context.Background(), channel)
			c.Close()
		}
	})
	return addr, channel
}

// BenchmarkQueue measures Push and Pop through the client over loopback
// TCP, as redis-benchmark does LPUSH and RPOP: 50 clients (one connection
// each) on one hot channel, 100-byte values, each client with 1 or 16
// requests in flight (pipeline). The node is in-process unless
// $SHOAL_BENCH_ADDR names one (then run only the sub-benchmarks of its
// durability mode).
func BenchmarkQueue(b *testing.B) {
	for _, d := range []queue.Durability{queue.DurabilityMemory, queue.DurabilityJournal} {
		for _, op := range []string{"push", "pop"} {
			for _, p := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/%s/c50/P%d", d, op, p), func(b *testing.B) {
					benchQueue(b, d, op, 50, p)
				})
			}
		}
	}
}

func benchQueue(b *testing.B, d queue.Durability, op string, clients, pipeline int) {
	addr, channel := benchNode(b, queue.Config{Durability: d})
	ctx := context.Background()
	cs := make([]*client.Client, clients)
	for i := range cs {
		cs[i] = dial(b, addr)
	}
	val := make([]byte, 100)
	if op == "pop" {
		fillQueue(b, cs[0], channel, b.N, val)
	}
	var done atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for _, c := range cs {
		for range pipeline {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done.Add(1) <= int64(b.N) {
					var err error
					if op == "push" {
						err = c.Push(ctx, []string{channel}, val)
					} else {
						_, err = c.Pop(ctx, channel)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// fillQueue pushes n values with a Producer.
func fillQueue(b *testing.B, c *client.Client, channel string, n int, val []byte) {
	p, err := c.Produce(context.Background(), []string{channel})
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		if err := p.Send(val); err != nil {
			b.Fatal(err)
		}
	}
	if stored, err := p.Close(); err != nil || stored != uint64(n) {
		b.Fatalf("fill: %d %v", stored, err)
	}
}

// BenchmarkConsume measures how fast one Consume stream drains a backlog
// of 100-byte records (in-process: memory mode, the default 64 MiB ring;
// 1 MiB window).
func BenchmarkConsume(b *testing.B) {
	addr, channel := benchNode(b, queue.Config{})
	c := dial(b, addr)
	fillQueue(b, c, channel, b.N, make([]byte, 100))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	got := 0
	for _, err := range c.Consume(ctx, channel, "").All() {
		if err != nil {
			b.Fatal(err)
		}
		if got++; got == b.N {
			break
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkProduce measures a Producer's pushes (100-byte values).
func BenchmarkProduce(b *testing.B) {
	addr, channel := benchNode(b, queue.Config{})
	c := dial(b, addr)
	b.ResetTimer()
	fillQueue(b, c, channel, b.N, make([]byte, 100))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
