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
	// Heartbeat records a member's heartbeat and the view it carries.
	Heartbeat(hb Heartbeat)
	// FailoverSettings applies an operator's change of the automatic
	// failover settings (JSON, fields absent = unchanged) and returns
	// the settings (JSON).
	FailoverSettings(change []byte) ([]byte, error)
}

// Heartbeat is a member's heartbeat: who sends it and what it sees.
type Heartbeat struct {
	From string
	// NotReady: the sender's own readiness check failed; Why says how.
	NotReady bool
	Why      string
	// Inactive are the members the sender hears nothing from.
	Inactive []string
}

// Bounds of a heartbeat's body.
const (
	maxHeartbeatNodes = 1024
)

// AppendHeartbeat encodes hb as OpHeartbeat's body: str8 node id, u8
// flags (bit 0: not ready), str8 why, u16 n, n x str8 inactive node.
func AppendHeartbeat(b []byte, hb Heartbeat) []byte {
	b = wire.AppendStr8(b, hb.From)
	var flags uint8
	if hb.NotReady {
		flags |= 1
	}
	b = wire.AppendU8(b, flags)
	why := hb.Why
	if len(why) > 255 {
		why = why[:255]
	}
	b = wire.AppendStr8(b, why)
	n := min(len(hb.Inactive), maxHeartbeatNodes)
	b = wire.AppendU16(b, uint16(n))
	for _, id := range hb.Inactive[:n] {
		b = wire.AppendStr8(b, id)
	}
	return b
}

// decodeHeartbeat decodes OpHeartbeat's body.
func decodeHeartbeat(body []byte) (Heartbeat, bool) {
	d := wire.NewDecoder(body)
	hb := Heartbeat{From: string(d.Bytes8())}
	flags := d.U8()
	hb.Why = string(d.Bytes8())
	n := int(d.U16())
	if d.Err() != nil || n > maxHeartbeatNodes || flags&^1 != 0 || hb.From == "" {
		return Heartbeat{}, false
	}
	hb.NotReady = flags&1 != 0
	for range n {
		id := d.Bytes8()
		if len(id) == 0 {
			return Heartbeat{}, false
		}
		hb.Inactive = append(hb.Inactive, string(id))
	}
	return hb, d.Finish() == nil
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
	s.handle(wire.OpHeartbeat, handler{peer: true, fn: func(c *conn, h wire.Header, body []byte) {
		hb, ok := decodeHeartbeat(body)
		if !ok {
			c.replyf(h, wire.StatusBadRequest, "malformed Heartbeat: want str8 node id, u8 flags (bit 0: not ready), str8 why, u16 n, n x str8 node id")
			return
		}
		f.Heartbeat(hb)
		c.reply(h, wire.StatusOK, nil)
	}})
	s.handle(wire.OpFailoverSettings, handler{admin: true, fn: func(c *conn, h wire.Header, body []byte) {
		b, err := f.FailoverSettings(body)
		c.clusterAnswer(h, b, err)
	}})
}
