package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"shoal/internal/raftstore"
)

// Config configures Open.
type Config struct {
	// Dir is the metadata directory (DATA/meta): raft.db and snapshots/.
	Dir string
	// NodeID is the node's id, its raft server id.
	NodeID string
	// Advertise is the node's data address, its raft address.
	Advertise string
	// Dial connects to a peer's data port for raft (see StreamLayer).
	Dial DialFunc
	// Logger receives the group's logs; raft's own below RaftLogLevel are
	// dropped (default Warn: raft logs every election at Info).
	Logger       *slog.Logger
	RaftLogLevel slog.Level
	// Raft timeouts (LAN defaults 500 ms, 500 ms, 250 ms; lease ≤
	// heartbeat ≤ election).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many log entries make a snapshot (default
	// 1024: metadata commands are rare and small).
	SnapshotThreshold uint64
	// OnChange is called, on raft's FSM goroutine, for every command
	// applied and after a snapshot is restored, with the states before and
	// after, before State returns the new one (so WaitApplied returns once
	// the node followed the change). It must not propose (it would wait for
	// itself).
	OnChange func(prev, next *State)
}

// Defaults of the raft timeouts and of a new cluster's failover timeout.
// The failover timeout is also the length of a member's lease, which only
// the metadata leader grants: an election must end well within it (a
// dead leader is noticed after 200–400 ms, the vote takes one round on a
// LAN) or every member stops serving for a moment after each leader loss.
const (
	DefaultHeartbeatTimeout   = 200 * time.Millisecond
	DefaultElectionTimeout    = 200 * time.Millisecond
	DefaultLeaderLeaseTimeout = 100 * time.Millisecond
	DefaultFailoverTimeout    = time.Second
)

// Meta is a node's member of the metadata group.
type Meta struct {
	cfg     Config
	raft    *raft.Raft
	fsm     *fsm
	store   *raftstore.Store
	snaps   raft.SnapshotStore
	layer   *StreamLayer
	trans   *raft.NetworkTransport
	obs     *raft.Observer
	obsCh   chan raft.Observation
	done    chan struct{}
	changes atomic.Uint64 // leader changes seen
	since   atomic.Int64  // unix nanoseconds when this node last became the leader
}

// Open opens the group's files in cfg.Dir and starts raft. A node without
// raft state waits for Bootstrap or for a leader to add it.
func Open(cfg Config) (*Meta, error) {
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = DefaultElectionTimeout
	}
	if cfg.LeaderLeaseTimeout == 0 {
		cfg.LeaderLeaseTimeout = DefaultLeaderLeaseTimeout
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RaftLogLevel == 0 {
		cfg.RaftLogLevel = slog.LevelWarn
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the metadata directory: %w", err)
	}
	hlog := NewHCLogger(cfg.Logger, "raft", cfg.RaftLogLevel)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout
	rc.CommitTimeout = min(50*time.Millisecond, cfg.HeartbeatTimeout/10)
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = 1024
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft settings: %w", err)
	}
	m := &Meta{cfg: cfg, fsm: newFSM(cfg.OnChange), done: make(chan struct{})}
	var err error
	if m.store, err = raftstore.Open(filepath.Join(cfg.Dir, "raft.db"), raftstore.Options{}); err != nil {
		return nil, err
	}
	if m.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 3, hlog.Named("snapshot")); err != nil {
		m.store.Close()
		return nil, fmt.Errorf("cannot open the metadata snapshots: %w", err)
	}
	if err := m.verifyStart(); err != nil {
		m.store.Close()
		return nil, err
	}
	m.layer = NewStreamLayer(cfg.Advertise, cfg.Dial)
	m.trans = NewTransport(m.layer, hlog.Named("transport"))
	if m.raft, err = newRaft(rc, m); err != nil {
		m.trans.Close()
		m.store.Close()
		return nil, fmt.Errorf("cannot start raft: %w", err)
	}
	m.obsCh = make(chan raft.Observation, 16)
	m.obs = raft.NewObserver(m.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	m.raft.RegisterObserver(m.obs)
	go m.observe()
	return m, nil
}

