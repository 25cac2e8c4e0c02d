package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/auth"
	"shoal/internal/config"
	"shoal/internal/meta"
	shoald "shoal/internal/node"
	"shoal/internal/server"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
)

// fakeCluster answers the cluster requests with canned answers.
type fakeCluster struct {
	mapBody []byte
	mapErr  error
	doc     string
	removed chan string
	rmErr   error
}

func (f *fakeCluster) ClusterMap() ([]byte, uint64, error) { return f.mapBody, 1, f.mapErr }
func (f *fakeCluster) Document() ([]byte, error)           { return []byte(f.doc), nil }
func (f *fakeCluster) Join([]byte) ([]byte, error)         { return nil, errors.New("no") }
func (f *fakeCluster) Propose(body []byte) (uint64, error) { return 0, errors.New("no") }
func (f *fakeCluster) RemoveNode(id string) error {
	f.removed <- id
	return f.rmErr
}

// startClusterServer serves the cluster requests of f (and nothing else).
func startClusterServer(t *testing.T, cfg server.Config, f *fakeCluster) string {
	t.Helper()
	cfg.VBuckets, cfg.NodeID, cfg.Logger = 64, "fake", slog.New(slog.DiscardHandler)
	s := server.New(cfg, server.Engines{})
	s.HandleCluster(f)
	return testproc.Serve(t, s)
}

// TestClusterStatuses: the cluster statuses map to their sentinels and
// keep the node's message; a malformed answer is ErrProtocol.
func TestClusterStatuses(t *testing.T) {
	f := &fakeCluster{removed: make(chan string, 4), doc: `{"cluster_id":"c1","nodes":[],"future_field":{"x":1}}`}
	c := dial(t, startClusterServer(t, server.Config{}, f))
	ctx := t.Context()

	f.rmErr = fmt.Errorf("%w: 1 of 3 voters reachable", meta.ErrNoQuorum)
	err := c.RemoveNode(ctx, "n2")
	var ce *client.Error
	if !errors.Is(err, client.ErrNoQuorum) || !errors.As(err, &ce) || !strings.Contains(ce.Message, "1 of 3 voters reachable") {
		t.Fatalf("RemoveNode without quorum: %v", err)
	}
	if id := <-f.removed; id != "n2" {
		t.Fatalf("the node was asked to remove %q", id)
	}
	f.rmErr = fmt.Errorf("%w: another cluster", meta.ErrRefused)
	if err := c.RemoveNode(ctx, "n2"); !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "refused: ") || !strings.Contains(err.Error(), "another cluster") {
		t.Fatalf("refused: %v", err)
	}
	<-f.removed
	if err := c.RemoveNode(ctx, ""); err == nil {
		t.Fatal("RemoveNode of an empty id")
	}
	if err := c.RemoveNode(ctx, strings.Repeat("x", 256)); err == nil {
		t.Fatal("RemoveNode of a 256-byte id")
	}
	select {
	case id := <-f.removed:
		t.Fatalf("a bad id reached the node: %q", id)
	default:
	}

	f.mapErr = fmt.Errorf("%w: waiting for 2 more nodes", meta.ErrNotInitialized)
	if _, err := c.ClusterMap(ctx); !errors.Is(err, client.ErrBadRequest) || !strings.Contains(err.Error(), "waiting for 2 more nodes") {
		t.Fatalf("ClusterMap before the cluster exists: %v", err)
	}
	f.mapErr, f.mapBody = nil, []byte{1, 0, 2}
	if _, err := c.ClusterMap(ctx); !errors.Is(err, client.ErrProtocol) {
		t.Fatalf("malformed ClusterMap answer: %v", err)
	}

	ci, err := c.Cluster(ctx)
	if err != nil || ci.ClusterID != "c1" || !strings.Contains(string(ci.Raw), "future_field") {
		t.Fatalf("Cluster = %+v, %v", ci, err)
	}
	f.doc = `{"cluster_id":`
	if _, err := c.Cluster(ctx); !errors.Is(err, client.ErrProtocol) {
		t.Fatalf("a broken document: %v", err)
	}
	f.doc = `null`
	if _, err := c.Cluster(ctx); !errors.Is(err, client.ErrProtocol) {
		t.Fatalf("a null document: %v", err)
	}
}

