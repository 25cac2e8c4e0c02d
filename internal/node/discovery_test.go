package node

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/discovery"
	"shoal/internal/testproc"
)

// httpGet returns the status code and body of a path of the node's HTTP
// port.
func httpGet(t *testing.T, n *Node, path string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + n.HTTPAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// waitFor polls cond every 20 ms for d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, d, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHealthzReadyz: /healthz answers as soon as the node serves; /readyz
// once it has its cluster's map, and 503 with what is missing while a
// node waits for a cluster that does not answer.
func TestHealthzReadyz(t *testing.T) {
	tn := startNode(t, t.TempDir(), nil)
	if code, body := httpGet(t, tn.n, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	waitFor(t, 10*time.Second, "a cluster of one ready", func() (bool, string) {
		code, body := httpGet(t, tn.n, "/readyz")
		return code == 200 && body == "ready\n", body
	})
	if st := tn.status(); !st.Readiness.Ready || st.Readiness.Missing != nil || st.Discovery != nil {
		t.Fatalf("status %+v %+v", st.Readiness, st.Discovery)
	}

	nowhere := testproc.FreePorts(t, 1)[0]
	j := startNode(t, t.TempDir(), nil, "--join", nowhere)
	if code, _ := httpGet(t, j.n, "/healthz"); code != 200 {
		t.Fatalf("/healthz of a joining node: %d", code)
	}
	code, body := httpGet(t, j.n, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no map of a cluster") {
		t.Fatalf("/readyz of a node that cannot join: %d %q", code, body)
	}
}

// blackhole accepts TCP connections and never answers on them.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestDiscoveryFile: two nodes with only --discovery file:PATH and
// --bootstrap-expect 2. The file is missing first (a backend error, shown
// in /status and /readyz, retried); then it lists both nodes and an
// address that accepts connections and never answers: the two form a
// cluster, the silent address is unavailable with its probe's timeout,
// and both are ready.
func TestDiscoveryFile(t *testing.T) {
	addrs := testproc.FreePorts(t, 2)
	hole := blackhole(t)
	file := filepath.Join(t.TempDir(), "nodes")
	nodes := make([]*Node, 2)
	for i := range nodes {
		cfg, err := newConfig(t.TempDir(), "--listen", addrs[i], "--discovery", "file:"+file, "--bootstrap-expect", "2",
			"--discovery-initial-interval", "100ms", "--discovery-after-error-interval", "50ms", "--discovery-probe-interval", "100ms",
			"--discovery-connect-timeout", "300ms",
			"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms")
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
				t.Errorf("node %d: %v", i, err)
			}
		})
		nodes[i] = nd
	}
	waitFor(t, 5*time.Second, "the missing file's error", func() (bool, string) {
		st := nodes[0].Status()
		r := st.Discovery.LastResult
		return r != nil && !r.OK && strings.Contains(r.Error, "no such file") && r.RetryType == discovery.RetryAfterError && st.Discovery.BackendCalls >= 2, ""
	})
	code, body := httpGet(t, nodes[0], "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "the last backend call failed") || !strings.Contains(body, "no such file") {
		t.Fatalf("/readyz with the file missing: %d %q", code, body)
	}
	if err := os.WriteFile(file, []byte(addrs[0]+"\n"+addrs[1]+"\n"+hole+" # never answers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, nd := range nodes {
		// The discovery sees the node's membership within an observe
		// interval (100 ms) of its readiness.
		waitFor(t, 20*time.Second, "node "+strconv.Itoa(i)+" ready", func() (bool, string) {
			st := nd.Status()
			return st.Readiness.Ready && len(st.Discovery.Joined) == 2, strings.Join(st.Readiness.Missing, "; ")
		})
		d := nd.Status().Discovery
		if want := []discovery.Addr{discovery.Addr(addrs[0]), discovery.Addr(addrs[1]), discovery.Addr(hole)}; !slices.Equal(d.Discovered, sorted(want)) {
			t.Errorf("node %d discovered %v, want %v", i, d.Discovered, want)
		}
		if want := sorted([]discovery.Addr{discovery.Addr(addrs[0]), discovery.Addr(addrs[1])}); !slices.Equal(d.Joined, want) {
			t.Errorf("node %d joined %v, want %v", i, d.Joined, want)
		}
		if len(d.Unavailable) != 1 || d.Unavailable[0].Addr != discovery.Addr(hole) || !strings.Contains(d.Unavailable[0].Error, "no answer within 300ms") {
			t.Errorf("node %d unavailable %+v", i, d.Unavailable)
		}
		if d.Phase != discovery.PhaseRegular || !d.InitialDone || !d.LastResult.OK {
			t.Errorf("node %d: %+v", i, d)
		}
		for _, n := range d.Nodes {
			if n.Addr == discovery.Addr(addrs[i]) && (!n.Self || n.NodeID != nd.cfg.NodeID) {
				t.Errorf("node %d: its own address %+v", i, n)
			}
		}
	}
	if code, body := httpGet(t, nodes[1], "/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
}

func sorted(as []discovery.Addr) []discovery.Addr {
	return slices.Sorted(slices.Values(as))
}

// TestDiscoveryDNSSelf: a DNS name that resolves to this node itself: the
// address is this node's (never probed, never a join target), the initial
// discovery is done, and the node waits only for a cluster's map.
func TestDiscoveryDNSSelf(t *testing.T) {
	srv := testproc.StartDNS(t)
	srv.SetA("self.shoal.test", "127.0.0.1")
	addr := testproc.FreePorts(t, 1)[0]
	_, port, _ := net.SplitHostPort(addr)
	tn := startNode(t, t.TempDir(), nil, "--listen", addr, "--discovery", "dns:self.shoal.test.", "--discovery-dns-server", srv.Addr,
		"--discovery-initial-interval", "100ms")
	waitFor(t, 5*time.Second, "the first answer", func() (bool, string) {
		d := tn.status().Discovery
		return d.LastResult != nil && d.InitialDone, ""
	})
	st := tn.status()
	d := st.Discovery
	if want := []discovery.Addr{discovery.Addr("127.0.0.1:" + port)}; !slices.Equal(d.Discovered, want) || len(d.Nodes) != 1 || !d.Nodes[0].Self ||
		d.Nodes[0].LastProbe != nil || len(d.JoinTargets) != 0 || d.Backend != "dns:self.shoal.test." {
		t.Fatalf("discovery %+v", d)
	}
	if st.Readiness.Ready || len(st.Readiness.Missing) != 1 || !strings.Contains(st.Readiness.Missing[0], "no map") {
		t.Fatalf("readiness %+v", st.Readiness)
	}
}
