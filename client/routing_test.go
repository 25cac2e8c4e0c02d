package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"shoal/client"
	"shoal/internal/config"
	"shoal/internal/faultnet"
	"shoal/internal/meta"
	shoald "shoal/internal/node"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// clusterVBuckets is the vBucket count of the test clusters.
const clusterVBuckets = 64

// testCluster is n in-process nodes that formed a cluster.
type testCluster struct {
	t     *testing.T
	addrs []string
	stops []func()
	nodes []*shoald.Node
}

// startTestCluster starts n nodes that form a cluster (--bootstrap-expect
// n) and waits until every node has applied the same map.
func startTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	addrs := testproc.FreePorts(t, n)
	tc := &testCluster{t: t, addrs: addrs}
	for i := range n {
		cfg, err := config.Load([]string{"--data", t.TempDir(), "--listen", addrs[i], "--http", "off",
			"--console=false", "--stats-interval", "0", "--vbuckets", strconv.Itoa(clusterVBuckets), "--log-level", "error",
			"--join", strings.Join(addrs, ","), "--bootstrap-expect", strconv.Itoa(n), "--auto-failover=false", "--failover-timeout", "5s",
			"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		nd, err := shoald.New(cfg, "test")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- nd.Run(ctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("node %d: %v", i, err)
				}
			})
		}
		t.Cleanup(stop)
		tc.stops = append(tc.stops, stop)
		tc.nodes = append(tc.nodes, nd)
	}
	tc.waitMap(0)
	return tc
}

// direct is a client of node i alone.
func (tc *testCluster) direct(i int) *client.Client {
	tc.t.Helper()
	return dial(tc.t, tc.addrs[i], client.WithNoRouting(), client.WithTimeout(5*time.Second))
}