// TestRemoveNodeNeedsAdmin: NodeRemove is an operator request; the peer
// credential is not enough.
func TestRemoveNodeNeedsAdmin(t *testing.T) {
	secret := []byte("0123456789abcdef")
	creds := map[string][]byte{auth.Admin: secret, auth.Peer: secret, "app": secret}
	f := &fakeCluster{removed: make(chan string, 1), doc: `{}`}
	addr := startClusterServer(t, server.Config{Credentials: creds}, f)
	for _, user := range []string{"app", auth.Peer} {
		c := dial(t, addr, client.WithAuth(user, secret))
		if err := c.RemoveNode(t.Context(), "n2"); !errors.Is(err, client.ErrNotPermitted) {
			t.Errorf("RemoveNode as %s: %v", user, err)
		}
		if _, err := c.Cluster(t.Context()); err != nil {
			t.Errorf("Cluster as %s: %v", user, err)
		}
	}
	c := dial(t, addr, client.WithAuth(auth.Admin, secret))
	if err := c.RemoveNode(t.Context(), "n2"); err != nil {
		t.Fatal(err)
	}
	if id := <-f.removed; id != "n2" {
		t.Fatal(id)
	}
}

// startClusterNode runs a real node that bootstraps a cluster of its own.
func startClusterNode(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Load([]string{"--data", dir, "--listen", "127.0.0.1:0", "--http", "off",
		"--console=false", "--stats-interval", "0", "--vbuckets", "64", "--log-level", "error"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n, err := shoald.New(cfg, "test")
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

// waitClusterMap waits until the node is in a cluster, then returns its
// map. It polls the cluster document, not GetClusterMap: the node's
// answer to GetClusterMap before the cluster exists reads the join phase
// without its lock (a data race the race detector reports).
func waitClusterMap(t testing.TB, c *client.Client) *client.ClusterMap {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ci, err := c.Cluster(t.Context())
		if err != nil {
			t.Fatalf("Cluster: %v", err)
		}
		if ci.Revision != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster after 10s: %+v", ci.Join)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := c.ClusterMap(t.Context())
	if err != nil {
		t.Fatalf("ClusterMap: %v", err)
	}
	return m
}

// TestClusterOfOneNode: a node started without cluster flags is a
// cluster of one, and the three requests say so.
func TestClusterOfOneNode(t *testing.T) {
	addr := startClusterNode(t)
	c := dial(t, addr)
	ctx := t.Context()
	m := waitClusterMap(t, c)
	if len(m.Nodes) != 1 || len(m.VBuckets) != 64 || m.Revision == 0 || m.Replicas != 1 {
		t.Fatalf("map: revision %d, %d replicas, %d vbuckets, nodes %+v", m.Revision, m.Replicas, len(m.VBuckets), m.Nodes)
	}
	self := m.Nodes[0]
	if self.Addr != addr || self.State != client.NodeActive {
		t.Fatalf("member %+v, want active at %s", self, addr)
	}
	for vb, v := range m.VBuckets {
		if v.Active() != self.ID || len(v.Chain) != 1 || v.Epoch == 0 {
			t.Fatalf("vbucket %d: %+v", vb, v)
		}
	}
	if a, r := m.Counts(self.ID); a != 64 || r != 0 {
		t.Fatalf("Counts = %d, %d", a, r)
	}
	if got, want := m.VBucketOf([]byte("alice")), int(vbucket.Of([]byte("alice"), 64)); got != want {
		t.Fatalf("VBucketOf = %d, want %d", got, want)
	}

	ci, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Self != self.ID || ci.Leader != self.ID || ci.LeaderAddr != addr || ci.RaftState != "leader" || ci.ClusterID == "" ||
		ci.Revision != m.Revision || ci.VBuckets != 64 || len(ci.Voters) != 1 || ci.Voters[0] != self.ID || ci.Join.Phase != "member" {
		t.Fatalf("cluster document %+v", ci)
	}
	if len(ci.Nodes) != 1 || ci.Nodes[0].ID != self.ID || !ci.Nodes[0].Leader || !ci.Nodes[0].Voter || ci.Nodes[0].Active != 64 ||
		ci.Nodes[0].Since.IsZero() || time.Since(ci.Nodes[0].Since) > time.Minute {
		t.Fatalf("members %+v", ci.Nodes)
	}

	if err := c.RemoveNode(ctx, "nobody"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("RemoveNode of a stranger: %v", err)
	}
	if err := c.RemoveNode(ctx, self.ID); !errors.Is(err, client.ErrBadRequest) || !strings.Contains(err.Error(), "leads") {
		t.Errorf("RemoveNode of the leader: %v", err)
	}
}
