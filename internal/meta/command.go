package meta

import (
	"encoding/json"
	"fmt"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// Op names a command of the FSM.
type Op string

// The FSM's commands (docs/design.md, "Cluster metadata").
const (
	// OpInit creates the cluster: id, vBucket and replica counts, wanted
	// voters, settings, the first nodes and the first map.
	OpInit Op = "init"
	// OpNodeAdd adds a node, or updates the address, HTTP address and zone
	// of a member with the same id (a member with the same addresses is
	// left alone: joining twice is a no-op).
	OpNodeAdd Op = "node-add"
	// OpNodeState sets a member's state.
	OpNodeState Op = "node-state"
	// OpNodeVoter records whether a member is a raft voter.
	OpNodeVoter Op = "node-voter"
	// OpNodeRemove removes a member that holds no vBucket.
	OpNodeRemove Op = "node-remove"
	// OpMap replaces the vBucket map if its revision is still ExpectRevision.
	OpMap Op = "map"
	// OpChannelCreate records a channel's kind (first write anywhere).
	OpChannelCreate Op = "channel-create"
	// OpChannelRemove forgets a channel (RemoveChannel).
	OpChannelRemove Op = "channel-remove"
	// OpSettings replaces the settings.
	OpSettings Op = "settings"
	// OpFailover fails NodeID over: it becomes failed and Chains (which
	// name it nowhere) the map, if the map is still at ExpectRevision and
	// every node of Chains is still an active member.
	OpFailover Op = "failover"
	// OpRecover makes a failed NodeID active again with Chains as the map
	// (it may be a replica in them), if the map is still at ExpectRevision.
	OpRecover Op = "recover"
	// OpMoves applies a rebalance's edits of some vBuckets (pending
	// copies, freezes, new chains; vbmap.Map.Edit) if the map is still at
	// ExpectRevision and every node they name is an active member.
	OpMoves Op = "moves"
	// OpFailoverReset sets the count of automatic failovers to 0 (shoal
	// failover reset-count).
	OpFailoverReset Op = "failover-reset"
)

// MaxCommandSize bounds an encoded command.
const MaxCommandSize = 4 << 20

// Command is one change of the metadata, the data of a raft log entry
// (JSON). Only the fields of its Op are set.
type Command struct {
	Op Op `json:"op"`
	// Time is the proposer's clock (unix milliseconds): the Since of the
	// states the command sets.
	Time int64 `json:"time"`

	// OpInit.
	Init *Init `json:"init,omitempty"`
	// OpNodeAdd.
	Node *Node `json:"node,omitempty"`
	// OpNodeState, OpNodeVoter, OpNodeRemove.
	NodeID string    `json:"node_id,omitempty"`
	State  NodeState `json:"state,omitempty"`
	Voter  bool      `json:"voter,omitempty"`
	// OpMap, OpFailover, OpRecover.
	Chains [][]string `json:"chains,omitempty"`
	// OpMap, OpFailover, OpRecover, OpMoves.
	ExpectRevision uint64 `json:"expect_revision,omitempty"`
	// OpMoves.
	Edits []vbmap.Edit `json:"edits,omitempty"`
	// OpFailover: decided by the automatic failover (it counts towards
	// the settings' MaxFailovers).
	Auto bool `json:"auto,omitempty"`
	// OpChannelCreate, OpChannelRemove.
	Channel string      `json:"channel,omitempty"`
	Kind    engine.Kind `json:"kind,omitempty"`
	// OpSettings.
	Settings *Settings `json:"settings,omitempty"`
}

// Init is the body of OpInit.
type Init struct {
	ClusterID string     `json:"cluster_id"`
	VBuckets  int        `json:"vbuckets"`
	Replicas  int        `json:"replicas"`
	Voters    int        `json:"voters"`
	Settings  Settings   `json:"settings"`
	Nodes     []Node     `json:"nodes"`
	Chains    [][]string `json:"chains"`
}

// Encode returns the command's log entry data.
func (c *Command) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("meta: encode %s: %w", c.Op, err)
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %s command of %d bytes (limit %d)", ErrBadCommand, c.Op, len(b), MaxCommandSize)
	}
	return b, nil
}

// DecodeCommand decodes a log entry's data.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > MaxCommandSize {
		return nil, badCommand("%d bytes (limit %d)", len(b), MaxCommandSize)
	}
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return &c, nil
}
