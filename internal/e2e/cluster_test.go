package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/node"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// TestClusterFormation: three fresh nodes with --join of all three and
// --bootstrap-expect 3 form one cluster: the same id, revision, leader and
// three voters on every node (in /status and in `shoal status --json`),
// one map on every node that obeys the placement rules, kv writes taken
// by each key's active (reached by following `not my vbucket`), queue
// pushes and log appends without a routing key spread round-robin over
// the receiving node's active vBuckets only, and a channel created on a
// follower known on every node.
func TestClusterFormation(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	d0 := docs[0]
	for i, d := range docs {
		if d.VBuckets != clusterVBuckets || d.Replicas != 1 || d.WantVoters != 3 || len(d.Voters) != 3 {
			t.Errorf("node %d: vbuckets %d, replicas %d, voters %v of %d", i, d.VBuckets, d.Replicas, d.Voters, d.WantVoters)
		}
		if !slices.Equal(d.Voters, d0.Voters) {
			t.Errorf("node %d: voters %v, node 0 %v", i, d.Voters, d0.Voters)
		}
		want := "follower"
		if d.Self == d.Leader {
			want = "leader"
		}
		if d.RaftState != want {
			t.Errorf("node %d (%s): raft state %s, leader %s", i, d.Self, d.RaftState, d.Leader)
		}
		// The CLI shows the same document.
		if c := cliCluster(t, nodes[i].Addr); c.ClusterID != d0.ClusterID || c.Leader != d0.Leader || c.Revision < d0.Revision || c.Self != d.Self {
			t.Errorf("node %d: shoal status --json: cluster %s leader %s revision %d self %s", i, c.ClusterID, c.Leader, c.Revision, c.Self)
		}
	}
	leader, followers := leaderOf(t, nodes, docs)
	if d0.LeaderAddr != leader.Addr {
		t.Errorf("leader_addr %s, the leader listens at %s", d0.LeaderAddr, leader.Addr)
	}
	ids := make([]string, len(docs)) // by node
	addrOf := map[string]string{}    // id -> data address
	for i, d := range docs {
		ids[i], addrOf[d.Self] = d.Self, nodes[i].Addr
	}

	// The map, as every node serves it (GetClusterMap).
	members, m := clusterMap(t, nodes[0].Addr)
	for i, n := range nodes[1:] {
		mm, m2 := clusterMap(t, n.Addr)
		if fmt.Sprint(mm) != fmt.Sprint(members) || fmt.Sprint(m2) != fmt.Sprint(m) {
			t.Errorf("node %d serves another map:\n%v %v\nnode 0:\n%v %v", i+1, mm, m2, members, m)
		}
	}
	if m.Revision != d0.Revision || m.Len() != clusterVBuckets || m.Replicas != 1 || len(members) != 3 {
		t.Fatalf("map revision %d (status %d), %d vbuckets, %d replicas, %d members", m.Revision, d0.Revision, m.Len(), m.Replicas, len(members))
	}
	for _, mb := range members {
		if addrOf[mb.ID] != mb.Addr {
			t.Errorf("member %s at %s, the node listens at %s", mb.ID, mb.Addr, addrOf[mb.ID])
		}
	}
	for vb, v := range m.VBuckets {
		if len(v.Chain) != 2 || v.Chain[0] == v.Chain[1] || !slices.Contains(ids, v.Chain[0]) || !slices.Contains(ids, v.Chain[1]) || v.Epoch == 0 {
			t.Errorf("vbucket %d: chain %v epoch %d", vb, v.Chain, v.Epoch)
		}
	}
	counts := m.Counts()
	actives := make([]int, len(ids))
	for i, id := range ids {
		c := counts[id]
		actives[i] = c.Active
		if c.Replica == 0 {
			t.Errorf("node %s holds no replica: %+v", id, c)
		}
		// The status counts are the map's.
		for _, ns := range d0.Nodes {
			if ns.ID == id && (ns.Active != c.Active || ns.Replica != c.Replica || !ns.Voter || ns.Leader != (id == d0.Leader)) {
				t.Errorf("status of %s: %+v; the map: %+v", id, ns, c)
			}
		}
	}
	if slices.Max(actives)-slices.Min(actives) > 1 {
		t.Errorf("active vbuckets per node %v: differ by more than 1", actives)
	}
	t.Logf("cluster %s: leader %s, revision %d, active/replica per node %v", d0.ClusterID, d0.Leader, m.Revision, counts)

	// kv writes reach each key's active.
	r := newRouter(t)
	ctx := t.Context()
	written := map[string]string{} // key -> the address that took it
	for i := range 60 {
		key := fmt.Sprintf("key-%d", i)
		addr, err := r.put(ctx, nodes[i%3].Addr, "kv", key, "v"+key)
		if err != nil {
			t.Fatalf("put %s starting at %s: %v", key, nodes[i%3].Addr, err)
		}
		if want := addrOf[m.Active(vbucket.Of([]byte(key), clusterVBuckets))]; addr != want {
			t.Errorf("%s was taken by %s; the map's active is %s", key, addr, want)
		}
		written[key] = addr
	}
	for key, addr := range written {
		if v, err := r.client(addr).Get(ctx, "kv", []byte(key)); err != nil || string(v) != "v"+key {
			t.Errorf("get %s at %s: %q %v", key, addr, v, err)
		}
	}

	// Queue pushes and log appends without a routing key: as many as the
	// node is active for go one to each of its active vBuckets.
	seqnos := func() []map[string][]uint64 {
		out := make([]map[string][]uint64, len(nodes))
		for i, n := range nodes {
			st, err := nodeStatus(r.client(n.Addr), true)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = st.Replication.HighSeqnos
		}
		return out
	}
	before := seqnos()
	for i, n := range nodes {
		c := r.client(n.Addr)
		for j := range actives[i] {
			if err := c.Push(ctx, []string{"q"}, fmt.Appendf(nil, "%d-%d", i, j)); err != nil {
				t.Fatalf("push on %s: %v", n.Addr, err)
			}
			if err := c.LogPut(ctx, "events", uint64(1_700_000_000+j), fmt.Appendf(nil, "%d-%d", i, j)); err != nil {
				t.Fatalf("log append on %s: %v", n.Addr, err)
			}
		}
	}
	// Each record is in its vBucket's active and, once replicated, in its
	// replicas: nowhere else.
	poll(t, 20*time.Second, "one record in every vbucket of every chain", func() (bool, string) {
		after := seqnos()
		for i := range nodes {
			for _, engine := range []string{"queue", "log"} {
				for vb := range clusterVBuckets {
					want := uint64(0)
					if m.StateOf(ids[i], uint16(vb)) != vbmap.Dead {
						want = 1
					}
					if got := after[i][engine][vb] - before[i][engine][vb]; got != want {
						return false, fmt.Sprintf("node %s, %s vbucket %d: %d records, want %d (chain: %v)", ids[i], engine, vb, got, want, m.VBuckets[vb].Chain)
					}
				}
			}
		}
		return true, ""
	})

	// A channel created on a follower is known on every node: on the
	// follower as soon as it answers, on the others once they applied it.
	if _, err := createQueue(t, followers[0].Addr, "fresh"); err != nil {
		t.Fatalf("a new channel on follower %s: %v", followers[0].Addr, err)
	}
	if k := channelsOf(t, followers[0].Addr)["fresh"]; k != "queue" {
		t.Fatalf("the follower that created it lists fresh as %q", k)
	}
	for _, n := range nodes {
		poll(t, 10*time.Second, "fresh listed on "+n.Addr, func() (bool, string) {
			ch := channelsOf(t, n.Addr)
			return ch["fresh"] == "queue" && ch["q"] == "queue" && ch["kv"] == "kv" && ch["events"] == "log", fmt.Sprint(ch)
		})
	}
}

