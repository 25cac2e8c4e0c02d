package bench

import (
	"context"
	"errors"
	"time"
)

// ErrUnsupported is returned (wrapped) by a target that cannot run an
// operation yet. Run stops at once when it sees it.
var ErrUnsupported = errors.New("not supported by this target yet")

// Op is the kind of one request.
type Op uint8

// The operations a target runs. Every workload is made of them.
const (
	OpGet    Op = iota + 1 // read Key; a missing key is a miss
	OpSet                  // store Value under Key
	OpPush                 // push Value on the queue Channel
	OpPop                  // pop one value from the queue Channel; empty is a miss
	OpAppend               // append Value at Time to the log Channel
	OpRange                // read Count records from Time on in the log Channel; none is a miss
	OpDrop                 // remove Channel and everything in it
)

var opNames = [...]string{OpGet: "get", OpSet: "set", OpPush: "push", OpPop: "pop", OpAppend: "append", OpRange: "range", OpDrop: "drop"}

// String returns the operation's name.
func (op Op) String() string {
	if int(op) < len(opNames) && opNames[op] != "" {
		return opNames[op]
	}
	return "op?"
}

// Request is one operation of a batch. Its slices belong to the caller and
// stay valid until Do returns; a target must not keep them.
type Request struct {
	Op      Op
	Channel string // shoal channel; Redis key of the list or stream (kv keys stand alone, as in redis-benchmark)
	Key     []byte // OpGet, OpSet
	Value   []byte // OpSet, OpPush, OpAppend
	Time    int64  // OpAppend: the record's timestamp, 0 for the target's clock; OpRange: the first timestamp
	Count   int    // OpRange: records to read, timestamps Time..Time+Count-1
}

// Outcome is the answer to one Request.
type Outcome struct {
	Latency time.Duration // from the start of the batch to this answer
	Miss    bool          // a Get of a missing key, a Pop of an empty queue, an empty Range
	Err     error         // the request failed
}

// Conn is one connection to a target, used by one goroutine at a time.
type Conn interface {
	// Do sends reqs as one pipelined batch (all of them in flight
	// together) and waits for every answer, filling out[i] for reqs[i]. A
	// failed request sets out[i].Err. Do returns an error only when the
	// connection cannot be used any more (every unanswered request then has
	// its Err set), or when it wraps ErrUnsupported.
	Do(ctx context.Context, reqs []Request, out []Outcome) error
	// Close closes the connection.
	Close() error
}

// Target is a server to load: a shoal node or a Redis server.
type Target interface {
	// Open opens one connection that will carry batches of up to pipeline
	// requests.
	Open(ctx context.Context, pipeline int) (Conn, error)
	// String names the target in results ("shoal 127.0.0.1:7400",
	// "redis://127.0.0.1:6379").
	String() string
}
