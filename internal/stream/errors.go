package stream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors that callers test with errors.Is.
var (
	// ErrClosed: the consumer was closed by its owner.
	ErrClosed = errors.New("stream: consumer closed")
	// ErrPeerClosed: the other side closed the connection.
	ErrPeerClosed = errors.New("stream: peer closed the connection")
	// ErrSilent: nothing was received for two NOOP intervals.
	ErrSilent = errors.New("stream: nothing received for 2 noop intervals")
	// ErrIdle: nothing was received for the idle timeout.
	ErrIdle = errors.New("stream: idle timeout")
	// ErrStalled: the producer had data to send but the consumer granted no
	// credit for the stall timeout.
	ErrStalled = errors.New("stream: consumer granted no credit")
	// ErrProtocol: the peer broke the stream protocol; the connection is closed.
	ErrProtocol = errors.New("stream: protocol violation")
	// ErrRefused: the producer refused to open the stream connection.
	ErrRefused = errors.New("stream: producer refused the stream")
	// ErrStreamExists: the vBucket already has a stream (open, requested or
	// closing) on this consumer.
	ErrStreamExists = errors.New("stream: vbucket already has a stream")
	// ErrNoStream: the vBucket has no stream on this consumer.
	ErrNoStream = errors.New("stream: vbucket has no stream")
	// ErrBadRequest: a stream request with SnapStart <= Start <= SnapEnd broken.
	ErrBadRequest = errors.New("stream: bad stream request")
)

// errShutdown is the cause given to a producer's streams when its context
// ends; it never reaches callers.
var errShutdown = errors.New("stream: producer shutting down")

// errClosedByConsumer is the cause given to a producer stream the consumer closed.
var errClosedByConsumer = errors.New("stream: closed by the consumer")

// ConnError reports the loss of one consumer connection and of every
// vBucket stream it carried. Handler.Lost receives exactly one per
// connection of a session; none of the VBuckets gets any further call.
type ConnError struct {
	Conn     int      // the connection's index in the session
	Addr     string   // the producer's address
	VBuckets []uint16 // the streams lost (requested, open or closing), ascending
	Err      error    // why the connection ended
}

// Error lists the connection, its lost vBuckets and the cause.
func (e *ConnError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream: connection %d to %s lost %d vbuckets", e.Conn, e.Addr, len(e.VBuckets))
	if len(e.VBuckets) > 0 {
		b.WriteString(" [")
		for i, vb := range e.VBuckets {
			if i == 16 {
				fmt.Fprintf(&b, " …+%d", len(e.VBuckets)-i)
				break
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.Itoa(int(vb)))
		}
		b.WriteByte(']')
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (e *ConnError) Unwrap() error { return e.Err }

// RollbackError is returned by a producer's Accept hook to make the
// consumer roll back to Seqno before asking again.
type RollbackError struct {
	Seqno uint64
}

// Error names the rollback point.
func (e *RollbackError) Error() string {
	return fmt.Sprintf("stream: consumer must roll back to seqno %d", e.Seqno)
}