// electionBound is how long the survivors of a killed leader may take to
// agree on a new one: at the default timeouts (500 ms heartbeat and
// election, each randomised up to twice that by raft) a follower notices
// within 1 s and an election takes about 1 s; the rest is slack for a
// loaded 2-core machine running -race builds. The figure measured is
// logged (and in docs/performance.md, measured without -race).
const electionBound = 2*(time.Second+time.Second) + 5*time.Second

// TestClusterLeaderKill: kill -9 of the leader of three. The survivors
// agree on a new leader within electionBound (polled every 20 ms), their
// status keeps answering, a new channel can be created through either
// (a commit with 2 of 3 voters), and the killed node restarted on its data
// and address comes back as itself: the same id, a member following the
// new leader, at the same revision or later, with the channel created
// while it was down.
func TestClusterLeaderKill(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	leader, followers := leaderOf(t, nodes, docs)
	oldID, rev := docs[0].Leader, docs[0].Revision
	if _, err := createQueue(t, leader.Addr, "before"); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	leader.Kill()
	var newLeader string
	var elected time.Duration
	var detail string
	for deadline := time.Now().Add(electionBound + 20*time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no new leader %v after the kill: %s", time.Since(killed), detail)
		}
		var seen []string
		leaders := 0
		for _, f := range followers {
			cs, err := clusterStatus(f)
			if err != nil {
				detail = fmt.Sprintf("%s: %v", f.Addr, err)
				break
			}
			seen = append(seen, cs.Leader)
			if cs.RaftState == "leader" {
				leaders++
			}
		}
		if len(seen) == 2 && seen[0] == seen[1] && seen[0] != "" && seen[0] != oldID && leaders == 1 {
			newLeader, elected = seen[0], time.Since(killed)
			break
		}
		detail = fmt.Sprintf("leaders seen %v, %d in raft state leader", seen, leaders)
	}
	t.Logf("kill -9 of leader %s: the survivors agree on %s after %v (bound %v)", oldID, newLeader, elected, electionBound)
	if elected > electionBound {
		t.Errorf("a new leader took %v after kill -9 of the leader; want within %v", elected, electionBound)
	}

	// Metadata commits with 2 of 3: a channel through each survivor.
	for i, f := range followers {
		name := fmt.Sprintf("after%d", i)
		if took, err := createQueue(t, f.Addr, name); err != nil {
			t.Fatalf("a new channel through %s after the kill: %v (after %v)", f.Addr, err, took)
		}
	}
	for _, f := range followers {
		cs, err := clusterStatus(f)
		if err != nil || cs.Revision < rev || cs.Leader != newLeader {
			t.Fatalf("survivor %s: %+v %v", f.Addr, cs, err)
		}
	}

	back := restart(t, leader)
	var cs *node.ClusterStatus
	poll(t, 30*time.Second, "the restarted node following the new leader", func() (bool, string) {
		var err error
		if cs, err = clusterStatus(back); err != nil {
			return false, err.Error()
		}
		return cs.Self == oldID && cs.Leader == newLeader && cs.RaftState == "follower" && cs.Join.Phase == "member" && cs.Revision >= rev,
			fmt.Sprintf("self %s leader %s state %s phase %s (%s) revision %d", cs.Self, cs.Leader, cs.RaftState, cs.Join.Phase, cs.Join.Waiting, cs.Revision)
	})
	all := []*testproc.Node{back, followers[0], followers[1]}
	docs = waitCluster(t, all, 30*time.Second)
	if docs[0].Self != oldID || docs[0].Leader != newLeader {
		t.Fatalf("after the restart: self %s leader %s", docs[0].Self, docs[0].Leader)
	}
	poll(t, 10*time.Second, "the channels created while it was down, on the restarted node", func() (bool, string) {
		ch := channelsOf(t, back.Addr)
		return ch["before"] == "queue" && ch["after0"] == "queue" && ch["after1"] == "queue", fmt.Sprint(ch)
	})
}

