package node

import (
	"bytes"
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
	"shoal/internal/discovery"
)

// TestConsoleClusterSection renders the console page of a cluster
// member, of a standby and of a node that waits for its cluster.
func TestConsoleClusterSection(t *testing.T) {
	since := time.Now().Add(-3*time.Minute - 12*time.Second)
	st := Status{NodeID: "n1", Cluster: &ClusterStatus{
		ClusterID: "c0ffee", Self: "n1", Revision: 42, Replicas: 1, VBuckets: 64, Leader: "n2", LeaderAddr: "10.0.0.2:7400",
		RaftState: "follower", Voters: []string{"n1", "n2"}, WantVoters: 3, LeaderChanges: 4, Join: JoinStatus{Phase: "member"},
		Nodes: []NodeStatus{
			{ID: "n1", Addr: "10.0.0.1:7400", HTTP: "10.0.0.1:7480", State: "active", Voter: true, Active: 32, Replica: 31, Zone: "z1", Since: since},
			{ID: "n2", Addr: "10.0.0.2:7400", State: "active", Voter: true, Leader: true, Active: 31, Replica: 32, Since: since},
			{ID: "<n3>", Addr: "10.0.0.3:7400", State: "joining", Since: since},
		},
	}}
	page := render(t, st)
	for _, want := range []string{
		"<h2>Cluster</h2>", "cluster c0ffee", "map revision 42", "leader n2 at 10.0.0.2:7400", "this node follower, 2 of 3 voters", "4 leader changes",
		`<td><a href="http://10.0.0.1:7480/">n1</a> (this node)</td><td>10.0.0.1:7400</td><td>active</td><td>yes</td><td>no</td><td class="n">32</td><td class="n">31</td><td>z1</td><td>3m12s</td>`,
		`<td>n2</td><td>10.0.0.2:7400</td><td>active</td><td>yes</td><td>yes</td><td class="n">31</td><td class="n">32</td><td>-</td>`,
		`<td>&lt;n3&gt;</td><td>10.0.0.3:7400</td><td>joining</td><td>no</td><td>no</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("no %q in the page:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<n3>") {
		t.Error("a node id is not escaped")
	}

	st.Discovery = &discovery.Status{Backend: "file:/etc/shoal/nodes", Phase: discovery.PhaseInitial, BackendCalls: 3, BackendRunning: true,
		LastResult: &discovery.Result{Error: "discovery file: open /etc/shoal/nodes: no such file or directory", RetryType: discovery.RetryAfterError}}
	st.Readiness = Readiness{Missing: []string{"discovery: the last backend call failed: <x>"}}
	page = render(t, st)
	for _, want := range []string{
		"<h2>Discovery</h2>", "file:/etc/shoal/nodes · initial phase · 3 backend calls, the last <b>failed: discovery file: open /etc/shoal/nodes: no such file or directory</b>, next after_error · a call is running · 0 discovered, 0 joined, 0 unavailable · <b>initial discovery not done</b>",
		"<b>not ready</b>: discovery: the last backend call failed: &lt;x&gt;;",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("no %q in the page:\n%s", want, page)
		}
	}

	page = render(t, Status{NodeID: "s1", Replication: ReplicationStatus{Role: "replica", ReplicaOf: "10.0.0.1:7400"}})
	if !strings.Contains(page, "standby of 10.0.0.1:7400: in no cluster") || strings.Contains(page, "<th>voter</th>") {
		t.Errorf("standby page:\n%s", page)
	}

	page = render(t, Status{NodeID: "j1", Cluster: &ClusterStatus{Self: "j1", Nodes: []NodeStatus{}, WantVoters: 3,
		Join: JoinStatus{Phase: "joining", Waiting: "no join address answered"}}})
	for _, want := range []string{"cluster not created yet", "leader none known", "<b>joining: no join address answered</b>", "no members yet"} {
		if !strings.Contains(page, want) {
			t.Errorf("no %q in the page of a joining node:\n%s", want, page)
		}
	}
}

func render(t *testing.T, st Status) string {
	t.Helper()
	var b bytes.Buffer
	if err := consolePage.Execute(&b, st); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestConsoleOfAClusterOfOne: a node's page shows the cluster it
// bootstrapped.
func TestConsoleOfAClusterOfOne(t *testing.T) {
	tn := startNode(t, t.TempDir(), nil)
	deadline := time.Now().Add(10 * time.Second)
	for tn.status().Cluster.Revision == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no cluster after 10s: %+v", tn.status().Cluster.Join)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := tn.status()
	page := string(tn.get("/"))
	id := st.NodeID
	for _, want := range []string{
		"<h2>Cluster</h2>", "cluster " + st.Cluster.ClusterID, "leader " + id + " at " + st.Listen, "this node leader, 1 of ",
		`<td><a href="http://` + st.HTTP + `/">` + id + `</a> (this node)</td><td>` + st.Listen + `</td><td>active</td><td>yes</td><td>yes</td><td class="n">64</td><td class="n">0</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("no %q in the page:\n%s", want, page)
		}
	}
}

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
		{"/", closed, "<h1>shoal node"},
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
		`shoal_records{kind="kv"} 1`,
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
