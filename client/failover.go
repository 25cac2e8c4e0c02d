package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"shoal/internal/wire"
)

// FailoverResult is what a failover or a recovery did.
type FailoverResult struct {
	// Node is the member failed over (or recovered), Revision the map's
	// revision that did it.
	Node     string `json:"node"`
	Revision uint64 `json:"revision"`
	// Promoted counts the vBuckets whose active moved to a survivor.
	Promoted int `json:"promoted,omitempty"`
	// Lost are the vBuckets that had no surviving copy (force only): they
	// start empty on a survivor.
	Lost []uint16 `json:"lost,omitempty"`
	// Survivors answered with their copies' seqnos; Unanswered did not.
	Survivors  []string `json:"survivors,omitempty"`
	Unanswered []string `json:"unanswered,omitempty"`
	// Replicas counts the chains a recovered node completes as a replica.
	Replicas int `json:"replicas,omitempty"`
	// Note says what comes next (a rebalance re-replicates).
	Note string `json:"note"`
}

// Failover fails a member (its id or data address) over: for every
// vBucket it is active for, the surviving replica that holds the most
// becomes active (its epoch raised), in one metadata change that the
// cluster checks against the map it was planned from. It refuses, naming
// them, when vBuckets would have no copy left, unless force is set (their
// data is then lost). It needs the admin credential when the node has
// credentials; ask any other member.
func (c *Client) Failover(ctx context.Context, node string, force bool) (*FailoverResult, error) {
	var flags uint8
	if force {
		flags = 1
	}
	return c.failoverCall(ctx, wire.OpFailover, append(wire.AppendStr8(nil, node), flags), node)
}

// Recover makes a failed member a replica of the vBuckets short of copies;
// it catches up by replication, and gets actives only from a rebalance.
func (c *Client) Recover(ctx context.Context, node string) (*FailoverResult, error) {
	return c.failoverCall(ctx, wire.OpRecover, wire.AppendStr8(nil, node), node)
}

func (c *Client) failoverCall(ctx context.Context, op wire.Opcode, body []byte, node string) (*FailoverResult, error) {
	if len(node) == 0 || len(node) > 255 {
		return nil, fmt.Errorf("client: node of %d bytes (1..255)", len(node))
	}
	b, err := c.do(ctx, c.kvNode(), op, 0, body)
	if err != nil {
		return nil, err
	}
	var res FailoverResult
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%w: %s answer: %w", ErrProtocol, op, err)
	}
	return &res, nil
}

// FailoverSettingsChange changes the automatic failover's settings; the
// fields left nil are unchanged.
type FailoverSettingsChange struct {
	Enabled  *bool `json:"enabled,omitempty"`
	MaxCount *int  `json:"max_count,omitempty"`
	// TimeoutMs is the failover timeout in milliseconds (at least 500):
	// how long a member may be unheard before it is failed over, and the
	// length of the nodes' leases.
	TimeoutMs *int64 `json:"timeout_ms,omitempty"`
	// ResetCount sets the count of automatic failovers to 0.
	ResetCount bool `json:"reset_count,omitempty"`
	// Durability sets the cluster's default durability of kv writes that
	// do not give one: "none" or "majority".
	Durability *string `json:"durability,omitempty"`
}

// AutoFailover is the automatic failover's state: its settings, and, as
// the metadata leader (which decides) sees it, the down set and the
// recent failovers and refusals.
type AutoFailover struct {
	Enabled   bool   `json:"enabled"`
	TimeoutMs int64  `json:"timeout_ms"`
	TickMs    int64  `json:"tick_ms"`
	MaxCount  int    `json:"max_count"`
	Count     int    `json:"count"`
	Deciding  bool   `json:"deciding"`
	Phase     string `json:"phase,omitempty"`
	Down      []struct {
		Node   string `json:"Node"`
		Reason string `json:"Reason"`
	} `json:"down,omitempty"`
	Refused *struct {
		Rule   string   `json:"Rule"`
		Nodes  []string `json:"Nodes"`
		Detail string   `json:"Detail"`
	} `json:"refused,omitempty"`
	Suspected  map[string][]string `json:"suspected,omitempty"`
	Stale      []string            `json:"stale,omitempty"`
	HeardMsAgo map[string]int64    `json:"heard_ms_ago,omitempty"`
	Recent     []FailoverEvent     `json:"recent,omitempty"`
}

// FailoverEvent is one automatic failover or refusal.
type FailoverEvent struct {
	At    time.Time `json:"at"`
	Nodes []string  `json:"nodes"`
	// Kind is "failover", "refused" (Rule says which rule) or "failed"
	// (the failover did not commit).
	Kind   string `json:"kind"`
	Rule   string `json:"rule,omitempty"`
	Detail string `json:"detail"`
	// SilentMillis: how long the node had not been heard at the decision;
	// DecisionMillis: from the down set's first sighting to the decision;
	// CommitMillis: the failover itself (seqnos, lease wait, commit).
	SilentMillis   int64 `json:"silent_ms,omitempty"`
	DecisionMillis int64 `json:"decision_ms,omitempty"`
	CommitMillis   int64 `json:"commit_ms,omitempty"`
}

// FailoverSettings applies ch (admin) and returns the automatic
// failover's state as the node asked sees it; an empty change only reads.
func (c *Client) FailoverSettings(ctx context.Context, ch FailoverSettingsChange) (*AutoFailover, error) {
	body, err := json.Marshal(ch)
	if err != nil {
		return nil, err
	}
	b, err := c.do(ctx, c.kvNode(), wire.OpFailoverSettings, 0, body)
	if err != nil {
		return nil, err
	}
	var af AutoFailover
	if err := json.Unmarshal(b, &af); err != nil {
		return nil, fmt.Errorf("%w: FailoverSettings answer: %w", ErrProtocol, err)
	}
	return &af, nil
}