// noQuorumBound bounds the answer to a metadata change without a quorum:
// the node retries for 3 s (proposeTimeout), then answers no quorum.
const noQuorumBound = 3*time.Second + 5*time.Second

// TestClusterMajorityKilled: kill -9 of two of three nodes (the leader
// among them). On the survivor, a new channel is refused with status no
// quorum within noQuorumBound, with a message saying so (Go client and
// CLI); once it has not heard a leader for the failover timeout, the
// survivor fences itself (a kv put and get in one of its vBuckets, a queue
// push and a log append are answered not my vbucket: a minority does not
// acknowledge writes); once the two are restarted the cluster is whole
// again, channels can be created and the survivor's vBucket takes writes.
func TestClusterMajorityKilled(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	leader, followers := leaderOf(t, nodes, docs)
	survivor, other := followers[0], followers[1]
	sid := ""
	for i, n := range nodes {
		if n == survivor {
			sid = docs[i].Self
		}
	}
	_, m := clusterMap(t, survivor.Addr)
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); m.Active(vbucket.Of([]byte(k), clusterVBuckets)) == sid {
			key = k
		}
	}
	c := dialShort(t, survivor.Addr)
	ctx := t.Context()
	if _, err := c.Put(ctx, "kept", []byte(key), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, []string{"keptq"}, []byte("p1")); err != nil {
		t.Fatal(err)
	}
	if err := c.LogPut(ctx, "keptl", 1_700_000_000, []byte("e1")); err != nil {
		t.Fatal(err)
	}

	leader.Kill()
	other.Kill()
	took, err := createQueue(t, survivor.Addr, "nq")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != uint16(wire.StatusNoQuorum) || !strings.Contains(err.Error(), "no quorum") || !strings.Contains(err.Error(), "nq") {
		t.Fatalf("a new channel without a quorum: %v (after %v); want status no quorum naming the channel", err, took)
	}
	t.Logf("a new channel without a quorum: %v after %v", err, took)
	if took > noQuorumBound {
		t.Errorf("no quorum answered after %v; want within %v", took, noQuorumBound)
	}
	r := testproc.CLI(t, survivor.Addr, "", "push", "nq2", "x")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no quorum") || !strings.Contains(r.Stderr, "nq2") {
		t.Fatalf("shoal push to a new channel without a quorum: %d %q", r.Code, r.Stderr)
	}
	if ch := channelsOf(t, survivor.Addr); ch["nq"] != "" || ch["nq2"] != "" {
		t.Fatalf("channels refused for no quorum are listed: %v", ch)
	}

	// A minority does not acknowledge writes: once it has not heard a
	// leader for the failover timeout (5 s), the survivor fences itself and
	// refuses even its own vBuckets (docs/design.md, fencing).
	poll(t, 15*time.Second, "the survivor fenced", func() (bool, string) {
		_, err := c.Put(ctx, "kept", []byte(key), []byte("v2"))
		return errors.Is(err, client.ErrNotMyVBucket), fmt.Sprint(err)
	})
	if _, err := c.Get(ctx, "kept", []byte(key)); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("a fenced node served a read: %v", err)
	}
	if err := c.Push(ctx, []string{"keptq"}, []byte("p2")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("a fenced node took a push: %v", err)
	}
	if err := c.LogPut(ctx, "keptl", 1_700_000_001, []byte("e2")); !errors.Is(err, client.ErrNotMyVBucket) {
		t.Fatalf("a fenced node took a log append: %v", err)
	}

	// The two come back: the cluster is whole and takes new channels.
	all := []*testproc.Node{survivor, restart(t, leader), restart(t, other)}
	waitCluster(t, all, 60*time.Second)
	poll(t, 30*time.Second, "a new channel after the restarts", func() (bool, string) {
		_, err := createQueue(t, survivor.Addr, "nq")
		return err == nil, fmt.Sprint(err)
	})
	for _, n := range all {
		poll(t, 10*time.Second, "nq listed on "+n.Addr, func() (bool, string) {
			ch := channelsOf(t, n.Addr)
			return ch["nq"] == "queue" && ch["kept"] == "kv", fmt.Sprint(ch)
		})
	}
	// The fence is lifted: the survivor's vBucket takes writes again and
	// kept what it had.
	poll(t, 10*time.Second, "a write after the fence is lifted", func() (bool, string) {
		_, err := c.Put(ctx, "kept", []byte(key), []byte("v3"))
		return err == nil, fmt.Sprint(err)
	})
}

