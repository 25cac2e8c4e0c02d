package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"shoal/internal/engine"
	"shoal/internal/meta"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
	"shoal/internal/wire"
)

// Files under DATA/meta besides raft's (raft.db, snapshots/).
const (
	// stateFile is the metadata this node applied last (meta.EncodeState):
	// a node that restarts applies its map before it serves, whether or
	// not a quorum is reachable yet.
	stateFile = "state"
)

// cluster is the node's membership of the cluster: its member of the
// metadata group, the loop that gets it into a cluster and the leader's
// duties.
type cluster struct {
	meta  *meta.Meta
	peers *peers
	dir   string // DATA/meta
	addr  string // the advertised data address

	changed chan struct{} // signalled after every metadata change
	left    chan struct{} // closed once the node knows it was removed (leaseLoop)
	leftOne sync.Once

	admitting sync.Mutex // serialises the leader's admissions (admit)

	mu sync.Mutex
	// applied is the metadata this node applied last (from stateFile at
	// start): the onChange diff is against it.
	applied *meta.State
	// startChannels are the channels of stateFile at start: local channels
	// not among them predate the cluster and are recorded in it
	// (syncChannels).
	startChannels map[string]engine.Kind
	synced        bool
	bootstrap     []meta.Peer           // the members this node bootstrapped with, for init
	peerSeen      map[string]discovered // before the cluster exists: nodes heard, by id
	grants        map[string]time.Time  // on the leader: until when each node's lease may last
	revoking      map[string]bool       // on the leader: nodes being failed over get no new lease
	steppedDown   time.Time             // on the leader: when it last handed the leadership over (stepDownIfUnasked)
	join          JoinStatus
	commits       stats.Histogram // metadata commits proposed by this node
}

// discovered is a node heard before the cluster exists.
type discovered struct {
	meta.Peer
	at time.Time
}

// JoinStatus is the join part of the cluster status.
type JoinStatus struct {
	// Phase is "bootstrapping", "joining" or "member".
	Phase string `json:"phase"`
	// Waiting says why the node is not a member yet.
	Waiting string `json:"waiting,omitempty"`
	// Addresses are the join addresses with the last outcome of each.
	Addresses []JoinAddress `json:"addresses,omitempty"`
	// Discovered are the nodes heard before the cluster existed.
	Discovered []meta.Peer `json:"discovered,omitempty"`
}

// JoinAddress is one join address and the last attempt at it.
type JoinAddress struct {
	Addr      string     `json:"addr"`
	LastError string     `json:"last_error,omitempty"`
	LastTry   *time.Time `json:"last_try,omitempty"`
	OK        bool       `json:"ok"`
}

// advertised is the data address the other nodes reach this node at.
func (n *Node) advertised() string {
	if n.cfg.Advertise != "" {
		return n.cfg.Advertise
	}
	return n.ln.Addr().String()
}

