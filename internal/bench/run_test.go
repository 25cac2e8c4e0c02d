package bench

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/client"
	"shoal/internal/config"
	"shoal/internal/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseWorkload(t *testing.T) {
	for _, w := range Workloads {
		if got, err := ParseWorkload(string(w)); got != w || err != nil {
			t.Errorf("%s: %v, %v", w, got, err)
		}
	}
	if _, err := ParseWorkload("lpush"); err == nil || !strings.Contains(err.Error(), "get, set, mix") {
		t.Errorf("unknown workload: %v", err)
	}
}

func TestValidate(t *testing.T) {
	o := DefaultOptions()
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"workload", func(o *Options) { o.Workload = "x" }, "unknown workload"},
		{"conns", func(o *Options) { o.Conns = 0 }, "conns 0"},
		{"pipeline", func(o *Options) { o.Pipeline = MaxPipeline + 1 }, "pipeline"},
		{"keys", func(o *Options) { o.Keys = 0 }, "keys 0"},
		{"keys too many", func(o *Options) { o.Keys = MaxKeys + 1 }, "keys"},
		{"value", func(o *Options) { o.ValueSize = -1 }, "value size"},
		{"no end", func(o *Options) { o.Duration = 0 }, "duration or a number of requests"},
		{"requests", func(o *Options) { o.Requests = -1 }, "requests -1"},
		{"batch", func(o *Options) { o.Pipeline, o.ValueSize = 1024, 2<<20 }, "a batch of 1024 values"},
		{"warmup", func(o *Options) { o.Warmup = -time.Second }, "warmup"},
		{"ratio", func(o *Options) { o.GetRatio = 1.5 }, "get ratio"},
		{"range", func(o *Options) { o.RangeOf = 0 }, "range of 0"},
		{"range over keys", func(o *Options) { o.Keys, o.RangeOf = 5, 6 }, "range of 6"},
		{"channel", func(o *Options) { o.Channel = "a b" }, "channel"},
		{"channel long", func(o *Options) { o.Channel = strings.Repeat("a", 250) }, "channel"},
		{"progress", func(o *Options) { o.Progress, o.ProgressEvery = &strings.Builder{}, 0 }, "progress"},
	} {
		o := DefaultOptions()
		c.set(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
	// Load needs no end: it stops after the key space.
	o.Workload, o.Duration = Load, 0
	if err := o.Validate(); err != nil {
		t.Errorf("load: %v", err)
	}
}

func TestFormatKey(t *testing.T) {
	k := make([]byte, keyLen)
	for n, want := range map[int64]string{0: "key:000000000000", 42: "key:000000000042", MaxKeys - 1: "key:999999999999"} {
		formatKey(k, n)
		if string(k) != want {
			t.Errorf("%d: %q", n, k)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := thousands(n); got != want {
			t.Errorf("%d: %q", n, got)
		}
	}
	if got := progressLine("get", "redis://x", 2*time.Second, 300, 1); got != "\rget redis://x: 2s 150 ops/s, 300 requests, 1 errors   " {
		t.Errorf("progress line %q", got)
	}
}

func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Result{OpsPerSec: 1.5, P50Ms: 0.25, P99Ms: 1, P999Ms: 2, Errors: 3})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]float64{"ops_per_sec": 1.5, "p50_ms": 0.25, "p99_ms": 1, "p999_ms": 2, "errors": 3} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (%s)", k, m[k], v, b)
		}
	}
	if _, ok := m["first_error"]; ok {
		t.Errorf("empty first_error is not omitted: %s", b)
	}
}

func quick(w Workload) Options {
	o := DefaultOptions()
	o.Workload, o.Conns, o.Pipeline, o.Keys, o.Requests, o.Warmup, o.ValueSize = w, 3, 4, 50, 600, 0, 10
	return o
}

