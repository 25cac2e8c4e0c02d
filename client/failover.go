package client

import (
	"context"
	"encoding/json"
	"fmt"

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