// TestClusterJoin: a fourth node with --join of the three (no
// --bootstrap-expect) becomes an active member holding no vBucket, a
// non-voter (3 voters wanted), refusing data with `not my vbucket` that
// names the active; restarted on its data with the same id and address,
// it is the same member again and the leader adds nothing.
func TestClusterJoin(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	leader, _ := leaderOf(t, nodes, docs)
	addrs := make([]string, 3)
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	fa := testproc.FreePorts(t, 2) // data and HTTP: the same addresses after the restart
	fourth := testproc.Start(t, clusterArgs(fa[0], addrs, 0, "--http", fa[1])...)
	all := append(slices.Clone(nodes), fourth)
	docs = waitCluster(t, all, 30*time.Second)
	fid := docs[3].Self
	check := func(docs []*node.ClusterStatus) {
		t.Helper()
		for i, d := range docs {
			if slices.Contains(d.Voters, fid) || len(d.Voters) != 3 || d.WantVoters != 3 {
				t.Errorf("node %d: voters %v (want %d)", i, d.Voters, d.WantVoters)
			}
			for _, ns := range d.Nodes {
				if ns.ID == fid && (ns.Active != 0 || ns.Replica != 0 || ns.Voter || ns.State != "active" || ns.Addr != fourth.Addr) {
					t.Errorf("node %d shows the new node as %+v", i, ns)
				}
			}
		}
		if docs[3].RaftState != "follower" {
			t.Errorf("the new node's raft state: %s", docs[3].RaftState)
		}
	}
	check(docs)
	_, m := clusterMap(t, nodes[0].Addr)
	if _, m4 := clusterMap(t, fourth.Addr); fmt.Sprint(m4) != fmt.Sprint(m) || m.Counts()[fid] != (vbmap.Counts{}) {
		t.Fatalf("the new node's map %v; the cluster's %v", m4, m)
	}
	_, err := dialShort(t, fourth.Addr).Put(t.Context(), "kv", []byte("k"), []byte("v"))
	var ce *client.Error
	want := ""
	for i, d := range docs[:3] {
		if d.Self == m.Active(vbucket.Of([]byte("k"), clusterVBuckets)) {
			want = nodes[i].Addr
		}
	}
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrNotMyVBucket) || ce.Active != want {
		t.Fatalf("a put on the node holding nothing: %v; want not my vbucket naming %s", err, want)
	}
	added := func() []string { return logLines(rootLog(t, leader), "node added to the cluster", fid) }
	before := added()
	if len(before) == 0 {
		t.Fatalf("the leader did not log the addition of %s", fid)
	}

	idx := docs[0].Index
	fourth.Stop()
	fourth = restart(t, fourth)
	all[3] = fourth
	docs = waitCluster(t, all, 30*time.Second)
	if docs[3].Self != fid || docs[3].Join.Phase != "member" {
		t.Fatalf("restarted: self %s phase %s", docs[3].Self, docs[3].Join.Phase)
	}
	check(docs)
	t.Logf("the restarted member's join attempts: %+v", docs[3].Join.Addresses)
	if a := added(); len(a) != len(before) || len(logLines(rootLog(t, leader), "moved", fid)) != 0 {
		t.Fatalf("the restart was not a no-op join: %q", a[len(before):])
	}
	if docs[0].Index != idx {
		t.Errorf("the restart of a member changed the metadata: index %d, was %d", docs[0].Index, idx)
	}
}

// stillNoCluster polls the nodes for d and fails if any of them shows a
// cluster id: for refusals, after the refusal was seen (the nodes had
// their chances to form one).
func stillNoCluster(t *testing.T, d time.Duration, nodes ...*testproc.Node) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		for _, n := range nodes {
			cs, err := clusterStatus(n)
			if err != nil {
				t.Fatalf("%s: %v", n.Addr, err)
			}
			if cs.ClusterID != "" || cs.Leader != "" {
				t.Fatalf("node %s (%s) is in cluster %s, leader %q, phase %s", cs.Self, n.Addr, cs.ClusterID, cs.Leader, cs.Join.Phase)
			}
		}
	}
}

// joinAddr returns the join address addr in a cluster document.
func joinAddr(cs *node.ClusterStatus, addr string) node.JoinAddress {
	for _, a := range cs.Join.Addresses {
		if a.Addr == addr {
			return a
		}
	}
	return node.JoinAddress{}
}

// TestClusterJoinAddressDown: a node whose --join addresses are a closed
// port and a listener that never answers keeps running and retrying: it
// logs `join address did not answer` for each in root.log, shows the
// errors in /status (cluster.join.addresses[].last_error) and tries again
// (a later last_try), and serves nothing meanwhile.
func TestClusterJoinAddressDown(t *testing.T) {
	closed := testproc.FreePorts(t, 1)[0]
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c: // held open, never answered
			default:
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	})
	n := testproc.Start(t, clusterArgs(testproc.FreePorts(t, 1)[0], []string{closed, silent.Addr().String()}, 0)...)
	var first *node.ClusterStatus
	poll(t, 30*time.Second, "both join addresses failing in /status", func() (bool, string) {
		cs, err := clusterStatus(n)
		if err != nil {
			return false, err.Error()
		}
		a, b := joinAddr(cs, closed), joinAddr(cs, silent.Addr().String())
		first = cs
		return a.LastError != "" && b.LastError != "" && !a.OK && !b.OK && a.LastTry != nil && b.LastTry != nil, fmt.Sprintf("%+v", cs.Join)
	})
	a := joinAddr(first, closed)
	if !strings.Contains(a.LastError, "connection refused") {
		t.Errorf("the closed port's last error: %q", a.LastError)
	}
	t.Logf("join status: phase %s (%s); %s: %s; %s: %s", first.Join.Phase, first.Join.Waiting,
		closed, a.LastError, silent.Addr(), joinAddr(first, silent.Addr().String()).LastError)
	if first.Join.Phase != "joining" || first.Join.Waiting == "" || first.ClusterID != "" {
		t.Errorf("phase %q waiting %q cluster %q", first.Join.Phase, first.Join.Waiting, first.ClusterID)
	}
	poll(t, 30*time.Second, "another attempt at each address", func() (bool, string) {
		cs, err := clusterStatus(n)
		if err != nil {
			return false, err.Error()
		}
		x, y := joinAddr(cs, closed), joinAddr(cs, silent.Addr().String())
		return x.LastTry.After(*a.LastTry) && y.LastTry.After(*joinAddr(first, silent.Addr().String()).LastTry) && x.LastError != "" && y.LastError != "",
			fmt.Sprintf("%+v", cs.Join)
	})
	log := rootLog(t, n)
	for _, addr := range []string{closed, silent.Addr().String()} {
		lines := logLines(log, "join address did not answer", "addr="+addr)
		if len(lines) == 0 {
			t.Errorf("root.log says nothing of %s:\n%s", addr, log)
		}
		t.Logf("%s: %d lines logged, first: %s", addr, len(lines), lines[0])
	}
	_, perr := dialShort(t, n.Addr).Put(t.Context(), "kv", []byte("k"), []byte("v"))
	if !errors.Is(perr, client.ErrNotMyVBucket) {
		t.Errorf("a put on a node not in a cluster yet: %v", perr)
	}
	if _, err := clusterStatus(n); err != nil || strings.Contains(n.Output(), "shoald stopped") {
		t.Fatalf("the node stopped: %v\n%s", err, n.Output())
	}
}