func TestRunFake(t *testing.T) {
	f := startFakeRedis(t)
	r, _ := NewRedis(f.url())
	ctx := t.Context()

	res, err := Run(ctx, r, quick(Load))
	if err != nil || res.Requests != 50 || res.Errors != 0 || f.keys() != 50 || f.lastValues.Load() != 10 {
		t.Fatalf("load: %+v, %v; server has %d keys", res, err, f.keys())
	}
	if f.connsSeen.Load() != 3 {
		t.Errorf("%d connections, want 3", f.connsSeen.Load())
	}
	if got := f.maxBatch.Load(); got < 2 || got > 4 {
		t.Errorf("batches of up to %d commands, want 2..4", got)
	}
	res, err = Run(ctx, r, quick(Get))
	if err != nil || res.Requests != 600 || res.Misses != 0 || res.OpsPerSec <= 0 || res.P50Ms <= 0 || res.P999Ms < res.P50Ms || res.MaxMs < res.P999Ms {
		t.Errorf("get: %+v, %v", res, err)
	}
	res, err = Run(ctx, r, quick(Push))
	if err != nil || res.Requests != 600 || f.list("bench-queue") != 600 {
		t.Errorf("push: %+v, %v, queue of %d", res, err, f.list("bench-queue"))
	}
	o := quick(Pop)
	o.Requests = 700
	res, err = Run(ctx, r, o)
	if err != nil || res.Requests != 700 || res.Misses != 100 || f.list("bench-queue") != 0 {
		t.Errorf("pop: %+v, %v", res, err)
	}
	res, err = Run(ctx, r, quick(Range))
	if err != nil || res.Requests != 600 || res.Misses != 0 || f.stream("bench-range") != 50 {
		t.Errorf("range: %+v, %v, stream of %d", res, err, f.stream("bench-range"))
	}
	o = quick(Mix)
	o.GetRatio = 0.5
	f.errOn = "GET"
	res, err = Run(ctx, r, o)
	if err != nil || res.Errors < 200 || res.Errors > 400 || !strings.Contains(res.FirstError, "injected") {
		t.Errorf("mix with failing gets: %+v, %v", res, err)
	}
	f.errOn = ""
	o.GetRatio = 0
	res, err = Run(ctx, r, o)
	if err != nil || res.Errors != 0 {
		t.Errorf("mix of sets only: %+v, %v", res, err)
	}
}

func TestRunDurationWarmupProgress(t *testing.T) {
	f := startFakeRedis(t)
	r, _ := NewRedis(f.url())
	o := quick(Set)
	o.Requests, o.Duration, o.Warmup = 0, 300*time.Millisecond, 100*time.Millisecond
	var buf syncBuilder
	o.Progress, o.ProgressEvery = &buf, 50*time.Millisecond
	start := time.Now()
	res, err := Run(t.Context(), r, o)
	took := time.Since(start)
	if err != nil || res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
	if res.Seconds < 0.29 || res.Seconds > 2 || took < 400*time.Millisecond {
		t.Errorf("measured %.3fs of a 0.3s run after 0.1s warmup; the run took %v", res.Seconds, took)
	}
	// Every command is a PING of a connection, a warmup or a measured request.
	if res.WarmupRequests == 0 || f.commands.Load() != 3+res.WarmupRequests+res.Requests {
		t.Errorf("the server got %d commands; 3 PINGs, %d warmup and %d measured requests were counted", f.commands.Load(), res.WarmupRequests, res.Requests)
	}
	out := buf.String()
	if n := strings.Count(out, "\rset redis://"); n < 3 || !strings.HasSuffix(out, "\n") || !strings.Contains(out, "ops/s") {
		t.Errorf("%d progress lines: %q", n, out)
	}
}

func TestRunReconnects(t *testing.T) {
	f := startFakeRedis(t)
	f.dropAfter.Store(100)
	r, _ := NewRedis(f.url())
	o := quick(Set)
	o.Requests = 2000
	res, err := Run(t.Context(), r, o)
	if err != nil || res.Errors == 0 || res.Errors > 4 || res.Requests != 2000 || !strings.Contains(res.FirstError, "connection to redis") {
		t.Errorf("%+v, %v", res, err)
	}
	if f.connsSeen.Load() != 4 {
		t.Errorf("%d connections; want 3 and one reconnection", f.connsSeen.Load())
	}
}

func TestRunCutsHungRequests(t *testing.T) {
	defer func(g time.Duration) { stopGrace = g }(stopGrace)
	stopGrace = 100 * time.Millisecond
	f := startFakeRedis(t)
	f.mute.Store(true)
	r, _ := NewRedis(f.url())
	o := quick(Set)
	o.Requests, o.Duration = 0, 100*time.Millisecond
	start := time.Now()
	res, err := Run(t.Context(), r, o)
	if err == nil || !strings.Contains(err.Error(), "every request failed") || res.Errors != 12 || time.Since(start) > 5*time.Second {
		t.Errorf("%+v, %v after %v", res, err, time.Since(start))
	}
}

func TestRunServerGone(t *testing.T) {
	f := startFakeRedis(t)
	r, _ := NewRedis(f.url())
	f.close()
	if _, err := Run(t.Context(), r, quick(Set)); err == nil || !strings.Contains(err.Error(), "cannot open 3 connections") {
		t.Errorf("no server: %v", err)
	}
}

func TestRunCancel(t *testing.T) {
	f := startFakeRedis(t)
	r, _ := NewRedis(f.url())
	o := quick(Set)
	o.Requests, o.Duration = 0, time.Hour
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, r, o)
	if !errors.Is(err, context.DeadlineExceeded) || res.Requests == 0 {
		t.Errorf("%+v, %v", res, err)
	}
}

