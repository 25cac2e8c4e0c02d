package node

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"

	"shoal/client"
	"shoal/internal/testproc"
)

// BenchmarkDurability measures the cost of majority writes against
// none in one run: three in-process nodes on loopback, one replica, 64
// writers of 100-byte values through a routing client; each level runs for
// SHOAL_BENCH_SECONDS (default 3), alternately none, majority, none,
// majority, and reports throughput and latency percentiles. Side by
// side, when redis-server is installed: a Redis primary with one replica
// on loopback, the same 64 writers (go-redis) doing SET, and SET then
// WAIT 1 (Redis's closest analogue of a majority write, which does not
// prevent loss at a failover), in the same alternation.
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
				ops, lat := durabilityRun(b, level, d, func(key, value []byte, level client.Durability) error {
					_, err := c.Put(context.Background(), "bench", key, value, client.WithDurability(level))
					return err
				})
				b.Logf("round %d %-8v %8.0f writes/s  p50 %6dµs  p99 %6dµs  p99.9 %6dµs", round, level, ops,
					lat.ValueAtQuantile(50), lat.ValueAtQuantile(99), lat.ValueAtQuantile(99.9))
				if round == 1 {
					b.ReportMetric(ops, level.String()+"-writes/s")
					b.ReportMetric(float64(lat.ValueAtQuantile(99)), level.String()+"-p99-µs")
				}
			}
		}
		c.Close()
		redisSideBySide(b, d)
	}
}

// BenchmarkLogDurability measures log appends at the three levels: three
// in-process nodes on loopback, one replica, 64 writers of 100-byte
// records (each with a routing key of its own, so that its appends wait
// on one vBucket) through a routing client, each level for
// SHOAL_BENCH_SECONDS (default 3), with the log fsynced every 100 ms (the
// default) and then always. persist-majority waits for the active's Sync
// of its group and for the replica's next fsync. After each level it waits
// until the replicas have caught up and logs how long that took.
//
//	SHOAL_BENCH_SECONDS=3 go test ./internal/node -run '^$' -bench LogDurability -benchtime 1x
func BenchmarkLogDurability(b *testing.B) {
	for range b.N {
		for _, fsync := range []string{"100ms", "always"} {
			nodes, stop := startClusterWith(b, 3, nil, "--replicas", "1", "--log-level", "warn", "--log-fsync", fsync)
			var seeds []string
			for _, nd := range nodes {
				seeds = append(seeds, nd.Addr().String())
			}
			c, err := client.Dial(b.Context(), strings.Join(seeds, ","), client.WithConnections(2))
			if err != nil {
				b.Fatal(err)
			}
			for _, level := range []client.Durability{client.None, client.Majority, client.PersistMajority} {
				ops, lat := durabilityRun(b, level, benchSeconds(), func(key, value []byte, level client.Durability) error {
					return c.LogPut(context.Background(), "bench", 1, value, client.RoutingKey(key[:bytes.IndexByte(key, '-')]), client.LogDurability(level, 0))
				})
				b.Logf("log-fsync %-6s %-16v %8.0f appends/s  p50 %6dµs  p99 %6dµs  p99.9 %6dµs", fsync, level, ops,
					lat.ValueAtQuantile(50), lat.ValueAtQuantile(99), lat.ValueAtQuantile(99.9))
				b.ReportMetric(ops, fsync+"-"+level.String()+"-appends/s")
				// The next level starts with the replicas caught up: how
				// long that takes is the backlog this level left.
				t0 := time.Now()
				for !caughtUp(nodes) && time.Since(t0) < 2*time.Minute {
					time.Sleep(50 * time.Millisecond)
				}
				b.Logf("log-fsync %-6s %-16v replicas caught up %v after the level", fsync, level, time.Since(t0).Round(10*time.Millisecond))
			}
			c.Close()
			for i := range nodes {
				stop(i)
			}
		}
	}
}

// caughtUp reports whether no node's replicas are behind.
func caughtUp(nodes []*Node) bool {
	for _, nd := range nodes {
		if l := nd.Status().Replication.Lag; l != nil && (l.Seqnos > 0 || l.VBuckets > 0) {
			return false
		}
	}
	return true
}

// redisSideBySide runs the Redis rows of BenchmarkDurability.
func redisSideBySide(b *testing.B, d time.Duration) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Log("redis-server not installed: no Redis rows")
		return
	}
	ports := testproc.FreePorts(b, 2)
	dir := b.TempDir() // where a full resync's RDB file goes
	start := func(args ...string) {
		cmd := exec.Command("redis-server", append([]string{"--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--dir", dir, "--repl-diskless-sync", "yes"}, args...)...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	primary, replica := strings.Split(ports[0], ":"), strings.Split(ports[1], ":")
	start("--port", primary[1])
	start("--port", replica[1], "--replicaof", primary[0], primary[1])
	rc := redis.NewClient(&redis.Options{Addr: ports[0], PoolSize: 64})
	defer rc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, err := rc.Do(b.Context(), "WAIT", 1, 100).Int(); err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the Redis replica did not attach")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for round := range 2 {
		for _, wait := range []bool{false, true} {
			ops, lat := redisRun(b, rc, wait, d)
			name := "SET"
			if wait {
				name = "SET+WAIT 1"
			}
			b.Logf("round %d redis %-10s %8.0f writes/s  p50 %6dµs  p99 %6dµs  p99.9 %6dµs", round, name, ops,
				lat.ValueAtQuantile(50), lat.ValueAtQuantile(99), lat.ValueAtQuantile(99.9))
		}
	}
}

func redisRun(b *testing.B, rc *redis.Client, wait bool, d time.Duration) (float64, *hdrhistogram.Histogram) {
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
			ctx := context.Background()
			var k int64
			for i := 0; time.Since(start) < d; i++ {
				key := fmt.Sprintf("w%d-%d", w, i%2000)
				t0 := time.Now()
				if wait {
					// SET and WAIT on one connection, one round trip.
					_, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, key, value, 0)
						p.Do(ctx, "WAIT", 1, 2000)
						return nil
					})
					if err != nil {
						b.Error(err)
						return
					}
				} else if err := rc.Set(ctx, key, value, 0).Err(); err != nil {
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

func durabilityRun(b *testing.B, level client.Durability, d time.Duration, write func(key, value []byte, level client.Durability) error) (float64, *hdrhistogram.Histogram) {
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
				if err := write(key, value, level); err != nil {
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
