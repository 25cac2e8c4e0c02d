package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Durability is how many copies hold a write before it is acknowledged
// (docs/design.md, "Durability").
type Durability uint8

// Durability levels.
const (
	// None: acknowledged once the vBucket's active holds the write; a
	// failover right after may lose it (replication is asynchronous).
	None Durability = Durability(wire.DurabilityNone)
	// Majority: acknowledged once a majority of the vBucket's chain holds
	// it in memory (0 replicas: the active; 1: active and replica; 2: two
	// of three), so it survives the failure of any one node.
	Majority Durability = Durability(wire.DurabilityMajority)
	// PersistMajority: fsynced on a majority of the chain (the active's
	// own fsync included): log appends, and pushes to a node whose queues
	// keep a journal. Refused (ErrUnsupported) by kv, whose records live in
	// memory, and by queues without a journal.
	PersistMajority Durability = Durability(wire.DurabilityPersistMajority)
)

// String names the level as the CLI spells it.
func (d Durability) String() string { return wire.Durability(d).String() }

// ParseDurability reads a level's name: none, majority or persist-majority.
func ParseDurability(s string) (Durability, error) {
	d, err := wire.ParseDurability(s)
	return Durability(d), err
}

// Errors of durable writes.
var (
	// ErrAmbiguous: a durable write may or may not have been applied: the
	// node applied it but a majority did not acknowledge it within its
	// timeout, or the connection broke before the answer came. It may be
	// there after a failover, or not; read it back to know.
	ErrAmbiguous = errors.New("ambiguous: the write may or may not have been applied")
	// ErrSyncWriteInProgress: the key had a durable write waiting for its
	// majority for the whole call (the client tries again until its
	// context ends).
	ErrSyncWriteInProgress = errors.New("sync write in progress")
)

func init() {
	statusErrors[wire.StatusAmbiguous] = ErrAmbiguous
	statusErrors[wire.StatusSyncWriteInProgress] = ErrSyncWriteInProgress
}

// featureDurable is the HELLO feature bit of a node that takes durable
// writes.
const featureDurable = 1 << 4

// WithDurability makes a write durable at level d (Put, Update, Remove;
// others follow the client's default, WithDefaultDurability).
func WithDurability(d Durability) WriteOption {
	return func(o *writeOptions) { o.durability, o.durabilitySet = d, true }
}

// WithDurabilityTimeout bounds how long the node waits for a durable
// write's majority before it answers ErrAmbiguous (default 10 s).
func WithDurabilityTimeout(t time.Duration) WriteOption {
	return func(o *writeOptions) { o.durTimeout = t }
}

// WithDefaultDurability sets the durability of every write that does not
// give its own (WithDurability), and optionally its timeout (0: the
// node's default, 10 s).
func WithDefaultDurability(d Durability, timeout time.Duration) Option {
	return func(o *options) { o.durability, o.durTimeout = d, timeout }
}

// writeOpts applies opts over the client's defaults.
func (c *Client) writeOpts(opts []WriteOption) writeOptions {
	o := writeOptions{durability: c.o.durability, durTimeout: c.o.durTimeout}
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// durablePrefix returns the header flag and body prefix of a write with
// o's durability (none for None).
func (o writeOptions) durablePrefix() (byte, []byte) {
	if o.durability == None && !o.durabilitySet {
		return 0, nil // the node's default applies (none unless the cluster's settings say otherwise)
	}
	return wire.FlagDurable, wire.AppendDurablePrefix(nil, wire.Durability(o.durability), o.durTimeout)
}

// durableOutcome turns the error of a durable write into what it means:
// a broken connection or an expired context after the request may have
// gone out leaves the write ambiguous. ErrUnavailable (never sent) and a
// node's own answers stay as they are.
func durableOutcome(err error) error {
	if err == nil || errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrClosed) {
		return err
	}
	var e *Error
	if errors.As(err, &e) && e.Status != 0 {
		return err
	}
	if errors.Is(err, ErrDisconnected) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", ErrAmbiguous, err)
	}
	return err
}

// retrySyncWrite sleeps before the next try of a request refused with
// ErrSyncWriteInProgress; false when ctx ends first.
func retrySyncWrite(ctx context.Context, attempt int) bool {
	d := time.Millisecond << min(attempt, 5) // 2 ms doubling to 32 ms
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// WithPushDurability makes a Push durable at level d: answered once a
// majority of its vBucket's chain holds it (ErrAmbiguous after timeout, 0:
// the node's 10 s). It needs the routing client (a cluster) or a lone
// node, whose chain is itself.
func WithPushDurability(d Durability, timeout time.Duration) PushOption {
	return func(o *pushOptions) { o.dur = writeOptions{durability: d, durabilitySet: true, durTimeout: timeout} }
}

// LogDurability makes a log append durable at level d, as
// WithPushDurability does a Push.
func LogDurability(d Durability, timeout time.Duration) LogWriteOption {
	return func(o *logWriteOptions) {
		o.dur = writeOptions{durability: d, durabilitySet: true, durTimeout: timeout}
	}
}

// durableSpread sends a durable Push or log append (body with its
// durability prefix; plain without it) by the routing table, always to
// a vBucket the client names, so that the node knows which to wait for.
func (c *Client) durableSpread(ctx context.Context, op wire.Opcode, key, body []byte, flags byte, plain []byte) error {
	_, err := c.durableSpreadAnswer(ctx, op, key, body, flags, plain)
	return err
}

func (c *Client) durableSpreadAnswer(ctx context.Context, op wire.Opcode, key, body []byte, flags byte, plain []byte) ([]byte, error) {
	rt := c.routes()
	if rt == nil {
		if c.o.noRouting {
			return nil, fmt.Errorf("%w: a durable %s needs the routing client (not WithNoRouting)", ErrUnsupported, op)
		}
		// A lone node: its chain is itself, a plain write is as durable.
		n := c.kvNode()
		var vb uint16
		if len(key) > 0 {
			if n.vbuckets() == 0 {
				if _, err := n.conn(ctx); err != nil {
					return nil, err
				}
			}
			vb = vbucket.Of(key, n.vbuckets())
		}
		return c.do(ctx, n, op, vb, plain)
	}
	r, err := c.spreadFlags(ctx, rt, op, key, body, flags)
	return r, durableOutcome(err)
}
