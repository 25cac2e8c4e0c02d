package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/repl"
	"shoal/internal/server"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// TestPromoteIsAllOrNothing: a standby that never reached its active is
// not promoted unless forced, the lag named; a promotion that fails part
// way (the queue engine's failover log cannot be written) leaves the node
// a standby in every respect — writes refused, engines replicas, no promotion marker,
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

	// It never streamed from its active: it does not know what it lacks.
	err := n.n.promote(false)
	if !errors.Is(err, ErrStandbyBehind) || !strings.Contains(err.Error(), "kv: 64 vbuckets behind by 0 seqnos, 64 of them never streamed") ||
		!strings.Contains(err.Error(), "log: 64 vbuckets") || !strings.Contains(err.Error(), "queue: 64 vbuckets") {
		t.Fatalf("promotion of a standby that never streamed: %v", err)
	}
	if st := n.status(); st.Replication.Role != "replica" || st.Replication.Lag == nil || st.Replication.Lag.VBuckets != 3*64 || st.Replication.Lag.Unknown != 3*64 {
		t.Fatalf("after a refused promotion: %+v", st.Replication)
	}

	failQueueLog.Store(true)
	if err := n.n.promote(true); err == nil || !strings.Contains(err.Error(), "still a standby") {
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
	if err := n.n.promote(true); err != nil {
		t.Fatalf("second promotion: %v", err)
	}
	if err := n.n.promote(true); !errors.Is(err, server.ErrNotStandby) {
		t.Fatalf("promoting an active node: %v", err)
	}
	if _, err := n.c.Put(t.Context(), "users", key, []byte("v")); err != nil {
		t.Fatalf("a write after the promotion: %v", err)
	}
	if n.n.kv.State(3) != vbmap.Active || kvLog.UUID(3) == uuid || n.status().Replication.Role != "active" {
		t.Fatalf("after the promotion: state %v, uuid %x (was %x), %+v", n.n.kv.State(3), kvLog.UUID(3), uuid, n.status().Replication)
	}
}

