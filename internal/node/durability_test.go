package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// durableCluster is the setup of the durability tests: two in-process
// nodes (with extra flags), a routing client, and key's vBucket with its
// active and its replica.
type durableCluster struct {
	nodes           []*Node
	c               *client.Client
	vb              uint16
	active, replica *Node
}

func startDurableCluster(t *testing.T, key string, extra ...string) durableCluster {
	t.Helper()
	nodes, _ := startCluster(t, 2, extra...)
	c, err := client.Dial(t.Context(), nodes[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := durableCluster{nodes: nodes, c: c, vb: vbucket.Of([]byte(key), nodes[0].cfg.VBuckets), active: nodes[0], replica: nodes[1]}
	if d.active.table().State(d.vb) != vbmap.Active {
		d.active, d.replica = d.replica, d.active
	}
	return d
}

// stopFeeds stops nd's replication feeds (`shoal replica stop`) and
// returns the client that did, to start them again.
func stopFeeds(t *testing.T, nd *Node) *client.Client {
	t.Helper()
	rc, err := client.Dial(t.Context(), nd.Addr().String(), client.WithNoRouting())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	if err := rc.ReplicaStop(t.Context()); err != nil {
		t.Fatal(err)
	}
	return rc
}

// TestDurableWrites: in a cluster of two (one replica), a majority write
// is answered once the replica holds it; with the replica's feeds stopped
// it is answered ErrAmbiguous after its timeout (applied on the active,
// never a success), while the key is in flight its reads are held back
// and then served, and a write without durability still succeeds;
// persist-majority is refused for kv; once the feeds run again majority
// writes succeed.
func TestDurableWrites(t *testing.T) {
	d := startDurableCluster(t, "durable-key")
	ctx, c, nodes, key, vb, replica := t.Context(), d.c, d.nodes, []byte("durable-key"), d.vb, d.replica
	var cas uint64
	waitFor(t, 10*time.Second, "a first majority write", func() (bool, string) {
		var err error
		cas, err = c.Put(ctx, "d", key, []byte("v1"), client.WithDurability(client.Majority), client.WithDurabilityTimeout(time.Second))
		return err == nil, fmt.Sprint(err)
	})
	if got := replica.kv.HighSeqno(vb); got < cas {
		t.Fatalf("majority write %d answered, the replica holds %d", cas, got)
	}
	if _, err := c.Put(ctx, "d", key, []byte("p"), client.WithDurability(client.PersistMajority)); !errors.Is(err, client.ErrUnsupported) {
		t.Fatalf("persist-majority on kv: %v", err)
	}

	rc := stopFeeds(t, replica)
	start := time.Now()
	got := make(chan error, 1)
	go func() {
		_, err := c.Put(ctx, "d", key, []byte("v2"), client.WithDurability(client.Majority), client.WithDurabilityTimeout(700*time.Millisecond))
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	// A read of the key in flight waits (the client tries again) until the
	// write is over.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	v, err := c.Get(rctx, "d", key)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 600*time.Millisecond {
		t.Fatalf("read %q of a key in flight after %v", v, el)
	}
	err = <-got
	if !errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("majority write with the replica stopped: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("ambiguous after %v", el)
	}
	if string(v) != "v2" {
		t.Fatalf("read %q after the ambiguous write (it was applied on the active)", v)
	}
	if _, err := c.Put(ctx, "d", []byte("other"), []byte("x")); err != nil {
		t.Fatalf("write without durability: %v", err)
	}
	if err := rc.ReplicaStart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "majority writes again", func() (bool, string) {
		_, err := c.Put(ctx, "d", key, []byte("v3"), client.WithDurability(client.Majority), client.WithDurabilityTimeout(time.Second))
		return err == nil, fmt.Sprint(err)
	})
	// The Dial default.
	dc, err := client.Dial(ctx, nodes[0].Addr().String(), client.WithDefaultDurability(client.Majority, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	cas, err = dc.Put(ctx, "d", key, []byte("v4"))
	if err != nil {
		t.Fatal(err)
	}
	if got := replica.kv.HighSeqno(vb); got < cas {
		t.Fatalf("default majority write %d answered, the replica holds %d", cas, got)
	}
	if _, err := dc.Remove(ctx, "d", key); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultDurabilityFromSettings: the cluster's default durability
// (failover settings, in the metadata group) makes plain writes wait for
// their majority; none, which a write can ask for explicitly, does not.
func TestDefaultDurabilityFromSettings(t *testing.T) {
	d := startDurableCluster(t, "default-key")
	ctx, c, nodes, key, replica := t.Context(), d.c, d.nodes, []byte("default-key"), d.replica
	bad := "persist-majority"
	if _, err := c.FailoverSettings(ctx, client.FailoverSettingsChange{Durability: &bad}); err == nil {
		t.Fatal("persist-majority accepted as the default")
	}
	majority := "majority"
	if _, err := c.FailoverSettings(ctx, client.FailoverSettingsChange{Durability: &majority}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the setting applied on every node", func() (bool, string) {
		for _, nd := range nodes {
			if nd.srv == nil || nd.cluster.known().Settings.Durability != "majority" {
				return false, "not yet"
			}
		}
		time.Sleep(600 * time.Millisecond) // a tick of the automatic failover applies it to the server
		return true, ""
	})
	rc := stopFeeds(t, replica)
	sctx, cancel := context.WithTimeout(ctx, 12*time.Second)
	_, err := c.Put(sctx, "d", key, []byte("v"))
	cancel()
	if !errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("plain write under a majority default with the replica stopped: %v", err)
	}
	// An explicit none is answered at once.
	if _, err := c.Put(ctx, "d", []byte("other-key"), []byte("v"), client.WithDurability(client.None)); err != nil {
		t.Fatalf("explicit none under a majority default: %v", err)
	}
	if err := rc.ReplicaStart(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDurablePushAndAppend: queue pushes and log appends with majority
// durability are answered once the replica holds them, ErrAmbiguous with
// the replica's feeds stopped; persist-majority is refused.
func TestDurablePushAndAppend(t *testing.T) {
	d := startDurableCluster(t, "route")
	ctx, c, key, vb, replica := t.Context(), d.c, []byte("route"), d.vb, d.replica
	push := func(d client.Durability, timeout time.Duration) error {
		return c.Push(ctx, []string{"jobs"}, []byte("j"), client.WithRoutingKey(key), client.WithPushDurability(d, timeout))
	}
	appendLog := func(d client.Durability, timeout time.Duration) error {
		return c.LogPut(ctx, "events", 1, []byte("e"), client.RoutingKey(key), client.LogDurability(d, timeout))
	}
	waitFor(t, 10*time.Second, "a majority push and append", func() (bool, string) {
		e1, e2 := push(client.Majority, time.Second), appendLog(client.Majority, time.Second)
		return e1 == nil && e2 == nil, fmt.Sprint(e1, e2)
	})
	if q, l := replica.queue.HighSeqno(vb), replica.logStore.HighSeqno(vb); q == 0 || l == 0 {
		t.Fatalf("answered, the replica holds queue %d log %d", q, l)
	}
	// Without a routing key the client names the vBucket (FlagVBucket).
	if err := c.LogPut(ctx, "events", 2, []byte("spread"), client.LogDurability(client.Majority, time.Second)); err != nil {
		t.Fatalf("durable append without a routing key: %v", err)
	}
	if err := push(client.PersistMajority, 0); !errors.Is(err, client.ErrUnsupported) {
		t.Fatalf("persist-majority push: %v", err)
	}
	rc := stopFeeds(t, replica)
	if err := push(client.Majority, 500*time.Millisecond); !errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("push with the replica stopped: %v", err)
	}
	if err := appendLog(client.Majority, 500*time.Millisecond); !errors.Is(err, client.ErrAmbiguous) {
		t.Fatalf("append with the replica stopped: %v", err)
	}
	if err := push(client.None, 0); err != nil {
		t.Fatalf("plain push: %v", err)
	}
	if err := rc.ReplicaStart(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPersistMajority: with the log and the queue journal fsynced every
// hour (so only when the test says), a persist-majority append or push is
// answered only once the replica has fsynced it — a majority one at once
// —, and ErrAmbiguous when the replica is cut off, whatever it fsyncs.
func TestPersistMajority(t *testing.T) {
	d := startDurableCluster(t, "route", "--log-fsync", "1h", "--queue-durability", "journal", "--queue-fsync-interval", "1h")
	ctx, c, key, replica := t.Context(), d.c, []byte("route"), d.replica
	writes := []struct {
		name  string
		write func(d client.Durability, timeout time.Duration) error
		sync  func() error
	}{
		{"append", func(d client.Durability, timeout time.Duration) error {
			return c.LogPut(ctx, "events", 1, []byte("e"), client.RoutingKey(key), client.LogDurability(d, timeout))
		}, replica.logStore.Sync},
		{"push", func(d client.Durability, timeout time.Duration) error {
			return c.Push(ctx, []string{"jobs"}, []byte("j"), client.WithRoutingKey(key), client.WithPushDurability(d, timeout))
		}, replica.queue.Sync},
	}
	for _, w := range writes {
		waitFor(t, 10*time.Second, "a majority "+w.name, func() (bool, string) {
			err := w.write(client.Majority, time.Second)
			return err == nil, fmt.Sprint(err)
		})
		got := make(chan error, 1)
		go func() { got <- w.write(client.PersistMajority, 10*time.Second) }()
		select {
		case err := <-got:
			t.Fatalf("persist-majority %s answered before the replica fsynced: %v", w.name, err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := w.sync(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("persist-majority %s after the replica's fsync: %v", w.name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("persist-majority %s not answered 5 s after the replica's fsync", w.name)
		}
	}

	rc := stopFeeds(t, replica)
	for _, w := range writes {
		got := make(chan error, 1)
		go func() { got <- w.write(client.PersistMajority, 500*time.Millisecond) }()
		time.Sleep(100 * time.Millisecond)
		if err := w.sync(); err != nil {
			t.Fatal(err)
		}
		if err := <-got; !errors.Is(err, client.ErrAmbiguous) {
			t.Fatalf("persist-majority %s with the replica cut off: %v", w.name, err)
		}
	}
	if err := rc.ReplicaStart(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDurablePop: a majority pop is answered once the replica of the
// popped record's vBucket holds the pop; with the replica's feeds
// stopped it is ErrAmbiguous, with the value.
func TestDurablePop(t *testing.T) {
	d := startDurableCluster(t, "route")
	ctx, c, key, vb, active, replica := t.Context(), d.c, []byte("route"), d.vb, d.active, d.replica
	push := func(v string) {
		t.Helper()
		if err := c.Push(ctx, []string{"jobs"}, []byte(v), client.WithRoutingKey(key), client.WithPushDurability(client.Majority, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a majority push", func() (bool, string) {
		err := c.Push(ctx, []string{"warmup"}, []byte("w"), client.WithRoutingKey(key), client.WithPushDurability(client.Majority, time.Second))
		return err == nil, fmt.Sprint(err)
	})
	push("one")
	v, err := c.Pop(ctx, "jobs", client.WithPopDurability(client.Majority, 5*time.Second))
	if err != nil || string(v) != "one" {
		t.Fatalf("durable pop: %q %v", v, err)
	}
	if a, r := active.queue.HighSeqno(vb), replica.queue.HighSeqno(vb); r < a {
		t.Fatalf("durable pop answered, the replica holds %d of %d", r, a)
	}

	rc := stopFeeds(t, replica)
	if err := c.Push(ctx, []string{"jobs"}, []byte("two"), client.WithRoutingKey(key)); err != nil {
		t.Fatal(err)
	}
	v, err = c.Pop(ctx, "jobs", client.WithPopDurability(client.Majority, 500*time.Millisecond))
	if !errors.Is(err, client.ErrAmbiguous) || string(v) != "two" {
		t.Fatalf("durable pop with the replica stopped: %q %v", v, err)
	}
	if err := rc.ReplicaStart(ctx); err != nil {
		t.Fatal(err)
	}
}