// setupCluster opens the node's member of the metadata group. A standby
// (--replica-of) is in no cluster. A node that was in a cluster applies
// the map it applied last before anything else; a new node that joins
// serves nothing until the cluster's map reaches it; a new node without
// --join, --discovery or --bootstrap-expect bootstraps a cluster of its
// own.
func (n *Node) setupCluster() error {
	c := &cluster{dir: filepath.Join(n.cfg.Data, "meta"), addr: n.advertised(), changed: make(chan struct{}, 1), left: make(chan struct{}), peerSeen: map[string]discovered{}, grants: map[string]time.Time{}, revoking: map[string]bool{}}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("cannot create the metadata directory: %w", err)
	}
	c.peers = n.rep.peers // one dialer for raft, joins, heartbeats and streams (setupRepl made it)
	prev, err := readState(filepath.Join(c.dir, stateFile), n.log)
	if err != nil {
		return err
	}
	c.applied = prev
	c.startChannels = map[string]engine.Kind{}
	if prev != nil {
		maps.Copy(c.startChannels, prev.Channels)
		if err := n.checkIdentity(prev, c); err != nil {
			return err
		}
	}
	n.cluster = c
	n.routing.fenced = true // until the lease is checked, below
	n.routing.fencedWhy = "no lease from the metadata group's leader yet (the node is starting)"
	n.routing.holding.Store(prev.Initialized()) // a restart: see handBackBehind
	if prev.Initialized() {
		// Serve as before the restart until the group catches up.
		for name, kind := range prev.Channels {
			if _, err := n.cat.Claim([]byte(name), kind); err != nil {
				n.log.Warn("a channel of the cluster has another kind on this node", "channel", name, "kind", kind.String(), "err", err)
			}
		}
		if err := n.applyMap(prev.Map, prev.Addrs()); err != nil {
			return err
		}
	} else if n.joins() {
		// A node that joins holds nothing until the cluster's map says so.
		if err := n.applyMap((*vbmap.Map)(nil).Next(0, 0, make([][]string, n.cfg.VBuckets)), nil); err != nil {
			return err
		}
	}
	c.meta, err = meta.Open(meta.Config{
		Dir: c.dir, NodeID: n.cfg.NodeID, Advertise: c.addr,
		Dial: c.peers.dialRaft, Logger: n.log.With("part", "meta"),
		HeartbeatTimeout:   time.Duration(n.cfg.RaftHeartbeatTimeout),
		ElectionTimeout:    time.Duration(n.cfg.RaftElectionTimeout),
		LeaderLeaseTimeout: time.Duration(n.cfg.RaftLeaderLeaseTimeout),
		OnChange:           n.onMetaChange,
	})
	if err != nil {
		return err
	}
	if prev != nil && !c.meta.HasState() {
		n.log.Warn("DATA/meta/state is left from a metadata group whose raft files are gone: ignored", "file", filepath.Join(c.dir, stateFile))
		c.mu.Lock()
		c.applied = nil
		c.mu.Unlock()
	}
	n.srv.HandleTakeover(wire.OpRaftOpen, func(nc net.Conn, h wire.Header, body []byte) {
		answer := wire.Header{Magic: wire.MagicResponse, Version: wire.Version, Opcode: h.Opcode, ID: h.ID}
		var msg []byte
		if len(body) != 0 {
			answer.Status, msg = wire.StatusBadRequest, []byte("malformed RaftOpen: the body is empty")
		}
		answer.BodyLen = uint32(len(msg))
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(append(wire.AppendHeader(nil, answer), msg...)); err != nil || len(body) != 0 {
			nc.Close()
			return
		}
		nc.SetWriteDeadline(time.Time{})
		c.meta.Layer().Deliver(nc)
	})
	n.srv.HandleCluster(clusterAdmin{n})
	n.srv.HandleFailover(failoverAdmin{n})
	n.srv.HandleRebalance(n.rebalanceRequest)
	n.srv.HandlePeer(wire.OpMoveStatus, maxMoveStatusBody, n.moveStatus)
	n.stats.Add(stats.SourceFunc(n.reportCluster))
	if !c.meta.HasState() && !n.joins() && n.cfg.BootstrapExpect <= 1 {
		self := meta.Peer{ID: n.cfg.NodeID, Addr: c.addr, HTTP: addrString(n.HTTPAddr()), Zone: n.cfg.Zone, Expect: 1}
		c.bootstrap = []meta.Peer{self}
		if err := c.meta.Bootstrap([]meta.Server{{ID: self.ID, Addr: self.Addr, Voter: true}}); err != nil {
			return err
		}
		n.log.Info("bootstrapped a cluster of one node", "node_id", self.ID, "addr", self.Addr)
	}
	if servers, err := c.meta.Servers(); err == nil && len(servers) == 1 && servers[0].ID == n.cfg.NodeID {
		// The only voter: no lease to wait for (no log line either).
		n.routing.mu.Lock()
		n.routing.fenced = false
		n.publish(n.routing.table)
		n.routing.mu.Unlock()
	} // else fenced until leaseLoop renews the lease
	return nil
}

