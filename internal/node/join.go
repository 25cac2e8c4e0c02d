package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
	"slices"
	"syscall"
	"time"

	"shoal/internal/meta"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// joinRequest is the body of a Join request from a node that is not a
// member (yet) of the cluster of the node it asks.
type joinRequest struct {
	Node      meta.Peer `json:"node"`
	ClusterID string    `json:"cluster_id,omitempty"` // the cluster the node was in, if any
	VBuckets  int       `json:"vbuckets"`
	Replicas  int       `json:"replicas"`
	HasState  bool      `json:"has_state"`
	Started   int64     `json:"started"` // unix ms: between two nodes with one id, the later one is the copy
}

// joinAnswer is the answer to a Join.
type joinAnswer struct {
	NodeID    string      `json:"node_id"`
	ClusterID string      `json:"cluster_id,omitempty"`
	Joined    bool        `json:"joined,omitempty"`
	Leader    string      `json:"leader,omitempty"`
	Expect    int         `json:"expect"`
	Peers     []meta.Peer `json:"peers,omitempty"`
}

// joinTimeout bounds one join attempt at one address; attempts run in
// parallel, so a blackholed address delays nothing else.
const joinTimeout = 2 * time.Second

// peerFresh is how long a node heard before the cluster exists counts
// for the bootstrap.
const peerFresh = 30 * time.Second

func (n *Node) selfPeer() meta.Peer {
	return meta.Peer{ID: n.cfg.NodeID, Addr: n.cluster.addr, HTTP: addrString(n.HTTPAddr()), Zone: n.cfg.Zone, Expect: n.cfg.BootstrapExpect}
}

// knownClusterID is the cluster this node belongs to, "" if none.
func (n *Node) knownClusterID() string {
	if st := n.cluster.meta.State(); st.Initialized() {
		return st.ClusterID
	}
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.applied != nil {
		return c.applied.ClusterID
	}
	return ""
}

// joinTargets are the join addresses, the addresses of the nodes heard
// before the cluster exists and those the discovery handed over, without
// this node's own.
func (n *Node) joinTargets() []string {
	c := n.cluster
	out := slices.Clone([]string(n.cfg.Join))
	c.mu.Lock()
	for _, d := range c.peerSeen {
		if time.Since(d.at) < peerFresh {
			out = append(out, d.Addr)
		}
	}
	c.mu.Unlock()
	if st := c.meta.State(); st.Initialized() {
		for _, m := range st.Nodes {
			out = append(out, m.Addr)
		}
	}
	out = append(out, n.discoveryTargets()...)
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(a string) bool { return a == c.addr })
}

