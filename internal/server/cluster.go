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
	// ClusterMap returns the GetClusterMap answer (docs/protocol.md) and
	// the revision of the map it holds.
	ClusterMap() (body []byte, revision uint64, err error)
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

// HandleCluster serves the cluster requests with cl: GetClusterMap,
// MapNotify and Cluster for every authenticated client, Join and
// MetaPropose for peers (the admin or "node" credential), NodeRemove for
// the admin. A `not my vbucket` then carries the map to a connection that
// has not had the node's current revision. Call before Serve.
func (s *Server) HandleCluster(cl Cluster) {
	s.cluster = cl
	s.handle(wire.OpGetClusterMap, handler{fn: (*conn).getClusterMap})
	s.handle(wire.OpMapNotify, handler{fn: (*conn).mapNotify})
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

// getClusterMap: empty, or u64 the revision the client has -> the members
// and the map; empty when the client's revision is the node's (or later).
func (c *conn) getClusterMap(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	var have uint64
	if len(body) > 0 {
		have = d.U64()
	}
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed GetClusterMap: the body is empty or a u64 map revision")
		return
	}
	b, rev, err := c.s.cluster.ClusterMap()
	if err != nil {
		c.clusterAnswer(h, nil, err)
		return
	}
	c.noteMapRev(rev)
	if len(body) > 0 && have >= rev {
		b = nil // the client is current
	}
	c.reply(h, wire.StatusOK, b)
}

// mapNotify: empty -> a stream of u64 map revisions: the node's at once,
// then each new one the node applies. It ends only on a stop, the
// connection's close or the node's shutdown.
func (c *conn) mapNotify(h wire.Header, body []byte) {
	if len(body) != 0 {
		c.replyf(h, wire.StatusBadRequest, "malformed MapNotify: the body is empty")
		return
	}
	c.startStream(h, 0, func(st *stream) (wire.Status, string) {
		var sent uint64
		first := true
		for {
			rev, changed := c.s.maps.get()
			if first || rev != sent {
				// Noted before the notice goes: a client that reads it and
				// asks at once is already known to hold the revision.
				c.noteMapRev(rev)
				if !st.send(func(b []byte) []byte { return wire.AppendU64(b, rev) }) {
					return wire.StatusStopped, ""
				}
				sent, first = rev, false
			}
			select {
			case <-changed:
			case <-st.ctx.Done():
				return wire.StatusStopped, ""
			case <-c.shutting:
				return wire.StatusShuttingDown, ""
			}
		}
	})
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
	case errors.Is(err, engine.ErrNoActiveVBucket), errors.Is(err, engine.ErrNotActive):
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
