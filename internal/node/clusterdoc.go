package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"shoal/internal/meta"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// ClusterStatus is the cluster document: the answer of the Cluster
// request (`shoal nodes`, `shoal cluster`) and the cluster section of
// /status.
type ClusterStatus struct {
	ClusterID string `json:"cluster_id"`
	// Self is this node's id.
	Self string `json:"self"`
	// Revision is the vBucket map's; Index the last metadata command this
	// node applied.
	Revision uint64 `json:"revision"`
	Index    uint64 `json:"index"`
	VBuckets int    `json:"vbuckets"`
	Replicas int    `json:"replicas"`
	// Leader is the metadata group's leader as this node knows it.
	Leader     string `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	// RaftState is this node's: leader, follower or candidate.
	RaftState string `json:"raft_state"`
	// Voters are the raft voters (ids); WantVoters how many the cluster wants.
	Voters     []string `json:"voters"`
	WantVoters int      `json:"want_voters"`
	// LeaderChanges counts the leader changes this node saw.
	LeaderChanges uint64 `json:"leader_changes"`
	// LastContactMillis is how long ago this follower heard the leader.
	LastContactMillis int64 `json:"last_contact_ms,omitempty"`
	// Fenced says why, when the node serves none of its active vBuckets
	// (its lease ran out: it did not hear the leader for the failover
	// timeout); empty when it serves them.
	Fenced    string        `json:"fenced,omitempty"`
	Nodes     []NodeStatus  `json:"nodes"`
	Settings  meta.Settings `json:"settings"`
	Failovers int           `json:"failovers"`
	// AutoFailover is the automatic failover: settings, and on the
	// leader, which decides, the down set and the recent failovers.
	AutoFailover *AutoFailoverStatus `json:"auto_failover,omitempty"`
	Join         JoinStatus          `json:"join"`
}

// NodeStatus is one member in the cluster document.
type NodeStatus struct {
	ID      string    `json:"id"`
	Addr    string    `json:"addr"`
	HTTP    string    `json:"http,omitempty"`
	Zone    string    `json:"zone,omitempty"`
	State   string    `json:"state"`
	Voter   bool      `json:"voter"`
	Leader  bool      `json:"leader"`
	Active  int       `json:"active_vbuckets"`
	Replica int       `json:"replica_vbuckets"`
	Since   time.Time `json:"since"`
}

// clusterStatus builds the cluster document; nil on a standby.
func (n *Node) clusterStatus() *ClusterStatus {
	c := n.cluster
	if c == nil {
		return nil
	}
	st := c.known()
	leader, leaderAddr := c.meta.Leader()
	cs := &ClusterStatus{
		ClusterID: st.ClusterID, Self: n.cfg.NodeID, Index: st.Index, VBuckets: st.VBuckets, Replicas: st.Replicas,
		Leader: leader, LeaderAddr: leaderAddr, RaftState: c.meta.RaftState(), WantVoters: st.Voters,
		LeaderChanges: c.meta.LeaderChanges(), Settings: st.Settings, Failovers: st.Failovers, Nodes: []NodeStatus{},
	}
	if st.Initialized() {
		cs.AutoFailover = n.autoStatus(st)
	}
	if lc := c.meta.LastContact(); !lc.IsZero() && cs.RaftState != "leader" {
		cs.LastContactMillis = time.Since(lc).Milliseconds()
	}
	n.routing.mu.Lock()
	if n.routing.fenced {
		cs.Fenced = n.routing.fencedWhy
	}
	n.routing.mu.Unlock()
	if servers, err := c.meta.Servers(); err == nil {
		for _, s := range servers {
			if s.Voter {
				cs.Voters = append(cs.Voters, s.ID)
			}
		}
		slices.Sort(cs.Voters)
	}
	var counts map[string]vbmap.Counts
	if st.Map != nil {
		cs.Revision = st.Map.Revision
		counts = st.Map.Counts()
	}
	for _, m := range st.Nodes {
		cs.Nodes = append(cs.Nodes, NodeStatus{
			ID: m.ID, Addr: m.Addr, HTTP: m.HTTP, Zone: m.Zone, State: string(m.State), Voter: m.Voter, Leader: m.ID == leader,
			Active: counts[m.ID].Active, Replica: counts[m.ID].Replica, Since: m.SinceTime().UTC(),
		})
	}
	c.mu.Lock()
	cs.Join = c.join
	cs.Join.Addresses = slices.Clone(c.join.Addresses)
	if me, ok := st.Node(n.cfg.NodeID); ok && me.Addr == c.addr {
		cs.Join.Phase, cs.Join.Waiting = "member", ""
	}
	for _, d := range c.peerSeen {
		cs.Join.Discovered = append(cs.Join.Discovered, d.Peer)
	}
	c.mu.Unlock()
	slices.SortFunc(cs.Join.Discovered, func(a, b meta.Peer) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return cs
}

// nodeStateCodes are the node states of the GetClusterMap answer.
var nodeStateCodes = map[meta.NodeState]uint8{meta.Joining: 1, meta.Active: 2, meta.Failed: 3, meta.Leaving: 4}

// clusterMapBody is the GetClusterMap answer: the members, then the map in
// vbmap's layout (docs/protocol.md §4.8).
func clusterMapBody(st *meta.State) []byte {
	b := wire.AppendU16(nil, uint16(len(st.Nodes)))
	for _, m := range st.Nodes {
		b = wire.AppendStr8(b, m.ID)
		b = wire.AppendStr8(b, m.Addr)
		b = wire.AppendStr8(b, m.HTTP)
		b = wire.AppendU8(b, nodeStateCodes[m.State])
		b = wire.AppendStr8(b, m.Zone)
	}
	return vbmap.AppendMap(b, st.Map)
}

// clusterAdmin serves the cluster requests of the data port
// (server.Cluster).
type clusterAdmin struct{ n *Node }

// ClusterMap implements server.Cluster.
func (a clusterAdmin) ClusterMap() ([]byte, uint64, error) {
	c := a.n.cluster
	st := c.known()
	if !st.Initialized() {
		c.mu.Lock()
		waiting := c.join.Waiting
		c.mu.Unlock()
		return nil, 0, fmt.Errorf("%w: this node is not in a cluster yet (%s)", meta.ErrNotInitialized, waiting)
	}
	return clusterMapBody(st), st.Map.Revision, nil
}

// Document implements server.Cluster.
func (a clusterAdmin) Document() ([]byte, error) { return json.Marshal(a.n.clusterStatus()) }

// Join implements server.Cluster.
func (a clusterAdmin) Join(body []byte) ([]byte, error) {
	b, err := a.n.handleJoin(body)
	if errors.Is(err, meta.ErrRefused) {
		a.n.events.add("join refused", "", err.Error())
	}
	return b, err
}

// Propose implements server.Cluster: a command forwarded by another node
// to this one, the leader.
func (a clusterAdmin) Propose(body []byte) (uint64, error) {
	cmd, err := meta.DecodeCommand(body)
	if err != nil {
		return 0, err
	}
	timeout := proposeTimeout
	if cmd.Op == meta.OpFailover { // the failed node's last lease is waited out first
		timeout += a.n.failoverTimeout()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		release, err := a.n.awaitLease(ctx, cmd.NodeID)
		if err != nil {
			return 0, err
		}
		defer release()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	idx, err := a.n.cluster.meta.Propose(ctx, cmd)
	if errors.Is(err, meta.ErrNotLeader) {
		return 0, fmt.Errorf("%w: this node is no longer the leader", meta.ErrNoQuorum)
	}
	if err == nil {
		a.n.cluster.meta.Nudge() // the follower that forwarded it waits to apply it
	}
	return idx, err
}

// RemoveNode implements server.Cluster: the member leaves (it must hold
// no vBucket); the leader then takes it out of the raft configuration.
func (a clusterAdmin) RemoveNode(id string) error {
	n := a.n
	st := n.cluster.known()
	if _, ok := st.Node(id); !ok {
		return fmt.Errorf("%w: %q is not a member", meta.ErrUnknownNode, id)
	}
	if leader, _ := n.cluster.meta.Leader(); leader == id {
		return fmt.Errorf("%w: %s leads the metadata group; stop it first (another node takes over), then remove it", meta.ErrBadCommand, id)
	}
	if c := st.Map.Counts()[id]; c.Active+c.Replica > 0 {
		return fmt.Errorf("%w: node %s is active for %d and replica for %d vbuckets: it cannot leave before they move to other nodes (a rebalance)", meta.ErrHoldsVBuckets, id, c.Active, c.Replica)
	}
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	_, err := n.propose(ctx, &meta.Command{Op: meta.OpNodeState, NodeID: id, State: meta.Leaving})
	return err
}

// reportCluster reports the cluster for stats.log and /metrics.
func (n *Node) reportCluster(f *stats.Fields) {
	c := n.cluster
	st := c.known()
	byState := map[meta.NodeState]int{}
	for _, m := range st.Nodes {
		byState[m.State]++
	}
	for _, s := range []meta.NodeState{meta.Joining, meta.Active, meta.Failed, meta.Leaving} {
		f.Gauge("cluster/nodes_"+string(s), "cluster_nodes", "Members of the cluster by state.", float64(byState[s]), "state", string(s))
	}
	var rev float64
	if st.Map != nil {
		rev = float64(st.Map.Revision)
	}
	f.Gauge("cluster/revision", "cluster_revision", "Revision of the vBucket map this node applied.", rev)
	leader := 0.0
	if c.meta.IsLeader() {
		leader = 1
	}
	f.Gauge("cluster/leader", "cluster_is_leader", "1 on the metadata group's leader.", leader)
	f.Counter("cluster/leader_changes", "cluster_leader_changes_total", "Leader changes of the metadata group seen by this node.", float64(c.meta.LeaderChanges()))
	f.LogCounter("cluster/commits", float64(c.commits.Count()))
	f.LogCounter("cluster/commit_seconds", c.commits.Seconds())
	f.Histogram("cluster_commit_duration_seconds", "Time from proposing a metadata command (raft) to applying it on this node.", &c.commits)
	f.Histogram("failover_decision_duration_seconds", "Time a failover took on the leader: asking the survivors for their seqnos, planning, waiting out the node's lease, committing the map.", &n.hist.failover)
	f.Histogram("failover_detection_duration_seconds", "Automatic failover: time from the down set's first sighting to the decision.", &n.hist.detection)
	n.reportAutoFailover(f)
	n.reportRebalance(f)
}
