package vbmap

import (
	"errors"
	"fmt"
	"slices"
)

// VBucket is one vBucket's entry in a Map.
type VBucket struct {
	// Chain is [active, replica1, …] as node ids. An empty chain means no
	// node holds the vBucket (every copy was lost).
	Chain []string
	// Epoch is raised at every change of the vBucket's active; a node that
	// sees a higher epoch than its own for a vBucket it is active for has
	// been replaced.
	Epoch uint64
	// Pending are the nodes a rebalance is building a copy on (state
	// Pending): filled by a stream from the active like a replica, but not
	// in the chain, so neither a failover nor a durable write counts on
	// them. Never in Chain; empty unless a rebalance is moving the vBucket.
	Pending []string
	// Frozen is set while a rebalance takes the vBucket over from its
	// active: the active takes no client requests (they are answered `not
	// my vbucket`) so that its last mutations drain to the new active
	// before the map that names it commits.
	Frozen bool
}

// Moving reports whether a rebalance is moving the vBucket (pending
// copies or a freeze).
func (v VBucket) Moving() bool { return len(v.Pending) > 0 || v.Frozen }

// Active returns the vBucket's active node id, "" when it has none.
func (v VBucket) Active() string {
	if len(v.Chain) == 0 {
		return ""
	}
	return v.Chain[0]
}

// Map is a revision of the vBucket map. It is immutable: never modify a
// Map, its VBuckets or their chains once built; make the next one with
// Next.
type Map struct {
	// Revision numbers the map; it grows with every change (in a cluster
	// it is the raft index of the command that made it).
	Revision uint64
	// Replicas is the cluster's replica count: chains are 1+Replicas long
	// when there are enough nodes.
	Replicas int
	// VBuckets has one entry per vBucket.
	VBuckets []VBucket
}

// Len is the number of vBuckets.
func (m *Map) Len() int { return len(m.VBuckets) }

// Active returns vb's active node id, "" when it has none or vb is out of
// range.
func (m *Map) Active(vb uint16) string {
	if int(vb) >= len(m.VBuckets) {
		return ""
	}
	return m.VBuckets[vb].Active()
}

// StateOf is the state the map gives node for vb: Active at the head of
// the chain (frozen or not), Replica further down, Pending for a copy
// being built, Dead when node holds none of these.
func (m *Map) StateOf(node string, vb uint16) State {
	if int(vb) >= len(m.VBuckets) {
		return Dead
	}
	v := &m.VBuckets[vb]
	switch i := slices.Index(v.Chain, node); {
	case i == 0:
		return Active
	case i > 0:
		return Replica
	}
	if slices.Contains(v.Pending, node) {
		return Pending
	}
	return Dead
}

// Moving counts the vBuckets a rebalance is moving (VBucket.Moving).
func (m *Map) Moving() int {
	n := 0
	for _, v := range m.VBuckets {
		if v.Moving() {
			n++
		}
	}
	return n
}

// Counts are how many vBuckets a node holds in a map.
type Counts struct {
	Active  int `json:"active"`
	Replica int `json:"replica"`
}

// Counts returns, per node id, how many vBuckets it is active and replica
// for. Nodes that hold nothing are absent.
func (m *Map) Counts() map[string]Counts {
	out := map[string]Counts{}
	for _, v := range m.VBuckets {
		for i, n := range v.Chain {
			c := out[n]
			if i == 0 {
				c.Active++
			} else {
				c.Replica++
			}
			out[n] = c
		}
	}
	return out
}