// TestClusterCopiedNodeID: a copy of a running member's data directory,
// started at another address with --join of the cluster, is refused: the
// copy names the member's id, which answers at its own address; it exits
// 1 with a message saying so, and the cluster still has the member at its
// address.
func TestClusterCopiedNodeID(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	src, id := nodes[1], docs[1].Self
	dir := t.TempDir()
	copyDir(t, src.Dir, dir)
	join := []string{nodes[0].Addr, nodes[1].Addr, nodes[2].Addr}
	code, out := runShoald(t, 60*time.Second, append([]string{"--data", dir, "--http", "127.0.0.1:0", "--console=false"},
		clusterArgs(testproc.FreePorts(t, 1)[0], join, 0)...)...)
	if code != 1 || !strings.Contains(out, "node id "+id+" is running at "+src.Addr) || !strings.Contains(out, "copy") {
		t.Fatalf("the copy of %s's data directory exited with %d:\n%s", id, code, out)
	}
	t.Logf("the copy: exit %d: %s", code, logLines(out, "shoald:")[0])
	docs = waitCluster(t, nodes, 10*time.Second)
	for _, d := range docs {
		for _, m := range d.Nodes {
			if m.ID == id && m.Addr != src.Addr {
				t.Fatalf("member %s now at %s", id, m.Addr)
			}
		}
	}
}

// TestClusterBootstrapExpectMismatch: of three nodes with --join of all
// three, one has --bootstrap-expect 5 and two 3: the nodes refuse each
// other with messages naming both values (root.log of every node), and no
// cluster forms (the two with 3 know each other but are not 3).
func TestClusterBootstrapExpectMismatch(t *testing.T) {
	addrs := testproc.FreePorts(t, 3)
	expects := []int{3, 3, 5}
	nodes := make([]*testproc.Node, 3)
	for i, a := range addrs {
		nodes[i] = testproc.Start(t, clusterArgs(a, addrs, expects[i])...)
	}
	poll(t, 30*time.Second, "the refusals logged on every node, the two with 3 knowing each other", func() (bool, string) {
		for i, n := range nodes {
			other := 3
			if expects[i] == 3 {
				other = 5
			}
			log := rootLog(t, n)
			// The answer to the other's Join, and the other's answer to its own.
			answered := logLines(log, "bootstrap-expect differs", fmt.Sprintf("peer_expect=%d", other), fmt.Sprintf("expect=%d", expects[i]))
			told := logLines(log, fmt.Sprintf("was started with --bootstrap-expect %d", expects[i]), fmt.Sprintf("with %d", other))
			if len(answered) == 0 || len(told) == 0 {
				return false, fmt.Sprintf("node %d (--bootstrap-expect %d): %d answers, %d refusals logged", i, expects[i], len(answered), len(told))
			}
		}
		for i := range 2 {
			cs, err := clusterStatus(nodes[i])
			if err != nil {
				return false, err.Error()
			}
			if len(cs.Join.Discovered) != 1 || cs.Join.Discovered[0].Addr != addrs[1-i] {
				return false, fmt.Sprintf("node %d discovered %+v", i, cs.Join.Discovered)
			}
		}
		return true, ""
	})
	for i, n := range nodes {
		l := logLines(rootLog(t, n), "was started with --bootstrap-expect")
		t.Logf("node %d (--bootstrap-expect %d): %s", i, expects[i], l[0])
	}
	stillNoCluster(t, 3*time.Second, nodes...)
	cs, _ := clusterStatus(nodes[0])
	t.Logf("a node with 3: phase %s (%s)", cs.Join.Phase, cs.Join.Waiting)
}

