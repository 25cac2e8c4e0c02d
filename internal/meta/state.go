package meta

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// NodeState is what a member of the cluster is doing.
type NodeState string

// Node states.
const (
	// Joining: added by the leader, not yet a member of the raft group.
	Joining NodeState = "joining"
	// Active: a member that may hold vBuckets.
	Active NodeState = "active"
	// Failed: failed over (its vBuckets moved to other nodes).
	Failed NodeState = "failed"
	// Leaving: being removed; it holds no vBuckets any more.
	Leaving NodeState = "leaving"
)

func (s NodeState) valid() bool { return s == Joining || s == Active || s == Failed || s == Leaving }

// checkNode refuses a node whose fields do not fit the metadata's
// encodings (ids, addresses and zones are str8 in GetClusterMap).
func checkNode(n *Node) error {
	if !vbmap.ValidNodeID(n.ID) {
		return badCommand("node id %q: want 1..%d of A-Z a-z 0-9 . _ -", n.ID, vbmap.MaxNodeIDLen)
	}
	if n.Addr == "" || len(n.Addr) > 255 || len(n.HTTP) > 255 || len(n.Zone) > 255 {
		return badCommand("node %s: an address, HTTP address or zone that is empty or over 255 bytes", n.ID)
	}
	return nil
}

// Node is one member of the cluster as the metadata records it.
type Node struct {
	ID    string    `json:"id"`
	Addr  string    `json:"addr"` // data address; raft runs on it too
	HTTP  string    `json:"http,omitempty"`
	Zone  string    `json:"zone,omitempty"`
	State NodeState `json:"state"`
	Voter bool      `json:"voter"`
	// Since is when the node entered its state (unix milliseconds, the
	// leader's clock when it proposed the change).
	Since int64 `json:"since"`
	// Order is the raft index of the command that added the node: voters
	// are chosen in join order.
	Order uint64 `json:"order"`
}

// SinceTime is Since as a time.
func (n Node) SinceTime() time.Time { return time.UnixMilli(n.Since) }

// Settings are the cluster-wide settings.
type Settings struct {
	// FailoverTimeoutMillis is how long a node may be unheard before it
	// is failed over automatically, and the length of the nodes' leases
	// (a node that hears no leader for this long stops serving).
	FailoverTimeoutMillis int64 `json:"failover_timeout_ms"`
	// MaxFailovers is how many automatic failovers may happen before an
	// operator resets the count.
	MaxFailovers int `json:"max_failovers"`
	// AutoFailoverOff disables the automatic failover (its zero value,
	// in states written before it existed too, leaves it on).
	AutoFailoverOff bool `json:"auto_failover_off,omitempty"`
	// Durability is the default durability of writes ("none").
	Durability string `json:"durability"`
}

// DefaultSettings are the settings of a new cluster.
func DefaultSettings() Settings {
	return Settings{FailoverTimeoutMillis: DefaultFailoverTimeout.Milliseconds(), MaxFailovers: 1, Durability: "none"}
}

// State is the cluster metadata at one raft index. It is immutable: the
// FSM builds a new State for every command and swaps it atomically.
type State struct {
	// ClusterID names the cluster; "" until the first command (init).
	ClusterID string `json:"cluster_id"`
	// VBuckets and Replicas are fixed when the cluster is created.
	VBuckets int `json:"vbuckets"`
	Replicas int `json:"replicas"`
	// Voters is how many raft voters the cluster wants (3 or 5).
	Voters int `json:"voters"`
	// Nodes, sorted by id.
	Nodes []Node `json:"nodes"`
	// Map is the vBucket map; its revision is the raft index of the
	// command that made it. nil before init.
	Map *vbmap.Map `json:"-"`
	// Channels maps every channel of the cluster to its kind.
	Channels map[string]engine.Kind `json:"channels"`
	// Settings are the cluster-wide settings.
	Settings Settings `json:"settings"`
	// Failovers counts automatic failovers.
	Failovers int `json:"failovers"`
	// Index is the raft index of the last command applied.
	Index uint64 `json:"index"`
}

// Initialized reports whether the cluster was created (init applied).
func (s *State) Initialized() bool { return s != nil && s.ClusterID != "" }

// Node returns the member with id.
func (s *State) Node(id string) (Node, bool) {
	i, ok := slices.BinarySearchFunc(s.Nodes, id, func(n Node, id string) int { return cmpString(n.ID, id) })
	if !ok {
		return Node{}, false
	}
	return s.Nodes[i], true
}

// Addrs maps every member's id to its data address.
func (s *State) Addrs() map[string]string {
	out := make(map[string]string, len(s.Nodes))
	for _, n := range s.Nodes {
		out[n.ID] = n.Addr
	}
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// clone returns a copy of s whose slices and maps may be changed; the
// map (immutable) is shared.
func (s *State) clone() *State {
	c := *s
	c.Nodes = slices.Clone(s.Nodes)
	c.Channels = make(map[string]engine.Kind, len(s.Channels))
	for k, v := range s.Channels {
		c.Channels[k] = v
	}
	return &c
}

// Errors of commands, returned to the proposer (every node applies the
// same command to the same result).
var (
	// ErrNotInitialized: a command other than init before the cluster exists.
	ErrNotInitialized = errors.New("meta: the cluster is not initialized")
	// ErrInitialized: a second init.
	ErrInitialized = errors.New("meta: the cluster is already initialized")
	// ErrStaleMap: a map change whose expected revision is not the current one.
	ErrStaleMap = errors.New("meta: the vbucket map changed meanwhile")
	// ErrWrongKind: a channel created with another kind than it has.
	ErrWrongKind = errors.New("meta: channel exists with another kind")
	// ErrUnknownNode: a command about a node that is not a member.
	ErrUnknownNode = errors.New("meta: unknown node")
	// ErrHoldsVBuckets: removing a node that still holds vBuckets.
	ErrHoldsVBuckets = errors.New("meta: the node still holds vbuckets")
	// ErrBadCommand: a malformed command.
	ErrBadCommand = errors.New("meta: bad command")
	// ErrRefused: a node may not join, for good (another cluster's data,
	// a copied node id, another vBucket count); a failover that would
	// leave a vBucket without a copy.
	ErrRefused = errors.New("refused")
)

func badCommand(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadCommand, fmt.Sprintf(format, args...))
}
