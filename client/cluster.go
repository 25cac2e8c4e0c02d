package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Member states of a ClusterNode and a ClusterMember (docs/protocol.md
// §4.8). A newer node may send a state this client does not know: it is
// then "state(N)" with N the code of the GetClusterMap answer.
const (
	// NodeJoining: added by the leader, not yet in the raft group.
	NodeJoining = "joining"
	// NodeActive: a member that may hold vBuckets.
	NodeActive = "active"
	// NodeFailed: failed over; its vBuckets moved to other nodes.
	NodeFailed = "failed"
	// NodeLeaving: being removed; it holds no vBucket.
	NodeLeaving = "leaving"
)

// nodeStates are the state codes of the GetClusterMap answer.
var nodeStates = [...]string{1: NodeJoining, 2: NodeActive, 3: NodeFailed, 4: NodeLeaving}

// ClusterMap is a node's view of the cluster: its members and the vBucket
// map, the answer of GetClusterMap. Every node answers with the map it
// applied last; Revision tells which of two answers is newer.
type ClusterMap struct {
	// Revision numbers the map; it grows with every change.
	Revision uint64 `json:"revision"`
	// Replicas is the cluster's replica count: chains are 1+Replicas long
	// when there are enough nodes.
	Replicas int `json:"replicas"`
	// Nodes are the members, sorted by id.
	Nodes []ClusterNode `json:"nodes"`
	// VBuckets has one entry per vBucket, indexed by vBucket number.
	VBuckets []VBucketChain `json:"vbuckets"`
}

// ClusterNode is one member in a ClusterMap.
type ClusterNode struct {
	ID string `json:"id"`
	// Addr is the data address (clients and peers connect to it).
	Addr string `json:"addr"`
	// HTTP is the HTTP address, "" when the node has none.
	HTTP string `json:"http,omitempty"`
	// State is NodeJoining, NodeActive, NodeFailed or NodeLeaving.
	State string `json:"state"`
	Zone  string `json:"zone,omitempty"`
}

// VBucketChain is one vBucket in a ClusterMap.
type VBucketChain struct {
	// Epoch is raised at every change of the vBucket's active node; 0
	// only for an empty chain.
	Epoch uint64 `json:"epoch"`
	// Chain is the ids of the nodes that hold the vBucket, the active
	// first, then the replicas; empty when no node holds it.
	Chain []string `json:"chain"`
	// Pending are the nodes a rebalance is building a copy on (they
	// serve nothing of it yet).
	Pending []string `json:"pending,omitempty"`
	// Frozen is set during a rebalance's takeover of the vBucket: its
	// active answers `not my vbucket` for a moment, until the map naming
	// the new active commits; the client retries meanwhile.
	Frozen bool `json:"frozen,omitempty"`
}

// Active returns the id of the vBucket's active node, "" when it has none.
func (v VBucketChain) Active() string {
	if len(v.Chain) == 0 {
		return ""
	}
	return v.Chain[0]
}

// VBucketOf returns the vBucket key belongs to (docs/protocol.md §2), -1
// when the map has no vBucket.
func (m *ClusterMap) VBucketOf(key []byte) int {
	if len(m.VBuckets) == 0 {
		return -1
	}
	return int(vbucket.Of(key, len(m.VBuckets)))
}

// Node returns the member with that id.
func (m *ClusterMap) Node(id string) (ClusterNode, bool) {
	for _, n := range m.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return ClusterNode{}, false
}

// Counts returns how many vBuckets node id is active and replica for.
func (m *ClusterMap) Counts(id string) (active, replica int) {
	for _, v := range m.VBuckets {
		for i, n := range v.Chain {
			if n != id {
				continue
			}
			if i == 0 {
				active++
			} else {
				replica++
			}
		}
	}
	return active, replica
}

// ClusterMap returns the members and the vBucket map of the first node
// given to Dial, as it applied them last. A node that is in no cluster
// yet answers ErrBadRequest (it says what it waits for); a standby
// (--replica-of) ErrUnsupported.
func (c *Client) ClusterMap(ctx context.Context) (*ClusterMap, error) {
	b, err := c.do(ctx, c.kvNode(), wire.OpGetClusterMap, 0, nil)
	if err != nil {
		return nil, err
	}
	m, err := decodeClusterMap(b)
	if err != nil {
		return nil, fmt.Errorf("%w: GetClusterMap answer of %s: %w", ErrProtocol, c.kvNode().addr, err)
	}
	return m, nil
}

// minMember is the fewest bytes a member of the GetClusterMap answer
// takes: a one-byte id, empty addresses and zone.
const minMember = 2 + 1 + 1 + 1 + 1

// decodeClusterMap decodes a GetClusterMap answer: u16 N, N members, the
// map in vbmap's layout, nothing after it. Counts are checked against the
// bytes left before anything is allocated for them.
func decodeClusterMap(b []byte) (*ClusterMap, error) {
	d := wire.NewDecoder(b)
	n := int(d.U16())
	if d.Err() != nil {
		return nil, fmt.Errorf("truncated member count: %w", d.Err())
	}
	if n*minMember > d.Len() {
		return nil, fmt.Errorf("%d members cannot fit in %d bytes", n, d.Len())
	}
	m := &ClusterMap{Nodes: make([]ClusterNode, n)}
	for i := range m.Nodes {
		id, addr, web := d.Bytes8(), d.Bytes8(), d.Bytes8()
		code, zone := d.U8(), d.Bytes8()
		if err := d.Err(); err != nil {
			return nil, fmt.Errorf("truncated member %d: %w", i, err)
		}
		if len(id) == 0 {
			return nil, fmt.Errorf("member %d has an empty id", i)
		}
		state := fmt.Sprintf("state(%d)", code)
		if int(code) < len(nodeStates) && nodeStates[code] != "" {
			state = nodeStates[code]
		}
		m.Nodes[i] = ClusterNode{ID: string(id), Addr: string(addr), HTTP: string(web), State: state, Zone: string(zone)}
		if i > 0 && m.Nodes[i-1].ID >= m.Nodes[i].ID {
			return nil, fmt.Errorf("members %q, %q not in increasing order", m.Nodes[i-1].ID, m.Nodes[i].ID)
		}
	}
	rest := d.Rest()
	vm, used, err := vbmap.DecodeMap(rest)
	if err != nil {
		return nil, err
	}
	if used != len(rest) {
		return nil, fmt.Errorf("%d bytes after the map", len(rest)-used)
	}
	m.Revision, m.Replicas = vm.Revision, vm.Replicas
	m.VBuckets = make([]VBucketChain, len(vm.VBuckets))
	for vb, v := range vm.VBuckets {
		for _, id := range slices.Concat(v.Chain, v.Pending) {
			if _, ok := m.Node(id); !ok {
				return nil, fmt.Errorf("vbucket %d is held by %q, which is not a member", vb, id)
			}
		}
		m.VBuckets[vb] = VBucketChain{Epoch: v.Epoch, Chain: v.Chain, Pending: v.Pending, Frozen: v.Frozen}
	}
	return m, nil
}

// ClusterInfo is the cluster document of a node (Cluster): the cluster as
// that node sees it. It is also the "cluster" section of the node's
// status document.
type ClusterInfo struct {
	ClusterID string `json:"cluster_id"`
	// Self is the id of the node that answered.
	Self string `json:"self"`
	// Revision is the vBucket map's; Index the last metadata command the
	// node applied.
	Revision uint64 `json:"revision"`
	Index    uint64 `json:"index"`
	VBuckets int    `json:"vbuckets"`
	Replicas int    `json:"replicas"`
	// Leader is the metadata group's leader as the node knows it ("" when
	// it knows none).
	Leader     string `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	// RaftState is the node's: leader, follower or candidate.
	RaftState string `json:"raft_state"`
	// Voters are the raft voters (ids); WantVoters how many the cluster
	// wants.
	Voters     []string `json:"voters"`
	WantVoters int      `json:"want_voters"`
	// LeaderChanges counts the leader changes the node saw.
	LeaderChanges uint64 `json:"leader_changes"`
	// LastContactMillis is how long ago the node, a follower, heard the
	// leader.
	LastContactMillis int64           `json:"last_contact_ms,omitempty"`
	Nodes             []ClusterMember `json:"nodes"`
	Settings          ClusterSettings `json:"settings"`
	Failovers         int             `json:"failovers"`
	// AutoFailover is the automatic failover's state as the node sees it
	// (on the leader, which decides: the down set too).
	AutoFailover *AutoFailover `json:"auto_failover,omitempty"`
	Join         JoinInfo      `json:"join"`

	// Raw is the document as the node sent it, with the fields this
	// client does not know.
	Raw json.RawMessage `json:"-"`
}

// ClusterMember is one member in the cluster document.
type ClusterMember struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	HTTP string `json:"http,omitempty"`
	Zone string `json:"zone,omitempty"`
	// State is NodeJoining, NodeActive, NodeFailed or NodeLeaving.
	State string `json:"state"`
	// Voter: a raft voter; Leader: the metadata group's leader.
	Voter  bool `json:"voter"`
	Leader bool `json:"leader"`
	// Active and Replica count the vBuckets the member holds.
	Active  int `json:"active_vbuckets"`
	Replica int `json:"replica_vbuckets"`
	// Since is when the member entered its state (the leader's clock).
	Since time.Time `json:"since"`
}

// ClusterSettings are the cluster-wide settings.
type ClusterSettings struct {
	// FailoverTimeoutMillis is how long a node may be unheard before an
	// automatic failover.
	FailoverTimeoutMillis int64 `json:"failover_timeout_ms"`
	// MaxFailovers is how many automatic failovers may happen before an
	// operator resets the count.
	MaxFailovers int `json:"max_failovers"`
	// Durability is the default durability of writes.
	Durability string `json:"durability"`
}

// JoinInfo is how the node became, or is becoming, a member.
type JoinInfo struct {
	// Phase is "bootstrapping", "joining" or "member".
	Phase string `json:"phase"`
	// Waiting says why the node is not a member yet.
	Waiting string `json:"waiting,omitempty"`
	// Addresses are the join addresses with the last outcome of each.
	Addresses []JoinAddress `json:"addresses,omitempty"`
	// Discovered are the nodes heard before the cluster existed.
	Discovered []JoinPeer `json:"discovered,omitempty"`
}

// JoinAddress is one join address and the last attempt at it.
type JoinAddress struct {
	Addr      string     `json:"addr"`
	LastError string     `json:"last_error,omitempty"`
	LastTry   *time.Time `json:"last_try,omitempty"`
	OK        bool       `json:"ok"`
}

// JoinPeer is a node heard before the cluster existed.
type JoinPeer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	HTTP string `json:"http,omitempty"`
	Zone string `json:"zone,omitempty"`
	// Expect is the node's --bootstrap-expect.
	Expect int `json:"expect"`
}

// Cluster returns the cluster document of the first node given to Dial.
// A standby (--replica-of) answers ErrUnsupported.
func (c *Client) Cluster(ctx context.Context) (*ClusterInfo, error) {
	b, err := c.do(ctx, c.kvNode(), wire.OpCluster, 0, nil)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" {
		return nil, fmt.Errorf("%w: %s sent an empty cluster document (is it a standby?)", ErrProtocol, c.kvNode().addr)
	}
	var ci ClusterInfo
	if err := json.Unmarshal(b, &ci); err != nil {
		return nil, fmt.Errorf("%w: the cluster document of %s does not decode: %w", ErrProtocol, c.kvNode().addr, err)
	}
	ci.Raw = b
	return &ci, nil
}

// RemoveNode removes member id from the cluster: it leaves, and the
// leader then takes it out of the metadata group. The member must hold
// no vBucket (ErrBadRequest otherwise: moving them is a rebalance) and
// must not lead the group. Any member may be asked; it needs the admin
// credential when the node has credentials (ErrNotPermitted), and a
// majority of the voters (ErrNoQuorum).
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	if len(id) == 0 || len(id) > 255 {
		return fmt.Errorf("client: node id of %d bytes (1..255)", len(id))
	}
	_, err := c.do(ctx, c.kvNode(), wire.OpNodeRemove, 0, wire.AppendStr8(nil, id))
	return err
}