// joinRound asks every join target, in parallel, to add this node, and
// bootstraps the cluster when this node is the one to (--bootstrap-expect).
// It returns an error only for a permanent refusal.
func (n *Node) joinRound(ctx context.Context) error {
	c := n.cluster
	self := n.selfPeer()
	req := joinRequest{Node: self, ClusterID: n.knownClusterID(), VBuckets: n.cfg.VBuckets, Replicas: n.cfg.Replicas, HasState: c.meta.HasState(), Started: n.started.UnixMilli()}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("cannot encode a join request: %w", err)
	}
	targets := n.joinTargets()
	if len(targets) == 0 && !(n.cfg.BootstrapExpect == 1 && !c.meta.HasState()) {
		// (--bootstrap-expect 1: a cluster of one, whatever the join
		// addresses or the discovery say; planned below.)
		n.setPhase("joining", "no join address other than this node's own")
		return nil
	}
	type result struct {
		addr string
		ans  joinAnswer
		err  error
	}
	results := make(chan result, len(targets))
	for _, a := range targets {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, joinTimeout)
			defer cancel()
			r := result{addr: a}
			var b []byte
			if b, r.err = c.peers.call(cctx, a, wire.OpJoin, body); r.err == nil {
				r.err = json.Unmarshal(b, &r.ans)
			}
			results <- r
		}()
	}
	var joined, clusterSeen bool
	for range targets {
		r := <-results
		n.noteJoin(r.addr, r.err)
		switch {
		case r.err != nil:
			if isStatus(r.err, wire.StatusRefused) {
				return fmt.Errorf("the node at %s refused this node: %w", r.addr, peerToMeta(r.err))
			}
		case r.ans.ClusterID != "":
			clusterSeen = true
			joined = joined || r.ans.Joined
		default:
			n.heard(r.ans.Peers)
		}
	}
	switch {
	case joined:
		n.setPhase("joining", "added to the cluster; waiting for its metadata")
		return nil
	case clusterSeen:
		n.setPhase("joining", "the cluster did not add this node yet (no leader?)")
		return nil
	case n.cfg.BootstrapExpect == 0:
		n.setPhase("joining", "no node at the join addresses is a member of a cluster yet")
		return nil
	case c.meta.HasState():
		n.setPhase("joining", "waiting for the metadata group to elect a leader")
		return nil
	}
	peers := []meta.Peer{self}
	c.mu.Lock()
	for _, d := range c.peerSeen {
		if time.Since(d.at) < peerFresh && d.Expect == self.Expect {
			peers = append(peers, d.Peer)
		}
	}
	c.mu.Unlock()
	plan := meta.PlanBootstrap(self.ID, n.cfg.BootstrapExpect, peers)
	if !plan.Bootstrap {
		n.setPhase("bootstrapping", plan.Waiting)
		return nil
	}
	voters := meta.VoterIDs(plan.Members, n.cfg.Voters)
	servers := make([]meta.Server, len(plan.Members))
	for i, p := range plan.Members {
		servers[i] = meta.Server{ID: p.ID, Addr: p.Addr, Voter: voters[p.ID]}
	}
	c.mu.Lock()
	c.bootstrap = plan.Members
	c.mu.Unlock()
	if err := c.meta.Bootstrap(servers); err != nil {
		c.mu.Lock()
		c.bootstrap = nil
		c.mu.Unlock()
		n.log.Error("cannot bootstrap the cluster", "err", err)
		return nil
	}
	ids := make([]string, len(plan.Members))
	for i, p := range plan.Members {
		ids[i] = p.ID + "@" + p.Addr
	}
	n.log.Info("bootstrapping a new cluster", "nodes", ids)
	n.setPhase("bootstrapping", "electing the first leader")
	return nil
}

// maxPeersSeen bounds the nodes remembered before the cluster exists (a
// Join is hostile input like any other).
const maxPeersSeen = 256

// heard records nodes heard before the cluster exists; those not heard
// for peerFresh are forgotten.
func (n *Node) heard(ps []meta.Peer) {
	c := n.cluster
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	maps.DeleteFunc(c.peerSeen, func(_ string, d discovered) bool { return now.Sub(d.at) >= peerFresh })
	for _, p := range ps {
		if !vbmap.ValidNodeID(p.ID) || p.ID == n.cfg.NodeID || p.Addr == "" || len(p.Addr) > 255 || len(p.HTTP) > 255 || len(p.Zone) > 255 {
			continue
		}
		if _, ok := c.peerSeen[p.ID]; ok || len(c.peerSeen) < maxPeersSeen {
			c.peerSeen[p.ID] = discovered{Peer: p, at: now}
		}
	}
}

// noteJoin records the outcome of a join attempt for /status, and logs a
// failure when it differs from the previous one at that address.
func (n *Node) noteJoin(addr string, err error) {
	c := n.cluster
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.join.Addresses, func(a JoinAddress) bool { return a.Addr == addr })
	if i < 0 {
		c.join.Addresses = append(c.join.Addresses, JoinAddress{Addr: addr})
		i = len(c.join.Addresses) - 1
	}
	a := &c.join.Addresses[i]
	prev := a.LastError
	a.LastTry, a.OK, a.LastError = &now, err == nil, ""
	if err != nil {
		a.LastError = localAddr.ReplaceAllString(err.Error(), "")
		var se *wire.StatusError
		switch {
		case a.LastError == prev:
		case isStatus(err, wire.StatusRefused):
			n.log.Error("join address refused this node", "addr", addr, "err", a.LastError)
		case errors.As(err, &se):
			n.log.Warn("join address answered with an error; retrying with backoff", "addr", addr, "err", a.LastError)
		case isNetError(err):
			n.log.Warn("join address did not answer; retrying with backoff", "addr", addr, "err", a.LastError)
		default:
			n.log.Warn("join address could not be talked to; retrying with backoff", "addr", addr, "err", a.LastError)
		}
	}
}

