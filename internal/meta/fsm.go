package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// Apply returns the state after command c committed at raft index idx,
// and the command's result: nil, or an error (ErrWrongKind,
// ErrStaleMap, …) that every node computes alike. A command that fails
// leaves the state as it was (except Index). It never panics on a bad
// command: log entries are checked like any input.
func (s *State) Apply(idx uint64, c *Command) (*State, error) {
	next := s.clone()
	next.Index = idx
	err := next.apply(idx, c)
	if err != nil {
		failed := *s
		failed.Index = idx
		return &failed, err
	}
	return next, nil
}

// apply changes s (a clone) in place.
func (s *State) apply(idx uint64, c *Command) error {
	if c.Op != OpInit && !s.Initialized() {
		return ErrNotInitialized
	}
	switch c.Op {
	case OpInit:
		return s.init(idx, c)
	case OpNodeAdd:
		if c.Node == nil {
			return badCommand("node-add without a node")
		}
		if err := checkNode(c.Node); err != nil {
			return err
		}
		n := *c.Node
		i, found := slices.BinarySearchFunc(s.Nodes, n.ID, func(m Node, id string) int { return cmpString(m.ID, id) })
		if found {
			cur := &s.Nodes[i]
			cur.Addr, cur.HTTP, cur.Zone = n.Addr, n.HTTP, n.Zone
			return nil
		}
		if !n.State.valid() {
			n.State = Joining
		}
		n.Since, n.Order, n.Voter = c.Time, idx, false
		s.Nodes = slices.Insert(s.Nodes, i, n)
		return nil
	case OpNodeState, OpNodeVoter, OpNodeRemove:
		i, found := slices.BinarySearchFunc(s.Nodes, c.NodeID, func(m Node, id string) int { return cmpString(m.ID, id) })
		if !found {
			return fmt.Errorf("%w: %q", ErrUnknownNode, c.NodeID)
		}
		switch c.Op {
		case OpNodeState:
			if !c.State.valid() {
				return badCommand("node state %q", c.State)
			}
			if cn := s.Map.Counts()[c.NodeID]; c.State == Leaving && cn.Active+cn.Replica > 0 {
				return fmt.Errorf("%w: %s is active for %d and replica for %d vbuckets; a rebalance must move them first", ErrHoldsVBuckets, c.NodeID, cn.Active, cn.Replica)
			}
			if s.Nodes[i].State != c.State {
				s.Nodes[i].State, s.Nodes[i].Since = c.State, c.Time
			}
		case OpNodeVoter:
			s.Nodes[i].Voter = c.Voter
		case OpNodeRemove:
			if n := s.Map.Counts()[c.NodeID]; n.Active+n.Replica > 0 {
				return fmt.Errorf("%w: %s is active for %d and replica for %d", ErrHoldsVBuckets, c.NodeID, n.Active, n.Replica)
			}
			s.Nodes = slices.Delete(s.Nodes, i, i+1)
		}
		return nil
	case OpMap:
		if c.ExpectRevision != s.Map.Revision {
			return fmt.Errorf("%w: revision %d, expected %d", ErrStaleMap, s.Map.Revision, c.ExpectRevision)
		}
		m, err := s.newMap(idx, c.Chains)
		if err != nil {
			return err
		}
		s.Map = m
		return nil
	case OpFailover, OpRecover:
		return s.failover(idx, c)
	case OpMoves:
		return s.moves(idx, c)
	case OpChannelCreate:
		if !engine.ValidChannelString(c.Channel) || c.Kind.String() == "unknown" {
			return badCommand("channel %q of kind %d", c.Channel, c.Kind)
		}
		if k, ok := s.Channels[c.Channel]; ok {
			if k != c.Kind {
				return fmt.Errorf("%w: %q is a %s channel", ErrWrongKind, c.Channel, k)
			}
			return nil
		}
		s.Channels[c.Channel] = c.Kind
		return nil
	case OpChannelRemove:
		delete(s.Channels, c.Channel)
		return nil
	case OpSettings:
		if c.Settings == nil {
			return badCommand("settings without settings")
		}
		s.Settings = *c.Settings
		return nil
	case OpFailoverReset:
		s.Failovers = 0
		return nil
	}
	return badCommand("unknown op %q", c.Op)
}