// Nodes returns the ids of every node that holds a vBucket (in a chain or
// as a pending copy), sorted.
func (m *Map) Nodes() []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range m.VBuckets {
		for _, list := range [2][]string{v.Chain, v.Pending} {
			for _, n := range list {
				if !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// ErrInvalid is wrapped by Validate's errors.
var ErrInvalid = errors.New("vbmap: invalid map")

// Validate checks the map's invariants: 1..65535 vBuckets, a replica
// count of 0..3, chains no longer than 1+Replicas, no empty id or node
// twice in a chain, an epoch above 0 wherever a chain is not empty,
// pending copies and freezes only where a chain is, at most 1+Replicas
// pending copies, none of them a chain member or named twice, and, when
// known is not nil, only nodes for which known returns true.
func (m *Map) Validate(known func(id string) bool) error {
	if len(m.VBuckets) < 1 || len(m.VBuckets) > 65535 {
		return fmt.Errorf("%w: %d vbuckets", ErrInvalid, len(m.VBuckets))
	}
	if m.Replicas < 0 || m.Replicas > MaxReplicas {
		return fmt.Errorf("%w: %d replicas (0..%d)", ErrInvalid, m.Replicas, MaxReplicas)
	}
	for vb, v := range m.VBuckets {
		if len(v.Chain) > 1+m.Replicas {
			return fmt.Errorf("%w: vbucket %d has a chain of %d for %d replicas", ErrInvalid, vb, len(v.Chain), m.Replicas)
		}
		if len(v.Chain) > 0 && v.Epoch == 0 {
			return fmt.Errorf("%w: vbucket %d has a chain but epoch 0", ErrInvalid, vb)
		}
		for i, n := range v.Chain {
			if n == "" {
				return fmt.Errorf("%w: vbucket %d has an empty node id in its chain", ErrInvalid, vb)
			}
			if slices.Index(v.Chain, n) != i {
				return fmt.Errorf("%w: vbucket %d holds node %s twice", ErrInvalid, vb, n)
			}
			if known != nil && !known(n) {
				return fmt.Errorf("%w: vbucket %d names unknown node %s", ErrInvalid, vb, n)
			}
		}
		if len(v.Chain) == 0 && v.Moving() {
			return fmt.Errorf("%w: vbucket %d has no chain but pending copies or a freeze", ErrInvalid, vb)
		}
		if len(v.Pending) > 1+m.Replicas {
			return fmt.Errorf("%w: vbucket %d has %d pending copies for %d replicas", ErrInvalid, vb, len(v.Pending), m.Replicas)
		}
		for i, n := range v.Pending {
			switch {
			case n == "":
				return fmt.Errorf("%w: vbucket %d has an empty pending node id", ErrInvalid, vb)
			case slices.Index(v.Pending, n) != i || slices.Contains(v.Chain, n):
				return fmt.Errorf("%w: vbucket %d holds node %s twice", ErrInvalid, vb, n)
			case known != nil && !known(n):
				return fmt.Errorf("%w: vbucket %d names unknown node %s", ErrInvalid, vb, n)
			}
		}
	}
	return nil
}

// MaxReplicas is the largest replica count.
const MaxReplicas = 3

// Next returns the map that follows m at revision rev with the given
// chains (one per vBucket, copied): a vBucket whose active changes gets
// the epoch above its previous one, the others keep theirs. m may be nil
// (the first map: every vBucket with a chain starts at epoch 1). Pending
// copies and freezes are not carried over: a map made by Next (a
// failover, a recovery) ends every move of a rebalance (Edit keeps them).
func (m *Map) Next(rev uint64, replicas int, chains [][]string) *Map {
	out := &Map{Revision: rev, Replicas: replicas, VBuckets: make([]VBucket, len(chains))}
	for vb, c := range chains {
		v := VBucket{Chain: slices.Clone(c)}
		var prev VBucket
		if m != nil && vb < len(m.VBuckets) {
			prev = m.VBuckets[vb]
		}
		v.Epoch = prev.Epoch
		if v.Active() != prev.Active() || (v.Epoch == 0 && len(c) > 0) {
			v.Epoch++
		}
		out.VBuckets[vb] = v
	}
	return out
}

// Edit is a change of one vBucket's entry made by a rebalance: its new
// chain (nil: unchanged), pending copies and freeze.
type Edit struct {
	VBucket uint16   `json:"vb"`
	Chain   []string `json:"chain,omitempty"`
	Pending []string `json:"pending,omitempty"`
	Frozen  bool     `json:"frozen,omitempty"`
}

// Edit returns the map that follows m at revision rev with the given
// edits applied (the other vBuckets unchanged): an edited vBucket takes
// the edit's pending copies and freeze, and its chain when the edit has
// one, with the epoch raised when the active changes. It does not
// validate: the caller does.
func (m *Map) Edit(rev uint64, edits []Edit) (*Map, error) {
	out := &Map{Revision: rev, Replicas: m.Replicas, VBuckets: slices.Clone(m.VBuckets)}
	for _, e := range edits {
		if int(e.VBucket) >= len(out.VBuckets) {
			return nil, fmt.Errorf("%w: an edit of vbucket %d of %d", ErrInvalid, e.VBucket, len(out.VBuckets))
		}
		v := &out.VBuckets[e.VBucket]
		prev := v.Active()
		if e.Chain != nil {
			v.Chain = slices.Clone(e.Chain)
		}
		v.Pending, v.Frozen = slices.Clone(e.Pending), e.Frozen
		if len(v.Pending) == 0 {
			v.Pending = nil
		}
		if v.Active() != prev || (v.Epoch == 0 && len(v.Chain) > 0) {
			v.Epoch++
		}
	}
	return out, nil
}

// Chains returns a copy of every vBucket's chain, to edit and pass to Next.
func (m *Map) Chains() [][]string {
	out := make([][]string, len(m.VBuckets))
	for vb, v := range m.VBuckets {
		out[vb] = slices.Clone(v.Chain)
	}
	return out
}

// Solo is the map of a single node that is active for all n vBuckets.
func Solo(node string, n int) *Map {
	chains := make([][]string, n)
	for vb := range chains {
		chains[vb] = []string{node}
	}
	return (*Map)(nil).Next(0, 0, chains)
}

// MaxNodeIDLen bounds the id of a node.
const MaxNodeIDLen = 64

// ValidNodeID reports whether id can name a node: 1..64 of A-Z a-z 0-9 .
// _ - (it goes into logs, file names and every map encoding).
func ValidNodeID(id string) bool {
	if len(id) == 0 || len(id) > MaxNodeIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
