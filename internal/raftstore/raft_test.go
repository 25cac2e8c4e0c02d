package raftstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listFSM is a tiny state machine: the list of applied commands.
type listFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return len(f.cmds)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.cmds)), nil
}

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cmds []string
	if err := json.NewDecoder(rc).Decode(&cmds); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = cmds
	return nil
}

func (f *listFSM) state() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds)
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist: %w", err)
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// syncBuffer collects raft's logs, shown if the test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testNode is one raft server with its files in dir.
type testNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	dir   string
	store *Store
	fsm   *listFSM
	trans *raft.InmemTransport
	raft  *raft.Raft
}

type cluster struct {
	t     *testing.T
	logs  *syncBuffer
	nodes []*testNode
}

const trailingLogs = 5

func (c *cluster) start(n *testNode) {
	c.t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Name: string(n.id), Output: c.logs, Level: hclog.Debug})
	store, err := Open(filepath.Join(n.dir, "raft.db"), Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.dir, 2, logger)
	if err != nil {
		c.t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport(n.addr)
	cfg := raft.DefaultConfig()
	cfg.LocalID = n.id
	cfg.Logger = logger
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.TrailingLogs = trailingLogs
	cfg.SnapshotThreshold = 1 << 30 // only the snapshots the test asks for
	cfg.SnapshotInterval = time.Hour
	n.store, n.fsm, n.trans = store, &listFSM{}, trans
	n.raft, err = raft.NewRaft(cfg, n.fsm, store, store, snaps, trans)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, o := range c.nodes {
		if o != n && o.raft != nil {
			o.trans.Connect(n.addr, n.trans)
			n.trans.Connect(o.addr, o.trans)
		}
	}
}

func (c *cluster) stop(n *testNode) {
	c.t.Helper()
	if n.raft == nil {
		return
	}
	for _, o := range c.nodes {
		if o != n && o.trans != nil {
			o.trans.Disconnect(n.addr)
		}
	}
	n.trans.DisconnectAll()
	if err := n.raft.Shutdown().Error(); err != nil {
		c.t.Errorf("shutdown %s: %v", n.id, err)
	}
	if err := n.store.Close(); err != nil {
		c.t.Errorf("close %s: %v", n.id, err)
	}
	n.raft, n.trans = nil, nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *cluster) leader() *testNode {
	c.t.Helper()
	var leader *testNode
	waitFor(c.t, "a leader", 20*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.raft != nil && n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// apply applies commands from..to on the leader, retrying once through a
// new leader if leadership moved (the machine may be loaded).
func (c *cluster) apply(from, to int) {
	c.t.Helper()
	for i := from; i <= to; i++ {
		cmd := []byte(fmt.Sprintf("cmd-%d", i))
		var err error
		for try := 0; try < 5; try++ {
			if err = c.leader().raft.Apply(cmd, 5*time.Second).Error(); err == nil {
				break
			}
		}
		if err != nil {
			c.t.Fatalf("apply %s: %v", cmd, err)
		}
	}
}

func wantCmds(n int) []string {
	var s []string
	for i := 1; i <= n; i++ {
		s = append(s, fmt.Sprintf("cmd-%d", i))
	}
	return s
}

func (c *cluster) waitState(n *testNode, want []string) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%s to apply %d commands", n.id, len(want)), 20*time.Second, func() bool {
		return slices.Equal(n.fsm.state(), want)
	})
}

// TestRaftCluster runs hashicorp/raft on three Stores: replication, a
// follower restarted from its files after the leader compacted past it (so
// it needs the snapshot), and compaction on every node.
func TestRaftCluster(t *testing.T) {
	c := &cluster{t: t, logs: &syncBuffer{}}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
		if t.Failed() {
			t.Logf("raft logs:\n%s", c.logs)
		}
	})
	var servers []raft.Server
	for i := range 3 {
		n := &testNode{id: raft.ServerID(fmt.Sprintf("n%d", i)), addr: raft.ServerAddress(fmt.Sprintf("n%d", i)), dir: t.TempDir()}
		c.nodes = append(c.nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: n.addr})
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	if err := c.nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	c.apply(1, 10)
	for _, n := range c.nodes {
		c.waitState(n, wantCmds(10))
	}

	// Stop a follower; the other two go on.
	leader := c.leader()
	var down *testNode
	for _, n := range c.nodes {
		if n != leader {
			down = n
			break
		}
	}
	downLast, err := down.store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	c.stop(down)
	c.apply(11, 40)

	// Snapshot and compact on the leader: its log now starts past what
	// the stopped follower has, so raft must send it the snapshot.
	leader = c.leader()
	if err := leader.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	first, err := leader.store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, _ := leader.store.LastIndex()
	if first <= downLast+1 || last-first+1 != trailingLogs {
		t.Fatalf("after the snapshot the leader keeps %d..%d; want %d entries after %d", first, last, trailingLogs, downLast+1)
	}

	// Restart the follower from its files.
	probe, err := Open(filepath.Join(down.dir, "raft.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := probe.LastIndex(); err != nil || l != downLast {
		t.Fatalf("stopped follower's LastIndex after reopening = %d, %v; want %d", l, err, downLast)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(down.dir, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	has, err := raft.HasExistingState(probe, probe, snaps)
	if err != nil || !has {
		t.Fatalf("HasExistingState of the stopped follower = %v, %v", has, err)
	}
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	c.start(down)
	c.waitState(down, wantCmds(40))
	// Installing the snapshot compacted its old log; raft keeps the last
	// TrailingLogs entries it had, stale as they are (min(snapshot index,
	// last log - TrailingLogs) is the end of the deleted range).
	// It does so after restoring the FSM: poll.
	waitFor(t, "the restarted follower to compact its log", 20*time.Second, func() bool {
		f, err := down.store.FirstIndex()
		return err == nil && f > 1
	})

	c.apply(41, 60)
	for _, n := range c.nodes {
		c.waitState(n, wantCmds(60))
	}
	// A snapshot of the follower's own compacts its log too.
	f0, _ := down.store.FirstIndex()
	if err := down.raft.Snapshot().Error(); err != nil {
		t.Fatalf("follower snapshot: %v", err)
	}
	first, _ = down.store.FirstIndex()
	last, _ = down.store.LastIndex()
	if first <= f0 || last-first+1 != trailingLogs {
		t.Fatalf("after its snapshot the follower keeps %d..%d (first was %d); want the last %d", first, last, f0, trailingLogs)
	}
}
