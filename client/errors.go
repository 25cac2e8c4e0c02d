package client

import (
	"errors"
	"fmt"

	"shoal/internal/wire"
)

// Errors a call can return; test with errors.Is. Every error a node sends
// is an *Error that matches one of these by its status.
var (
	ErrNotFound           = errors.New("not found")
	ErrExists             = errors.New("exists: CAS mismatch")
	ErrNotMyVBucket       = errors.New("not my vbucket")
	ErrValueTooBig        = errors.New("value too big")
	ErrKeyTooBig          = errors.New("key too big")
	ErrBadKey             = errors.New("bad key")
	ErrBadChannelName     = errors.New("bad channel name")
	ErrBadRequest         = errors.New("bad request")
	ErrUnsupported        = errors.New("unsupported")
	ErrAuthRequired       = errors.New("authentication required")
	ErrAuthFailed         = errors.New("authentication failed")
	ErrOutOfMemory        = errors.New("out of memory")
	ErrTooManyConnections = errors.New("too many connections")
	ErrBusy               = errors.New("busy")
	ErrInternal           = errors.New("internal error")
	ErrNotPermitted       = errors.New("not permitted")
	ErrWrongKind          = errors.New("channel is of another kind")
	ErrEmpty              = errors.New("queue empty")
	ErrSubscribed         = errors.New("channel has subscribers")
	ErrChannelRemoved     = errors.New("channel removed")
	ErrNoSpace            = errors.New("no space left on the node's disk")
	ErrBadRange           = errors.New("bad range")
	ErrBadFilter          = errors.New("bad filter")
	ErrShuttingDown       = errors.New("node shutting down")
	ErrProtocol           = errors.New("protocol error")

	// ErrNoQuorum: the cluster metadata cannot change now (a join, a
	// channel's creation or removal, a member's removal): the metadata
	// group has no leader, or its leader cannot reach a majority of the
	// voters. The node's message says which; try again once enough
	// voters are back.
	ErrNoQuorum = errors.New("no quorum")
	// ErrRefused: the cluster refused a node for good (it belongs to
	// another cluster, its data directory is a copy of a member's, it has
	// another vBucket count); the node's message says why and what to do.
	ErrRefused = errors.New("refused")

	// ErrDisconnected: the connection to the node broke, or cannot be
	// made now. A write that got it may or may not have been applied.
	ErrDisconnected = errors.New("disconnected")
	// ErrUnavailable: a routed request found no node to take it within
	// its context: its vBucket has no active in the client's map, or the
	// active could not be reached. The request was not applied (a write
	// whose connection broke after it was sent gets ErrDisconnected
	// instead). The *Error names the vBucket and the node.
	ErrUnavailable = errors.New("unavailable")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
)

var statusErrors = map[wire.Status]error{
	wire.StatusNotFound: ErrNotFound, wire.StatusExists: ErrExists, wire.StatusNotMyVBucket: ErrNotMyVBucket,
	wire.StatusValueTooBig: ErrValueTooBig, wire.StatusKeyTooBig: ErrKeyTooBig, wire.StatusBadKey: ErrBadKey,
	wire.StatusBadChannelName: ErrBadChannelName, wire.StatusBadRequest: ErrBadRequest,
	wire.StatusUnsupported: ErrUnsupported, wire.StatusAuthRequired: ErrAuthRequired,
	wire.StatusAuthFailed: ErrAuthFailed, wire.StatusOutOfMemory: ErrOutOfMemory,
	wire.StatusTooManyConnections: ErrTooManyConnections, wire.StatusBusy: ErrBusy,
	wire.StatusInternal: ErrInternal, wire.StatusNotPermitted: ErrNotPermitted,
	wire.StatusFrameTooBig: ErrBadRequest, wire.StatusBadFrame: ErrProtocol,
	wire.StatusWrongKind: ErrWrongKind, wire.StatusEmpty: ErrEmpty, wire.StatusSubscribed: ErrSubscribed,
	wire.StatusChannelRemoved: ErrChannelRemoved, wire.StatusNoSpace: ErrNoSpace,
	wire.StatusBadRange: ErrBadRange, wire.StatusBadFilter: ErrBadFilter,
	wire.StatusShuttingDown: ErrShuttingDown, wire.StatusNoQuorum: ErrNoQuorum, wire.StatusRefused: ErrRefused,
}

// Error is an error status a node answered with.
type Error struct {
	Status  uint16 // the wire status code (docs/protocol.md)
	Message string // the node's explanation, may be empty
	Node    string // the node's address
	// Active is the address of the node that is active for the vBucket,
	// when the status is "not my vbucket" and the node knows it.
	Active string
	// Epoch and Revision are, for "not my vbucket", the vBucket's epoch and
	// the revision of the node's vBucket map (0 from an older node).
	Epoch, Revision uint64
	// VBucket is, for ErrNotMyVBucket and ErrUnavailable of a routed
	// request, the vBucket it was for; -1 otherwise.
	VBucket int

	unavailable bool   // ErrUnavailable: no node answered (Status is 0)
	mapBody     []byte // the GetClusterMap answer a "not my vbucket" carried
}

// Error implements error.
func (e *Error) Error() string {
	if e.unavailable {
		s := fmt.Sprintf("unavailable: vbucket %d", e.VBucket)
		if e.Message != "" {
			s += ": " + e.Message
		}
		if e.Node == "" {
			return s
		}
		return fmt.Sprintf("%s: %s", e.Node, s)
	}
	s := wire.Status(e.Status).String()
	if e.VBucket >= 0 && e.Status == uint16(wire.StatusNotMyVBucket) {
		s += fmt.Sprintf(" (vbucket %d)", e.VBucket)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Active != "" {
		s += " (active node: " + e.Active + ")"
	}
	return fmt.Sprintf("%s: %s", e.Node, s)
}

// Is matches the sentinel error of the status (ErrUnavailable for a
// routed request no node took).
func (e *Error) Is(target error) bool {
	if e.unavailable {
		return target == ErrUnavailable
	}
	return statusErrors[wire.Status(e.Status)] == target
}

func statusError(node string, st wire.Status, body []byte) error {
	e := &Error{Status: uint16(st), Node: node, VBucket: -1}
	if st == wire.StatusNotMyVBucket {
		d := wire.NewDecoder(body)
		e.Active = string(d.Bytes8())
		if d.Len() >= 16 {
			e.Epoch, e.Revision = d.U64(), d.U64()
			if m := d.Rest(); len(m) > 0 {
				e.mapBody = m // decoded by the router, which trusts nothing in it
			}
		}
		e.Message = "this node is not active for the vbucket"
	} else {
		e.Message = string(body)
	}
	return e
}