// startNode runs a node in this process and returns its data address.
func startNode(t testing.TB) string {
	t.Helper()
	cfg := config.Default()
	dir := t.TempDir()
	cfg.Listen, cfg.HTTP, cfg.Data, cfg.LogDir = "127.0.0.1:0", "off", dir, filepath.Join(dir, "log")
	cfg.LogLevel, cfg.StatsInterval, cfg.Console, cfg.VBuckets = "error", 0, false, 64
	n, err := node.New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	return n.Addr().String()
}

func TestShoal(t *testing.T) {
	addr := startNode(t)
	var dials int
	var mu sync.Mutex
	s := NewShoal(addr, func(ctx context.Context) (*client.Client, error) {
		mu.Lock()
		dials++
		mu.Unlock()
		return client.Dial(ctx, addr, client.WithClientName("bench-test"))
	})
	if s.String() != "shoal "+addr {
		t.Errorf("name %q", s)
	}
	ctx := t.Context()
	res, err := Run(ctx, s, quick(Load))
	// One dial per connection, and one for each reading of the node's
	// counters (when the measured time starts and when it ends).
	if err != nil || res.Requests != 50 || res.Errors != 0 || dials != 3+2 {
		t.Fatalf("load: %+v, %v, %d dials", res, err, dials)
	}
	if len(res.Nodes) != 1 || res.Nodes[0].Addr != addr || res.Nodes[0].Requests < 50 || res.Nodes[0].CPUMicrosPerRequest <= 0 {
		t.Errorf("nodes %+v, want the node with at least the run's 50 requests and its CPU time", res.Nodes)
	}
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sz, err := c.ChannelSize(ctx, "bench-kv"); err != nil || sz.Records != 50 {
		t.Errorf("after load: %+v, %v", sz, err)
	}
	checkKV(t, s, c)
	// Queue and log: pushes then pops (some miss once the queue is empty),
	// appends then ranges over what was appended.
	for _, w := range []Workload{Push, Pop, Append, Range} {
		res, err := Run(ctx, s, quick(w))
		if err != nil || res.Errors != 0 || res.Requests == 0 {
			t.Errorf("%s: %+v, %v", w, res, err)
		}
	}
	if q, err := c.Queues(ctx); err != nil || len(q) == 0 {
		t.Errorf("no queue after the push workload: %+v, %v", q, err)
	}
}

// checkKV checks, after the load workload, a key it stored (through c),
// then runs the kv workloads against target: every get hits, and a get of
// a channel with nothing in it misses.
func checkKV(t *testing.T, target Target, c *client.Client) {
	t.Helper()
	ctx := t.Context()
	if v, err := c.Get(ctx, "bench-kv", []byte("key:000000000049")); err != nil || string(v) != "xxxxxxxxxx" {
		t.Errorf("key 49: %q, %v", v, err)
	}
	for _, w := range []Workload{Get, Set, Mix} {
		res, err := Run(ctx, target, quick(w))
		if err != nil || res.Requests != 600 || res.Errors != 0 || res.Misses != 0 || res.P50Ms <= 0 {
			t.Errorf("%s: %+v, %v", w, res, err)
		}
	}
	o := quick(Get)
	o.Channel = "empty"
	if res, err := Run(ctx, target, o); err != nil || res.Misses != 600 {
		t.Errorf("get of missing keys: %+v, %v", res, err)
	}
}

// syncBuilder is a strings.Builder safe for concurrent use.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFrames runs the workloads of the frames driver against a node and
// checks what they stored; a range is refused as unsupported.
func TestFrames(t *testing.T) {
	addr := startNode(t)
	f := NewFrames(addr, func(ctx context.Context) (*client.Client, error) { return client.Dial(ctx, addr) })
	if f.String() != "shoal "+addr+" (frames)" {
		t.Errorf("name %q", f)
	}
	ctx := t.Context()
	if res, err := Run(ctx, f, quick(Load)); err != nil || res.Requests != 50 || res.Errors != 0 || len(res.Nodes) != 1 {
		t.Fatalf("load: %+v, %v", res, err)
	}
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkKV(t, f, c)
	o := quick(Push)
	o.Cleanup = false
	if res, err := Run(ctx, f, o); err != nil || res.Errors != 0 || res.Requests == 0 {
		t.Errorf("push: %+v, %v", res, err)
	}
	if q, err := c.Queues(ctx); err != nil || len(q) != 1 || q[0].Records == 0 {
		t.Errorf("after the pushes: %+v, %v", q, err)
	}
	for _, w := range []Workload{Pop, Append} {
		if res, err := Run(ctx, f, quick(w)); err != nil || res.Errors != 0 || res.Requests == 0 {
			t.Errorf("%s: %+v, %v", w, res, err)
		}
	}
	if _, err := Run(ctx, f, quick(Range)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("range: %v, want ErrUnsupported", err)
	}
}