// failover applies OpFailover and OpRecover: their premise (the map's
// revision, the node's state, the members the chains name) is checked
// here, where every node sees the same state, not only where the plan was
// made.
func (s *State) failover(idx uint64, c *Command) error {
	i, found := slices.BinarySearchFunc(s.Nodes, c.NodeID, func(m Node, id string) int { return cmpString(m.ID, id) })
	if !found {
		return fmt.Errorf("%w: %q", ErrUnknownNode, c.NodeID)
	}
	if c.ExpectRevision != s.Map.Revision {
		return fmt.Errorf("%w: revision %d, the plan was made at %d", ErrStaleMap, s.Map.Revision, c.ExpectRevision)
	}
	n := &s.Nodes[i]
	switch {
	case c.Op == OpFailover && n.State == Failed:
		return fmt.Errorf("%w: %s is failed over already", ErrBadCommand, n.ID)
	case c.Op == OpRecover && n.State != Failed:
		return fmt.Errorf("%w: %s is %s, not failed", ErrBadCommand, n.ID, n.State)
	}
	for vb, chain := range c.Chains {
		for _, id := range chain {
			if c.Op == OpFailover && id == n.ID {
				return fmt.Errorf("%w: the chain of vbucket %d still names %s", ErrBadCommand, vb, n.ID)
			}
			if m, ok := s.Node(id); ok && id != n.ID && m.State != Active {
				return fmt.Errorf("%w: vbucket %d would go to %s, which is %s", ErrStaleMap, vb, id, m.State)
			}
		}
	}
	m, err := s.newMap(idx, c.Chains)
	if err != nil {
		return err
	}
	s.Map = m
	n.State, n.Since = Failed, c.Time
	if c.Op == OpRecover {
		n.State = Active
	}
	if c.Op == OpFailover && c.Auto {
		s.Failovers++
	}
	return nil
}

// moves applies OpMoves: the edits must name only active members, the
// map must still be the one they were made from.
func (s *State) moves(idx uint64, c *Command) error {
	if c.ExpectRevision != s.Map.Revision {
		return fmt.Errorf("%w: revision %d, the moves were made at %d", ErrStaleMap, s.Map.Revision, c.ExpectRevision)
	}
	if len(c.Edits) == 0 || len(c.Edits) > s.VBuckets {
		return badCommand("moves with %d edits for %d vbuckets", len(c.Edits), s.VBuckets)
	}
	for _, e := range c.Edits {
		for _, id := range slices.Concat(e.Chain, e.Pending) {
			if m, ok := s.Node(id); ok && m.State != Active {
				return fmt.Errorf("%w: vbucket %d would go to %s, which is %s", ErrStaleMap, e.VBucket, id, m.State)
			}
		}
	}
	m, err := s.Map.Edit(idx, c.Edits)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if err := m.Validate(func(id string) bool { _, ok := s.Node(id); return ok }); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	s.Map = m
	return nil
}

func (s *State) init(idx uint64, c *Command) error {
	if s.Initialized() {
		return ErrInitialized
	}
	in := c.Init
	if in == nil || in.ClusterID == "" || len(in.Nodes) == 0 {
		return badCommand("init without a cluster id or nodes")
	}
	if in.VBuckets < 1 || in.VBuckets > 65535 || in.Replicas < 0 || in.Replicas > vbmap.MaxReplicas || in.Voters < 1 {
		return badCommand("init with %d vbuckets, %d replicas, %d voters", in.VBuckets, in.Replicas, in.Voters)
	}
	s.ClusterID, s.VBuckets, s.Replicas, s.Voters, s.Settings = in.ClusterID, in.VBuckets, in.Replicas, in.Voters, in.Settings
	s.Nodes = nil
	for _, n := range in.Nodes {
		if err := checkNode(&n); err != nil {
			return err
		}
		n.Since, n.Order, n.State = c.Time, idx, Active
		s.Nodes = append(s.Nodes, n)
	}
	slices.SortFunc(s.Nodes, func(a, b Node) int { return cmpString(a.ID, b.ID) })
	for i := 1; i < len(s.Nodes); i++ {
		if s.Nodes[i].ID == s.Nodes[i-1].ID {
			return badCommand("init names node %s twice", s.Nodes[i].ID)
		}
	}
	m, err := s.newMap(idx, in.Chains)
	if err != nil {
		return err
	}
	s.Map = m
	return nil
}

// newMap builds the map that follows s.Map at idx and checks it against
// the members.
func (s *State) newMap(idx uint64, chains [][]string) (*vbmap.Map, error) {
	if len(chains) != s.VBuckets {
		return nil, badCommand("a map of %d vbuckets for a cluster of %d", len(chains), s.VBuckets)
	}
	m := s.Map.Next(idx, s.Replicas, chains)
	if err := m.Validate(func(id string) bool { _, ok := s.Node(id); return ok }); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return m, nil
}