// TestClusterOtherClusterData: the data directory of a stopped member of
// cluster A (a cluster of one), started at a new address with --join of
// cluster B, is refused: B names both cluster ids, the node logs the
// refusal and exits 1, and B does not list it.
func TestClusterOtherClusterData(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	solo := testproc.Start(t, "--vbuckets", fmt.Sprint(clusterVBuckets))
	var a *node.ClusterStatus
	poll(t, 30*time.Second, "the cluster of one", func() (bool, string) {
		var err error
		a, err = clusterStatus(solo)
		return err == nil && a.ClusterID != "" && a.Leader == a.Self, fmt.Sprintf("%+v %v", a, err)
	})
	solo.Stop()
	join := []string{nodes[0].Addr, nodes[1].Addr, nodes[2].Addr}
	moved := testproc.StartIn(t, solo.Dir, clusterArgs(testproc.FreePorts(t, 1)[0], join, 0)...)
	if code := moved.Wait(60 * time.Second); code != 1 {
		t.Fatalf("a node of cluster %s joining cluster %s exited with %d:\n%s", a.ClusterID, docs[0].ClusterID, code, moved.Output())
	}
	want := fmt.Sprintf("belongs to cluster %s, this is cluster %s", a.ClusterID, docs[0].ClusterID)
	lines := logLines(rootLog(t, moved), "this node cannot be in the cluster; shutting down", "refused", want)
	if len(lines) == 0 || !strings.Contains(moved.Output(), "shoald: ") {
		t.Fatalf("the refusal (%q) is not in root.log:\n%s", want, moved.Output())
	}
	t.Logf("refused: %s", lines[0])
	for _, d := range waitCluster(t, nodes, 10*time.Second) {
		for _, m := range d.Nodes {
			if m.ID == a.Self {
				t.Fatalf("cluster B lists %s: %+v", a.Self, d.Nodes)
			}
		}
	}
}

// writeCredentials writes a credentials file with an admin, an app and
// the peer credential "node", and the node's secret in a file of its own;
// it returns both paths and the app's secret file.
func writeCredentials(t *testing.T) (creds, nodeSecret, appSecret string) {
	t.Helper()
	dir := t.TempDir()
	creds = filepath.Join(dir, "credentials")
	nodeSecret = filepath.Join(dir, "node.secret")
	appSecret = filepath.Join(dir, "app.secret")
	for path, text := range map[string]string{
		creds:      "admin:00112233445566778899aabbccddeeff\nnode:0f1e2d3c4b5a69788796a5b4c3d2e1f0\napp:ffeeddccbbaa99887766554433221100\n",
		nodeSecret: "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
		appSecret:  "ffeeddccbbaa99887766554433221100\n",
	} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return creds, nodeSecret, appSecret
}

// TestClusterPeerCredentials: with --credentials on all three nodes and
// the "node" credential given as --peer-user/--peer-secret-file, the
// cluster forms and takes new channels (a follower forwards over an
// authenticated connection); a RaftOpen from a connection that did not
// authenticate is refused with not permitted and what follows it never
// reaches raft (the connection is closed, the cluster unchanged).
func TestClusterPeerCredentials(t *testing.T) {
	creds, nodeSecret, appSecret := writeCredentials(t)
	nodes, docs := startCluster(t, 3, "--credentials", creds, "--peer-user", "node", "--peer-secret-file", nodeSecret)
	_, followers := leaderOf(t, nodes, docs)
	app := []string{"--user", "app", "--secret-file", appSecret}
	if r := testproc.CLI(t, followers[0].Addr, "", append(app, "push", "authq", "x")...); r.Code != 0 {
		t.Fatalf("a new channel through a follower: %d %s", r.Code, r.Stderr)
	}
	for _, n := range nodes {
		poll(t, 10*time.Second, "authq listed on "+n.Addr, func() (bool, string) {
			ch := channelsOf(t, n.Addr, app...)
			return ch["authq"] == "queue", fmt.Sprint(ch)
		})
	}
	if c := cliCluster(t, nodes[0].Addr, app...); c.ClusterID != docs[0].ClusterID {
		t.Fatalf("shoal status --json: cluster %q", c.ClusterID)
	}

	// A hostile RaftOpen, without credentials, at the leader and a follower.
	for _, n := range []*testproc.Node{nodes[0], followers[0]} {
		r := dialRawConn(t, n.Addr)
		if h, body := r.call(wire.OpRaftOpen, nil); h.Status != wire.StatusNotPermitted {
			t.Fatalf("RaftOpen without credentials at %s: %s %q", n.Addr, h.Status, body)
		}
		// What a raft peer would send next: not a frame. The node answers
		// bad frame and closes.
		r.nc.Write([]byte("\x00\x01raft-rpc-bytes-that-are-not-a-frame"))
		r.nc.SetDeadline(time.Now().Add(10 * time.Second))
		var err error
		for err == nil {
			_, _, err = r.read()
		}
		if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("after non-frame bytes at %s: %v (want the connection closed)", n.Addr, err)
		}
	}
	after := waitCluster(t, nodes, 10*time.Second)
	if after[0].Leader != docs[0].Leader || after[0].ClusterID != docs[0].ClusterID {
		t.Fatalf("the cluster changed: leader %s, was %s", after[0].Leader, docs[0].Leader)
	}
	// raft's transport logs what it cannot decode: nothing reached it.
	for _, n := range nodes {
		if l := logLines(rootLog(t, n), "component=raft", "decode"); len(l) != 0 {
			t.Fatalf("raft saw the hostile bytes at %s: %q", n.Addr, l)
		}
	}
}