// verifyStart refuses, naming the files, what raft's start would fail on
// or panic over: no snapshot that restores, or a log that does not
// continue the snapshot restored. A damaged snapshot that raft skips (an
// older one restores) is only logged.
func (m *Meta) verifyStart() error {
	first, err := m.store.FirstIndex()
	if err != nil {
		return err
	}
	last, err := m.store.LastIndex()
	if err != nil {
		return err
	}
	plan, err := planSnapshots(m.cfg.Dir, first, last)
	if err != nil {
		return err
	}
	var damaged []string
	for _, s := range plan.snaps {
		if s.err == nil {
			continue
		}
		path := filepath.Join(m.cfg.Dir, SnapshotsDir, s.name)
		damaged = append(damaged, fmt.Sprintf("%s: %v", path, s.err))
		if plan.refuses == "" && plan.startable() {
			m.cfg.Logger.Warn("a metadata snapshot is damaged: raft skips it and restores an older one, then replays its log; shoal check --repair moves it aside",
				"snapshot", path, "restores", restoredName(plan.restored), "err", s.err)
		}
	}
	if why := strings.Join(slices.DeleteFunc([]string{plan.refuses, plan.gap}, func(s string) bool { return s == "" }), "; "); why != "" {
		if len(damaged) > 0 {
			why += "; " + strings.Join(damaged, "; ")
		}
		return fmt.Errorf("%s: %s: %w", filepath.Join(m.cfg.Dir, SnapshotsDir), why, ErrCorrupt)
	}
	return nil
}

// newRaft is raft.NewRaft, which panics on a log entry it cannot read
// (before it starts any goroutine): that is an error wrapping ErrCorrupt.
func newRaft(rc *raft.Config, m *Meta) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("raft cannot read its log in %s: %v: %w", filepath.Join(m.cfg.Dir, RaftFile), p, ErrCorrupt)
		}
	}()
	return raft.NewRaft(rc, m.fsm, m.store, m.store, m.snaps, m.trans)
}

// observe counts leader changes.
func (m *Meta) observe() {
	for {
		select {
		case <-m.done:
			return
		case o := <-m.obsCh:
			m.changes.Add(1)
			if lo, ok := o.Data.(raft.LeaderObservation); ok && string(lo.LeaderID) == m.cfg.NodeID {
				m.since.Store(time.Now().UnixNano())
			}
		}
	}
}

// Layer is the stream layer the data port delivers RaftOpen connections to.
func (m *Meta) Layer() *StreamLayer { return m.layer }

// HasState reports whether this node has raft state (it was bootstrapped
// or joined before).
func (m *Meta) HasState() bool {
	ok, err := raft.HasExistingState(m.store, m.store, m.snaps)
	return ok || err != nil // unreadable state is not a reason to bootstrap over it
}

// Server is a member of the raft configuration.
type Server struct {
	ID    string
	Addr  string
	Voter bool
}

// Bootstrap starts a new group of servers (this node among them).
func (m *Meta) Bootstrap(servers []Server) error {
	var cfg raft.Configuration
	for _, s := range servers {
		suf := raft.Voter
		if !s.Voter {
			suf = raft.Nonvoter
		}
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: suf, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr)})
	}
	if err := m.raft.BootstrapCluster(cfg).Error(); err != nil {
		return fmt.Errorf("cannot bootstrap the metadata group: %w", err)
	}
	return nil
}

// Errors of Propose and the membership changes.
var (
	// ErrNotLeader: this node is not the leader; NotLeaderError names the
	// leader when one is known.
	ErrNotLeader = errors.New("meta: not the leader")
	// ErrNoQuorum: no leader is known, or the leader could not commit in
	// time: a majority of the voters is unreachable.
	ErrNoQuorum = errors.New("the cluster metadata cannot change now: no leader, or a majority of the voters is unreachable")
)

// NotLeaderError is returned by Propose on a follower.
type NotLeaderError struct {
	LeaderID, LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("meta: not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Propose commits c and returns its raft index, once this node's FSM has
// applied it, and the command's own error. It fails with a
// *NotLeaderError on a follower (forward to the leader) and ErrNoQuorum
// when no leader is known or the commit did not happen within ctx.
func (m *Meta) Propose(ctx context.Context, c *Command) (uint64, error) {
	if c.Time == 0 {
		c.Time = time.Now().UnixMilli()
	}
	b, err := c.Encode()
	if err != nil {
		return 0, err
	}
	if m.raft.State() != raft.Leader {
		return 0, m.notLeader()
	}
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return 0, fmt.Errorf("%w: %w", ErrNoQuorum, ctx.Err())
		}
	}
	f := m.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return 0, m.notLeader()
		case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
			return 0, fmt.Errorf("%w: %w", ErrNoQuorum, err)
		}
		return 0, fmt.Errorf("meta: propose %s: %w", c.Op, err)
	}
	if rerr, ok := f.Response().(error); ok && rerr != nil {
		return f.Index(), rerr
	}
	return f.Index(), nil
}

// Nudge makes the leader tell its followers the commit index now rather
// than at its next commit timeout (50–100 ms): a barrier entry is
// replicated at once and carries it. A follower waiting for a command it
// forwarded sees it applied a few milliseconds after the commit.
func (m *Meta) Nudge() { m.raft.Barrier(time.Second) }

