package server

import (
	"errors"
	"time"

	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Actions of OpReplica, its first body byte.
const (
	ReplicaStop  = 1
	ReplicaStart = 2
	ReplicaSet   = 3
)

// ReplicaSettings are the changes of a ReplicaSet; zero fields are left
// as they are.
type ReplicaSettings struct {
	Connections  int
	NoopInterval time.Duration
	IdleTimeout  time.Duration
}

// Replication runs the operator requests of replication for the node.
type Replication interface {
	// Replica stops, starts or retunes (ReplicaSet with s) the node's
	// replication from its producer.
	Replica(action uint8, s ReplicaSettings) error
	// Promote turns a standby replica into an active node; force promotes
	// one that is behind its active (what it lacks is lost).
	Promote(force bool) error
	// Status returns the node's status document (JSON); with vbuckets it
	// includes every vBucket's seqnos.
	Status(vbuckets bool) ([]byte, error)
}

// ErrNotStandby is returned by Replica and Promote on a node that
// replicates nothing; the request is answered StatusBadRequest.
var ErrNotStandby = errors.New("the node is not a standby replica")

// ErrPromoteRefused wraps the reasons a standby refuses its promotion
// (its active still streams to it, it is behind); the request is answered
// StatusRefused with the reason.
var ErrPromoteRefused = errors.New("promotion refused")

// ErrBadSettings wraps the error of settings a Replica set refuses; the
// request is answered StatusBadRequest.
var ErrBadSettings = errors.New("bad replication settings")

// Largest OpReplica settings: a day of NOOP interval or idle timeout.
const maxReplicaMillis = 24 * 3600 * 1000

// HandleReplication serves OpReplica and OpPromote (admin requests) and
// OpStatus with r. Call before Serve.
func (s *Server) HandleReplication(r Replication) {
	s.handle(wire.OpReplica, handler{fn: func(c *conn, h wire.Header, body []byte) { c.replica(h, body, r) }, admin: true})
	s.handle(wire.OpPromote, handler{fn: func(c *conn, h wire.Header, body []byte) { c.promote(h, body, r) }, admin: true})
	s.handle(wire.OpStatus, handler{fn: func(c *conn, h wire.Header, body []byte) { c.status(h, body, r) }})
}

// replica: u8 action, then for ReplicaSet u16 connections, u32 noop
// interval ms, u32 idle timeout ms (0: unchanged) -> empty.
func (c *conn) replica(h wire.Header, body []byte, r Replication) {
	d := wire.NewDecoder(body)
	action := d.U8()
	var set ReplicaSettings
	if action == ReplicaSet {
		conns, noop, idle := d.U16(), d.U32(), d.U32()
		if d.Err() == nil && (noop > maxReplicaMillis || idle > maxReplicaMillis) {
			c.replyf(h, wire.StatusBadRequest, "noop interval and idle timeout are at most %d ms", maxReplicaMillis)
			return
		}
		set = ReplicaSettings{Connections: int(conns), NoopInterval: time.Duration(noop) * time.Millisecond, IdleTimeout: time.Duration(idle) * time.Millisecond}
	}
	if d.Finish() != nil || action < ReplicaStop || action > ReplicaSet {
		c.replyf(h, wire.StatusBadRequest, "malformed Replica: want u8 action 1 stop, 2 start, 3 set (u16 connections, u32 noop ms, u32 idle ms)")
		return
	}
	c.replicationAnswer(h, r.Replica(action, set))
}

// promote: [u8 flags: bit 0 force] -> empty.
func (c *conn) promote(h wire.Header, body []byte, r Replication) {
	if len(body) > 1 || len(body) == 1 && body[0]&^1 != 0 {
		c.replyf(h, wire.StatusBadRequest, "malformed Promote: want an empty body or u8 flags (bit 0: force)")
		return
	}
	c.replicationAnswer(h, r.Promote(len(body) == 1 && body[0]&1 != 0))
}

func (c *conn) replicationAnswer(h wire.Header, err error) {
	switch {
	case err == nil:
		c.reply(h, wire.StatusOK, nil)
	case errors.Is(err, ErrNotStandby), errors.Is(err, ErrBadSettings):
		c.replyf(h, wire.StatusBadRequest, "%v", err)
	case errors.Is(err, ErrPromoteRefused):
		c.replyf(h, wire.StatusRefused, "%v", err)
	default:
		c.s.cfg.Logger.Error("request failed", "op", h.Opcode.String(), "err", err)
		c.replyf(h, wire.StatusInternal, "%v", err)
	}
}

// status: [u8 flags: bit 0 every vBucket's seqnos] -> JSON document.
func (c *conn) status(h wire.Header, body []byte, r Replication) {
	d := wire.NewDecoder(body)
	var flags uint8
	if len(body) > 0 {
		flags = d.U8()
	}
	if d.Finish() != nil || flags&^1 != 0 {
		c.replyf(h, wire.StatusBadRequest, "malformed Status: want an optional u8 of flags (bit 0: vbuckets)")
		return
	}
	doc, err := r.Status(flags&1 != 0)
	if err != nil {
		c.replicationAnswer(h, err)
		return
	}
	c.reply(h, wire.StatusOK, doc)
}

// checkQueueWrite checks a push against this node's routes: the routing
// key's vBucket when there is one (with FlagVBucket the header must carry
// it), else the header's vBucket with FlagVBucket, else the node must be
// active for some vBucket (round-robin pushes go to its active vBuckets).
func (c *conn) checkQueueWrite(h wire.Header, routingKey []byte) bool {
	switch {
	case len(routingKey) > 0:
		vb := vbucket.Of(routingKey, c.s.cfg.VBuckets)
		if h.Flags&wire.FlagVBucket != 0 && h.VBucket != vb {
			c.replyf(h, wire.StatusBadRequest, "vbucket %d in the header, but the routing key belongs to vbucket %d of %d", h.VBucket, vb, c.s.cfg.VBuckets)
			return false
		}
		return c.checkRoute(h, vb, false)
	case h.Flags&wire.FlagVBucket != 0:
		return c.checkVBucket(h)
	}
	return c.checkServing(h)
}
