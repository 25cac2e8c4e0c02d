package server

import (
	"errors"
	"fmt"

	"shoal/internal/catalog"
	"shoal/internal/engine"
	"shoal/internal/meta"
	"shoal/internal/wire"
)

// ChannelDirectory makes channel creation and removal cluster-wide (the
// metadata group's catalog). Without one, both are local to the node.
type ChannelDirectory interface {
	// Create records a new channel of kind in the cluster, and in this
	// node's catalog, before its first write. It fails with an error
	// wrapping meta.ErrWrongKind when the channel has another kind and
	// meta.ErrNoQuorum when the metadata cannot change.
	Create(name string, kind engine.Kind) error
	// Remove removes a channel everywhere: once it returns, this node's
	// engines and catalog no longer hold it.
	Remove(name string) error
}

// Cluster serves the cluster requests of the data port.
type Cluster interface {
	// ClusterMap returns the GetClusterMap answer (docs/protocol.md).
	ClusterMap() ([]byte, error)
	// Document returns the cluster document (JSON).
	Document() ([]byte, error)
	// Join answers another node's join request (JSON both ways).
	Join(body []byte) ([]byte, error)
	// Propose commits a metadata command another node forwarded to this
	// one, the leader, and returns its raft index.
	Propose(body []byte) (uint64, error)
	// RemoveNode removes a member that holds no vBucket.
	RemoveNode(id string) error
}

// maxJoinBody bounds the JSON bodies of Join and MetaPropose.
const maxJoinBody = 1 << 20

// HandleCluster serves the cluster requests with cl: GetClusterMap and
// Cluster for every authenticated client, Join and MetaPropose for peers
// (the admin or "node" credential), NodeRemove for the admin. Call before
// Serve.
func (s *Server) HandleCluster(cl Cluster) {
	s.handle(wire.OpGetClusterMap, handler{fn: func(c *conn, h wire.Header, body []byte) {
		if len(body) != 0 {
			c.replyf(h, wire.StatusBadRequest, "malformed GetClusterMap: the body is empty")
			return
		}
		b, err := cl.ClusterMap()
		c.clusterAnswer(h, b, err)
	}})
	s.handle(wire.OpCluster, handler{fn: func(c *conn, h wire.Header, body []byte) {
		if len(body) != 0 {
			c.replyf(h, wire.StatusBadRequest, "malformed Cluster: the body is empty")
			return
		}
		b, err := cl.Document()
		c.clusterAnswer(h, b, err)
	}})
	s.handle(wire.OpJoin, handler{peer: true, limit: maxJoinBody, fn: func(c *conn, h wire.Header, body []byte) {
		b, err := cl.Join(body)
		c.clusterAnswer(h, b, err)
	}})
	s.handle(wire.OpMetaPropose, handler{peer: true, limit: maxJoinBody, fn: func(c *conn, h wire.Header, body []byte) {
		idx, err := cl.Propose(body)
		c.clusterAnswer(h, wire.AppendU64(nil, idx), err)
	}})
	s.handle(wire.OpNodeRemove, handler{admin: true, fn: func(c *conn, h wire.Header, body []byte) {
		d := wire.NewDecoder(body)
		id := d.Bytes8()
		if d.Finish() != nil || len(id) == 0 {
			c.replyf(h, wire.StatusBadRequest, "malformed NodeRemove: want str8 node id")
			return
		}
		c.clusterAnswer(h, nil, cl.RemoveNode(string(id)))
	}})
}

// clusterAnswer answers a cluster request: b, or the status of err.
func (c *conn) clusterAnswer(h wire.Header, b []byte, err error) {
	if err == nil {
		c.reply(h, wire.StatusOK, b)
		return
	}
	st := clusterStatus(err)
	if st == wire.StatusInternal {
		c.s.cfg.Logger.Error("cluster request failed", "op", h.Opcode.String(), "err", err)
	}
	c.replyf(h, st, "%v", err)
}

// clusterStatus maps an error of the metadata to a status.
func clusterStatus(err error) wire.Status {
	switch {
	case errors.Is(err, meta.ErrNoQuorum):
		return wire.StatusNoQuorum
	case errors.Is(err, meta.ErrRefused):
		return wire.StatusRefused
	case errors.Is(err, meta.ErrWrongKind):
		return wire.StatusWrongKind
	case errors.Is(err, meta.ErrUnknownNode):
		return wire.StatusNotFound
	case errors.Is(err, meta.ErrBadCommand), errors.Is(err, meta.ErrHoldsVBuckets), errors.Is(err, meta.ErrStaleMap), errors.Is(err, meta.ErrNotInitialized):
		return wire.StatusBadRequest
	case errors.Is(err, engine.ErrNoActiveVBucket):
		return wire.StatusNotMyVBucket
	}
	return wire.StatusInternal
}

// claimChannel records ch as a channel of kind, through the cluster's
// directory when the server has one, and returns the shared name string.
// It answers the request itself when ok is false.
func (c *conn) claimChannel(h wire.Header, ch []byte, kind engine.Kind) (string, bool) {
	if dir := c.s.cfg.Channels; dir != nil {
		if err := dir.Create(string(ch), kind); err != nil {
			if errors.Is(err, meta.ErrWrongKind) {
				_, k, _ := c.s.eng.Catalog.Lookup(ch)
				c.replyf(h, wire.StatusWrongKind, "channel %q is a %s channel", ch, k)
				return "", false
			}
			c.clusterAnswer(h, nil, fmt.Errorf("cannot create channel %q: %w", ch, err))
			return "", false
		}
		if name, k, ok := c.s.eng.Catalog.Lookup(ch); ok && k == kind {
			return name, true
		}
		c.replyf(h, wire.StatusInternal, "channel %q was created in the cluster but is not in this node's catalog", ch)
		return "", false
	}
	name, err := c.s.eng.Catalog.Claim(ch, kind)
	if errors.Is(err, catalog.ErrWrongKind) {
		_, k, _ := c.s.eng.Catalog.Lookup(ch)
		c.replyf(h, wire.StatusWrongKind, "channel %q is a %s channel", ch, k)
		return "", false
	}
	return name, true
}
