package vbmap

import "sync/atomic"

// Route is what a node knows of one vBucket, asked by the server for
// every request.
type Route struct {
	// State is this node's state for the vBucket.
	State State
	// Active is the vBucket's active node id and ActiveAddr its data
	// address ("" when unknown or when no node is active).
	Active     string
	ActiveAddr string
	// Epoch is the vBucket's epoch and Revision the map's.
	Epoch    uint64
	Revision uint64
}

// Table is one node's view of a Map: its own state for every vBucket and
// where each active is. Immutable, like the Map it holds.
type Table struct {
	self    string
	m       *Map
	states  []State
	addrs   map[string]string
	actives int
}

// NewTable returns node self's view of m; addrs maps node ids to data
// addresses (it is kept, not copied: do not modify it afterwards).
func NewTable(self string, m *Map, addrs map[string]string) *Table {
	t := &Table{self: self, m: m, states: make([]State, m.Len()), addrs: addrs}
	for vb := range t.states {
		t.states[vb] = m.StateOf(self, uint16(vb))
		if t.states[vb] == Active {
			t.actives++
		}
	}
	return t
}

// Actives is how many vBuckets this node is active for.
func (t *Table) Actives() int { return t.actives }

// Self is the id of the node whose view this is.
func (t *Table) Self() string { return t.self }

// Map is the map the table was built from.
func (t *Table) Map() *Map { return t.m }

// State is this node's state for vb (0 out of range).
func (t *Table) State(vb uint16) State {
	if int(vb) >= len(t.states) {
		return 0
	}
	return t.states[vb]
}

// Addr is a node's data address, "" when unknown.
func (t *Table) Addr(node string) string { return t.addrs[node] }

// Route answers for vb.
func (t *Table) Route(vb uint16) Route {
	if int(vb) >= len(t.states) {
		return Route{Revision: t.m.Revision}
	}
	v := t.m.VBuckets[vb]
	a := v.Active()
	return Route{State: t.states[vb], Active: a, ActiveAddr: t.addrs[a], Epoch: v.Epoch, Revision: t.m.Revision}
}

// Holder holds the current Table of a node; Load and Store are atomic.
// The zero value holds nothing (Load returns nil).
type Holder struct {
	p atomic.Pointer[Table]
}

// Load returns the current table.
func (h *Holder) Load() *Table { return h.p.Load() }

// Store makes t current.
func (h *Holder) Store(t *Table) { h.p.Store(t) }

// Override returns a copy of t whose state for each vBucket is f(vb,
// state): a node that applies a new map uses it for the interim table
// that stops writes where it is no longer active before it starts them
// where it becomes active.
func (t *Table) Override(f func(vb uint16, s State) State) *Table {
	o := &Table{self: t.self, m: t.m, states: make([]State, len(t.states)), addrs: t.addrs}
	for vb, s := range t.states {
		o.states[vb] = f(uint16(vb), s)
		if o.states[vb] == Active {
			o.actives++
		}
	}
	return o
}