// TestClusterNoPeerSecret: three nodes with --credentials but no
// --peer-secret-file cannot reach each other: every join attempt is
// refused for want of authentication, which /status and root.log say,
// and no cluster forms.
func TestClusterNoPeerSecret(t *testing.T) {
	creds, _, _ := writeCredentials(t)
	addrs := testproc.FreePorts(t, 3)
	nodes := startNodes(t, addrs, 3, "--credentials", creds)
	poll(t, 30*time.Second, "authentication refused at every join address", func() (bool, string) {
		for i, n := range nodes {
			cs, err := clusterStatus(n)
			if err != nil {
				return false, err.Error()
			}
			for _, a := range addrs {
				if a == n.Addr {
					continue
				}
				if ja := joinAddr(cs, a); !strings.Contains(ja.LastError, "authentication") {
					return false, fmt.Sprintf("node %d, %s: %+v", i, a, ja)
				}
			}
			if len(logLines(rootLog(t, n), "join address", "authentication")) == 0 {
				return false, fmt.Sprintf("node %d: root.log says nothing of authentication", i)
			}
		}
		return true, ""
	})
	cs, _ := clusterStatus(nodes[0])
	t.Logf("without the peer secret: phase %s (%s), %+v", cs.Join.Phase, cs.Join.Waiting, cs.Join.Addresses[0])
	stillNoCluster(t, 3*time.Second, nodes...)
}

// TestClusterOtherVBucketCount: a node with another vBucket count than the
// cluster's (--vbuckets 128 against 64) that joins it is refused for good
// (docs/design.md §10.4: status refused, the node logs why and exits 1).
func TestClusterOtherVBucketCount(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	join := []string{nodes[0].Addr, nodes[1].Addr, nodes[2].Addr}
	args := clusterArgs(testproc.FreePorts(t, 1)[0], join, 0)
	args = append(args, "--vbuckets", "128") // after clusterArgs' 64: the last one wins
	n := testproc.Start(t, args...)
	var code int
	poll(t, 20*time.Second, "the node with 128 vbuckets exits", func() (bool, string) {
		if !strings.Contains(n.Output(), "shoald stopped") {
			cs, err := clusterStatus(n)
			if err == nil {
				return false, fmt.Sprintf("still running: %+v", cs.Join)
			}
			return false, err.Error()
		}
		code = n.Wait(10 * time.Second)
		return true, ""
	})
	if code != 1 || len(logLines(rootLog(t, n), "cannot be in the cluster", "refused", "128", "64")) == 0 {
		t.Fatalf("exit %d:\n%s", code, n.Output())
	}
}

// TestClusterJoinAddsOnce: a node that joins is added once: the leader
// commits one node-add and logs one "node added to the cluster".
func TestClusterJoinAddsOnce(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	join := []string{nodes[0].Addr, nodes[1].Addr, nodes[2].Addr}
	fourth := testproc.Start(t, clusterArgs(testproc.FreePorts(t, 1)[0], join, 0)...)
	docs := waitCluster(t, append(slices.Clone(nodes), fourth), 30*time.Second)
	var added []string
	for _, n := range nodes {
		added = append(added, logLines(rootLog(t, n), "node added to the cluster", docs[3].Self)...)
	}
	if len(added) != 1 {
		t.Fatalf("%d additions logged:\n%s", len(added), strings.Join(added, "\n"))
	}
}

// TestClusterJoinErrorLoggedOnce: a join address that never answers is
// logged once, not at every retry (docs/design.md §10.4: "logged once per
// distinct error").
func TestClusterJoinErrorLoggedOnce(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	n := testproc.Start(t, clusterArgs(testproc.FreePorts(t, 1)[0], []string{silent.Addr().String()}, 0)...)
	var tries []time.Time
	poll(t, 60*time.Second, "three attempts", func() (bool, string) {
		cs, err := clusterStatus(n)
		if err != nil {
			return false, err.Error()
		}
		if a := joinAddr(cs, silent.Addr().String()); a.LastTry != nil && (len(tries) == 0 || a.LastTry.After(tries[len(tries)-1])) {
			tries = append(tries, *a.LastTry)
		}
		return len(tries) >= 3, fmt.Sprint(tries)
	})
	if lines := logLines(rootLog(t, n), "join address did not answer", silent.Addr().String()); len(lines) != 1 {
		t.Fatalf("%d lines for %d attempts:\n%s", len(lines), len(tries), strings.Join(lines, "\n"))
	}
}

// TestClusterNoPeerSecretMessage: a node with credentials that joins
// nodes with credentials without a peer secret is told what to give: the
// message names --peer-user/--peer-secret-file, not a replica's settings.
func TestClusterNoPeerSecretMessage(t *testing.T) {
	creds, _, _ := writeCredentials(t)
	addrs := testproc.FreePorts(t, 2)
	nodes := startNodes(t, addrs, 2, "--credentials", creds)
	poll(t, 15*time.Second, "the join error", func() (bool, string) {
		cs, err := clusterStatus(nodes[0])
		if err != nil {
			return false, err.Error()
		}
		e := joinAddr(cs, addrs[1]).LastError
		return strings.Contains(e, "peer-secret-file"), e
	})
}