// isNetError reports whether err is a failure of the network (refused,
// reset, timed out, closed), not of the exchange.
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED)
}

// localAddr matches the local address in a socket error ("read tcp
// 127.0.0.1:PORT->"), which changes at every attempt.
var localAddr = regexp.MustCompile(`\S+->`)

// handleJoin answers a Join from another node. A member forwards it to
// the leader, which admits the node; before the cluster exists the node
// answers with the nodes it heard, for the bootstrap.
func (n *Node) handleJoin(body []byte) ([]byte, error) {
	c := n.cluster
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: malformed join request: %w", meta.ErrBadCommand, err)
	}
	if req.Node.ID == "" || req.Node.Addr == "" {
		return nil, fmt.Errorf("%w: a join request without a node id and address", meta.ErrBadCommand)
	}
	if req.VBuckets != n.cfg.VBuckets {
		return nil, fmt.Errorf("%w: node %s has %d vbuckets, this cluster %d: start it with --vbuckets %d and an empty data directory", meta.ErrRefused, req.Node.ID, req.VBuckets, n.cfg.VBuckets, n.cfg.VBuckets)
	}
	st := c.meta.State()
	if st.Initialized() {
		if req.ClusterID != "" && req.ClusterID != st.ClusterID {
			return nil, fmt.Errorf("%w: node %s belongs to cluster %s, this is cluster %s: a node with another cluster's data directory (DATA/meta) cannot join", meta.ErrRefused, req.Node.ID, req.ClusterID, st.ClusterID)
		}
		if c.meta.IsLeader() {
			return n.admit(req)
		}
		_, leader := c.meta.Leader()
		if leader == "" {
			return nil, fmt.Errorf("%w: no leader to add node %s", meta.ErrNoQuorum, req.Node.ID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
		defer cancel()
		b, err := c.peers.call(ctx, leader, wire.OpJoin, body)
		if err != nil {
			return nil, peerToMeta(err)
		}
		return b, nil
	}
	self := n.selfPeer()
	if req.Node.ID == self.ID {
		if req.Started > n.started.UnixMilli() {
			return nil, fmt.Errorf("%w: node id %s is this node's, at %s, started before the node at %s: is one data directory a copy of the other? give each node its own", meta.ErrRefused, self.ID, self.Addr, req.Node.Addr)
		}
		return nil, fmt.Errorf("%w: node id %s is also this node's (at %s)", meta.ErrBadCommand, self.ID, self.Addr)
	}
	if req.Node.Expect != self.Expect {
		msg := fmt.Sprintf("node %s (%s) was started with --bootstrap-expect %d and this node (%s, %s) with %d: start every node of a new cluster with the same value",
			req.Node.ID, req.Node.Addr, req.Node.Expect, self.ID, self.Addr, self.Expect)
		n.log.Error("bootstrap-expect differs between nodes; not forming a cluster with that node", "peer", req.Node.ID, "peer_expect", req.Node.Expect, "expect", self.Expect)
		return nil, fmt.Errorf("%w: %s", meta.ErrBadCommand, msg)
	}
	n.heard([]meta.Peer{req.Node})
	ans := joinAnswer{NodeID: self.ID, Expect: self.Expect, Peers: []meta.Peer{self}}
	c.mu.Lock()
	for _, d := range c.peerSeen {
		if time.Since(d.at) < peerFresh && d.Expect == self.Expect {
			ans.Peers = append(ans.Peers, d.Peer)
		}
	}
	c.mu.Unlock()
	return json.Marshal(ans)
}

// admit adds a node to the cluster (leader only): a member at the same
// address is a no-op, a member at a new address moved (unless a node with
// its id still answers at the old one: a copied data directory).
func (n *Node) admit(req joinRequest) ([]byte, error) {
	c := n.cluster
	// A joiner asks every join address at once and the members forward to
	// the leader: one admission at a time, each seeing the previous one's
	// commit.
	c.admitting.Lock()
	defer c.admitting.Unlock()
	st := c.meta.State()
	p := req.Node
	_, leader := c.meta.Leader()
	ans, _ := json.Marshal(joinAnswer{NodeID: n.cfg.NodeID, ClusterID: st.ClusterID, Joined: true, Leader: leader})
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	add := &meta.Command{Op: meta.OpNodeAdd, Node: &meta.Node{ID: p.ID, Addr: p.Addr, HTTP: p.HTTP, Zone: p.Zone, State: meta.Joining}}
	if cur, ok := st.Node(p.ID); ok {
		if cur.Addr == p.Addr && cur.HTTP == p.HTTP && cur.Zone == p.Zone {
			return ans, nil
		}
		if cur.Addr != p.Addr {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			id, err := c.peers.hello(pctx, cur.Addr)
			pcancel()
			if err == nil && id == p.ID {
				return nil, fmt.Errorf("%w: node id %s is a member at %s and answers there; the node at %s has the same id: is its data directory a copy? give it one of its own", meta.ErrRefused, p.ID, cur.Addr, p.Addr)
			}
			n.log.Warn("a member moved to a new address", "node", p.ID, "was", cur.Addr, "now", p.Addr)
		}
		if _, err := n.propose(ctx, add); err != nil {
			return nil, err
		}
		return ans, nil
	}
	for _, m := range st.Nodes {
		if m.Addr == p.Addr {
			return nil, fmt.Errorf("%w: address %s belongs to member %s; the node there now has id %s (a new data directory?): remove %s first (shoal nodes remove) or give the new node another address", meta.ErrRefused, p.Addr, m.ID, p.ID, m.ID)
		}
	}
	if _, err := n.propose(ctx, add); err != nil {
		return nil, err
	}
	n.log.Info("node added to the cluster", "node", p.ID, "addr", p.Addr, "zone", p.Zone)
	return ans, nil
}

// leaderDuties are the leader's: create the cluster after the bootstrap,
// then keep the raft configuration in line with the members
// (meta.PlanMembership).
func (n *Node) leaderDuties(ctx context.Context) {
	c := n.cluster
	st := c.meta.State()
	pctx, cancel := context.WithTimeout(ctx, proposeTimeout)
	defer cancel()
	if !st.Initialized() {
		if err := n.initCluster(pctx); err != nil {
			n.log.Error("cannot create the cluster", "err", err)
		}
		return
	}
	if me, ok := st.Node(n.cfg.NodeID); !ok || me.Addr != c.addr {
		// The leader itself moved (or is not recorded): it admits itself.
		if _, err := n.admit(joinRequest{Node: n.selfPeer(), ClusterID: st.ClusterID, VBuckets: n.cfg.VBuckets}); err != nil {
			n.log.Warn("the leader cannot record its own address; retrying", "err", err)
		}
		return
	}
	servers, err := c.meta.Servers()
	if err != nil {
		return
	}
	for _, a := range meta.PlanMembership(st, servers, n.cfg.NodeID) {
		var err error
		switch a.Kind {
		case meta.AddVoter, meta.AddNonvoter:
			err = c.meta.AddServer(a.ID, a.Addr, a.Kind == meta.AddVoter, proposeTimeout)
		case meta.Demote:
			err = c.meta.DemoteServer(a.ID, proposeTimeout)
		case meta.RemoveServer:
			err = c.meta.RemoveServer(a.ID, proposeTimeout)
		case meta.MarkActive:
			if _, err = n.propose(pctx, &meta.Command{Op: meta.OpNodeState, NodeID: a.ID, State: meta.Active}); err == nil && n.cfg.AutoRebalance {
				go n.autoRebalance("node " + a.ID + " joined")
			}
		case meta.MarkVoter, meta.MarkNonvoter:
			_, err = n.propose(pctx, &meta.Command{Op: meta.OpNodeVoter, NodeID: a.ID, Voter: a.Kind == meta.MarkVoter})
		case meta.Forget:
			_, err = n.propose(pctx, &meta.Command{Op: meta.OpNodeRemove, NodeID: a.ID})
		}
		if err != nil {
			n.log.Warn("membership change failed; retrying", "action", string(a.Kind), "node", a.ID, "err", err)
			return
		}
		n.log.Info("membership changed", "action", string(a.Kind), "node", a.ID, "addr", a.Addr)
	}
}

// initCluster proposes the first command of a new cluster: its id, the
// members this node bootstrapped with and the first map over them.
func (n *Node) initCluster(ctx context.Context) error {
	c := n.cluster
	c.mu.Lock()
	members := slices.Clone(c.bootstrap)
	c.mu.Unlock()
	if members == nil { // bootstrapped by an earlier run of this node
		servers, err := c.meta.Servers()
		if err != nil {
			return err
		}
		for _, s := range servers {
			members = append(members, meta.Peer{ID: s.ID, Addr: s.Addr})
		}
		if i := slices.IndexFunc(members, func(p meta.Peer) bool { return p.ID == n.cfg.NodeID }); i >= 0 {
			members[i] = n.selfPeer()
		}
	}
	voters := meta.VoterIDs(members, n.cfg.Voters)
	settings := meta.DefaultSettings()
	settings.FailoverTimeoutMillis = time.Duration(n.cfg.FailoverTimeout).Milliseconds()
	settings.AutoFailoverOff = !n.cfg.AutoFailover
	in := &meta.Init{ClusterID: newClusterID(), VBuckets: n.cfg.VBuckets, Replicas: n.cfg.Replicas, Voters: n.cfg.Voters, Settings: settings}
	place := make([]vbmap.Node, len(members))
	for i, p := range members {
		in.Nodes = append(in.Nodes, meta.Node{ID: p.ID, Addr: p.Addr, HTTP: p.HTTP, Zone: p.Zone, Voter: voters[p.ID]})
		place[i] = vbmap.Node{ID: p.ID, Zone: p.Zone}
	}
	chains, err := vbmap.Place(place, n.cfg.VBuckets, n.cfg.Replicas)
	if err != nil {
		return err
	}
	in.Chains = chains
	start := time.Now()
	if _, err := n.propose(ctx, &meta.Command{Op: meta.OpInit, Init: in}); err != nil && !errors.Is(err, meta.ErrInitialized) {
		return err
	}
	st := c.meta.State()
	n.log.Info("cluster created", "cluster_id", st.ClusterID, "nodes", len(st.Nodes), "vbuckets", st.VBuckets, "replicas", st.Replicas, "revision", st.Map.Revision, "commit", time.Since(start).Round(time.Microsecond).String())
	return nil
}

// syncChannels records in the cluster the local channels that predate it
// (a node's data from before it was in a cluster), once.
func (n *Node) syncChannels(ctx context.Context) {
	c := n.cluster
	c.mu.Lock()
	done := c.synced
	c.mu.Unlock()
	if done {
		return
	}
	st := c.meta.State()
	for _, e := range n.cat.List() {
		if _, ok := st.Channels[e.Name]; ok {
			continue
		}
		c.mu.Lock()
		_, known := c.startChannels[e.Name]
		c.mu.Unlock()
		if known {
			continue // removed by the cluster meanwhile; the change removes it here too
		}
		pctx, cancel := context.WithTimeout(ctx, proposeTimeout)
		_, err := n.propose(pctx, &meta.Command{Op: meta.OpChannelCreate, Channel: e.Name, Kind: e.Kind})
		cancel()
		if err != nil && !errors.Is(err, meta.ErrWrongKind) {
			n.log.Warn("cannot record a local channel in the cluster; retrying", "channel", e.Name, "err", err)
			return
		}
		if err != nil {
			n.log.Error("a local channel has another kind in the cluster: its records here are not served", "channel", e.Name, "kind", e.Kind.String(), "err", err)
		}
	}
	c.mu.Lock()
	c.synced = true
	c.mu.Unlock()
}