// TestStandbyCopiesPoppedQueue: a queue channel whose records were all
// popped before the standby arrived is copied in full and shown so: every
// queue vBucket caught up, 0 lagging, the standby's seqnos the active's
// (before the snapshot of a popped vBucket ended with a pop of nothing at
// the high seqno, such a vBucket never reached its snapshot's end: seen
// as "1024 lagging" forever with the queue seqnos at 0 on the replica).
func TestStandbyCopiesPoppedQueue(t *testing.T) {
	a := startNode(t, t.TempDir(), nil)
	ctx := t.Context()
	for i := range 200 {
		if err := a.c.Push(ctx, []string{"q"}, fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 150 {
		if _, err := a.c.Pop(ctx, "q"); err != nil {
			t.Fatalf("pop %d: %v", i, err)
		}
	}
	for range 50 { // and one channel emptied by its pops entirely
		if err := a.c.Push(ctx, []string{"emptied"}, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := a.c.Pop(ctx, "emptied"); err != nil {
			t.Fatal(err)
		}
	}
	b := startNode(t, t.TempDir(), nil, "--replica-of", a.n.Addr().String(), "--replica-noop-interval", "100ms")
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := b.n.statusDoc(true)
		sa := a.n.statusDoc(true)
		var queue *repl.Status
		for i := range st.Replication.Engines {
			if e := &st.Replication.Engines[i]; e.Bucket == "queue" {
				queue = e
			}
		}
		if queue != nil && queue.Lagging == 0 && queue.CaughtUp == 64 && queue.LagSeqnos == 0 &&
			slices.Equal(st.Replication.HighSeqnos["queue"], sa.Replication.HighSeqnos["queue"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby's queue engine: %+v\nstandby seqnos %v\nactive seqnos  %v", queue, st.Replication.HighSeqnos["queue"], sa.Replication.HighSeqnos["queue"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	var records int64
	for _, cs := range b.status().Channels {
		if cs.Kind == "queue" {
			records += cs.Records
		}
	}
	if records != 50 {
		t.Fatalf("the standby holds %d queue records, want 50", records)
	}
	// The active's view: once the standby's acknowledgement arrives (it
	// owes one at its next NOOP interval), nothing behind.
	deadline = time.Now().Add(10 * time.Second)
	for {
		var queue *repl.ConsumerStatus
		for _, cs := range a.n.statusDoc(true).Replication.Serving {
			if cs.Bucket == "queue" {
				queue = &cs
			}
		}
		if queue != nil && queue.Streams == 64 && queue.CaughtUp == 64 && queue.LagSeqnos == 0 && queue.LagBytes == 0 && queue.Standby {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the active serves %+v", queue)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconcileKeepsSessions: a map change that takes one vBucket out of
// a feed and puts it back changes only that vBucket's streams: the
// sessions and counters of every engine's feed stay, the other vBuckets
// stream on.
func TestReconcileKeepsSessions(t *testing.T) {
	a := startNode(t, t.TempDir(), nil)
	addr := a.n.Addr().String()
	b := startNode(t, t.TempDir(), nil, "--replica-of", addr, "--replica-noop-interval", "100ms")
	ctx := t.Context()
	keyIn := func(vb uint16, i int) []byte {
		for n := 0; ; n++ {
			k := fmt.Appendf(nil, "k%d-%d", i, n)
			if vbucket.Of(k, 64) == vb {
				return k
			}
		}
	}
	put := func(vb uint16, i int) {
		if _, err := a.c.Put(ctx, "c", keyIn(vb, i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	put(5, 0)
	put(6, 0)
	caughtUp := func(what string, want int) repl.Status {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := b.n.statusDoc(false)
			kv := engineOf(st, "kv")
			if kv.VBuckets == want && kv.CaughtUp == want && b.n.kv.HighSeqno(6) == a.n.kv.HighSeqno(6) {
				return kv
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, kv)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	before := caughtUp("the first copy", 64)

	chains := standbyMap(b.n.cfg.NodeID, addr, 64).Chains()
	chains[5] = []string{addr} // vb 5's replica moves off the standby
	cur := b.n.table().Map()
	if err := b.n.applyMap(cur.Next(cur.Revision+1, 1, chains), map[string]string{addr: addr}); err != nil {
		t.Fatal(err)
	}
	held5 := b.n.kv.HighSeqno(5)
	put(5, 1)
	put(6, 1)
	mid := caughtUp("without vb 5", 63)
	if b.n.kv.HighSeqno(5) != held5 || b.n.kv.State(5) != vbmap.Dead {
		t.Fatalf("vb 5 after its removal: seqno %d (held %d), %v", b.n.kv.HighSeqno(5), held5, b.n.kv.State(5))
	}

	chains[5] = []string{addr, b.n.cfg.NodeID}
	cur = b.n.table().Map()
	if err := b.n.applyMap(cur.Next(cur.Revision+1, 1, chains), map[string]string{addr: addr}); err != nil {
		t.Fatal(err)
	}
	after := caughtUp("with vb 5 again", 64)
	if b.n.kv.HighSeqno(5) != a.n.kv.HighSeqno(5) {
		t.Fatalf("vb 5 back: %d, active %d", b.n.kv.HighSeqno(5), a.n.kv.HighSeqno(5))
	}
	// The same replicator and session all along: its counters went on
	// (vb 5 resumed from what it held, without a rollback).
	for _, st := range []repl.Status{mid, after} {
		if st.Sessions != before.Sessions || st.Reconnects != before.Reconnects || st.Rollbacks != 0 || st.Applied <= before.Applied {
			t.Fatalf("the kv feed's session changed: before %+v, now %+v", before, st)
		}
	}
	for _, e := range b.n.statusDoc(false).Replication.Engines {
		if e.Sessions != 1 || e.Reconnects != 0 {
			t.Fatalf("the %s feed: %d sessions, %d reconnects", e.Bucket, e.Sessions, e.Reconnects)
		}
	}
}

// engineOf returns the replicator status of bucket.
func engineOf(st Status, bucket string) repl.Status {
	for _, e := range st.Replication.Engines {
		if e.Bucket == bucket {
			return e
		}
	}
	return repl.Status{}
}
