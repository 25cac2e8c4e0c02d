// Package engine is the one small interface that replication, dumps,
// rebalance and failover drive, whatever the channel kind: apply a mutation
// at a seqno, stream a vBucket from a seqno (snapshot, then live), drop a
// vBucket. The kv, queue and log engines each implement it.
//
// Seqnos: every engine keeps one sequence number per vBucket, shared by all
// channels of that engine. It grows by one for every mutation (put, remove,
// expiry, push, pop, append, channel removal) and a record remembers the
// seqno that last changed it. Seqnos of different engines are independent
// (docs/design.md explains why).
package engine

import (
	"context"
	"errors"
	"fmt"

	"shoal/internal/vbmap"
)

// Kind is a channel kind. Its values are the wire's channel kinds.
type Kind uint8

// Channel kinds.
const (
	KindKV    Kind = 1
	KindQueue Kind = 2
	KindLog   Kind = 3
)

// String returns "kv", "queue" or "log".
func (k Kind) String() string {
	switch k {
	case KindKV:
		return "kv"
	case KindQueue:
		return "queue"
	case KindLog:
		return "log"
	}
	return "unknown"
}

// Op is what a mutation does.
type Op uint8

// Mutation operations.
const (
	OpSet           Op = 1 // kv: Key now holds Value (with Expiry)
	OpDelete        Op = 2 // kv: Key removed (a tombstone)
	OpExpire        Op = 3 // kv: Key expired (a tombstone)
	OpPush          Op = 4 // queue: Value pushed; Seqno identifies the record
	OpPop           Op = 5 // queue: the record pushed at seqno Ref of this vBucket was popped; Ref 0 pops nothing and only advances the seqno (the end of a snapshot whose last mutations were pops)
	OpAppend        Op = 6 // log: (Timestamp, Value) appended
	OpRemoveChannel Op = 7 // any: every record of Channel in this vBucket removed
)

// String names the operation.
func (o Op) String() string {
	switch o {
	case OpSet:
		return "set"
	case OpDelete:
		return "delete"
	case OpExpire:
		return "expire"
	case OpPush:
		return "push"
	case OpPop:
		return "pop"
	case OpAppend:
		return "append"
	case OpRemoveChannel:
		return "remove-channel"
	}
	return "unknown"
}

// Mutation is one change to one vBucket. Byte slices may alias buffers of
// the caller; an implementation that keeps them must copy.
type Mutation struct {
	VBucket   uint16
	Seqno     uint64
	Op        Op
	Channel   string
	Key       []byte
	Value     []byte
	Expiry    int64  // kv: unix seconds after which the record is gone; 0 = never
	Timestamp uint64 // log: the record's timestamp
	Ref       uint64 // queue pop: seqno of the push it consumed
}

// Sink receives what Stream sends. A non-nil error from either method ends
// the stream with that error.
type Sink interface {
	// Snapshot announces that the mutations that follow, up to the next
	// marker, bring the consumer to a consistent view of the vBucket at seqno
	// end; until end is applied the consumer is mid-snapshot and must resume
	// from start if the stream breaks. Inside a snapshot mutations may come
	// in any seqno order; live mutations come in seqno order, each as its own
	// snapshot of one.
	Snapshot(start, end uint64) error
	// Mutation delivers one mutation.
	Mutation(m *Mutation) error
}

// Engine is implemented by every storage engine.
type Engine interface {
	// Kind returns the kind of channels the engine stores.
	Kind() Kind
	// HighSeqno returns the latest seqno of vb.
	HighSeqno(vb uint16) uint64
	// Apply applies a mutation made on the active node, keeping its seqno.
	// m.Seqno must be above HighSeqno(m.VBucket) except inside a snapshot
	// (see Sink), where any seqno in the snapshot's range is accepted.
	Apply(m *Mutation) error
	// Stream sends vb's mutations after seqno from: a snapshot of what the
	// engine holds, then live mutations, until ctx is done or sink fails.
	// It returns ErrRollback when from is above HighSeqno(vb).
	Stream(ctx context.Context, vb uint16, from uint64, sink Sink) error
	// DropVBucket discards every record of vb and resets its seqno to 0.
	// It leaves vb's state alone.
	DropVBucket(vb uint16) error
	// SetState sets vb's state. Apply is accepted only while vb is a
	// Replica or Pending (CheckApply); the kv engine expires records only
	// in an Active vBucket (elsewhere the active sends the expiries); the
	// queue and log engines place round-robin writes only in Active ones.
	// A new engine has every vBucket Active.
	SetState(vb uint16, s vbmap.State) error
	// State returns vb's state (0 for a vBucket out of range).
	State(vb uint16) vbmap.State
}

// Errors shared by the engines.
var (
	ErrRollback = errors.New("engine: consumer is ahead of this vbucket's history")
	// ErrNotReplica is returned by Apply for a vBucket that is not a
	// replica or pending copy on this node: a node never applies another
	// node's mutations to a vBucket it is active for (or holds no copy of).
	ErrNotReplica = errors.New("engine: vbucket is not a replica here")
	// ErrNoActiveVBucket is returned by a round-robin write (queue push,
	// log append without a routing key) on a node that is active for no
	// vBucket.
	ErrNoActiveVBucket = errors.New("engine: this node is active for no vbucket")
	// ErrNotActive is returned by a write to an explicit vBucket (queue
	// PushVB, log AppendVB) that is not Active on this node: the client
	// routed it by a map this node no longer follows.
	ErrNotActive = errors.New("engine: vbucket is not active here")
)

// CheckApply returns nil when a replicated mutation may be applied to vb in
// state s (Replica or Pending), else an error wrapping ErrNotReplica.
func CheckApply(vb uint16, s vbmap.State) error {
	if s == vbmap.Replica || s == vbmap.Pending {
		return nil
	}
	return fmt.Errorf("%w: vbucket %d is %v", ErrNotReplica, vb, s)
}

// Persister is implemented by an engine that can tell which of its writes
// are on disk. Marks are positions in the engine's own write order, so a
// write is durable once the synced mark reaches the written mark read
// after it returned. A replicator uses them to tell its active what it has
// fsynced (stream.PersistHandler).
type Persister interface {
	// Marks returns the mark after every write returned so far and the
	// mark the last successful fsync covered; ok is false when the engine
	// does not fsync its writes (the queue engine in memory mode), so that
	// none is ever durable.
	Marks() (written, synced uint64, ok bool)
	// SyncedMoved returns a channel closed once the synced mark may have
	// grown: at least at every periodic fsync (interval mode). Writes in
	// fsync-always mode return fsynced, so an engine may leave those out;
	// the channel of an engine without periodic fsyncs may never close.
	SyncedMoved() <-chan struct{}
}
