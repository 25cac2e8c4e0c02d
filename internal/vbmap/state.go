package vbmap

import (
	"fmt"
	"sync/atomic"
)

// State is what a node does with one of its vBuckets. The values follow
// Couchbase's (active 1, replica 2, pending 3, dead 4); 0 is no state.
type State uint8

// vBucket states.
const (
	// Active: the node serves the vBucket's reads and writes and is the
	// source of its mutations.
	Active State = 1
	// Replica: the node holds a copy filled by a stream from the active;
	// it takes no client writes and does not expire records on its own
	// (the active sends the expiries).
	Replica State = 2
	// Pending: a copy being built by a move (rebalance) that will become
	// active at the takeover; like a replica, it takes no client writes.
	Pending State = 3
	// Dead: the node serves nothing of the vBucket. Data it may still hold
	// is kept until it is dropped explicitly.
	Dead State = 4
)

// String returns "active", "replica", "pending", "dead" or "none".
func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Replica:
		return "replica"
	case Pending:
		return "pending"
	case Dead:
		return "dead"
	case 0:
		return "none"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Valid reports whether s is one of the four states.
func (s State) Valid() bool { return s >= Active && s <= Dead }

// ParseState is the inverse of String for the four states.
func ParseState(s string) (State, error) {
	for st := Active; st <= Dead; st++ {
		if st.String() == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("vbmap: unknown vbucket state %q (want active, replica, pending or dead)", s)
}

// MarshalText implements encoding.TextMarshaler (for /status JSON).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// States is the state of every vBucket of an engine, safe for concurrent
// use: Get is one atomic load, so engines may read it on every request.
// A new States has every vBucket Active (a single node serves all of
// them); the node sets the states of its map before it serves.
type States struct {
	s []atomic.Uint32
}

// NewStates returns the states of n vBuckets, all Active.
func NewStates(n int) *States {
	st := &States{s: make([]atomic.Uint32, n)}
	for i := range st.s {
		st.s[i].Store(uint32(Active))
	}
	return st
}

// Len is the number of vBuckets.
func (st *States) Len() int { return len(st.s) }

// Get returns vb's state; 0 for a vBucket out of range.
func (st *States) Get(vb uint16) State {
	if int(vb) >= len(st.s) {
		return 0
	}
	return State(st.s[vb].Load())
}

// Set sets vb's state and returns the previous one. It fails for a
// vBucket out of range or a state that is not one of the four.
func (st *States) Set(vb uint16, s State) (State, error) {
	if int(vb) >= len(st.s) {
		return 0, fmt.Errorf("vbmap: vbucket %d out of range (%d vbuckets)", vb, len(st.s))
	}
	if !s.Valid() {
		return 0, fmt.Errorf("vbmap: set vbucket %d to %v: not a state", vb, s)
	}
	return State(st.s[vb].Swap(uint32(s))), nil
}

// NextActive returns the first Active vBucket at or after start (modulo
// Len), for writes placed round-robin; ok is false when none is Active.
func (st *States) NextActive(start uint32) (vb uint16, ok bool) {
	n := uint32(len(st.s))
	if n == 0 {
		return 0, false
	}
	for i := range n {
		v := (start + i) % n
		if State(st.s[v].Load()) == Active {
			return uint16(v), true
		}
	}
	return 0, false
}
