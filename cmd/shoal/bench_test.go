package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/client"
	"shoal/internal/config"
	"shoal/internal/node"
)

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" { // runShoal: this process is the shoal command
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// startNode runs a node in this process and returns its data address
// once it has bootstrapped its cluster of one (before, it refuses to
// create channels).
func startNode(t *testing.T) string {
	t.Helper()
	return startNodeWith(t, nil)
}

// startNodeWith is startNode with the configuration changed by edit.
func startNodeWith(t *testing.T, edit func(*config.Config)) string {
	t.Helper()
	return startNodeN(t, edit).Addr().String()
}

// startNodeN is startNodeWith returning the node.
func startNodeN(t *testing.T, edit func(*config.Config)) *node.Node {
	t.Helper()
	cfg := config.Default()
	dir := t.TempDir()
	cfg.Listen, cfg.HTTP, cfg.Data, cfg.LogDir = "127.0.0.1:0", "off", dir, filepath.Join(dir, "log")
	cfg.LogLevel, cfg.StatsInterval, cfg.Console = "error", 0, false
	if edit != nil {
		edit(&cfg)
	}
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
	waitCluster(t, n.Addr().String())
	return n
}

// waitCluster waits until the node at addr is in a cluster.
func waitCluster(t *testing.T, addr string) {
	t.Helper()
	c, err := client.Dial(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		ci, err := c.Cluster(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if ci.Revision != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is in no cluster after 10s: %+v", addr, ci.Join)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runBench runs `shoal --addr addr bench args...`.
func runBench(t *testing.T, addr string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	g := &globals{addr: addr, timeout: 5 * time.Second}
	cmd := benchCommand(g)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

func TestBenchShoal(t *testing.T) {
	addr := startNode(t)
	out, _, err := runBench(t, addr, "--workload", "load", "--keys", "200", "--conns", "2", "--pipeline", "8", "--json", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	for k, want := range map[string]any{"requests": 200.0, "errors": 0.0, "workload": "load", "target": "shoal " + addr, "conns": 2.0, "pipeline": 8.0} {
		if res[k] != want {
			t.Errorf("%s = %v, want %v", k, res[k], want)
		}
	}
	for _, k := range []string{"ops_per_sec", "p50_ms", "p99_ms", "p999_ms"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v", k, res[k])
		}
	}

	out, stderr, err := runBench(t, addr, "--workload", "get", "--keys", "200", "--conns", "3", "--pipeline", "2", "--duration", "300ms", "--warmup", "50ms")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"target    shoal " + addr, "workload  get, 3 conns x pipeline 2, 200 keys, 100-byte values", ", 0 errors, 0 misses", "ops/s", "p99.9"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in %q", want, out)
		}
	}
	if !strings.Contains(stderr, "\rget shoal "+addr) {
		t.Errorf("no progress line on stderr: %q", stderr)
	}

	out, _, err = runBench(t, addr, "--workload", "push", "--requests", "10", "--quiet", "--json")
	if err != nil || !strings.Contains(out, `"errors":0`) {
		t.Errorf("push: %v %s", err, out)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "1s", "--requests", "5"}, "not both"},
		{[]string{"--workload", "lpush"}, "unknown workload"},
		{[]string{"--conns", "0"}, "conns 0"},
		{[]string{"--target", "memcached://x"}, "want shoal or redis://"},
		{[]string{"--target", "redis://:pw@127.0.0.1:1"}, "passwords"},
		{[]string{"extra"}, "unknown command"},
	} {
		_, _, err := runBench(t, "127.0.0.1:1", c.args...)
		var ue usageError
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.args[0] != "extra" && !errors.As(err, &ue)) {
			t.Errorf("%v: %v; want a usage error with %q", c.args, err, c.want)
		}
	}
}

// TestBenchWarningsAndCleanup: a get run on an empty key space warns on
// stderr and in --json; the queue workloads remove their bench-* channel
// unless --cleanup=false; an unreachable target is one error, not one per
// connection.
func TestBenchWarningsAndCleanup(t *testing.T) {
	addr := startNode(t)
	out, stderr, err := runBench(t, addr, "--workload", "get", "--keys", "100", "--conns", "2", "--requests", "50", "--warmup", "0", "--quiet", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "shoal: warning: 100% of the gets missed") || !strings.Contains(stderr, "--workload load --keys 100") {
		t.Errorf("get on an empty key space: stderr %q", stderr)
	}
	var res struct {
		Misses   int64    `json:"misses"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Misses != 50 || len(res.Warnings) != 1 {
		t.Errorf("get --json: %+v %v", res, err)
	}

	c := dialT(t, addr)
	if _, _, err := runBench(t, addr, "--workload", "push", "--requests", "20", "--warmup", "0", "--quiet"); err != nil {
		t.Fatal(err)
	}
	if chs, _ := c.Channels(t.Context()); len(chs) != 0 {
		t.Errorf("channels after a push run: %+v, want none (cleanup)", chs)
	}
	if _, _, err := runBench(t, addr, "--workload", "push", "--requests", "20", "--warmup", "0", "--quiet", "--cleanup=false"); err != nil {
		t.Fatal(err)
	}
	if sz, err := c.ChannelSize(t.Context(), "bench-queue"); err != nil || sz.Records != 20 {
		t.Errorf("bench-queue after a push run with --cleanup=false: %+v %v", sz, err)
	}
	if _, stderr, err := runBench(t, addr, "--workload", "pop", "--requests", "30", "--warmup", "0", "--quiet"); err != nil || !strings.Contains(stderr, "of the pops found the queue empty") {
		t.Errorf("pop run past the end of the queue: %v, stderr %q", err, stderr)
	}

	down := closedAddr(t)
	_, _, err = runBench(t, addr, "--target", "redis://"+down, "--conns", "50", "--requests", "10", "--quiet")
	if err == nil || !strings.Contains(err.Error(), "cannot open 50 connections to redis://"+down+" (50 failed), the first: ") || strings.Count(err.Error(), "connection refused") != 1 {
		t.Errorf("unreachable redis: %v", err)
	}
}
