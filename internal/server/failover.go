package server

import (
	"time"

	"shoal/internal/wire"
)

// Failover serves the operator's failover requests.
type Failover interface {
	// Failover fails a member over (id or address); force accepts losing
	// vBuckets that have no copy left. The answer is JSON.
	Failover(node string, force bool) ([]byte, error)
	// Recover makes a failed member a replica again. The answer is JSON.
	Recover(node string) ([]byte, error)
	// RenewLease grants node a lease (on the leader) and returns the
	// commit index the node must apply before it serves on it, and the
	// lease's length.
	RenewLease(node string) (uint64, time.Duration, error)
}

// HandleFailover serves OpFailover (str8 node, u8 flags: bit 0 force ->
// JSON) and OpRecover (str8 node -> JSON) with f, both for the admin, and
// OpLeaseRenew (str8 node id -> u64 commit index, u64 lease milliseconds)
// between nodes. Call
// before Serve.
func (s *Server) HandleFailover(f Failover) {
	s.handle(wire.OpFailover, handler{admin: true, fn: func(c *conn, h wire.Header, body []byte) {
		d := wire.NewDecoder(body)
		node, flags := d.Bytes8(), d.U8()
		if d.Finish() != nil || len(node) == 0 || flags&^1 != 0 {
			c.replyf(h, wire.StatusBadRequest, "malformed Failover: want str8 node, u8 flags (bit 0: force)")
			return
		}
		b, err := f.Failover(string(node), flags&1 != 0)
		c.clusterAnswer(h, b, err)
	}})
	s.handle(wire.OpRecover, handler{admin: true, fn: func(c *conn, h wire.Header, body []byte) {
		d := wire.NewDecoder(body)
		node := d.Bytes8()
		if d.Finish() != nil || len(node) == 0 {
			c.replyf(h, wire.StatusBadRequest, "malformed Recover: want str8 node")
			return
		}
		b, err := f.Recover(string(node))
		c.clusterAnswer(h, b, err)
	}})
	s.handle(wire.OpLeaseRenew, handler{peer: true, fn: func(c *conn, h wire.Header, body []byte) {
		d := wire.NewDecoder(body)
		node := d.Bytes8()
		if d.Finish() != nil || len(node) == 0 {
			c.replyf(h, wire.StatusBadRequest, "malformed LeaseRenew: want str8 node id")
			return
		}
		idx, length, err := f.RenewLease(string(node))
		c.clusterAnswer(h, wire.AppendU64(wire.AppendU64(nil, idx), uint64(length.Milliseconds())), err)
	}})
}
