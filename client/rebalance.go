package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"shoal/internal/wire"
)

// RebalanceOptions start a rebalance (zero values: the leader's
// defaults, --rebalance-moves and --rebalance-rate).
type RebalanceOptions struct {
	// Without are members everything moves off (`shoal remove`).
	Without []string
	// Moves is how many vBuckets move at once.
	Moves int
	// Rate bounds the bytes per second the new copies receive; negative:
	// unlimited whatever the leader's default.
	Rate int64
}

// RebalanceStatus is the metadata leader's rebalance: the one running,
// or the last one.
type RebalanceStatus struct {
	// Leader is the node that runs rebalances (the metadata leader).
	Leader string `json:"leader"`
	// Running: the rebalance still changes the map.
	Running bool `json:"running"`
	// State is "running", "stopping", "stopped" or "done" ("" before the
	// first rebalance); Reason says why it stopped.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Total vBuckets to move, Done, Moving now, Abandoned (rolled back).
	Total     int `json:"total"`
	Done      int `json:"done"`
	Moving    int `json:"moving"`
	Abandoned int `json:"abandoned"`
	// Bytes streamed to the new copies, at Rate bytes/s and VBucketsPerSec.
	Bytes          int64   `json:"bytes"`
	Rate           float64 `json:"rate_bytes_per_s"`
	VBucketsPerSec float64 `json:"vbuckets_per_s"`
	// ETAMillis is the time left at the pace so far (-1: unknown yet).
	ETAMillis     int64 `json:"eta_ms"`
	ElapsedMillis int64 `json:"elapsed_ms"`
	// MaxMoves and RateLimit bound the run (RateLimit 0: unlimited).
	MaxMoves  int      `json:"max_moves,omitempty"`
	RateLimit int64    `json:"rate_limit,omitempty"`
	Without   []string `json:"without,omitempty"`
	// Started and Ended are when it started and ended.
	Started time.Time  `json:"started,omitzero"`
	Ended   *time.Time `json:"ended,omitempty"`
	// InFlight are the moves under way.
	InFlight []RebalanceMove `json:"in_flight,omitempty"`
	// MapMoving counts the vBuckets the map shows moving (0 once a
	// rebalance has ended and its leftovers are cleared).
	MapMoving int `json:"map_moving"`
	// Revision is the map revision when the leader answered: a member
	// serving at least this revision has applied the rebalance so far.
	Revision uint64 `json:"revision"`
}

// RebalanceMove is one vBucket being moved.
type RebalanceMove struct {
	VBucket uint16   `json:"vbucket"`
	Phase   string   `json:"phase"` // building, freezing, draining, committing
	From    []string `json:"from"`
	To      []string `json:"to"`
}

// Rebalance starts a rebalance on the metadata leader (any member may be
// asked): new members get their share of the vBuckets, those of
// o.Without hand theirs over, the replica count is restored after
// failovers. It returns at once; RebalanceStatus follows it. ErrRefused
// when one is running already. It needs the admin credential when the
// node has credentials.
func (c *Client) Rebalance(ctx context.Context, o RebalanceOptions) (*RebalanceStatus, error) {
	return c.rebalanceCall(ctx, map[string]any{"action": "start", "without": o.Without, "moves": o.Moves, "rate": o.Rate})
}

// StopRebalance stops the running rebalance: no move starts any more,
// copies being built are dropped, takeovers under way finish. The map is
// consistent at every step; a later Rebalance continues from it.
func (c *Client) StopRebalance(ctx context.Context) (*RebalanceStatus, error) {
	return c.rebalanceCall(ctx, map[string]any{"action": "stop"})
}

// RebalanceStatus returns the running or last rebalance's progress.
func (c *Client) RebalanceStatus(ctx context.Context) (*RebalanceStatus, error) {
	return c.rebalanceCall(ctx, map[string]any{"action": "status"})
}

func (c *Client) rebalanceCall(ctx context.Context, req map[string]any) (*RebalanceStatus, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b, err := c.do(ctx, c.kvNode(), wire.OpRebalance, 0, body)
	if err != nil {
		return nil, err
	}
	var st RebalanceStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: Rebalance answer: %w", ErrProtocol, err)
	}
	return &st, nil
}
