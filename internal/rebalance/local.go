package rebalance

import (
	"slices"

	"shoal/internal/vbmap"
)

// Local is one node's side of the moves: the pending copies it builds
// and the vBuckets it froze, each held by a lease (Action.Lease) that
// the committed map ends. A pure record: the node asks it what to serve
// (Frozen) and, at every tick, what to undo (Tick); it does the I/O.
// Not safe for concurrent use.
type Local struct {
	self    string
	pending map[uint16]hold // vBucket -> the pending copy's source and lease
	frozen  map[uint16]hold // vBucket -> the freeze's lease
}

type hold struct {
	source   string
	deadline int64 // ms
	epoch    uint64
}

// NewLocal returns node self's record, holding nothing.
func NewLocal(self string) *Local {
	return &Local{self: self, pending: map[uint16]hold{}, frozen: map[uint16]hold{}}
}

// Build records a pending copy of vb from source until now+lease.
func (l *Local) Build(vb uint16, source string, now, lease int64) {
	l.pending[vb] = hold{source: source, deadline: now + lease}
}

// Cancel forgets vb's pending copy (the node drops it); it reports
// whether there was one.
func (l *Local) Cancel(vb uint16) bool {
	_, ok := l.pending[vb]
	delete(l.pending, vb)
	return ok
}

// Freeze records that the node stopped taking writes for vb, its
// active at epoch, until now+lease.
func (l *Local) Freeze(vb uint16, epoch uint64, now, lease int64) {
	l.frozen[vb] = hold{deadline: now + lease, epoch: epoch}
}

// Thaw forgets vb's freeze (the node takes writes again); it reports
// whether there was one.
func (l *Local) Thaw(vb uint16) bool {
	_, ok := l.frozen[vb]
	delete(l.frozen, vb)
	return ok
}

// Frozen reports whether the node must not take writes for vb.
func (l *Local) Frozen(vb uint16) bool {
	_, ok := l.frozen[vb]
	return ok
}

// Pending returns the vBuckets the node builds pending copies of, sorted,
// with their sources.
func (l *Local) Pending() (vbs []uint16, sources []string) {
	for vb := range l.pending {
		vbs = append(vbs, vb)
	}
	slices.Sort(vbs)
	for _, vb := range vbs {
		sources = append(sources, l.pending[vb].source)
	}
	return vbs, sources
}

// MapApplied ends what the committed map m settles: a pending copy of a
// vBucket whose chain now names the node is a copy of the map's (the
// node's feeds take it over); a freeze of a vBucket whose epoch rose is
// over (the map gave it another active; the node follows the map). A
// freeze whose epoch did not rise stays: the move has not committed.
func (l *Local) MapApplied(m *vbmap.Map) {
	for vb := range l.pending {
		if int(vb) < m.Len() && slices.Contains(m.VBuckets[vb].Chain, l.self) {
			delete(l.pending, vb)
		}
	}
	for vb, h := range l.frozen {
		if int(vb) >= m.Len() || m.VBuckets[vb].Epoch > h.epoch || m.Active(vb) != l.self {
			delete(l.frozen, vb)
		}
	}
}

// Tick returns, at now, the pending copies to drop and the freezes to
// lift whose leases ran out (no commit came: the leader that asked is
// gone or gave up), and forgets them.
func (l *Local) Tick(now int64) (drop, thaw []uint16) {
	for vb, h := range l.pending {
		if now >= h.deadline {
			drop = append(drop, vb)
			delete(l.pending, vb)
		}
	}
	for vb, h := range l.frozen {
		if now >= h.deadline {
			thaw = append(thaw, vb)
			delete(l.frozen, vb)
		}
	}
	slices.Sort(drop)
	slices.Sort(thaw)
	return drop, thaw
}