// notLeader is the error of a request that needs the leader.
func (m *Meta) notLeader() error {
	addr, id := m.raft.LeaderWithID()
	if id == "" {
		return ErrNoQuorum
	}
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// State is the metadata as this node has applied it.
func (m *Meta) State() *State { return m.fsm.state.Load() }

// WaitApplied waits until this node has applied the raft log up to index,
// the node's reaction to every command included (OnChange): State.Index
// counts only commands, so once raft has handed every entry up to index to
// the state machine, the entries between State.Index and index must all
// be of other kinds (configuration changes, barriers, a new leader's
// no-op) for the wait to be over.
func (m *Meta) WaitApplied(ctx context.Context, index uint64) error {
	for !m.applied(index) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("meta: index %d not applied here (at %d): %w", index, m.State().Index, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// applied reports whether every command up to index has been applied.
func (m *Meta) applied(index uint64) bool {
	done := m.State().Index
	if done >= index {
		return true
	}
	if m.raft.AppliedIndex() < index {
		return false
	}
	var l raft.Log
	for i := done + 1; i <= index; i++ {
		if err := m.store.GetLog(i, &l); err != nil {
			continue // compacted: a snapshot the state machine restored covers it
		}
		if l.Type == raft.LogCommand {
			return false
		}
	}
	return true
}

// IsLeader reports whether this node leads the group.
func (m *Meta) IsLeader() bool { return m.raft.State() == raft.Leader }

// RaftState is "leader", "follower", "candidate" or "shutdown".
func (m *Meta) RaftState() string {
	switch m.raft.State() {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Leader returns the leader's id and address, "" when none is known.
func (m *Meta) Leader() (id, addr string) {
	a, i := m.raft.LeaderWithID()
	return string(i), string(a)
}

// LeaderSince is when this node last became the leader (zero if never).
func (m *Meta) LeaderSince() time.Time {
	if ns := m.since.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// VerifyLeader confirms, with a round of heartbeats to a majority, that
// this node is still the leader.
func (m *Meta) VerifyLeader() error {
	if err := m.raft.VerifyLeader().Error(); err != nil {
		return m.membershipErr("verify the leadership", err)
	}
	return nil
}

// TransferLeadership hands the leadership to the most up-to-date
// follower and returns once it did or could not. Leader only.
func (m *Meta) TransferLeadership() error {
	if err := m.raft.LeadershipTransfer().Error(); err != nil {
		return m.membershipErr("transfer the leadership", err)
	}
	return nil
}

// CommitIndex is the highest raft index this node knows committed.
func (m *Meta) CommitIndex() uint64 { return m.raft.CommitIndex() }

// LeaderChanges counts the leader changes this node saw.
func (m *Meta) LeaderChanges() uint64 { return m.changes.Load() }

// LastContact is when this node last heard from the leader (zero on the
// leader itself).
func (m *Meta) LastContact() time.Time { return m.raft.LastContact() }

// Servers returns the raft configuration.
func (m *Meta) Servers() ([]Server, error) {
	f := m.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("meta: raft configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddServer adds (or, with a new address, updates) a server as a voter or
// a non-voter; a voter is promoted once it has caught up. Leader only.
func (m *Meta) AddServer(id, addr string, voter bool, timeout time.Duration) error {
	var f raft.IndexFuture
	if voter {
		f = m.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	} else {
		f = m.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	}
	return m.membershipErr("add "+id, f.Error())
}

// DemoteServer makes a voter a non-voter. Leader only.
func (m *Meta) DemoteServer(id string, timeout time.Duration) error {
	return m.membershipErr("demote "+id, m.raft.DemoteVoter(raft.ServerID(id), 0, timeout).Error())
}

// RemoveServer removes a server from the group. Leader only.
func (m *Meta) RemoveServer(id string, timeout time.Duration) error {
	return m.membershipErr("remove "+id, m.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error())
}

func (m *Meta) membershipErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return m.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %s: %w", ErrNoQuorum, what, err)
	}
	return fmt.Errorf("meta: %s: %w", what, err)
}

// Stats are raft's figures (term, indexes, state, …).
func (m *Meta) Stats() map[string]string { return m.raft.Stats() }

// Close stops raft and closes the files.
func (m *Meta) Close() error {
	close(m.done)
	m.raft.DeregisterObserver(m.obs)
	err := m.raft.Shutdown().Error()
	m.trans.Close()
	if cerr := m.store.Close(); err == nil {
		err = cerr
	}
	return err
}