// checkIdentity refuses to start a node whose data directory is a copy of
// a member that is still running elsewhere: the metadata it applied last
// has its id at another address, and a node answers there with that id.
func (n *Node) checkIdentity(prev *meta.State, c *cluster) error {
	me, ok := prev.Node(n.cfg.NodeID)
	if !ok || me.Addr == c.addr {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if id, err := c.peers.hello(ctx, me.Addr); err == nil && id == n.cfg.NodeID {
		return fmt.Errorf("node id %s is running at %s, and this node was started at %s with the same data directory contents: a copy of a node's data directory cannot join its cluster; give this node a data directory of its own", me.ID, me.Addr, c.addr)
	}
	n.log.Warn("this node moved: the cluster knows it at another address; it asks to be updated", "was", me.Addr, "now", c.addr)
	return nil
}

// readState reads the metadata a node applied last; nil when there is
// none. Stray bytes after the document are ignored, and logged.
func readState(path string, log *slog.Logger) (*meta.State, error) {
	st, stray, err := meta.ReadStateFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w (move it aside to start from what the cluster holds)", err)
	}
	if stray >= 0 {
		log.Warn("DATA/meta/state has stray bytes after its end: ignored them (the file is rewritten at the next metadata change)", "file", path, "offset", stray)
	}
	return st, nil
}

