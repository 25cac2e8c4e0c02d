package wire

import "fmt"

// Status is the outcome carried in a response header. A body of a frame
// with a non-OK status is a UTF-8 message for people (it may be empty),
// except where docs/protocol.md says otherwise (StatusNotMyVBucket carries
// the address of the active node).
type Status uint16

// Status codes of protocol version 1. Values never change meaning.
const (
	StatusOK                 Status = 0
	StatusNotFound           Status = 1  // no such key / channel
	StatusExists             Status = 2  // CAS mismatch
	StatusNotMyVBucket       Status = 3  // this node is not active for the vBucket; body = active's address
	StatusValueTooBig        Status = 4  // value over --max-value-size
	StatusKeyTooBig          Status = 5  // key over MaxKeyLen
	StatusBadChannelName     Status = 6  // empty, too long, or outside [A-Za-z0-9_-]
	StatusBadRequest         Status = 7  // malformed body, empty key, bad argument
	StatusUnsupported        Status = 8  // unknown opcode or feature
	StatusAuthRequired       Status = 9  // the node has credentials and this connection has not authenticated
	StatusAuthFailed         Status = 10 // unknown name or bad proof
	StatusOutOfMemory        Status = 11 // --memory-limit reached (swarm's 407)
	StatusTooManyConnections Status = 12 // --max-connections reached; the node closes the connection
	StatusBusy               Status = 13 // try again later
	StatusInternal           Status = 14 // a bug or an I/O error on the node
	StatusNotPermitted       Status = 15 // the request needs the admin credential
	StatusFrameTooBig        Status = 16 // the header claimed more than MaxBody; the node closes the connection
	StatusWrongKind          Status = 17 // the channel exists with another kind
	StatusEmpty              Status = 18 // the queue has no record
	StatusSubscribed         Status = 19 // Pop on a channel that has subscribers
	StatusChannelRemoved     Status = 20 // ends a stream: its channel was removed
	StatusUpdatesLost        Status = 21 // a Mirror consumer fell behind: a refresh follows
	StatusNoSpace            Status = 22 // the disk is full
	StatusBadRange           Status = 23 // from > to
	StatusBadFilter          Status = 24 // the regular expression does not compile
	StatusStopped            Status = 25 // ends a stream the client stopped
	StatusShuttingDown       Status = 26 // the node is stopping
	StatusBadFrame           Status = 27 // bad magic or version; the node closes the connection
	StatusRollback           Status = 28 // replication: the consumer must roll back (body u64 seqno)
	StatusBadKey             Status = 29 // an empty key
	StatusNoQuorum           Status = 30 // the cluster metadata cannot change: a majority of the voters is unreachable
	StatusRefused            Status = 31 // a join refused for good (another cluster, a copied node id, another vBucket count)
)

var statusNames = map[Status]string{
	StatusOK: "ok", StatusNotFound: "not found", StatusExists: "exists (CAS mismatch)",
	StatusNotMyVBucket: "not my vbucket", StatusValueTooBig: "value too big", StatusKeyTooBig: "key too big",
	StatusBadChannelName: "bad channel name", StatusBadRequest: "bad request", StatusUnsupported: "unsupported",
	StatusAuthRequired: "auth required", StatusAuthFailed: "auth failed", StatusOutOfMemory: "out of memory",
	StatusTooManyConnections: "too many connections", StatusBusy: "busy", StatusInternal: "internal error",
	StatusNotPermitted: "not permitted", StatusFrameTooBig: "frame too big", StatusWrongKind: "wrong channel kind",
	StatusEmpty: "empty", StatusSubscribed: "channel has subscribers", StatusChannelRemoved: "channel removed",
	StatusUpdatesLost: "updates lost", StatusNoSpace: "no space left on device", StatusBadRange: "bad range",
	StatusBadFilter: "bad filter", StatusStopped: "stopped", StatusShuttingDown: "shutting down",
	StatusBadFrame: "bad frame", StatusRollback: "rollback", StatusBadKey: "bad key",
	StatusNoQuorum: "no quorum", StatusRefused: "refused",
}

// String returns the status in words, e.g. "not found".
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status(%d)", uint16(s))
}
