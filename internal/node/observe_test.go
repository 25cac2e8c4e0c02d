package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"shoal/client"
)

// httpAuthGet fetches a path of nd's HTTP port, with basic auth when user is
// set, and returns the status code and body.
func httpAuthGet(t *testing.T, nd *Node, path, user, pass string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+nd.HTTPAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// startBare starts a node with flags args and no client (startNode's
// client does not authenticate); it is stopped at the end of the test.
func startBare(t *testing.T, args ...string) *Node {
	t.Helper()
	cfg, err := newConfig(t.TempDir(), args...)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- nd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return nd
}

// waitReady waits until nd's /readyz would answer ready.
func waitReady(t *testing.T, nd *Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !nd.nodeReadiness().Ready {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10s: %v", nd.nodeReadiness().Missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHTTPAuthAndPprof: without flags every page is open and pprof is not
// served; with --http-auth the console, /status and pprof need a
// credential of the credentials file while /metrics, /healthz and /readyz
// stay open; with --http-auth=all every page needs one.
func TestHTTPAuthAndPprof(t *testing.T) {
	admin, peer := "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	creds := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(creds, []byte("admin:"+admin+"\nnode:"+peer+"\n"), 0o600)
	const closed, open = true, false
	pages := []struct {
		path   string
		closed bool // behind --http-auth=on
		want   string
	}{
		{"/", closed, "<title>shoal console</title>"},
		{"/console/console.js", closed, "function refresh()"},
		{"/status", closed, `"node_id"`},
		{"/debug/pprof/", closed, "goroutine"},
		{"/metrics", open, "go_goroutines"},
		{"/healthz", open, "ok"},
		{"/readyz", open, "ready"},
	}

	plain := startNode(t, t.TempDir(), nil)
	waitReady(t, plain.n)
	for _, p := range pages {
		code, body := httpAuthGet(t, plain.n, p.path, "", "")
		if p.path == "/debug/pprof/" {
			if code != http.StatusNotFound {
				t.Errorf("without --pprof %s answers %d", p.path, code)
			}
			continue
		}
		if code != http.StatusOK || !strings.Contains(body, p.want) {
			t.Errorf("without --http-auth %s answers %d: %.200s", p.path, code, body)
		}
	}

	for _, mode := range []string{"--http-auth", "--http-auth=all"} {
		nd := startBare(t, "--credentials", creds, "--pprof", mode)
		waitReady(t, nd)
		for _, p := range pages {
			needs := p.closed || mode == "--http-auth=all"
			code, body := httpAuthGet(t, nd, p.path, "", "")
			if needs {
				if code != http.StatusUnauthorized || !strings.Contains(body, "needs a credential") {
					t.Errorf("%s: %s without a credential answers %d: %.200s", mode, p.path, code, body)
				}
				if code, _ := httpAuthGet(t, nd, p.path, "admin", peer); code != http.StatusUnauthorized {
					t.Errorf("%s: %s with a wrong secret answers %d", mode, p.path, code)
				}
				if code, _ := httpAuthGet(t, nd, p.path, "nobody", admin); code != http.StatusUnauthorized {
					t.Errorf("%s: %s with an unknown name answers %d", mode, p.path, code)
				}
			} else if code != http.StatusOK || !strings.Contains(body, p.want) {
				t.Errorf("%s: %s without a credential answers %d: %.200s", mode, p.path, code, body)
			}
			for _, u := range [][2]string{{"admin", admin}, {"node", peer}} {
				if code, body := httpAuthGet(t, nd, p.path, u[0], u[1]); code != http.StatusOK || !strings.Contains(body, p.want) {
					t.Errorf("%s: %s as %s answers %d: %.200s", mode, p.path, u[0], code, body)
				}
			}
		}
	}
}

// TestMetricsFollowPrometheusConventions scrapes /metrics after some
// traffic: promlint finds no problem, latencies are histograms with
// cumulative buckets, the process and Go figures are the standard ones,
// and kv hits, misses and errors by status are counted.
func TestMetricsFollowPrometheusConventions(t *testing.T) {
	nd := startNode(t, t.TempDir(), nil, "--log-fsync", "always")
	ctx := context.Background()
	c := nd.c
	if _, err := c.Put(ctx, "users", []byte("alice"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.Get(ctx, "users", []byte("alice")); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := c.Get(ctx, "users", []byte("bob")); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("get of a missing key: %v", err)
		}
	}
	if err := c.Push(ctx, []string{"jobs"}, []byte("j1")); err != nil {
		t.Fatal(err)
	}
	if err := c.LogPut(ctx, "events", uint64(time.Now().UnixNano()), []byte("e1")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DumpNow(ctx, nil); err != nil {
		t.Fatal(err)
	}
	code, body := httpAuthGet(t, nd.n, "/metrics", "", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics answers %d", code)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{
		"# TYPE shoal_request_duration_seconds histogram",
		`shoal_request_duration_seconds_bucket{request="Get",le="+Inf"} 5`,
		`shoal_request_duration_seconds_count{request="Put"} 1`,
		"# TYPE shoal_log_fsync_duration_seconds histogram",
		"# TYPE shoal_dump_duration_seconds histogram",
		"shoal_dump_duration_seconds_count 1",
		"# TYPE shoal_cluster_commit_duration_seconds histogram",
		"# TYPE shoal_failover_decision_duration_seconds histogram",
		"shoal_kv_hits_total 3",
		"shoal_kv_misses_total 2",
		`shoal_request_errors_total{request="Get",status="not_found"} 2`,
		`shoal_stored_records{kind="kv"} 1`, `shoal_stored_bytes{kind="kv"} 6`,
		"shoal_connections_ratio ",
		`shoal_queue_fullness_ratio{channel="jobs",subscriber=""} `,
		"process_cpu_seconds_total ", "process_resident_memory_bytes ", "go_goroutines ", "go_memstats_heap_inuse_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	for _, gone := range []*regexp.Regexp{regexp.MustCompile(`(?m)^shoal_(process_|goroutines|go_|uptime)`), regexp.MustCompile(`(?m)^shoal_\w*(_percent|by_latency)`), regexp.MustCompile(`le="\d+[µm]s"`)} {
		if gone.MatchString(body) {
			t.Errorf("/metrics still has %q", gone)
		}
	}
	// Buckets are cumulative: never fewer in a bucket than in the one before.
	bucket := regexp.MustCompile(`(?m)^shoal_request_duration_seconds_bucket\{request="Get",le="([^"]+)"\} (\d+)$`)
	prev := -1
	ms := bucket.FindAllStringSubmatch(body, -1)
	if len(ms) < 10 {
		t.Fatalf("Get has %d buckets", len(ms))
	}
	for _, m := range ms {
		var n int
		json.Unmarshal([]byte(m[2]), &n)
		if n < prev {
			t.Errorf("bucket le=%s has %d, the one before %d", m[1], n, prev)
		}
		prev = n
	}
}
