package e2e

import (
	"encoding/json"
	"fmt"
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
	"shoal/internal/node"
	"shoal/internal/testproc"
)

// The discovery tests start nodes with no --join: they find each other
// through a file or DNS (a DNS server in this process, which the shoald
// processes ask through --discovery-dns-server).

// discoveryArgs are the flags of a node at addr that finds the others
// through spec; the members re-read the backend every 2 s (the regular
// interval) so that a node added later shows in their status soon.
func discoveryArgs(addr, spec string, extra ...string) []string {
	args := append([]string{"--listen", addr, "--vbuckets", strconv.Itoa(clusterVBuckets), "--discovery", spec, "--bootstrap-expect", "3", "--auto-failover=false",
		"--discovery-initial-interval", "1s", "--discovery-regular-interval", "2s", "--discovery-probe-interval", "500ms"}, slowArgs...)
	return append(args, extra...)
}

// writeFile replaces path with the addresses, one a line, atomically.
func writeNodesFile(t *testing.T, path string, addrs []string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(addrs, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// discoveryOf reads the discovery section of a node's /status.
func discoveryOf(n *testproc.Node) (*discovery.Status, node.Readiness, error) {
	st, err := httpStatus(n.HTTP)
	if err != nil {
		return nil, node.Readiness{}, err
	}
	if st.Discovery == nil {
		return nil, st.Readiness, fmt.Errorf("no discovery section in /status")
	}
	return st.Discovery, st.Readiness, nil
}

// waitReady runs `shoal wait-ready` at every node and wants exit 0.
func waitReady(t *testing.T, nodes []*testproc.Node) {
	t.Helper()
	for _, n := range nodes {
		if r := testproc.CLI(t, n.Addr, "", "wait-ready", "--timeout", "30s"); r.Code != 0 || !strings.HasSuffix(r.Stdout, " is ready\n") {
			t.Fatalf("shoal wait-ready at %s: exit %d: %s%s", n.Addr, r.Code, r.Stdout, r.Stderr)
		}
		resp, err := http.Get("http://" + n.HTTP + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz at %s after wait-ready: %s", n.HTTP, resp.Status)
		}
	}
}

// growCluster starts a fourth node once its address is in the backend
// (add does that), and checks that it becomes a member, that the three
// members list it as discovered and joined within their regular interval
// (2 s, plus a probe and the time to answer), and that it is ready.
func growCluster(t *testing.T, nodes []*testproc.Node, addr4, spec string, add func(), extra ...string) {
	t.Helper()
	add()
	changed := time.Now()
	n4 := testproc.Start(t, discoveryArgs(addr4, spec, extra...)...)
	started := time.Now()
	all := append(slices.Clone(nodes), n4)
	waitCluster(t, all, formTimeout)
	member := time.Since(started)
	for _, n := range nodes {
		poll(t, 10*time.Second, "the members list the fourth node", func() (bool, string) {
			d, _, err := discoveryOf(n)
			if err != nil {
				return false, err.Error()
			}
			return slices.Contains(d.Discovered, discovery.Addr(addr4)) && slices.Contains(d.Joined, discovery.Addr(addr4)),
				fmt.Sprintf("%s: discovered %v, joined %v", n.Addr, d.Discovered, d.Joined)
		})
	}
	seen := time.Since(changed)
	t.Logf("the fourth node was a member %v after it started; the members listed it %v after the backend did", member.Round(time.Millisecond), seen.Round(time.Millisecond))
	if member > 15*time.Second {
		t.Errorf("the fourth node took %v to be a member", member)
	}
	// Their regular interval (2 s), a probe (500 ms), the status polls,
	// with room for a loaded machine.
	if seen > 6*time.Second {
		t.Errorf("the members listed the fourth node %v after the backend did, want about their 2 s interval", seen)
	}
	waitReady(t, []*testproc.Node{n4})
	d, _, err := discoveryOf(nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Discovered) != 4 || len(d.Joined) != 4 || len(d.Unavailable) != 0 || d.Phase != discovery.PhaseRegular || !d.InitialDone {
		t.Errorf("the first node's discovery: %+v", d)
	}
}

// TestDiscoveryFile: three nodes started with only --discovery file:PATH
// --bootstrap-expect 3 form a cluster and are ready; a fourth address
// added to the file makes the fourth node a member.
func TestDiscoveryFile(t *testing.T) {
	addrs := testproc.FreePorts(t, 4)
	file := filepath.Join(t.TempDir(), "nodes")
	writeNodesFile(t, file, addrs[:3])
	spec := "file:" + file
	nodes := make([]*testproc.Node, 3)
	for i := range nodes {
		nodes[i] = testproc.Start(t, discoveryArgs(addrs[i], spec)...)
	}
	waitCluster(t, nodes, formTimeout)
	waitReady(t, nodes)
	r := testproc.CLI(t, nodes[1].Addr, "", "discovery")
	if r.Code != 0 || !strings.Contains(r.Stdout, "discovery "+spec+", regular phase") || strings.Count(r.Stdout, " yes  ") < 3 {
		t.Fatalf("shoal discovery: %d %s%s", r.Code, r.Stdout, r.Stderr)
	}
	growCluster(t, nodes, addrs[3], spec, func() { writeNodesFile(t, file, addrs) })
}

// TestDiscoveryDNS: the same with SRV records of a DNS server in this
// process: three nodes form a cluster, a fourth SRV record brings in a
// fourth node.
func TestDiscoveryDNS(t *testing.T) {
	dns := testproc.StartDNS(t)
	addrs := testproc.FreePorts(t, 4)
	const srvName = "_shoal._tcp.shoal.test."
	var srvs []testproc.SRV
	publish := func(n int) {
		srvs = srvs[:0]
		for i, a := range addrs[:n] {
			host, port, _ := net.SplitHostPort(a)
			p, _ := strconv.Atoi(port)
			target := fmt.Sprintf("shoal-%d.shoal.test.", i)
			dns.SetA(target, host)
			srvs = append(srvs, testproc.SRV{Target: target, Port: uint16(p)})
		}
		dns.SetSRV(srvName, srvs...)
	}
	publish(3)
	spec, extra := "dns+srv:"+srvName, []string{"--discovery-dns-server", dns.Addr}
	nodes := make([]*testproc.Node, 3)
	for i := range nodes {
		nodes[i] = testproc.Start(t, discoveryArgs(addrs[i], spec, extra...)...)
	}
	waitCluster(t, nodes, formTimeout)
	waitReady(t, nodes)
	growCluster(t, nodes, addrs[3], spec, func() { publish(4) }, extra...)
}

// silentListener accepts TCP connections and never answers on them.
func silentListener(t *testing.T) string {
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

// TestDiscoveryWaitReadyNamesSilentNode: of the three addresses in the
// file one accepts connections and never answers: the two real nodes
// cannot form their cluster of three; `shoal wait-ready` times out,
// exits non-zero and names the silent address; the status answers at
// once all the while, and --backend-only returns.
func TestDiscoveryWaitReadyNamesSilentNode(t *testing.T) {
	addrs := testproc.FreePorts(t, 2)
	silent := silentListener(t)
	file := filepath.Join(t.TempDir(), "nodes")
	writeNodesFile(t, file, append(slices.Clone(addrs), silent))
	nodes := make([]*testproc.Node, 2)
	for i := range nodes {
		nodes[i] = testproc.Start(t, discoveryArgs(addrs[i], "file:"+file, "--discovery-connect-timeout", "500ms")...)
	}
	poll(t, 20*time.Second, "the silent address unavailable", func() (bool, string) {
		start := time.Now()
		d, _, err := discoveryOf(nodes[0])
		if err != nil {
			return false, err.Error()
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("/status took %v with a silent address discovered", took)
		}
		return len(d.Unavailable) == 1 && d.Unavailable[0].Addr == discovery.Addr(silent), fmt.Sprintf("unavailable %+v", d.Unavailable)
	})
	d, _, _ := discoveryOf(nodes[0])
	if u := d.Unavailable[0]; !strings.Contains(u.Error, "no answer within 500ms") {
		t.Errorf("the silent address's error: %q", u.Error)
	}
	start := time.Now()
	r := testproc.CLI(t, nodes[0].Addr, "", "wait-ready", "--timeout", "3s")
	took := time.Since(start)
	if r.Code == 0 || !strings.Contains(r.Stderr, "not ready after 3s") || !strings.Contains(r.Stderr, silent+" does not answer") ||
		!strings.Contains(r.Stderr, "2 of 3 expected nodes known") {
		t.Fatalf("wait-ready: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	if took > 15*time.Second {
		t.Errorf("wait-ready --timeout 3s took %v", took)
	}
	if r := testproc.CLI(t, nodes[1].Addr, "", "wait-ready", "--backend-only", "--timeout", "10s"); r.Code != 0 || !strings.Contains(r.Stdout, "listed 3 nodes") {
		t.Fatalf("wait-ready --backend-only: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	r = testproc.CLI(t, nodes[1].Addr, "", "discovery", "--json")
	var ds discovery.Status
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &ds) != nil || len(ds.Discovered) != 3 || ds.InitialDone {
		t.Fatalf("discovery --json: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
}
