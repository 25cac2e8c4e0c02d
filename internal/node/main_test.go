package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/client"
	"shoal/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testNode is a node running in the test process.
type testNode struct {
	t    *testing.T
	n    *Node
	dir  string
	stop context.CancelFunc
	done chan error
	c    *client.Client
}

// startNode starts a node on data directory dir with extra flags; it is
// stopped at the end of the test if still running.
func startNode(t *testing.T, dir string, opts []Option, args ...string) *testNode {
	t.Helper()
	cfg, err := newConfig(dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, "test", opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn := &testNode{t: t, n: n, dir: dir, stop: cancel, done: make(chan error, 1)}
	go func() { tn.done <- n.Run(ctx) }()
	tn.c, err = client.Dial(context.Background(), n.Addr().String(), client.WithNoRouting())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if tn.done != nil {
			tn.shutdown()
		}
	})
	return tn
}

// newConfig is the configuration of a test node on dir.
func newConfig(dir string, args ...string) (config.Config, error) {
	return config.Load(append([]string{"--data", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--console=false", "--stats-interval", "0", "--vbuckets", "64", "--auto-failover=false", "--failover-timeout", "5s"}, args...), io.Discard)
}

// shutdown stops the node cleanly (with its final dump) and waits.
func (tn *testNode) shutdown() {
	tn.t.Helper()
	tn.c.Close()
	tn.stop()
	select {
	case err := <-tn.done:
		if err != nil {
			tn.t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		tn.t.Fatal("the node did not stop within 30s")
	}
	tn.done = nil
}

// status fetches /status.
func (tn *testNode) status() Status {
	tn.t.Helper()
	var st Status
	if err := json.Unmarshal(tn.get("/status"), &st); err != nil {
		tn.t.Fatal(err)
	}
	return st
}

// get fetches a path of the HTTP port.
func (tn *testNode) get(path string) []byte {
	tn.t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + tn.n.HTTPAddr().String() + path)
	if err != nil {
		tn.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tn.t.Fatal(err)
	}
	return b
}

// rootLog returns root.log of data directory dir.
func rootLog(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "log", "root.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
