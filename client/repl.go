package client

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"shoal/internal/wire"
)

// Actions of a Replica request (docs/protocol.md §4.7).
const (
	replicaStop  = 1
	replicaStart = 2
	replicaSet   = 3
)

// ReplicaSettings are what ReplicaSet changes on a standby's replication;
// zero fields are left as they are.
type ReplicaSettings struct {
	// Connections is the number of stream connections (1..64).
	Connections int
	// NoopInterval: a side that has sent nothing for this long sends a
	// NOOP; two intervals with nothing received declare the connection
	// dead. Whole milliseconds, at least 1 ms.
	NoopInterval time.Duration
	// IdleTimeout declares the connection dead after this long with
	// nothing received, if that is shorter than two NOOP intervals.
	IdleTimeout time.Duration
}

// ReplicaStop stops the replication of the standby (the first node given
// to Dial); what it holds stays. It needs the admin credential when the
// node has credentials.
func (c *Client) ReplicaStop(ctx context.Context) error {
	_, err := c.do(ctx, c.kvNode(), wire.OpReplica, 0, []byte{replicaStop})
	return err
}

// ReplicaStart starts it again: it reconnects and resumes.
func (c *Client) ReplicaStart(ctx context.Context) error {
	_, err := c.do(ctx, c.kvNode(), wire.OpReplica, 0, []byte{replicaStart})
	return err
}

// ReplicaSet changes the standby's replication settings while it runs:
// it reopens its session with them at once.
func (c *Client) ReplicaSet(ctx context.Context, s ReplicaSettings) error {
	const most = 24 * time.Hour
	switch {
	case s.Connections < 0 || s.Connections > math.MaxUint16:
		return fmt.Errorf("client: %d connections", s.Connections)
	case s.NoopInterval < 0 || s.NoopInterval > most || s.IdleTimeout < 0 || s.IdleTimeout > most:
		return fmt.Errorf("client: noop interval %v or idle timeout %v out of [0, %v]", s.NoopInterval, s.IdleTimeout, most)
	case s.NoopInterval > 0 && s.NoopInterval < time.Millisecond:
		return fmt.Errorf("client: noop interval %v under 1ms", s.NoopInterval)
	}
	b := wire.AppendU8(nil, replicaSet)
	b = wire.AppendU16(b, uint16(s.Connections))
	b = wire.AppendU32(b, uint32(s.NoopInterval.Milliseconds()))
	b = wire.AppendU32(b, uint32(s.IdleTimeout.Milliseconds()))
	_, err := c.do(ctx, c.kvNode(), wire.OpReplica, 0, b)
	return err
}

// Promote turns the standby into an active node: it stops replicating,
// starts a new history of every vBucket and accepts writes. It needs the
// admin credential when the node has credentials. The standby refuses
// (a *Error with StatusRefused naming the reason) while its active still
// streams to it, and while it is behind its active (the lag named) unless
// force is set: what it lacks is then lost.
func (c *Client) Promote(ctx context.Context, force bool) error {
	var b []byte
	if force {
		b = []byte{1}
	}
	_, err := c.do(ctx, c.kvNode(), wire.OpPromote, 0, b)
	return err
}

// Status returns the status document of the first node given to Dial:
// the JSON of its /status page (node, engines, liveness, replication).
// With vbuckets it includes every vBucket's high seqno per engine.
func (c *Client) Status(ctx context.Context, vbuckets bool) ([]byte, error) {
	var flags uint8
	if vbuckets {
		flags = 1
	}
	return c.do(ctx, c.kvNode(), wire.OpStatus, 0, []byte{flags})
}

// MemberStatus is one node's status document, from Statuses.
type MemberStatus struct {
	// ID is the member's id ("" for a seed of a client that does not
	// route) and Addr its data address.
	ID, Addr string
	// Doc is the status document (JSON), nil when Err is set.
	Doc []byte
	Err error
}

// Statuses returns the status document of every member of the map the
// client routes by (of every node given to Dial when it does not route),
// asked in parallel, in member order. With vbuckets each includes every
// vBucket's high seqno per engine, for comparing the copies of a vBucket.
func (c *Client) Statuses(ctx context.Context, vbuckets bool) []MemberStatus {
	var flags uint8
	if vbuckets {
		flags = 1
	}
	var out []MemberStatus
	var nodes []*node
	if rt := c.routes(); rt != nil {
		for _, m := range rt.m.Nodes {
			if m.Addr != "" {
				out = append(out, MemberStatus{ID: m.ID, Addr: m.Addr})
				nodes = append(nodes, c.r.pool(m.Addr))
			}
		}
	} else {
		for _, n := range c.seeds {
			out = append(out, MemberStatus{Addr: n.addr})
			nodes = append(nodes, n)
		}
	}
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { out[i].Doc, out[i].Err = c.do(ctx, n, wire.OpStatus, 0, []byte{flags}) })
	}
	wg.Wait()
	return out
}