// onMetaChange follows the metadata on this node (raft's FSM goroutine):
// channels created and removed, the map and the members' addresses, and
// saves what it applied.
func (n *Node) onMetaChange(_, next *meta.State) {
	c := n.cluster
	if !next.Initialized() {
		return
	}
	c.mu.Lock()
	prev := c.applied
	if prev != nil && next.Index <= prev.Index {
		// raft replays its log after a restart: states this node applied
		// before are not news (an older one would undo newer changes).
		c.mu.Unlock()
		return
	}
	c.applied = next
	c.mu.Unlock()
	var prevChannels map[string]engine.Kind
	if prev != nil {
		prevChannels = prev.Channels
	}
	for name, kind := range next.Channels {
		if prevChannels[name] != kind {
			if _, err := n.cat.Claim([]byte(name), kind); err != nil {
				n.log.Error("a channel of the cluster has another kind on this node", "channel", name, "kind", kind.String(), "err", err)
			}
		}
	}
	for name, kind := range prevChannels {
		if _, ok := next.Channels[name]; !ok {
			n.removeChannelLocal(name, kind)
		}
	}
	if !prev.Initialized() || prev.Map.Revision != next.Map.Revision || !maps.Equal(prev.Addrs(), next.Addrs()) {
		if err := n.applyMap(next.Map, next.Addrs()); err != nil {
			n.log.Error("cannot apply the vbucket map", "revision", next.Map.Revision, "err", err)
		}
	}
	if b, err := meta.EncodeState(next); err != nil {
		n.log.Error("cannot encode the cluster metadata", "err", err)
	} else if err := vfs.WriteFileAtomic(vfs.Default, filepath.Join(c.dir, stateFile), b, 0o644); err != nil {
		n.log.Error("cannot save the cluster metadata; a restart serves an older map until the cluster is reached", "err", err)
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// known is the newest metadata this node has: what its FSM applied, or,
// after a restart while raft has not caught up (no quorum yet), what it
// applied before (DATA/meta/state). Status answers use it; decisions that
// need the group's own state use meta.State.
func (c *cluster) known() *meta.State {
	st := c.meta.State()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.applied != nil && c.applied.Index > st.Index {
		return c.applied
	}
	return st
}

// removeChannelLocal removes a channel the cluster removed from this
// node's engines, catalog and dumps. The engines remove only the records
// of the vBuckets this node is active for: the copies it holds of other
// nodes' vBuckets go when their actives' removals arrive through the
// replication streams (so the copies stay equal to their actives'). Should
// it become active for such a vBucket first, applyMap removes the copies
// left then (rememberRemoved).
func (n *Node) removeChannelLocal(name string, kind engine.Kind) {
	n.rep.rememberRemoved(name, kind)
	var err error
	switch kind {
	case engine.KindKV:
		n.kv.RemoveChannel(name)
	case engine.KindQueue:
		_, err = n.queue.RemoveChannel(name)
	case engine.KindLog:
		err = n.logStore.RemoveChannel(name)
	}
	if err != nil {
		n.log.Error("cannot remove a channel the cluster removed", "channel", name, "kind", kind.String(), "err", err)
		return
	}
	n.cat.Drop(name)
	if err := n.channelRemoved(name, kind); err != nil {
		n.log.Error("channel removed, but", "channel", name, "err", err)
	}
	n.log.Info("channel removed", "channel", name, "kind", kind.String())
}

// newClusterID returns a random cluster id.
func newClusterID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// proposeTimeout bounds a metadata change made for a request: a leader
// election takes about 2 election timeouts; past this the answer is "no
// quorum".
const proposeTimeout = 3 * time.Second

// propose commits cmd through the leader, wherever it is, and returns its
// index once this node has applied it (so its catalog and map show it).
func (n *Node) propose(ctx context.Context, cmd *meta.Command) (uint64, error) {
	c := n.cluster
	start := time.Now()
	defer func() { c.commits.Observe(time.Since(start)) }()
	for {
		release := func() {}
		if cmd.Op == meta.OpFailover && c.meta.IsLeader() {
			var err error
			if release, err = n.awaitLease(ctx, cmd.NodeID); err != nil {
				return 0, err
			}
		}
		idx, err := c.meta.Propose(ctx, cmd)
		release()
		var nl *meta.NotLeaderError
		switch {
		case err == nil:
			return idx, c.meta.WaitApplied(ctx, idx)
		case errors.As(err, &nl):
			body, eerr := cmd.Encode()
			if eerr != nil {
				return 0, eerr
			}
			ans, ferr := c.peers.call(ctx, nl.LeaderAddr, wire.OpMetaPropose, body)
			if ferr == nil {
				if len(ans) != 8 {
					return 0, fmt.Errorf("malformed MetaPropose answer from %s", nl.LeaderAddr)
				}
				d := wire.NewDecoder(ans)
				idx = d.U64()
				return idx, c.meta.WaitApplied(ctx, idx)
			}
			if !isStatus(ferr, wire.StatusNoQuorum) && !retryable(ferr) {
				return 0, peerToMeta(ferr)
			}
			err = ferr
		case errors.Is(err, meta.ErrNotInitialized) && cmd.Op != meta.OpInit:
			// The cluster is being created (a new node's first second):
			// wait for it.
		case !errors.Is(err, meta.ErrNoQuorum):
			return idx, err
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, meta.ErrNoQuorum) {
				return 0, err
			}
			return 0, fmt.Errorf("%w: %w", meta.ErrNoQuorum, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// retryable reports whether a forwarded command may be sent again: the
// leader could not be reached, or it is no longer the leader.
func retryable(err error) bool {
	var se *wire.StatusError
	if !errors.As(err, &se) {
		return true // not answered at all
	}
	return se.Status == wire.StatusShuttingDown
}

// peerToMeta turns another node's error answer into the metadata error
// its status stands for, with the other node's message as its text.
func peerToMeta(err error) error {
	var se *wire.StatusError
	if !errors.As(err, &se) {
		return err
	}
	sentinel := map[wire.Status]error{
		wire.StatusWrongKind: meta.ErrWrongKind, wire.StatusNoQuorum: meta.ErrNoQuorum, wire.StatusBadRequest: meta.ErrBadCommand,
		wire.StatusRefused: meta.ErrRefused, wire.StatusNotFound: meta.ErrUnknownNode,
	}[se.Status]
	if sentinel == nil {
		return err
	}
	return &forwardedError{sentinel: sentinel, msg: se.Message}
}

// forwardedError is an error another node answered (or a refusal in
// another package's words): its message, and the sentinel of its status
// for errors.Is.
type forwardedError struct {
	sentinel error
	msg      string
}

func (e *forwardedError) Error() string { return e.msg }
func (e *forwardedError) Unwrap() error { return e.sentinel }

// clusterChannels is the server's channel directory: the cluster's
// catalog in the metadata group.
type clusterChannels struct{ n *Node }

// Create implements server.ChannelDirectory.
func (d clusterChannels) Create(name string, kind engine.Kind) error {
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	_, err := d.n.propose(ctx, &meta.Command{Op: meta.OpChannelCreate, Channel: name, Kind: kind})
	return err
}

// Remove implements server.ChannelDirectory.
func (d clusterChannels) Remove(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	_, err := d.n.propose(ctx, &meta.Command{Op: meta.OpChannelRemove, Channel: name})
	return err
}

// inCluster reports whether the node is a member of an initialized
// cluster at its advertised address.
func (n *Node) inCluster() bool {
	st := n.cluster.meta.State()
	me, ok := st.Node(n.cfg.NodeID)
	return st.Initialized() && ok && me.Addr == n.cluster.addr
}

// clusterLoop gets the node into a cluster (joinRound), then keeps it
// there: the leader's duties, the channels that predate the cluster, a
// new address after a move. It returns a permanent refusal (another
// cluster's data, a copied node id, another vBucket count) on fatal.
func (n *Node) clusterLoop(ctx context.Context, fatal chan<- error) {
	c := n.cluster
	delay := 200 * time.Millisecond
	for {
		wait := 500 * time.Millisecond
		switch {
		case n.inCluster():
			n.setPhase("member", "")
			delay = 200 * time.Millisecond
			if n.leaving() {
				n.checkRemoved(ctx)
			}
			if c.meta.IsLeader() {
				n.leaderDuties(ctx)
				wait = 250 * time.Millisecond
			}
			n.syncChannels(ctx)
		case c.meta.IsLeader():
			// It leads a group it bootstrapped (in this run or an earlier
			// one) before the cluster exists, or one whose metadata has it at
			// another address: the leader's duties create it or update it.
			n.leaderDuties(ctx)
			wait = 100 * time.Millisecond
		case !n.isBootstrapping():
			if err := n.joinRound(ctx); err != nil {
				fatal <- err
				return
			}
			wait, delay = jitter(delay), min(2*delay, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.changed:
		case <-time.After(wait):
		}
	}
}

// leaseCheck is how often the node checks its lease.
const leaseCheck = 100 * time.Millisecond

// failoverTimeout is the cluster's: how long a lease lasts.
func (n *Node) failoverTimeout() time.Duration {
	d := time.Duration(n.cluster.known().Settings.FailoverTimeoutMillis) * time.Millisecond
	if d <= 0 {
		d = time.Duration(meta.DefaultSettings().FailoverTimeoutMillis) * time.Millisecond
	}
	return d
}

// leaseLoop keeps the node's lease: a member of a cluster of more than one
// voter serves its active vBuckets only until its lease runs out, and
// renews it (every quarter of the failover timeout) only with proof that
// it has applied everything the leader had committed (renewLease). A node
// cut off in a minority therefore stops serving within the failover
// timeout, and the leader waits out a node's last lease before failing it
// over (awaitLease), so two actives never take writes for one vBucket. A
// node that restarts is fenced until its first renewal.
func (n *Node) leaseLoop(ctx context.Context) {
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	var until, next time.Time
	var lastErr string
	var handingBack bool // the restart's comparison started (holdBack)
	for {
		now := time.Now()
		switch servers, err := n.cluster.meta.Servers(); {
		case err == nil && len(servers) == 1 && servers[0].ID == n.cfg.NodeID:
			until = time.Time{} // the only voter: no partition puts it in a minority
			n.srv.SetLease(until)
			n.fence(n.holdBack(ctx, &handingBack), holdBackWhy)
		default:
			if !now.Before(next) {
				got, err := n.renewLease(ctx, now)
				if isStatus(err, wire.StatusNotFound) && n.leaving() {
					n.cluster.leftOne.Do(func() { close(n.cluster.left) })
				}
				if err == nil {
					until, next, lastErr = got, now.Add(got.Sub(now)/4), ""
				} else {
					next = now.Add(leaseCheck)
					if err.Error() != lastErr {
						lastErr = err.Error()
						n.log.Debug("lease not renewed", "err", err)
					}
				}
			}
			n.srv.SetLease(until)
			why := "the lease from the metadata group's leader ran out: " + lastErr
			if until.IsZero() {
				why = "no lease from the metadata group's leader since the start: " + lastErr
			}
			valid := time.Now().Before(until)
			hold := valid && n.holdBack(ctx, &handingBack)
			if hold {
				why = holdBackWhy
			}
			n.fence(!valid || hold, why)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renewLease renews the node's lease from the leader: the leader confirms
// its leadership with a majority and answers its commit index and the
// lease's length (the cluster's failover timeout, decided by the grantor);
// once this node has applied that index it may serve until the time it
// asked plus that length. The leader renews its own by confirming its
// leadership. Before the cluster exists there is nothing to serve and no
// lease.
func (n *Node) renewLease(ctx context.Context, asked time.Time) (time.Time, error) {
	c := n.cluster
	if !c.known().Initialized() {
		return time.Time{}, fmt.Errorf("the cluster does not exist yet")
	}
	if c.meta.IsLeader() {
		if err := c.meta.VerifyLeader(); err != nil {
			return time.Time{}, err
		}
		n.stepDownIfUnasked(asked)
		return asked.Add(n.failoverTimeout()), nil
	}
	_, leader := c.meta.Leader()
	if leader == "" {
		return time.Time{}, fmt.Errorf("no leader known")
	}
	cctx, cancel := context.WithTimeout(ctx, min(n.failoverTimeout()/2, 2*time.Second))
	defer cancel()
	b, err := c.peers.call(cctx, leader, wire.OpLeaseRenew, wire.AppendStr8(nil, n.cfg.NodeID))
	if err != nil {
		return time.Time{}, fmt.Errorf("the leader at %s: %w", leader, err)
	}
	d := wire.NewDecoder(b)
	idx, millis := d.U64(), d.U64()
	if d.Finish() != nil || millis == 0 {
		return time.Time{}, fmt.Errorf("malformed LeaseRenew answer from %s", leader)
	}
	if err := c.meta.WaitApplied(cctx, idx); err != nil {
		return time.Time{}, err
	}
	return asked.Add(time.Duration(millis) * time.Millisecond), nil
}

// stepDownIfUnasked hands the leadership over when the followers hear
// this leader (raft confirms it) but a majority of the voters have not
// been able to ask it for a lease for a whole lease: a one-way partition
// in front of the leader, which would otherwise leave every other member
// fenced for good (their renewals, and their reports, cannot reach it).
// A new leader is elected among those who can reach each other; this one,
// unreachable, is then fenced and failed over like any such member.
func (n *Node) stepDownIfUnasked(now time.Time) {
	c := n.cluster
	servers, err := c.meta.Servers()
	if err != nil {
		return
	}
	var voters []string
	for _, s := range servers {
		if s.Voter {
			voters = append(voters, s.ID)
		}
	}
	timeout := n.failoverTimeout()
	c.mu.Lock()
	unasked := leaderUnasked(now, c.meta.LeaderSince(), c.steppedDown, timeout, n.cfg.NodeID, voters, c.grants)
	if unasked {
		c.steppedDown = now
	}
	c.mu.Unlock()
	if !unasked {
		return
	}
	n.log.Warn("this node leads the metadata group but a majority of the voters have not reached it for a lease: handing the leadership over (a one-way partition in front of this node?)",
		"voters", len(voters), "lease", timeout)
	go func() { // not on the lease loop: a transfer takes up to an election
		if err := c.meta.TransferLeadership(); err != nil {
			n.log.Warn("the leadership could not be handed over", "err", err)
		}
	}()
}

// leaderUnasked is stepDownIfUnasked's decision: the leader has led for
// three leases (time for every member to renew once), tried no hand-over
// within the last three, and fewer than a majority of the voters, itself
// counted, hold a lease it granted (grants: until when each lease lasts).
func leaderUnasked(now, since, lastTry time.Time, lease time.Duration, self string, voters []string, grants map[string]time.Time) bool {
	if len(voters) < 2 || since.IsZero() || now.Sub(since) < 3*lease || now.Sub(lastTry) < 3*lease {
		return false
	}
	held := 0
	for _, v := range voters {
		if v == self || grants[v].After(now) {
			held++
		}
	}
	return held < len(voters)/2+1
}

// leaving reports whether this node's metadata has it leaving (shoal
// nodes remove, shoal remove): once the leader says it is no member any
// more, it has been removed and exits.
func (n *Node) leaving() bool {
	me, ok := n.cluster.known().Node(n.cfg.NodeID)
	return ok && me.State == meta.Leaving
}

// checkRemoved asks the other members, as a node that is leaving,
// whether the cluster still lists it: one that answers for the same
// cluster without it means it was removed (the leader took it out of
// the raft group first, so its own metadata never hears of it).
func (n *Node) checkRemoved(ctx context.Context) {
	st := n.cluster.known()
	for _, m := range st.Nodes {
		if m.ID == n.cfg.NodeID {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		b, err := n.cluster.peers.call(cctx, m.Addr, wire.OpCluster, nil)
		cancel()
		if err != nil {
			continue
		}
		var doc struct {
			ClusterID string       `json:"cluster_id"`
			Nodes     []memberName `json:"nodes"`
		}
		if json.Unmarshal(b, &doc) != nil || doc.ClusterID != st.ClusterID || len(doc.Nodes) == 0 {
			continue
		}
		if !slices.Contains(doc.Nodes, memberName{n.cfg.NodeID}) {
			n.log.Info("a member no longer lists this node: it was removed", "member", m.ID)
			n.cluster.leftOne.Do(func() { close(n.cluster.left) })
		}
		return
	}
}

// memberName is a member's id in a cluster document.
type memberName struct {
	ID string `json:"id"`
}

// grantLease is the leader's side of renewLease: it confirms its
// leadership, records until when the lease may last (awaitLease waits it
// out) and returns its commit index and the lease's length.
func (n *Node) grantLease(node string) (idx uint64, length time.Duration, err error) {
	c := n.cluster
	if !c.meta.IsLeader() {
		return 0, 0, fmt.Errorf("%w: this node is not the leader", meta.ErrNoQuorum)
	}
	if !c.meta.State().Initialized() {
		return 0, 0, fmt.Errorf("%w: the cluster does not exist yet", meta.ErrNotInitialized)
	}
	length = n.failoverTimeout()
	now := time.Now()
	if err := c.meta.VerifyLeader(); err != nil {
		return 0, 0, err
	}
	if _, ok := c.meta.State().Node(node); !ok {
		return 0, 0, fmt.Errorf("%w: %q is not a member", meta.ErrUnknownNode, node)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoking[node] {
		return 0, 0, fmt.Errorf("%w: %s is being failed over", meta.ErrBadCommand, node)
	}
	if end := now.Add(length); end.After(c.grants[node]) {
		c.grants[node] = end
	}
	return c.meta.CommitIndex(), length, nil
}

// awaitLease waits, on the leader, until node's last lease has run out:
// the last one this leader granted, or, for all a previous leader may have
// granted, the failover timeout after this node became the leader. From
// the start of the wait the node gets no new lease (a node cut off from
// the leader's traffic but still able to ask would otherwise keep pushing
// its lease's end forward); release ends that.
func (n *Node) awaitLease(ctx context.Context, node string) (release func(), err error) {
	c := n.cluster
	c.mu.Lock()
	c.revoking[node] = true
	end := c.grants[node]
	c.mu.Unlock()
	release = func() {
		c.mu.Lock()
		delete(c.revoking, node)
		c.mu.Unlock()
	}
	if since := c.meta.LeaderSince().Add(n.failoverTimeout()); since.After(end) {
		end = since
	}
	wait := time.Until(end)
	if wait <= 0 {
		return release, nil
	}
	n.log.Info("waiting for the lease of the node being failed over to run out", "node", node, "wait", wait.Round(time.Millisecond))
	select {
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("%w: %s may hold a lease until %s", meta.ErrNoQuorum, node, end.Format(time.RFC3339Nano))
	case <-time.After(wait):
		return release, nil
	}
}

// jitter returns d ± 20%.
func jitter(d time.Duration) time.Duration {
	var b [1]byte
	rand.Read(b[:])
	return d + d*time.Duration(int(b[0])-128)/640
}

// isBootstrapping reports whether this node bootstrapped the group and
// waits for it to create the cluster.
func (n *Node) isBootstrapping() bool {
	c := n.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bootstrap != nil && !c.meta.State().Initialized()
}

func (n *Node) setPhase(phase, waiting string) {
	c := n.cluster
	c.mu.Lock()
	c.join.Phase, c.join.Waiting = phase, waiting
	c.mu.Unlock()
}