// waitMap waits until every running node has applied one map of a
// revision above after, and returns it.
func (tc *testCluster) waitMap(after uint64) *client.ClusterMap {
	tc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var maps []*client.ClusterMap
		for i := range tc.addrs {
			c, err := client.Dial(tc.t.Context(), tc.addrs[i], client.WithNoRouting(), client.WithTimeout(2*time.Second))
			if err != nil {
				continue
			}
			ci, err := c.Cluster(tc.t.Context())
			if err == nil && ci.Revision > after && len(ci.Nodes) == len(tc.addrs) {
				if m, err := c.ClusterMap(tc.t.Context()); err == nil && m.Revision == ci.Revision {
					maps = append(maps, m)
				}
			}
			c.Close()
		}
		if len(maps) == len(tc.addrs) && !slices.ContainsFunc(maps, func(m *client.ClusterMap) bool { return m.Revision != maps[0].Revision }) {
			// The nodes follow a map once they applied it; their
			// documents may show it a moment before.
			time.Sleep(50 * time.Millisecond)
			return maps[0]
		}
		if time.Now().After(deadline) {
			tc.t.Fatalf("the nodes did not agree on a map above revision %d within 30s", after)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addrOf returns the data address of member id in m.
func addrOf(t *testing.T, m *client.ClusterMap, id string) string {
	t.Helper()
	n, ok := m.Node(id)
	if !ok {
		t.Fatalf("no member %s", id)
	}
	return n.Addr
}

// swapChains makes every vBucket's first replica its active (a map
// command proposed to the leader, as a failover would) and returns the
// new map once every node applied it.
func (tc *testCluster) swapChains(m *client.ClusterMap) *client.ClusterMap {
	tc.t.Helper()
	var ci *client.ClusterInfo
	deadline := time.Now().Add(10 * time.Second)
	for { // an election may be under way (a loaded machine): wait for a leader
		var err error
		if ci, err = tc.direct(0).Cluster(tc.t.Context()); err != nil {
			tc.t.Fatal(err)
		}
		if ci.LeaderAddr != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	chains := make([][]string, len(m.VBuckets))
	for vb, v := range m.VBuckets {
		chains[vb] = slices.Clone(v.Chain)
		if len(chains[vb]) > 1 {
			chains[vb][0], chains[vb][1] = chains[vb][1], chains[vb][0]
		}
	}
	body, err := (&meta.Command{Op: meta.OpMap, Time: time.Now().UnixMilli(), Chains: chains, ExpectRevision: m.Revision}).Encode()
	if err != nil {
		tc.t.Fatal(err)
	}
	nc, err := net.DialTimeout("tcp", ci.LeaderAddr, 2*time.Second)
	if err != nil {
		tc.t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	hello := wire.AppendU32(wire.AppendU16(wire.AppendStr8(nil, "test"), wire.Version), 0)
	if _, err := wire.RoundTrip(nc, wire.OpHello, 1, hello, 1<<10); err != nil {
		tc.t.Fatal(err)
	}
	if _, err := wire.RoundTrip(nc, wire.OpMetaPropose, 2, body, 64); err != nil {
		tc.t.Fatalf("the map change: %v", err)
	}
	return tc.waitMap(m.Revision)
}

// keyOn returns a key (prefix + n) whose vBucket is active on node id.
func keyOn(m *client.ClusterMap, id, prefix string) string {
	for i := 0; ; i++ {
		k := prefix + strconv.Itoa(i)
		if m.VBuckets[m.VBucketOf([]byte(k))].Active() == id {
			return k
		}
	}
}

// TestRoutingThreeNodes: keys written through one seed are each held by
// their vBucket's active alone and read back through each other seed;
// every vBucket is active on exactly one node.
func TestRoutingThreeNodes(t *testing.T) {
	tc := startTestCluster(t, 3)
	ctx := t.Context()
	c := dial(t, tc.addrs[0])
	m := c.RoutingMap()
	if m == nil || len(m.Nodes) != 3 || len(m.VBuckets) != clusterVBuckets {
		t.Fatalf("routing map %+v", m)
	}
	seen := map[string]int{}
	for vb, v := range m.VBuckets {
		if v.Active() == "" {
			t.Fatalf("vbucket %d has no active", vb)
		}
		seen[v.Active()]++
	}
	if len(seen) != 3 {
		t.Fatalf("actives per node %v", seen)
	}
	const keys = 3000
	p := c.Pipeline()
	for i := range keys {
		p.Put("users", fmt.Appendf(nil, "user-%d", i), fmt.Appendf(nil, "v%d", i))
		if p.Len() == 500 {
			if err := p.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := c.Put(ctx, "users", []byte("single"), []byte("s")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 3; i++ {
		ci := dial(t, tc.addrs[i])
		for k := range keys {
			key := fmt.Appendf(nil, "user-%d", k)
			if v, err := ci.Get(ctx, "users", key); err != nil || string(v) != fmt.Sprintf("v%d", k) {
				t.Fatalf("get %s through seed %d: %q %v", key, i, v, err)
			}
		}
		if ok, err := ci.Exists(ctx, "users", []byte("single")); !ok || err != nil {
			t.Fatalf("exists through seed %d: %v %v", i, ok, err)
		}
	}
	// Each key is on its active only: the other nodes refuse it.
	byAddr := map[string]int{}
	for i, a := range tc.addrs {
		byAddr[a] = i
	}
	directs := []*client.Client{tc.direct(0), tc.direct(1), tc.direct(2)}
	for k := 0; k < keys; k += 7 {
		key := fmt.Appendf(nil, "user-%d", k)
		owner := byAddr[addrOf(t, m, m.VBuckets[m.VBucketOf(key)].Active())]
		for i, d := range directs {
			_, err := d.Get(ctx, "users", key)
			if i == owner && err != nil {
				t.Fatalf("key %s on its active %d: %v", key, i, err)
			}
			var ce *client.Error
			if i != owner && (!errors.As(err, &ce) || !errors.Is(err, client.ErrNotMyVBucket) || ce.Active != tc.addrs[owner]) {
				t.Fatalf("key %s on node %d (active %d): %v", key, i, owner, err)
			}
		}
	}
	// Sizes fan out and add up: each node counts its active vBuckets.
	if s, err := c.ChannelSize(ctx, "users"); err != nil || s.Records != keys+1 || s.Kind != "kv" {
		t.Fatalf("ChannelSize = %+v %v", s, err)
	}
	var sum int64
	for _, d := range directs {
		s, err := d.ChannelSize(ctx, "users")
		if err != nil || s.Records == 0 {
			t.Fatalf("a node's size %+v %v", s, err)
		}
		sum += s.Records
	}
	if sum != keys+1 {
		t.Fatalf("the nodes' sizes add up to %d", sum)
	}
	// A routed PutBatch is split by node.
	var recs []client.Record
	for i := range 200 {
		recs = append(recs, client.Record{Key: fmt.Appendf(nil, "batch-%d", i), Value: []byte("b")})
	}
	if n, err := c.PutBatch(ctx, "batched", recs); err != nil || n != 200 {
		t.Fatalf("PutBatch = %d, %v", n, err)
	}
	for _, r := range recs {
		if v, err := c.Get(ctx, "batched", r.Key); err != nil || string(v) != "b" {
			t.Fatalf("get %s: %q %v", r.Key, v, err)
		}
	}
}

// TestRoutingFollowsNotMyVBucket: after a map change the client's first
// request to an old active gets `not my vbucket` with the new map, and
// goes on to the new active; writes land there (the client has no
// MapNotify stream here).
func TestRoutingFollowsNotMyVBucket(t *testing.T) {
	tc := startTestCluster(t, 3)
	ctx := t.Context()
	c := dial(t, tc.addrs[0], client.WithoutMapNotify())
	old := c.RoutingMap()
	if _, err := c.Put(ctx, "c", []byte("before"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	m := tc.swapChains(old)
	if c.RoutingMap().Revision != old.Revision {
		t.Fatal("the client learned the map without a request")
	}
	key := keyOn(old, old.Nodes[0].ID, "k") // its active changes
	start := time.Now()
	if _, err := c.Put(ctx, "c", []byte(key), []byte("after")); err != nil {
		t.Fatalf("put after the change: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the put took %v", took)
	}
	if got := c.RoutingMap().Revision; got != m.Revision {
		t.Fatalf("the client routes by revision %d, the cluster is at %d", got, m.Revision)
	}
	newActive := addrOf(t, m, m.VBuckets[m.VBucketOf([]byte(key))].Active())
	if newActive == addrOf(t, old, old.VBuckets[old.VBucketOf([]byte(key))].Active()) {
		t.Fatal("the key's active did not change")
	}
	if v, err := dial(t, newActive, client.WithNoRouting()).Get(ctx, "c", []byte(key)); err != nil || string(v) != "after" {
		t.Fatalf("the key on its new active: %q %v", v, err)
	}
	if v, err := c.Get(ctx, "c", []byte(key)); err != nil || string(v) != "after" {
		t.Fatalf("get after the change: %q %v", v, err)
	}
	// A Pipeline built by an old map: its refused requests go again by
	// themselves, to the new actives.
	stale := dial(t, tc.addrs[1], client.WithoutMapNotify())
	if stale.RoutingMap().Revision != m.Revision {
		t.Fatal("a new client has an old map")
	}
	m2 := tc.swapChains(m)
	p := stale.Pipeline()
	var res []*client.Result
	for i := range 200 {
		res = append(res, p.Put("p", fmt.Appendf(nil, "pk-%d", i), []byte("pv")))
	}
	if err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.CAS == 0 {
			t.Fatalf("pipelined put %d after a map change: %+v", i, r)
		}
	}
	if stale.RoutingMap().Revision != m2.Revision {
		t.Fatalf("the pipeline's client routes by revision %d, the cluster is at %d", stale.RoutingMap().Revision, m2.Revision)
	}
	for i := range 200 {
		k := fmt.Appendf(nil, "pk-%d", i)
		owner := addrOf(t, m2, m2.VBuckets[m2.VBucketOf(k)].Active())
		if v, err := dial(t, owner, client.WithNoRouting()).Get(ctx, "p", k); err != nil || string(v) != "pv" {
			t.Fatalf("key %s on its active %s: %q %v", k, owner, v, err)
		}
	}
}

// TestMapNotifyReachesAnIdleClient: a map change reaches a client that
// has no request in flight.
func TestMapNotifyReachesAnIdleClient(t *testing.T) {
	tc := startTestCluster(t, 3)
	c := dial(t, tc.addrs[1])
	old := c.RoutingMap()
	m := tc.swapChains(old)
	deadline := time.Now().Add(5 * time.Second)
	for c.RoutingMap().Revision != m.Revision {
		if time.Now().After(deadline) {
			t.Fatalf("the client still routes by revision %d; the cluster is at %d", c.RoutingMap().Revision, m.Revision)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a, b := c.RoutingMap().VBuckets[0].Active(), old.VBuckets[0].Active(); a == b {
		t.Fatalf("vbucket 0 still active on %s", a)
	}
}

// TestRoutingSpreadsWrites: pushes and appends without a routing key go
// round-robin over every vBucket, each to its active; Pop empties every
// node and then answers ErrEmpty; LogRange merges the nodes' records in
// timestamp order.
func TestRoutingSpreadsWrites(t *testing.T) {
	tc := startTestCluster(t, 3)
	ctx := t.Context()
	c := dial(t, tc.addrs[2])
	const rounds = 3
	n := rounds * clusterVBuckets
	for i := range n {
		if err := c.Push(ctx, []string{"jobs"}, fmt.Appendf(nil, "job-%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := c.LogPut(ctx, "events", uint64(1000+(i*37)%n), fmt.Appendf(nil, "e%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	m := c.RoutingMap()
	for i := range tc.addrs {
		doc, err := tc.direct(i).Status(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			NodeID      string `json:"node_id"`
			Replication struct {
				HighSeqnos map[string][]uint64 `json:"high_seqnos"`
			} `json:"replication"`
		}
		if err := json.Unmarshal(doc, &st); err != nil {
			t.Fatal(err)
		}
		for vb, v := range m.VBuckets {
			want := uint64(0)
			switch {
			case v.Active() == st.NodeID:
				want = rounds
			case slices.Contains(v.Chain, st.NodeID):
				continue // a replica's copy, which its stream fills in its own time
			}
			for _, engine := range []string{"queue", "log"} {
				if got := st.Replication.HighSeqnos[engine][vb]; got != want {
					t.Errorf("node %s, %s vbucket %d: seqno %d, want %d", st.NodeID, engine, vb, got, want)
				}
			}
		}
	}
	var last uint64
	nodes := map[string]bool{}
	count := 0
	for r, err := range c.LogAll(ctx, "events").All() {
		if err != nil {
			t.Fatal(err)
		}
		if r.Timestamp < last {
			t.Fatalf("record %d: timestamp %d after %d", count, r.Timestamp, last)
		}
		last = r.Timestamp
		nodes[r.Node] = true
		count++
	}
	if count != n || len(nodes) != 3 {
		t.Fatalf("LogAll: %d records from %d nodes", count, len(nodes))
	}
	got := map[string]bool{}
	for range n {
		v, err := c.Pop(ctx, "jobs")
		if err != nil {
			t.Fatalf("pop %d: %v", len(got), err)
		}
		got[string(v)] = true
	}
	if len(got) != n {
		t.Fatalf("%d distinct values popped of %d", len(got), n)
	}
	if _, err := c.Pop(ctx, "jobs"); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("pop of an empty queue on every node: %v", err)
	}
	qs, err := c.Queues(ctx)
	if err != nil || len(qs) != 3 {
		t.Fatalf("Queues = %+v %v", qs, err)
	}
}

// TestRoutingGetAllMergesAndResumes: GetAll over three nodes returns every
// record once, in the order one node would (vBucket, hash, key), also
// when one node's connection is cut several times mid-stream (that
// node's part resumes after its last key); After resumes the merged
// stream.
func TestRoutingGetAllMergesAndResumes(t *testing.T) {
	tc := startTestCluster(t, 3)
	ctx := t.Context()
	w := dial(t, tc.addrs[0])
	var want []string
	big := bytes.Repeat([]byte("x"), 400)
	p := w.Pipeline()
	for i := range 3000 {
		key := fmt.Sprintf("rec-%d", i)
		want = append(want, key)
		p.Put("all", []byte(key), big)
	}
	if err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	order := func(a, b string) int {
		ha, hb := xxhash.Sum64String(a), xxhash.Sum64String(b)
		if va, vb := ha%clusterVBuckets, hb%clusterVBuckets; va != vb {
			return int(va) - int(vb)
		}
		if ha != hb {
			if ha < hb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	}
	slices.SortFunc(want, order)
	// Seed the client through a proxy of node 0 that cuts its
	// connections: the client routes node 0's vBuckets through the proxy.
	px, err := faultnet.New(tc.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	c := dial(t, px.Addr(), client.WithStreamWindow(64<<10))
	if n, _ := c.RoutingMap().Node(c.RoutingMap().VBuckets[0].Active()); n.Addr == "" {
		t.Fatal("no active for vbucket 0")
	}
	px.CutAfter(100 << 10)
	var got []string
	for r, err := range c.GetAll(ctx, "all").All() {
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Value) != len(big) {
			t.Fatalf("record %s: %d bytes", r.Key, len(r.Value))
		}
		got = append(got, string(r.Key))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("GetAll returned %d records (want %d), first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	if px.Accepted() < 3 {
		t.Fatalf("only %d connections through the proxy: the stream was not cut", px.Accepted())
	}
	px.CutAfter(0)
	got = got[:0]
	for r, err := range c.GetAll(ctx, "all", client.After([]byte(want[1000])), client.KeysOnly()).All() {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(r.Key))
	}
	if !slices.Equal(got, want[1001:]) {
		t.Fatalf("GetAll After: %d records, want %d (first difference at %d)", len(got), len(want)-1001, firstDiff(got, want[1001:]))
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestNoRoutingAndUnavailable: WithNoRouting talks to its node only and
// returns `not my vbucket` at once; a routed request for a vBucket whose
// active is down fails with ErrUnavailable naming the vBucket and the
// node once its context ends.
func TestNoRoutingAndUnavailable(t *testing.T) {
	tc := startTestCluster(t, 3)
	ctx := t.Context()
	m := dial(t, tc.addrs[0]).RoutingMap()
	d := tc.direct(1)
	if d.RoutingMap() != nil {
		t.Fatal("WithNoRouting routes")
	}
	id0 := ""
	for _, n := range m.Nodes {
		if n.Addr == tc.addrs[0] {
			id0 = n.ID
		}
	}
	key := keyOn(m, id0, "n")
	start := time.Now()
	_, err := d.Put(ctx, "c", []byte(key), []byte("v"))
	var ce *client.Error
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrNotMyVBucket) || ce.Active != tc.addrs[0] || ce.Revision != m.Revision {
		t.Fatalf("a put of node 0's key on node 1 without routing: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("not my vbucket took %v without routing", took)
	}

	c := dial(t, tc.addrs[1], client.WithTimeout(800*time.Millisecond))
	tc.stops[0]()
	start = time.Now()
	_, err = c.Get(ctx, "c", []byte(key))
	took := time.Since(start)
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrUnavailable) || ce.VBucket != int(vbucket.Of([]byte(key), clusterVBuckets)) || ce.Node != tc.addrs[0] {
		t.Fatalf("a get of a down node's key: %v", err)
	}
	if took < 500*time.Millisecond || took > 5*time.Second {
		t.Fatalf("ErrUnavailable after %v; the call's timeout is 800ms", took)
	}
	// Keys of the nodes that are up are served meanwhile.
	if _, err := c.Put(ctx, "c", []byte(keyOn(m, otherID(m, id0), "u")), []byte("v")); err != nil {
		t.Fatalf("a put to a node that is up: %v", err)
	}
}

// otherID returns a member id other than id.
func otherID(m *client.ClusterMap, id string) string {
	for _, n := range m.Nodes {
		if n.ID != id {
			return n.ID
		}
	}
	return ""
}

// TestRoutingStreamsAndProducer: Mirror over three nodes refreshes every
// record once and ends its refresh once, then sends the changes of every
// node; Consume gets the pushes of every node; a Producer stores on one
// node, and Pop finds its records.
func TestRoutingStreamsAndProducer(t *testing.T) {
	tc := startTestCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c := dial(t, tc.addrs[0])
	for i := range 300 {
		if _, err := c.Put(ctx, "m", fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	mir := c.Mirror(ctx, "m", client.InitialRefresh())
	refreshed, ends, puts := map[string]bool{}, 0, map[string]bool{}
	for ev, err := range mir.All() {
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case client.MirrorRefresh:
			if ends > 0 || refreshed[string(ev.Key)] {
				t.Fatalf("refresh of %s after the end or twice", ev.Key)
			}
			refreshed[string(ev.Key)] = true
		case client.MirrorRefreshEnd:
			if ends++; len(refreshed) != 300 {
				t.Fatalf("refresh end after %d records", len(refreshed))
			}
			for i := range 30 { // the changes of every node
				if _, err := c.Put(ctx, "m", fmt.Appendf(nil, "new%d", i), []byte("n")); err != nil {
					t.Fatal(err)
				}
			}
		case client.MirrorPut:
			puts[string(ev.Key)] = true
		}
		if len(puts) == 30 {
			mir.Stop()
		}
	}
	if ends != 1 || len(puts) != 30 {
		t.Fatalf("%d refresh ends, %d puts mirrored", ends, len(puts))
	}

	cons := c.Consume(ctx, "work", "")
	got := map[string]bool{}
	done := make(chan error, 1)
	go func() {
		for v, err := range cons.All() {
			if err != nil {
				done <- err
				return
			}
			if got[string(v)] = true; len(got) == 60 {
				cons.Stop()
			}
		}
		done <- nil
	}()
	time.Sleep(200 * time.Millisecond) // every node's subscription first: the backlog of a new channel
	for i := range 60 {
		if err := c.Push(ctx, []string{"work"}, fmt.Appendf(nil, "w%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil || len(got) != 60 {
		t.Fatalf("consumed %d of 60: %v", len(got), err)
	}

	p, err := c.Produce(ctx, []string{"made"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tc.addrs, p.Node()) {
		t.Fatalf("the producer writes to %s, not a member", p.Node())
	}
	for i := range 100 {
		if err := p.Send(fmt.Appendf(nil, "p%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := p.Close(); err != nil || n != 100 {
		t.Fatalf("Close = %d, %v", n, err)
	}
	for i := range 100 {
		if _, err := c.Pop(ctx, "made"); err != nil {
			t.Fatalf("pop %d: %v", i, err)
		}
	}
	if _, err := c.Pop(ctx, "made"); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("pop after all: %v", err)
	}
}
