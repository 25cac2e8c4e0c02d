package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"shoal/client"
	"shoal/internal/server"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

// TestPromoteIsAllOrNothing: a promotion that fails part way (the queue
// engine's failover log cannot be written) leaves the node a standby in
// every respect — writes refused, engines replicas, no promotion marker,
// no new history in the kv engine's log — and a second attempt succeeds.
func TestPromoteIsAllOrNothing(t *testing.T) {
	var failQueueLog atomic.Bool
	fsys := vfs.Faulty(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, path string, _ int) (int, error) {
		if failQueueLog.Load() && op == vfs.OpSync && strings.Contains(path, "failover-queue") {
			return 0, vfs.ErrInjected
		}
		return 0, nil
	}))
	// The active is a closed port: the standby retries in the background.
	active := testproc.FreePorts(t, 1)[0]
	dir := t.TempDir()
	n := startNode(t, dir, []Option{WithReplFS(fsys)}, "--replica-of", active)
	key := []byte("alice")
	if _, err := n.c.Put(t.Context(), "users", key, []byte("v")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("a write to a standby: %v", err)
	}
	kvLog := n.n.rep.buckets[0].Logs
	uuid := kvLog.UUID(3)

	failQueueLog.Store(true)
	if err := n.n.promote(); err == nil || !strings.Contains(err.Error(), "still a standby") {
		t.Fatalf("promotion with a failing log: %v", err)
	}
	if st := n.status(); st.Replication.Role != "replica" {
		t.Fatalf("role after a failed promotion: %+v", st.Replication)
	}
	if _, err := n.c.Put(t.Context(), "users", key, []byte("v")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("a write after a failed promotion: %v", err)
	}
	if s := n.n.kv.State(3); s != vbmap.Replica {
		t.Fatalf("kv vbucket 3 is %v after a failed promotion", s)
	}
	if got := kvLog.UUID(3); got != uuid {
		t.Fatalf("the kv history changed (%x -> %x) although the promotion failed", uuid, got)
	}
	if _, err := os.Stat(filepath.Join(dir, "repl", promotedFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("promotion marker left behind: %v", err)
	}

	failQueueLog.Store(false)
	if err := n.n.promote(); err != nil {
		t.Fatalf("second promotion: %v", err)
	}
	if err := n.n.promote(); !errors.Is(err, server.ErrNotStandby) {
		t.Fatalf("promoting an active node: %v", err)
	}
	if _, err := n.c.Put(t.Context(), "users", key, []byte("v")); err != nil {
		t.Fatalf("a write after the promotion: %v", err)
	}
	if n.n.kv.State(3) != vbmap.Active || kvLog.UUID(3) == uuid || n.status().Replication.Role != "active" {
		t.Fatalf("after the promotion: state %v, uuid %x (was %x), %+v", n.n.kv.State(3), kvLog.UUID(3), uuid, n.status().Replication)
	}
}
