package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/rebalance"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
)

// joinNode starts one more in-process node that joins the cluster of
// nodes through their addresses, and waits until it is an active member
// that applied the cluster's map.
func joinNode(t *testing.T, nodes []*Node, extra ...string) *Node {
	t.Helper()
	nd, _ := joinNodeDone(t, nodes, extra...)
	return nd
}

// joinNodeDone is joinNode, also returning the channel its Run's result
// arrives on when the node stops by itself.
func joinNodeDone(t *testing.T, nodes []*Node, extra ...string) (*Node, <-chan error) {
	t.Helper()
	var join []string
	for _, nd := range nodes {
		join = append(join, nd.Addr().String())
	}
	nd, _, exited := runNode(t, nil, append([]string{"--listen", testproc.FreePorts(t, 1)[0], "--join", strings.Join(join, ",")}, extra...)...)
	waitFor(t, 20*time.Second, "the new node to be an active member", func() (bool, string) {
		cs := nd.clusterStatus()
		for _, m := range cs.Nodes {
			if m.ID == nd.cfg.NodeID && m.State == "active" && cs.Revision != 0 && nd.table() != nil && nd.table().Map().Revision == cs.Revision {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", cs)
	})
	return nd, exited
}

// TestRebalanceOfAJoin: a third node joins two that hold kv records,
// queue records and log records; a rebalance gives it its share while a
// writer writes through the routing client. Afterwards the map is
// balanced, nothing moves any more, every record is read back once and
// the writer saw no error.
func TestRebalanceOfAJoin(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	ctx := t.Context()
	seeds := nodes[0].Addr().String() + "," + nodes[1].Addr().String()
	c, err := client.Dial(ctx, seeds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const keys, pushes, appends = 3000, 400, 400
	for i := range keys {
		if _, err := c.Put(ctx, "kv", fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range pushes {
		if err := c.Push(ctx, []string{"jobs"}, fmt.Appendf(nil, "job%d", i), client.WithRoutingKey(fmt.Appendf(nil, "r%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range appends {
		if err := c.LogPut(ctx, "events", uint64(i+1), fmt.Appendf(nil, "e%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	third := joinNode(t, nodes)

	// The writer: puts through the routing client during the whole
	// rebalance; any error but none is a failure.
	var written atomic.Int64
	var werr error
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.Put(wctx, "kv", fmt.Appendf(nil, "w%d", i), []byte("x"))
			cancel()
			if err != nil {
				werr = fmt.Errorf("write %d: %w", i, err)
				return
			}
			written.Add(1)
		}
	}()

	before := nodes[0].cluster.meta.State()
	var members []vbmap.Node
	for _, m := range before.Nodes {
		members = append(members, vbmap.Node{ID: m.ID, Zone: m.Zone})
	}
	plan, err := rebalance.Plan(before.Map, members, before.Replicas)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Rebalance(ctx, client.RebalanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.Total == 0 {
		t.Fatalf("the rebalance did not start: %+v", st)
	}
	if _, err := c.Rebalance(ctx, client.RebalanceOptions{}); !errors.Is(err, client.ErrRefused) {
		t.Fatalf("a second rebalance while one runs: %v", err)
	}
	st = waitRebalanceEnd(t, c, 60*time.Second)
	restarted := st.State == "" || strings.Contains(st.Reason, "no longer the metadata leader") || strings.Contains(st.Reason, "the map could not be changed")
	if restarted {
		st = rebalanceDone(t, c, client.RebalanceOptions{}, 60*time.Second)
	}
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatalf("the writer: %v", werr)
	}
	if st.State != "done" || st.Done != st.Total || st.Abandoned != 0 {
		t.Fatalf("the rebalance ended %+v", st)
	}
	t.Logf("rebalance: %d vbuckets in %d ms, %d bytes; %d writes during it", st.Done, st.ElapsedMillis, st.Bytes, written.Load())

	var m *vbmap.Map
	waitFor(t, 5*time.Second, "the last map of the rebalance on the first node", func() (bool, string) {
		m = nodes[0].cluster.known().Map
		return m.Revision >= st.Revision, fmt.Sprintf("revision %d, the rebalance's %d", m.Revision, st.Revision)
	})
	if m.Moving() != 0 {
		t.Fatalf("the map still shows %d vbuckets moving", m.Moving())
	}
	for vb, v := range m.VBuckets {
		if !restarted && !slices.Equal(v.Chain, plan.Chains[vb]) {
			t.Errorf("vbucket %d: chain %v, the plan's %v (before %v)", vb, v.Chain, plan.Chains[vb], before.Map.VBuckets[vb].Chain)
		}
	}
	counts := m.Counts()
	for _, nd := range append(nodes, third) {
		cn := counts[nd.cfg.NodeID]
		if cn.Active < m.Len()/3 || cn.Active > m.Len()/3+1 {
			t.Errorf("node %s is active for %d of %d vbuckets", nd.cfg.NodeID, cn.Active, m.Len())
		}
	}
	for vb, v := range m.VBuckets {
		if len(v.Chain) != 2 {
			t.Errorf("vbucket %d has the chain %v", vb, v.Chain)
		}
	}
	// Every node serves by that map, holds exactly its copies, and no
	// copy of a vBucket it left is kept.
	waitFor(t, 10*time.Second, "every node to apply the last map and its copies to catch up", func() (bool, string) {
		for _, nd := range append(nodes, third) {
			if r := nd.table().Map().Revision; r != m.Revision {
				return false, fmt.Sprintf("%s at revision %d, not %d", nd.cfg.NodeID, r, m.Revision)
			}
			for vb := range uint16(m.Len()) {
				for _, b := range nd.rep.buckets {
					held := b.Engine.HighSeqno(vb)
					active := activeNode(append(nodes, third), m, vb)
					want := active.rep.buckets[0].Engine.HighSeqno(vb)
					if b.Name != "kv" {
						continue
					}
					switch m.StateOf(nd.cfg.NodeID, vb) {
					case vbmap.Dead:
						if held != 0 {
							return false, fmt.Sprintf("%s still holds vbucket %d (seqno %d) it left", nd.cfg.NodeID, vb, held)
						}
					default:
						if held != want {
							return false, fmt.Sprintf("%s holds vbucket %d at %d, its active at %d", nd.cfg.NodeID, vb, held, want)
						}
					}
				}
			}
		}
		return true, ""
	})
	for i := range keys {
		v, err := c.Get(ctx, "kv", fmt.Appendf(nil, "k%d", i))
		if err != nil || string(v) != fmt.Sprintf("v%d", i) {
			t.Fatalf("key k%d after the rebalance: %q, %v", i, v, err)
		}
	}
	for i := range written.Load() {
		if _, err := c.Get(ctx, "kv", fmt.Appendf(nil, "w%d", i)); err != nil {
			t.Fatalf("written key w%d after the rebalance: %v", i, err)
		}
	}
	popped := map[string]bool{}
	for {
		v, err := c.Pop(ctx, "jobs")
		if errors.Is(err, client.ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if popped[string(v)] {
			t.Fatalf("%s popped twice", v)
		}
		popped[string(v)] = true
	}
	if len(popped) != pushes {
		t.Fatalf("%d of %d queue records popped", len(popped), pushes)
	}
	var logged int
	for _, err := range c.LogRange(ctx, "events", 0, 1<<62).All() {
		if err != nil {
			t.Fatal(err)
		}
		logged++
	}
	if logged != appends {
		t.Fatalf("%d of %d log records", logged, appends)
	}
}

// activeNode is the node of nodes that m makes vb's active.
func activeNode(nodes []*Node, m *vbmap.Map, vb uint16) *Node {
	for _, nd := range nodes {
		if nd.cfg.NodeID == m.Active(vb) {
			return nd
		}
	}
	return nodes[0]
}

// waitRebalanceEnd polls the rebalance's status until it no longer
// runs and returns the last.
func waitRebalanceEnd(t *testing.T, c *client.Client, within time.Duration) *client.RebalanceStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := c.RebalanceStatus(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !st.Running {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rebalance did not end within %v: %+v", within, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rebalanceDone starts a rebalance with o and waits for it to end done,
// starting it again when the metadata leader changed meanwhile (the run
// then stops; a loaded test machine sees elections), as `shoal
// rebalance --wait` does.
func rebalanceDone(t *testing.T, c *client.Client, o client.RebalanceOptions, within time.Duration) *client.RebalanceStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, err := c.Rebalance(t.Context(), o); errors.Is(err, client.ErrRefused) {
			// One runs (--auto-rebalance), or the map still shows the moves
			// of one that ended: wait and ask again.
			if time.Now().After(deadline) {
				t.Fatalf("no rebalance could start within %v: %v", within, err)
			}
			waitRebalanceEnd(t, c, time.Until(deadline))
			time.Sleep(100 * time.Millisecond)
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		st := waitRebalanceEnd(t, c, time.Until(deadline))
		switch {
		case st.State == "done":
			return st
		case st.State != "" && !strings.Contains(st.Reason, "no longer the metadata leader") && !strings.Contains(st.Reason, "the map could not be changed"):
			t.Fatalf("the rebalance ended %+v", st)
		case time.Now().After(deadline):
			t.Fatalf("no rebalance completed within %v: %+v", within, st)
		}
		t.Logf("the leader changed during the rebalance (%+v): starting it again", st)
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRebalanceStopAndContinue: a rebalance stopped early leaves a map
// without moves (the copies being built dropped); a second one continues
// from that map and completes the plan. With --auto-rebalance the join
// itself starts it.
func TestRebalanceStopAndContinue(t *testing.T) {
	nodes, _ := startCluster(t, 2, "--auto-rebalance")
	ctx := t.Context()
	c, err := client.Dial(ctx, nodes[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 2000 {
		if _, err := c.Put(ctx, "kv", fmt.Appendf(nil, "k%d", i), make([]byte, 200)); err != nil {
			t.Fatal(err)
		}
	}
	third := joinNode(t, nodes, "--auto-rebalance")
	var st *client.RebalanceStatus
	waitFor(t, 10*time.Second, "the join to start a rebalance", func() (bool, string) {
		st, err = c.RebalanceStatus(ctx)
		return err == nil && st.State != "", fmt.Sprintf("%+v %v", st, err)
	})
	if st, err = c.StopRebalance(ctx); err != nil {
		t.Fatal(err)
	}
	st = waitRebalanceEnd(t, c, 30*time.Second)
	if st.State != "stopped" && st.State != "done" {
		t.Fatalf("after --stop: %+v", st)
	}
	t.Logf("stopped: %d of %d done, reason %q", st.Done, st.Total, st.Reason)
	waitFor(t, 10*time.Second, "the map to show no moves", func() (bool, string) {
		st, err = c.RebalanceStatus(ctx)
		return err == nil && st.MapMoving == 0, fmt.Sprintf("%+v %v", st, err)
	})
	if st.State == "stopped" {
		st = rebalanceDone(t, c, client.RebalanceOptions{Moves: 2}, 60*time.Second)
	}
	if st.Abandoned != 0 {
		t.Fatalf("the last rebalance: %+v", st)
	}
	waitFor(t, 5*time.Second, "the new node's share in the map", func() (bool, string) {
		m := third.cluster.known().Map // the node asked may apply the last commit a moment later
		cn := m.Counts()[third.cfg.NodeID]
		return m.Revision >= st.Revision && cn.Active >= m.Len()/3 && cn.Active <= m.Len()/3+1, fmt.Sprintf("revision %d: active for %d of %d vbuckets", m.Revision, cn.Active, m.Len())
	})
	for i := range 2000 {
		if _, err := c.Get(ctx, "kv", fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatalf("k%d: %v", i, err)
		}
	}
}

// TestRemoveNode: `shoal remove` is a rebalance without the node, then
// its removal: it holds nothing, is no member any more, and its Run
// returns without an error (it exits by itself); every record is still
// served by the others.
func TestRemoveNode(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	ctx := t.Context()
	c, err := client.Dial(ctx, nodes[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	third, exited := joinNodeDone(t, nodes)
	rebalanceDone(t, c, client.RebalanceOptions{}, 60*time.Second)
	for i := range 1000 {
		if _, err := c.Put(ctx, "kv", fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	id := third.cfg.NodeID
	rebalanceDone(t, c, client.RebalanceOptions{Without: []string{id}}, 60*time.Second)
	waitFor(t, 5*time.Second, "the map to give the node nothing", func() (bool, string) {
		cn := nodes[0].cluster.known().Map.Counts()[id]
		return cn == (vbmap.Counts{}), fmt.Sprintf("%+v", cn)
	})
	if err := c.RemoveNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the removed node's Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the removed node did not exit within 20s")
	}
	if _, ok := nodes[0].cluster.known().Node(id); ok {
		t.Fatal("the removed node is still a member")
	}
	for i := range 1000 {
		if _, err := c.Get(ctx, "kv", fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatalf("k%d: %v", i, err)
		}
	}
}
