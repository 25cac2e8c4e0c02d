package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"shoal/internal/discovery"
	"shoal/internal/server"
	"shoal/internal/testproc"
)

// fakeStatus answers Status with its documents in turn, the last one
// from then on.
type fakeStatus struct {
	mu    sync.Mutex
	docs  []string
	calls int
}

func (f *fakeStatus) Replica(uint8, server.ReplicaSettings) error { return server.ErrNotStandby }
func (f *fakeStatus) Promote(bool) error                          { return server.ErrNotStandby }
func (f *fakeStatus) Status(bool) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.docs[min(f.calls, len(f.docs)-1)]
	f.calls++
	return []byte(d), nil
}

func (f *fakeStatus) polls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func statusServer(f *fakeStatus) *server.Server {
	s := server.New(server.Config{VBuckets: 64, NodeID: "fake", Logger: slog.New(slog.DiscardHandler)}, server.Engines{})
	s.HandleReplication(f)
	return s
}

// runDiscoveryCLI runs `shoal --addr addr args...` (discovery commands) in
// this process.
func runDiscoveryCLI(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	g := &globals{addr: addr, timeout: 5 * time.Second}
	root := &cobra.Command{Use: "shoal", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(discoveryCommands(g)...)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func statusDocJSON(t *testing.T, id string, d *discovery.Status, ready bool, missing ...string) string {
	t.Helper()
	doc := map[string]any{"node_id": id, "readiness": map[string]any{"ready": ready, "missing": missing}}
	if d != nil {
		doc["discovery"] = d
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDiscoveryCommand(t *testing.T) {
	now := time.Now()
	at := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
	next := now.Add(4 * time.Second)
	ds := &discovery.Status{
		Backend: "file:/etc/shoal/nodes", Phase: discovery.PhaseRegular, StartTime: now.Add(-10 * time.Minute), BackendCalls: 70,
		LastResult: &discovery.Result{At: *at(time.Minute), OK: true, Nodes: []discovery.Addr{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7409"}, RetryType: discovery.RetryRegular},
		RetryType:  discovery.RetryRegular, NextCheck: &next, InitialDone: true, InitialDoneAt: at(9 * time.Minute),
		Discovered: []discovery.Addr{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7409"},
		Joined:     []discovery.Addr{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"},
		Nodes: []discovery.Node{
			{Addr: "127.0.0.1:7401", NodeID: "n1", Self: true, Discovered: true, Joined: true},
			{Addr: "127.0.0.1:7402", NodeID: "n2", Discovered: true, Joined: true, Up: true, LastProbe: at(time.Second), Nodeup: at(3 * time.Minute), Nodedown: at(5 * time.Minute)},
			{Addr: "127.0.0.1:7403", NodeID: "n3", Joined: true, Up: true, LastProbe: at(time.Minute), Nodeup: at(9 * time.Minute)},
			{Addr: "127.0.0.1:7409", Discovered: true, LastProbe: at(time.Second), LastError: "dial tcp 127.0.0.1:7409: connect: connection refused"},
		},
		Unavailable:   []discovery.Unavailable{{Addr: "127.0.0.1:7409", Error: "dial tcp 127.0.0.1:7409: connect: connection refused"}},
		NotDiscovered: []discovery.Addr{"127.0.0.1:7403"}, JoinTargets: []discovery.Addr{},
	}
	addr := testproc.Serve(t, statusServer(&fakeStatus{docs: []string{statusDocJSON(t, "n1", ds, true)}}))
	out, err := runDiscoveryCLI(t, addr, "discovery")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"n1: discovery file:/etc/shoal/nodes, regular phase, started 10m0s ago, 70 backend calls\n",
		"last call 1m0s ago: 3 nodes, then regular\n",
		"next call in 4s (regular)\n",
		"initial discovery done 9m0s ago\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	rows := lines[len(lines)-5:]
	for i, want := range [][]string{
		{"ADDRESS", "NODE", "DISCOVERED", "JOINED", "STATE", "NODEUP", "NODEDOWN", "LAST", "ERROR"},
		{"127.0.0.1:7401", "n1", "yes", "yes", "this", "node", "-", "-", "-"},
		{"127.0.0.1:7402", "n2", "yes", "yes", "up", "3m0s", "ago", "5m0s", "ago", "-"},
		{"127.0.0.1:7403", "n3", "no", "yes", "up", "9m0s", "ago", "-", "-"},
		{"127.0.0.1:7409", "-", "yes", "no", "unavailable", "-", "-", "dial", "tcp", "127.0.0.1:7409:", "connect:", "connection", "refused"},
	} {
		if f := strings.Fields(rows[i]); !reflect.DeepEqual(f, want) {
			t.Errorf("row %d: %q, want %q", i, f, want)
		}
	}

	out, err = runDiscoveryCLI(t, addr, "discovery", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var back discovery.Status
	if err := json.Unmarshal([]byte(out), &back); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if back.Backend != ds.Backend || len(back.Nodes) != 4 || back.Nodes[1].Nodedown == nil || !back.Nodes[1].Nodedown.Equal(*ds.Nodes[1].Nodedown) || !reflect.DeepEqual(back.Unavailable, ds.Unavailable) {
		t.Errorf("--json: %+v", back)
	}

	none := testproc.Serve(t, statusServer(&fakeStatus{docs: []string{statusDocJSON(t, "n9", nil, true)}}))
	if _, err := runDiscoveryCLI(t, none, "discovery"); err == nil || !strings.Contains(err.Error(), "without --discovery") {
		t.Errorf("a node without discovery: %v", err)
	}
}

// TestWaitReady: wait-ready returns once the node says it is ready; on
// timeout it fails (exit 1) naming what is missing; --backend-only waits
// for the running backend call and prints its answer.
func TestWaitReady(t *testing.T) {
	missing := "discovery: 127.0.0.1:7409 has not answered yet"
	f := &fakeStatus{docs: []string{
		statusDocJSON(t, "n1", nil, false, missing), statusDocJSON(t, "n1", nil, false, missing), statusDocJSON(t, "n1", nil, true),
	}}
	addr := testproc.Serve(t, statusServer(f))
	out, err := runDiscoveryCLI(t, addr, "wait-ready", "--timeout", "10s")
	if err != nil || out != "n1 is ready\n" || f.polls() != 3 {
		t.Fatalf("wait-ready: %q %v after %d polls", out, err, f.polls())
	}

	never := testproc.Serve(t, statusServer(&fakeStatus{docs: []string{statusDocJSON(t, "n2", nil, false, missing, "cluster: this node has no map of a cluster it is a member of yet (bootstrapping: 2 of 3 expected nodes known)")}}))
	start := time.Now()
	_, err = runDiscoveryCLI(t, never, "wait-ready", "--timeout", "600ms")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(ee.msg, "not ready after 600ms") || !strings.Contains(ee.msg, "127.0.0.1:7409 has not answered yet") || !strings.Contains(ee.msg, "2 of 3 expected nodes") {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(start); d < 600*time.Millisecond || d > 5*time.Second {
		t.Fatalf("wait-ready --timeout 600ms took %v", d)
	}
	stdout, stderr, code := runShoal(t, "--addr", never, "wait-ready", "--timeout", "2s") // a process: its start counts too
	if code != 1 || stdout != "" || !strings.Contains(stderr, "127.0.0.1:7409 has not answered yet") {
		t.Fatalf("the process: exit %d, %q %q", code, stdout, stderr)
	}

	now := time.Now().UTC().Truncate(time.Second)
	running := &discovery.Status{Backend: "dns:shoal.test", BackendRunning: true, RunningSince: &now}
	done := &discovery.Status{Backend: "dns:shoal.test", LastResult: &discovery.Result{At: now, OK: true, Nodes: []discovery.Addr{"127.0.0.1:7401", "[::1]:7401"}, RetryType: discovery.RetryInitial}}
	bf := &fakeStatus{docs: []string{statusDocJSON(t, "n1", running, false), statusDocJSON(t, "n1", running, false), statusDocJSON(t, "n1", done, false)}}
	baddr := testproc.Serve(t, statusServer(bf))
	out, err = runDiscoveryCLI(t, baddr, "wait-ready", "--backend-only", "--timeout", "10s")
	if want := "the backend call at " + now.Format(time.RFC3339) + " listed 2 nodes (next: initial)\n  127.0.0.1:7401\n  [::1]:7401\n"; err != nil || out != want || bf.polls() != 3 {
		t.Fatalf("--backend-only: %q %v after %d polls; want %q", out, err, bf.polls(), want)
	}
	hang := testproc.Serve(t, statusServer(&fakeStatus{docs: []string{statusDocJSON(t, "n1", running, false)}}))
	if _, err := runDiscoveryCLI(t, hang, "wait-ready", "--backend-only", "--timeout", "400ms"); !errors.As(err, &ee) || !strings.Contains(ee.msg, "did not answer within 400ms") {
		t.Fatalf("--backend-only on a hanging backend: %v", err)
	}
	if _, err := runDiscoveryCLI(t, never, "wait-ready", "--backend-only"); err == nil || !strings.Contains(err.Error(), "without --discovery") {
		t.Fatalf("--backend-only without discovery: %v", err)
	}
}

// TestWaitReadyNodeNotUpYet: a node that is not listening yet is waited
// for; one that never comes is named with the last connection error.
func TestWaitReadyNodeNotUpYet(t *testing.T) {
	addr := testproc.FreePorts(t, 1)[0]
	s := statusServer(&fakeStatus{docs: []string{statusDocJSON(t, "late", nil, true)}})
	served := make(chan struct{})
	go func() {
		defer close(served)
		time.Sleep(500 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		s.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			s.Shutdown(ctx)
			select {
			case <-served:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	out, err := runDiscoveryCLI(t, addr, "wait-ready", "--timeout", "20s")
	if err != nil || out != "late is ready\n" {
		t.Fatalf("%q %v", out, err)
	}

	nowhere := testproc.FreePorts(t, 1)[0]
	_, err = runDiscoveryCLI(t, nowhere, "wait-ready", "--timeout", "500ms")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitCluster || !strings.Contains(ee.msg, nowhere+" did not answer within 500ms") || !strings.Contains(ee.msg, "connection refused") {
		t.Fatalf("a node that never comes: %v", err)
	}
}
