package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/faultnet"
	"shoal/internal/node"
	"shoal/internal/testproc"
)

// cluster is n shoald processes (three by default, -chaos.nodes), each
// behind a faultnet proxy that the cluster advertises (peers and clients
// reach a node only through it), with automatic failover at 1 s.
type cluster struct {
	t       *testing.T
	tl      *Timeline
	nodes   []*testproc.Node
	args    [][]string
	proxies []*faultnet.Proxy
	ids     []string
	down    []bool // killed, not restarted yet
	stopped []bool // SIGSTOPped

	failovers int // nodes failed over (and recovered by heal)
}

func startCluster(t *testing.T, tl *Timeline, n, replicas int) *cluster {
	t.Helper()
	listen := testproc.FreePorts(t, n)
	c := &cluster{t: t, tl: tl, nodes: make([]*testproc.Node, n), args: make([][]string, n), proxies: make([]*faultnet.Proxy, n),
		ids: make([]string, n), down: make([]bool, n), stopped: make([]bool, n)}
	adv := make([]string, n)
	for i := range c.proxies {
		p, err := faultnet.New(listen[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		c.proxies[i], adv[i] = p, p.Addr()
	}
	for i := range c.nodes {
		c.args[i] = []string{"--listen", listen[i], "--advertise", adv[i], "--join", strings.Join(adv, ","), "--bootstrap-expect", strconv.Itoa(n),
			"--vbuckets", "64", "--replicas", strconv.Itoa(replicas), "--auto-failover", "--failover-timeout", "1s",
			"--raft-heartbeat-timeout", "200ms", "--raft-election-timeout", "200ms", "--raft-leader-lease-timeout", "100ms"}
		c.nodes[i] = testproc.Start(t, c.args[i]...)
	}
	c.waitHealthy(90 * time.Second)
	for i, nd := range c.nodes {
		st, err := status(nd.HTTP)
		if err != nil {
			t.Fatal(err)
		}
		c.ids[i] = st.Cluster.Self
	}
	tl.Add("cluster of %d formed (%d replicas): %v", n, replicas, c.ids)
	return c
}

// seeds are the proxies' addresses, for clients.
func (c *cluster) seeds() string {
	var a []string
	for _, p := range c.proxies {
		a = append(a, p.Addr())
	}
	return strings.Join(a, ",")
}

// status reads a node's /status within 2 s.
func status(httpAddr string) (*node.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var st node.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Cluster == nil {
		return nil, fmt.Errorf("%s: no cluster document", httpAddr)
	}
	return &st, nil
}

// healthy reports whether every node is up, in one cluster with the same
// map, all members active, none fenced, and no replica behind.
func (c *cluster) healthy() (bool, string) {
	var first *node.Status
	for i, nd := range c.nodes {
		if c.down[i] || c.stopped[i] {
			return false, fmt.Sprintf("node %d down", i)
		}
		st, err := status(nd.HTTP)
		if err != nil {
			return false, err.Error()
		}
		cs := st.Cluster
		switch {
		case cs.Revision == 0 || cs.Leader == "" || len(cs.Nodes) != len(c.nodes):
			return false, fmt.Sprintf("node %d: revision %d leader %q members %d", i, cs.Revision, cs.Leader, len(cs.Nodes))
		case cs.Fenced != "":
			return false, fmt.Sprintf("node %d fenced: %s", i, cs.Fenced)
		case first != nil && cs.Revision != first.Cluster.Revision:
			return false, fmt.Sprintf("node %d at revision %d, node 0 at %d", i, cs.Revision, first.Cluster.Revision)
		}
		for _, m := range cs.Nodes {
			if m.State != "active" {
				return false, fmt.Sprintf("member %s %s", m.ID, m.State)
			}
		}
		if l := st.Replication.Lag; l != nil && (l.Seqnos > 0 || l.VBuckets > 0) {
			return false, fmt.Sprintf("node %d replicas behind: %+v", i, *l)
		}
		if first == nil {
			first = st
		}
	}
	return true, ""
}

func (c *cluster) waitHealthy(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, why := c.healthy()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not healthy within %v: %s\n%s", d, why, c.tl)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// memberState returns member id's state in the cluster document of the
// first node that answers other than skip.
func (c *cluster) memberState(id string, skip int) string {
	for i, nd := range c.nodes {
		if i == skip || c.down[i] || c.stopped[i] {
			continue
		}
		st, err := status(nd.HTTP)
		if err != nil {
			continue
		}
		for _, m := range st.Cluster.Nodes {
			if m.ID == id {
				return m.State
			}
		}
	}
	return ""
}

// waitFailedOver waits until node i is failed over (by a survivor's
// document), at most d; it reports whether it was.
func (c *cluster) waitFailedOver(i int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.memberState(c.ids[i], i) == "failed" {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (c *cluster) kill(i int) {
	c.nodes[i].Kill()
	c.down[i] = true
}

func (c *cluster) restart(i int) {
	c.nodes[i] = testproc.StartIn(c.t, c.nodes[i].Dir, c.args[i]...)
	c.down[i] = false
}

func (c *cluster) stop(i int) {
	c.nodes[i].Signal(syscall.SIGSTOP)
	c.stopped[i] = true
}

func (c *cluster) cont(i int) {
	c.nodes[i].Signal(syscall.SIGCONT)
	c.stopped[i] = false
}

// resetCount resets the cluster's automatic failover count.
func (c *cluster) resetCount(ctx context.Context, admin *client.Client) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := admin.FailoverSettings(rctx, client.FailoverSettingsChange{ResetCount: true}); err != nil {
		c.tl.Add("reset of the failover count: %v", err)
	}
}

// failoverCount returns the cluster's automatic failover count by the
// metadata leader, which applied the last reset before it answered (0 if
// it does not answer).
func (c *cluster) failoverCount() int {
	i := c.leader()
	if i < 0 || c.down[i] || c.stopped[i] {
		return 0
	}
	if st, err := status(c.nodes[i].HTTP); err == nil && st.Cluster.AutoFailover != nil {
		return st.Cluster.AutoFailover.Count
	}
	return 0
}

// leader returns the index of the metadata leader, -1 if unknown.
func (c *cluster) leader() int {
	for i, nd := range c.nodes {
		if c.down[i] || c.stopped[i] {
			continue
		}
		if st, err := status(nd.HTTP); err == nil && st.Cluster.Leader != "" {
			return slices.Index(c.ids, st.Cluster.Leader)
		}
	}
	return -1
}

// heal ends every fault (restarts, SIGCONT, thaws), recovers the nodes
// that were failed over, resets the failover count and waits until the
// cluster is healthy with every replica caught up.
func (c *cluster) heal(ctx context.Context) {
	c.t.Helper()
	for i := range c.nodes {
		c.proxies[i].Thaw()
		c.proxies[i].SetLatency(0)
		if c.stopped[i] {
			c.cont(i)
		}
		if c.down[i] {
			c.restart(i)
			c.tl.Add("restarted %s", c.ids[i])
		}
	}
	admin, err := client.Dial(ctx, c.seeds())
	if err != nil {
		c.t.Fatal(err)
	}
	defer admin.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok, why := c.healthy()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not healthy within 90s: %s\n%s", why, c.tl)
		}
		for _, id := range c.ids {
			if c.memberState(id, -1) == "failed" {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := admin.Recover(rctx, id)
				cancel()
				if err == nil {
					c.failovers++ // every failover ends with its node recovered
					c.tl.Add("recovered %s", id)
					c.resetCount(ctx, admin)
				} else {
					c.tl.Add("recover %s: %v", id, err)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A recover whose call failed (its leader lost the quorum meanwhile)
	// may still commit in the next term: the node is active again, but the failover
	// count was not reset, and at max-count 1 no automatic failover would
	// happen any more (the 60-minute run of 2026-12-04 lost them that way
	// after 8 minutes). Reset what is left.
	if n := c.failoverCount(); n > 0 {
		c.failovers += n
		c.tl.Add("failover count %d left by failovers the harness did not see recovered: reset", n)
		c.resetCount(ctx, admin)
	}
	c.tl.Add("healthy: every member active, replicas caught up (failovers so far %d)", c.failovers)
}
