package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/engine"
	"shoal/internal/faultnet"
	"shoal/internal/meta"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// startCluster starts n in-process nodes that form a cluster with
// --bootstrap-expect n, with extra flags for all, and waits until each has
// applied the cluster's map. stop(i) stops node i cleanly (at most once).
func startCluster(t *testing.T, n int, extra ...string) (nodes []*Node, stop func(i int)) {
	t.Helper()
	return startClusterWith(t, n, nil, extra...)
}

// startClusterWith is startCluster with before(i, node) run on each node
// between New and Run (nil: nothing).
func startClusterWith(t testing.TB, n int, before func(i int, nd *Node), extra ...string) (nodes []*Node, stop func(i int)) {
	t.Helper()
	addrs := testproc.FreePorts(t, n)
	join := strings.Join(addrs, ",")
	nodes = make([]*Node, n)
	stops := make([]func(), n)
	for i := range nodes {
		var hook func(*Node)
		if before != nil {
			hook = func(nd *Node) { before(i, nd) }
		}
		nodes[i], stops[i], _ = runNode(t, hook, append([]string{"--listen", addrs[i], "--join", join, "--bootstrap-expect", strconv.Itoa(n)}, extra...)...)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, nd := range nodes {
		for {
			if cs := nd.clusterStatus(); cs.Revision != 0 && len(cs.Nodes) == n && nd.table().Map().Revision == cs.Revision && cs.Fenced == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no cluster within 20s: %+v", nd.clusterStatus())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes, func(i int) { stops[i]() }
}

// runNode starts an in-process node of a test cluster (the fast raft
// timeouts, then args), running before(node) between New and Run when
// not nil. stop stops it cleanly, at most once (the test's cleanup calls
// it too; an error of Run fails the test); exited yields Run's result
// when the node stops by itself.
func runNode(t testing.TB, before func(*Node), args ...string) (nd *Node, stop func(), exited <-chan error) {
	t.Helper()
	cfg, err := newConfig(t.TempDir(), append([]string{"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	if nd, err = New(cfg, "test"); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(nd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, result := make(chan error, 1), make(chan error, 1)
	go func() {
		err := nd.Run(ctx)
		result <- err
		done <- err
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node %s: %v", nd.cfg.NodeID, err)
		}
	})
	t.Cleanup(stop)
	return nd, stop, result
}

// TestClusterWithTLSAndCredentials: three nodes with TLS and credentials
// form a cluster, their peers authenticating as "node" over TLS; a channel
// created through a follower is known to all three, with one kind.
func TestClusterWithTLSAndCredentials(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := testproc.WriteCert(t, dir)
	admin, peer := "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte("admin:"+admin+"\nnode:"+peer+"\n"), 0o600)
	peerFile := filepath.Join(dir, "peer-secret")
	os.WriteFile(peerFile, []byte(peer+"\n"), 0o600)
	nodes, _ := startCluster(t, 3, "--tls-cert", certFile, "--tls-key", keyFile, "--credentials", creds, "--peer-secret-file", peerFile)

	cs := nodes[0].clusterStatus()
	if len(cs.Voters) != 3 || cs.Leader == "" || cs.ClusterID == "" {
		t.Fatalf("cluster %+v", cs)
	}
	for _, nd := range nodes[1:] {
		if o := nd.clusterStatus(); o.ClusterID != cs.ClusterID || o.Revision != cs.Revision {
			t.Fatalf("nodes disagree: %+v vs %+v", o, cs)
		}
	}
	var follower *Node
	for _, nd := range nodes {
		if nd.cfg.NodeID != cs.Leader {
			follower = nd
		}
	}
	pem, _ := os.ReadFile(certFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	secret, _ := hex.DecodeString(admin)
	c, err := client.Dial(t.Context(), follower.Addr().String(), client.WithTLS(&tls.Config{RootCAs: pool}), client.WithAuth("admin", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Push(t.Context(), []string{"jobs"}, []byte("j1")); err != nil {
		t.Fatalf("push through a follower: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, nd := range nodes {
		for {
			if _, k, ok := nd.cat.Lookup([]byte("jobs")); ok && k == engine.KindQueue {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s does not know channel jobs", nd.cfg.NodeID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The channel has one kind in the whole cluster: a kv write to it on
	// another node is refused.
	other := nodes[0]
	if other == follower {
		other = nodes[1]
	}
	c2, err := client.Dial(t.Context(), other.Addr().String(), client.WithTLS(&tls.Config{RootCAs: pool}), client.WithAuth("admin", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	refused := false
	for i := 0; i < 64 && !refused; i++ { // some key of a vBucket this node is active for
		_, err := c2.Put(t.Context(), "jobs", []byte{byte('a' + i%26), byte('a' + i/26)}, []byte("v"))
		switch {
		case errors.Is(err, client.ErrWrongKind):
			refused = true
		case !errors.Is(err, client.ErrNotMyVBucket):
			t.Fatalf("kv put to a queue channel: %v", err)
		}
	}
	if !refused {
		t.Fatal("no key of the 64 tried belongs to this node")
	}
	// Removing it on one node removes it from every node.
	if err := c2.RemoveChannel(t.Context(), "jobs"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for _, nd := range nodes {
		for {
			if _, _, ok := nd.cat.Lookup([]byte("jobs")); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s still has channel jobs", nd.cfg.NodeID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A replica's copy of the channel goes when its active's removal
	// arrives by its stream.
	for _, nd := range nodes {
		waitFor(t, 5*time.Second, "the queue copies removed on "+nd.cfg.NodeID, func() (bool, string) {
			qs := nd.queue.Channels()
			return len(qs) == 0, fmt.Sprintf("%+v", qs)
		})
	}
}

// TestJoinPeersAreBounded: the nodes heard before a cluster exists are
// hostile input: bad ids and addresses are ignored, and at most
// maxPeersSeen are remembered.
func TestJoinPeersAreBounded(t *testing.T) {
	n := startNode(t, t.TempDir(), nil)
	var ps []meta.Peer
	for i := range maxPeersSeen + 50 {
		ps = append(ps, meta.Peer{ID: fmt.Sprintf("p%d", i), Addr: "127.0.0.1:1", Expect: 3})
	}
	ps = append(ps, meta.Peer{ID: "bad id", Addr: "127.0.0.1:1"}, meta.Peer{ID: "noaddr"}, meta.Peer{ID: strings.Repeat("x", 65), Addr: "a:1"})
	n.n.heard(ps)
	c := n.n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.peerSeen) != maxPeersSeen {
		t.Fatalf("%d peers remembered", len(c.peerSeen))
	}
	for id := range c.peerSeen {
		if !strings.HasPrefix(id, "p") {
			t.Fatalf("remembered %q", id)
		}
	}
}

// TestFailoverAndFencing: a stopped member is failed over by a survivor:
// its vBuckets get new actives among the survivors (epochs raised) and
// take writes there; a failover that would lose vBuckets' last copy is
// refused unless forced; and a node left alone (no leader for longer than
// the failover timeout) fences itself: it serves none of its vBuckets.
func TestFailoverAndFencing(t *testing.T) {
	nodes, stop := startCluster(t, 3, "--failover-timeout", "1s", "--replicas", "1")
	leader := nodes[0].clusterStatus().Leader
	var victim, survivor *Node
	vi := -1
	for i, nd := range nodes {
		if nd.cfg.NodeID != leader && victim == nil {
			victim, vi = nd, i
		} else if survivor == nil && nd.cfg.NodeID == leader {
			survivor = nd
		}
	}
	before := survivor.cluster.meta.State().Map
	stop(vi)
	res, err := survivor.failoverNode(victim.cfg.NodeID, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Promoted != before.Counts()[victim.cfg.NodeID].Active || len(res.Lost) != 0 || len(res.Unanswered) != 0 {
		t.Fatalf("failover result %+v (victim was active for %d)", res, before.Counts()[victim.cfg.NodeID].Active)
	}
	after := survivor.cluster.meta.State()
	if m, _ := after.Node(victim.cfg.NodeID); m.State != meta.Failed {
		t.Fatalf("victim %+v", m)
	}
	for vb := range uint16(before.Len()) {
		was, now := before.VBuckets[vb], after.Map.VBuckets[vb]
		if slices.Contains(now.Chain, victim.cfg.NodeID) {
			t.Fatalf("vb %d still names the victim: %v", vb, now.Chain)
		}
		if was.Active() == victim.cfg.NodeID && (now.Epoch != was.Epoch+1 || now.Active() == "") {
			t.Fatalf("vb %d: %+v -> %+v", vb, was, now)
		}
	}
	if _, err := survivor.failoverNode(victim.cfg.NodeID, false, false); err == nil {
		t.Fatal("failing over a failed node again was accepted")
	}
	// Every vBucket is served by one of the two survivors.
	for _, nd := range nodes {
		if nd == victim {
			continue
		}
		waitFor(t, 5*time.Second, "the new map applied on "+nd.cfg.NodeID, func() (bool, string) {
			return nd.table().Map().Revision == after.Map.Revision, fmt.Sprint(nd.table().Map().Revision)
		})
	}
	c, err := client.Dial(t.Context(), survivor.Addr().String(), client.WithNoRouting())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wrote := 0
	for i := range 40 {
		key := []byte(fmt.Sprintf("k%d", i))
		if survivor.table().State(vbucket.Of(key, 64)) != vbmap.Active {
			continue
		}
		if _, err := c.Put(t.Context(), "users", key, []byte("v")); err != nil {
			t.Fatalf("put to a survivor's vbucket: %v", err)
		}
		wrote++
	}
	if wrote == 0 {
		t.Fatal("the survivor is active for none of 40 keys")
	}
	// The other survivor stops too: the last one hears no leader and, after
	// the failover timeout, fences itself.
	for i, nd := range nodes {
		if nd != victim && nd != survivor {
			stop(i)
		}
	}
	waitFor(t, 5*time.Second, "the lone node fenced", func() (bool, string) {
		survivor.routing.mu.Lock()
		defer survivor.routing.mu.Unlock()
		return survivor.routing.fenced, "not fenced"
	})
	for i := range 40 {
		key := []byte(fmt.Sprintf("k%d", i))
		if survivor.table().State(vbucket.Of(key, 64)) != vbmap.Active {
			continue
		}
		if _, err := c.Put(t.Context(), "users", key, []byte("v2")); !errors.Is(err, client.ErrNotMyVBucket) {
			t.Fatalf("a fenced node took a write: %v", err)
		}
	}
}

// TestBootstrapExpectOneWithItself: --bootstrap-expect 1 with a discovery
// (or --join) that names only this node forms a cluster of one (a
// one-replica StatefulSet).
func TestBootstrapExpectOneWithItself(t *testing.T) {
	addr := testproc.FreePorts(t, 1)[0]
	tn := startNode(t, t.TempDir(), nil, "--listen", addr, "--discovery", "static:"+addr, "--bootstrap-expect", "1")
	waitFor(t, 10*time.Second, "a cluster of one", func() (bool, string) {
		cs := tn.status().Cluster
		return tn.n.inCluster() && cs.Fenced == "", fmt.Sprintf("%+v", cs.Join)
	})
}

// TestPartitionedNodeStopsServing: a member cut off from the others
// (everything to it frozen by a faultnet proxy in front of its advertised
// address, and its own dials to them failing) stops serving its active
// vBuckets within the failover timeout, while the others go on; healed, it
// serves again.
// startProxiedCluster starts three in-process nodes that advertise a
// faultnet proxy in front of their port (so that one can be cut off) and
// waits until they serve a cluster; failover timeout 1 s, raft timeouts
// 200 ms, and extra.
func startProxiedCluster(t *testing.T, extra ...string) (nodes []*Node, proxies []*faultnet.Proxy, listen []string) {
	t.Helper()
	listen = testproc.FreePorts(t, 3)
	proxies = make([]*faultnet.Proxy, 3)
	advertised := make([]string, 3)
	for i := range proxies {
		p, err := faultnet.New(listen[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		proxies[i], advertised[i] = p, p.Addr()
	}
	join := strings.Join(advertised, ",")
	nodes = make([]*Node, 3)
	for i := range nodes {
		nodes[i], _, _ = runNode(t, nil, append([]string{"--listen", listen[i], "--advertise", advertised[i], "--join", join, "--bootstrap-expect", "3", "--failover-timeout", "1s"}, extra...)...)
	}
	for _, nd := range nodes {
		waitFor(t, 20*time.Second, "a cluster of three serving", func() (bool, string) {
			cs := nd.clusterStatus()
			return cs.Revision != 0 && len(cs.Nodes) == 3 && cs.Fenced == "" && nd.table().Map().Revision == cs.Revision, fmt.Sprintf("%+v", cs.Join)
		})
	}
	return nodes, proxies, listen
}

// partitionCase is a proxied cluster of three (startProxiedCluster) and
// the member a partition test cuts off: nodes[x], not the leader, a key of
// a vBucket it is active for, and a client of its own port (no routing:
// clients still reach it).
type partitionCase struct {
	nodes   []*Node
	proxies []*faultnet.Proxy
	listen  []string
	x       int
	iso     *Node
	key     string
	c       *client.Client
}

// writeThrough waits until a routed write of key through node nd
// succeeds (the cut-off member's vBuckets taken over by the others).
func writeThrough(t *testing.T, nd *Node, key string) {
	t.Helper()
	c, err := client.Dial(t.Context(), nd.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 10*time.Second, "a write to the cut-off member's vbucket through "+nd.cfg.NodeID, func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := c.Put(ctx, "users", []byte(key), []byte("v2"))
		return err == nil, fmt.Sprint(err)
	})
}

// startPartitionCase starts the cluster with extra flags and picks a
// member that is not the leader; the client is closed when the test ends.
func startPartitionCase(t *testing.T, extra ...string) partitionCase {
	t.Helper()
	return startPartitionCaseOf(t, false, extra...)
}

// startPartitionCaseOf is startPartitionCase picking the metadata leader
// when leader is set.
func startPartitionCaseOf(t *testing.T, leader bool, extra ...string) partitionCase {
	t.Helper()
	pc := partitionCase{}
	pc.nodes, pc.proxies, pc.listen = startProxiedCluster(t, extra...)
	id := pc.nodes[0].clusterStatus().Leader
	pc.x = slices.IndexFunc(pc.nodes, func(nd *Node) bool { return (nd.cfg.NodeID == id) == leader })
	pc.iso = pc.nodes[pc.x]
	for i := 0; pc.key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); pc.iso.table().State(vbucket.Of([]byte(k), 64)) == vbmap.Active {
			pc.key = k
		}
	}
	var err error
	if pc.c, err = client.Dial(t.Context(), pc.listen[pc.x], client.WithNoRouting()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.c.Close() })
	return pc
}

// TestAutoFailoverOfAnIsolatedNode: a member cut off from the others
// (faultnet in front of its port, its own dials failing) is failed over
// automatically by the two others, which take its vBuckets' writes; the
// isolated node stops taking writes.
func TestAutoFailoverOfAnIsolatedNode(t *testing.T) {
	pc := startPartitionCase(t, "--auto-failover")
	x, iso, key, old := pc.x, pc.iso, pc.key, pc.c
	nodes, proxies := pc.nodes, pc.proxies
	cut := errors.New("partitioned")
	fault := func(string) error { return cut }
	proxies[x].Freeze()
	iso.cluster.peers.fault.Store(&fault)
	start := time.Now()
	other := nodes[(x+1)%3]
	waitFor(t, 15*time.Second, "the isolated node failed over", func() (bool, string) {
		for _, m := range other.clusterStatus().Nodes {
			if m.ID == iso.cfg.NodeID {
				return m.State == "failed", m.State
			}
		}
		return false, "not listed"
	})
	t.Logf("isolated node failed over %v after the partition", time.Since(start).Round(time.Millisecond))
	writeThrough(t, other, key)
	if _, err := old.Put(t.Context(), "users", []byte(key), []byte("stale")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("the isolated node took a write: %v", err)
	}
	proxies[x].Thaw()
	iso.cluster.peers.fault.Store(nil)
}

func TestPartitionedNodeStopsServing(t *testing.T) {
	pc := startPartitionCase(t)
	nodes, proxies, listen := pc.nodes, pc.proxies, pc.listen
	x, iso, key, c := pc.x, pc.iso, pc.key, pc.c
	if _, err := c.Put(t.Context(), "users", []byte(key), []byte("v1")); err != nil {
		t.Fatal(err)
	}

	cut := errors.New("partitioned")
	fault := func(string) error { return cut }
	proxies[x].Freeze()
	iso.cluster.peers.fault.Store(&fault)
	start := time.Now()
	waitFor(t, 10*time.Second, "the isolated node stops taking writes", func() (bool, string) {
		_, err := c.Put(t.Context(), "users", []byte(key), []byte("v2"))
		return errors.Is(err, client.ErrNotMyVBucket), fmt.Sprint(err)
	})
	t.Logf("the isolated node refused writes %v after the partition (failover timeout 1 s)", time.Since(start).Round(time.Millisecond))
	// The others still commit metadata and serve.
	for i := range nodes {
		if i == x {
			continue
		}
		oc, err := client.Dial(t.Context(), listen[i], client.WithNoRouting()) // pushes land in its own vbuckets
		if err != nil {
			t.Fatal(err)
		}
		if err := oc.Push(t.Context(), []string{fmt.Sprintf("during%d", i)}, []byte("x")); err != nil {
			t.Fatalf("node %d during the partition: %v", i, err)
		}
		oc.Close()
	}

	proxies[x].Thaw()
	iso.cluster.peers.fault.Store(nil)
	waitFor(t, 15*time.Second, "the healed node serves again", func() (bool, string) {
		_, err := c.Put(t.Context(), "users", []byte(key), []byte("v3"))
		return err == nil, fmt.Sprint(err)
	})
}

// TestFenceFromAPeersMap: a peer's newer map that raised the epoch of a
// vBucket this node is active for (a failover it has not applied yet)
// stops its writes for that vBucket at once, and only that one; the
// node's next map, at least as new, decides again.
func TestFenceFromAPeersMap(t *testing.T) {
	tn := startNode(t, t.TempDir(), nil)
	waitFor(t, 10*time.Second, "a cluster of one", func() (bool, string) {
		return tn.n.inCluster() && tn.n.table() != nil && tn.n.table().State(3) == vbmap.Active, "no map"
	})
	keyIn := func(vb uint16) []byte {
		for i := 0; ; i++ {
			if k := fmt.Appendf(nil, "k%d", i); vbucket.Of(k, 64) == vb {
				return k
			}
		}
	}
	cur := tn.n.table().Map()
	chains := cur.Chains()
	chains[3] = []string{"node-elsewhere"}
	peerMap := cur.Next(cur.Revision+5, 0, chains)
	tn.n.fenceFromPeer(peerMap, "node-elsewhere")
	if _, err := tn.c.Put(t.Context(), "c", keyIn(3), []byte("v")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("a write to the vbucket a newer map gave away: %v", err)
	}
	if _, err := tn.c.Put(t.Context(), "c", keyIn(4), []byte("v")); err != nil {
		t.Fatalf("a write to another vbucket: %v", err)
	}
	// An older map than the peer's leaves the fence; one as new lifts it.
	if err := tn.n.applyMap(cur.Next(cur.Revision+1, 0, cur.Chains()), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.c.Put(t.Context(), "c", keyIn(3), []byte("v")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("an older map lifted the fence: %v", err)
	}
	if err := tn.n.applyMap(cur.Next(peerMap.Revision, 0, cur.Chains()), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.c.Put(t.Context(), "c", keyIn(3), []byte("v")); err != nil {
		t.Fatalf("after a map as new as the peer's: %v", err)
	}
}

// TestAutoFailoverOneWayPartition: a member that can send but not receive
// (faultnet holds everything sent to it): the others still hear it, so it
// is not down for them; it cannot apply the leader's commits, so its
// lease runs out and it serves nothing; fenced for longer than a lease,
// it reports itself not ready and is failed over. Its vBuckets take
// writes on the new actives.
func TestAutoFailoverOneWayPartition(t *testing.T) {
	pc := startPartitionCase(t, "--auto-failover")
	x, iso, key, old := pc.x, pc.iso, pc.key, pc.c
	nodes, proxies := pc.nodes, pc.proxies
	proxies[x].FreezeToTarget()
	defer proxies[x].Thaw()
	start := time.Now()
	other := nodes[(x+1)%3]
	waitFor(t, 20*time.Second, "the one-way partitioned node failed over", func() (bool, string) {
		for _, m := range other.clusterStatus().Nodes {
			if m.ID == iso.cfg.NodeID {
				return m.State == "failed", m.State + " " + fmt.Sprint(iso.autoStatus(iso.cluster.known()).Heard)
			}
		}
		return false, "not listed"
	})
	t.Logf("one-way partitioned node failed over %v after the partition", time.Since(start).Round(time.Millisecond))
	if _, err := old.Put(t.Context(), "users", []byte(key), []byte("stale")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("the partitioned node took a write: %v", err)
	}
	writeThrough(t, other, key)
}