// TestClusterChannelsThroughFollower: channels created one after another
// through a follower are each answered ok, and each is in the follower's
// catalog when it answers (docs/design.md §10.6: the follower waits until
// its own FSM has applied the command, "so that its catalog and map show
// the change when the request is answered"). The cluster holds 300
// channels first (created through the leader): the window of the race
// this caught (the FSM published a state before the node had followed
// it) grew with the catalog.
func TestClusterChannelsThroughFollower(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	leader, followers := leaderOf(t, nodes, docs)
	cl := dialShort(t, leader.Addr)
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := cl.Push(t.Context(), []string{fmt.Sprintf("l%d-%d", w, i)}, []byte("x")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a channel through the leader: %v", err)
	}
	c := dialShort(t, followers[0].Addr)
	failed := 0
	const n = 80
	for i := range n {
		if err := c.Push(t.Context(), []string{fmt.Sprintf("f%d", i)}, []byte("x")); err != nil {
			failed++
			t.Errorf("channel f%d through the follower: %v", i, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d creations through a follower failed", failed, n)
	}
}

// TestClusterFullRestart: kill -9 of all three nodes, restarted on their
// data and addresses: the same cluster (id, members, map revision), every
// channel still known on every node, and new channels can be created.
func TestClusterFullRestart(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	for i := range 3 {
		if _, err := createQueue(t, nodes[i].Addr, fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		n.Kill()
	}
	for i, n := range nodes {
		nodes[i] = restart(t, n)
	}
	after := waitCluster(t, nodes, 60*time.Second)
	for i, d := range after {
		if d.ClusterID != docs[0].ClusterID || d.Self != docs[i].Self || d.Revision != docs[0].Revision {
			t.Fatalf("node %d after the restart: cluster %s self %s revision %d; before %s %s %d", i, d.ClusterID, d.Self, d.Revision, docs[0].ClusterID, docs[i].Self, docs[0].Revision)
		}
	}
	if _, err := createQueue(t, nodes[1].Addr, "after"); err != nil {
		t.Fatalf("a new channel after the restart: %v", err)
	}
	for _, n := range nodes {
		poll(t, 10*time.Second, "every channel on "+n.Addr, func() (bool, string) {
			ch := channelsOf(t, n.Addr)
			return ch["c0"] == "queue" && ch["c1"] == "queue" && ch["c2"] == "queue" && ch["after"] == "queue", fmt.Sprint(ch)
		})
	}
}

// TestClusterMemberMoved: a follower stopped and started on its data at a
// new address is the same member at the new address: every node lists it
// there, `not my vbucket` for its keys names it, the raft group reaches it
// there (it gets new channels, and with the leader killed it helps elect a
// new one and commits).
func TestClusterMemberMoved(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	leader, followers := leaderOf(t, nodes, docs)
	f := followers[0]
	fid := docs[slices.Index(nodes, f)].Self
	f.Stop()
	na := testproc.FreePorts(t, 1)[0]
	moved := testproc.StartIn(t, f.Dir, append(f.Args[7:], "--listen", na)...) // the last --listen wins
	nodes[slices.Index(nodes, f)] = moved
	for _, d := range waitCluster(t, nodes, 30*time.Second) {
		for _, m := range d.Nodes {
			if m.ID == fid && m.Addr != na {
				t.Fatalf("%s lists %s at %s; it moved to %s", d.Self, fid, m.Addr, na)
			}
		}
	}
	if logLines(rootLog(t, moved), "this node moved") == nil {
		t.Errorf("the moved node did not log the move")
	}
	_, m := clusterMap(t, leader.Addr)
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); m.Active(vbucket.Of([]byte(k), clusterVBuckets)) == fid {
			key = k
		}
	}
	_, err := dialShort(t, leader.Addr).Put(t.Context(), "kv", []byte(key), []byte("v"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Active != na {
		t.Fatalf("a put of the moved node's key at the leader: %v; want not my vbucket naming %s", err, na)
	}
	if _, err := dialShort(t, na).Put(t.Context(), "kv", []byte(key), []byte("v")); err != nil {
		t.Fatalf("the put at the moved node: %v", err)
	}
	if _, err := createQueue(t, followers[1].Addr, "aftermove"); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "aftermove on the moved node", func() (bool, string) {
		ch := channelsOf(t, na)
		return ch["aftermove"] == "queue", fmt.Sprint(ch)
	})
	leader.Kill()
	poll(t, 30*time.Second, "a new leader of the moved node and the other", func() (bool, string) {
		c, err := clusterStatus(moved)
		return err == nil && c.Leader != "" && c.Leader != docs[0].Leader, fmt.Sprint(c, err)
	})
	if _, err := createQueue(t, na, "afterkill"); err != nil {
		t.Fatalf("a new channel through the moved node with the leader killed: %v", err)
	}
}

// TestClusterFrozenLeader: the leader frozen with SIGSTOP (its sockets open,
// nothing answered) is replaced; a channel is created meanwhile; thawed,
// the old leader follows the new one and knows the channel.
func TestClusterFrozenLeader(t *testing.T) {
	nodes, docs := startCluster(t, 3)
	leader, followers := leaderOf(t, nodes, docs)
	old := docs[0].Leader
	leader.Signal(syscall.SIGSTOP)
	var newLeader string
	poll(t, electionBound, "a new leader with the old one frozen", func() (bool, string) {
		cs, err := clusterStatus(followers[0])
		if err == nil && cs.Leader != "" && cs.Leader != old {
			newLeader = cs.Leader
			return true, ""
		}
		return false, fmt.Sprint(cs, err)
	})
	if _, err := createQueue(t, followers[1].Addr, "during"); err != nil {
		t.Fatalf("a new channel with the leader frozen: %v", err)
	}
	leader.Signal(syscall.SIGCONT)
	d := waitCluster(t, nodes, 30*time.Second)
	if d[0].Leader == old {
		t.Fatalf("the thawed node leads again: %+v", d[0])
	}
	cs, _ := clusterStatus(leader)
	if cs.RaftState != "follower" {
		t.Fatalf("the thawed leader is %s (leader %s, elected while it was frozen %s)", cs.RaftState, cs.Leader, newLeader)
	}
	poll(t, 10*time.Second, "the channel created meanwhile on the thawed node", func() (bool, string) {
		ch := channelsOf(t, leader.Addr)
		return ch["during"] == "queue", fmt.Sprint(ch)
	})
}
