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
	"strconv"
	"strings"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/engine"
	"shoal/internal/meta"
	"shoal/internal/testproc"
)

// startCluster starts n in-process nodes that form a cluster with
// --bootstrap-expect n, with extra flags for all, and waits until each has
// applied the cluster's map.
func startCluster(t *testing.T, n int, extra ...string) []*Node {
	t.Helper()
	addrs := testproc.FreePorts(t, n)
	join := strings.Join(addrs, ",")
	nodes := make([]*Node, n)
	for i := range nodes {
		cfg, err := newConfig(t.TempDir(), append([]string{"--listen", addrs[i], "--join", join, "--bootstrap-expect", strconv.Itoa(n),
			"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms"}, extra...)...)
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
	deadline := time.Now().Add(20 * time.Second)
	for _, nd := range nodes {
		for {
			if cs := nd.clusterStatus(); cs.Revision != 0 && len(cs.Nodes) == n && nd.table().Map().Revision == cs.Revision {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no cluster within 20s: %+v", nd.clusterStatus())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes
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
	nodes := startCluster(t, 3, "--tls-cert", certFile, "--tls-key", keyFile, "--credentials", creds, "--peer-secret-file", peerFile)

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
	for _, nd := range nodes {
		if qs := nd.queue.Channels(); len(qs) != 0 {
			t.Fatalf("node %s still holds queues %+v", nd.cfg.NodeID, qs)
		}
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