// fsm is raft's state machine: the current State, swapped atomically,
// and a callback run after every change.
type fsm struct {
	state    atomic.Pointer[State]
	mu       sync.Mutex // serialises onChange calls
	onChange func(prev, next *State)
}

func newFSM(onChange func(prev, next *State)) *fsm {
	f := &fsm{onChange: onChange}
	f.state.Store(&State{Channels: map[string]engine.Kind{}})
	return f
}

// Apply implements raft.FSM. Its result is the command's error (nil on
// success).
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	prev := f.state.Load()
	c, err := DecodeCommand(l.Data)
	if err != nil {
		next := *prev
		next.Index = l.Index
		f.set(prev, &next)
		return err
	}
	next, err := prev.Apply(l.Index, c)
	f.set(prev, next)
	return err
}

// set runs the change callback, then publishes next: whoever waits for an
// index (WaitApplied) sees it once the node has followed the change.
func (f *fsm) set(prev, next *State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.onChange != nil {
		f.onChange(prev, next)
	}
	f.state.Store(next)
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) { return snapshot{f.state.Load()}, nil }

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSnapshotSize+1))
	if err != nil {
		return fmt.Errorf("meta: read snapshot: %w", err)
	}
	st, err := DecodeState(b)
	if err != nil {
		return err
	}
	f.set(f.state.Load(), st)
	return nil
}

// maxSnapshotSize bounds a snapshot read back.
const maxSnapshotSize = 256 << 20

type snapshot struct{ s *State }

// Persist implements raft.FSMSnapshot.
func (s snapshot) Persist(sink raft.SnapshotSink) error {
	b, err := EncodeState(s.s)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("meta: write snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (snapshot) Release() {}

// stateDoc is the encoding of a State: JSON, with the map in vbmap's
// binary layout.
type stateDoc struct {
	Version int `json:"version"`
	*State
	MapBytes []byte `json:"map,omitempty"`
}

// EncodeState encodes s for a snapshot or the node's applied-state file.
func EncodeState(s *State) ([]byte, error) {
	d := stateDoc{Version: 1, State: s}
	if s.Map != nil {
		d.MapBytes = vbmap.AppendMap(nil, s.Map)
	}
	return json.Marshal(d)
}

// DecodeState is the inverse of EncodeState; the result is checked. Its
// errors wrap ErrCorrupt.
func DecodeState(b []byte) (*State, error) {
	s, err := decodeState(b)
	if err != nil {
		return nil, corruptError{err}
	}
	return s, nil
}

// ErrCorrupt is wrapped by the errors about metadata files that do not
// decode: the applied-state file, a snapshot, the raft log.
var ErrCorrupt = errors.New("meta: corrupt data")

// corruptError is err, also wrapping ErrCorrupt, its text unchanged.
type corruptError struct{ err error }

func (e corruptError) Error() string   { return e.err.Error() }
func (e corruptError) Unwrap() []error { return []error{e.err, ErrCorrupt} }

func decodeState(b []byte) (*State, error) {
	if len(b) > maxSnapshotSize {
		return nil, fmt.Errorf("meta: state of %d bytes", len(b))
	}
	d := stateDoc{State: &State{}}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("meta: decode state: %w", err)
	}
	if d.Version != 1 {
		return nil, fmt.Errorf("meta: state format version %d (this node reads 1)", d.Version)
	}
	s := d.State
	if s.Channels == nil {
		s.Channels = map[string]engine.Kind{}
	}
	if len(d.MapBytes) > 0 {
		m, n, err := vbmap.DecodeMap(d.MapBytes)
		if err != nil {
			return nil, fmt.Errorf("meta: decode state: %w", err)
		}
		if n != len(d.MapBytes) {
			return nil, fmt.Errorf("meta: decode state: %d bytes after the map", len(d.MapBytes)-n)
		}
		s.Map = m
	}
	if s.Initialized() && (s.Map == nil || s.Map.Len() != s.VBuckets) {
		return nil, fmt.Errorf("meta: decode state: an initialized cluster without a map of %d vbuckets", s.VBuckets)
	}
	if !slices.IsSortedFunc(s.Nodes, func(a, b Node) int { return cmpString(a.ID, b.ID) }) {
		return nil, fmt.Errorf("meta: decode state: nodes not sorted")
	}
	return s, nil
}
