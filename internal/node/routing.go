package node

import (
	"fmt"
	"sync"

	"shoal/internal/vbmap"
)

// routing is the vBucket map the node applied last.
type routing struct {
	mu    sync.Mutex   // serialises applyMap and the fence
	table *vbmap.Table // the node's view of the applied map, under mu; nil before the first
	// served is the table the server answers by (the interim one during
	// a change, without the active vBuckets while fenced): the replication
	// producer checks stream requests against it, without waiting for a
	// change in progress.
	served vbmap.Holder
	// fenced is set while the node's lease has run out (fence): it then
	// serves none of its active vBuckets.
	fenced    bool
	fencedWhy string
}

// publish makes t the server's routing table, without its active
// vBuckets while the node is fenced. routing.mu is held.
func (n *Node) publish(t *vbmap.Table) {
	if t == nil && n.routing.fenced { // before any map: a lone server's view, fenced
		t = vbmap.NewTable(n.cfg.NodeID, vbmap.Solo(n.cfg.NodeID, n.cfg.VBuckets), nil)
	}
	if t != nil && n.routing.fenced {
		t = t.Override(func(_ uint16, s vbmap.State) vbmap.State {
			if s == vbmap.Active {
				return vbmap.Dead
			}
			return s
		})
	}
	n.srv.SetTable(t)
	n.routing.served.Store(t)
}

// fence stops (on) or resumes (off) the node's writes and reads for every
// vBucket it is active for, at once.
func (n *Node) fence(on bool, why string) {
	n.routing.mu.Lock()
	defer n.routing.mu.Unlock()
	if on {
		n.routing.fencedWhy = why
	}
	if n.routing.fenced == on {
		return
	}
	n.routing.fenced = on
	n.publish(n.routing.table)
	if on {
		n.log.Warn("fenced: this node serves none of its active vbuckets", "why", why)
	} else {
		n.log.Info("fence lifted: this node serves its active vbuckets again", "why", why)
	}
}

// servedTable is the table the server answers by now (nil before the
// first map).
func (n *Node) servedTable() *vbmap.Table { return n.routing.served.Load() }

// applyMap makes m the node's vBucket map, addrs giving the nodes' data
// addresses, and returns once every part of the node follows it. The
// order never lets this node take writes for a vBucket it has not
// finished becoming active for, and stops its writes where it is no
// longer active before anything else:
//
//  1. an interim routing table: writes stop where the node is no longer
//     active (vBuckets it becomes active for keep their old state);
//  2. replication stops for the vBuckets it becomes active for or no
//     longer holds a replica of (their streams are closed and waited
//     for; the feed's other vBuckets stream on), and feeds whose producer
//     changes stop;
//  3. the vBuckets it becomes active for start new histories in every
//     engine's failover logs (all or nothing: on failure the node goes
//     back to the previous map and the error is returned);
//  4. every engine's vBucket states;
//  5. the routing table of m: the server answers by it;
//  6. the feeds of its new replica vBuckets start: new feeds, and new
//     vBuckets requested on the running sessions of the others.
func (n *Node) applyMap(m *vbmap.Map, addrs map[string]string) error {
	n.routing.mu.Lock()
	defer n.routing.mu.Unlock()
	if m.Len() != n.cfg.VBuckets {
		return fmt.Errorf("map revision %d has %d vbuckets, this node %d", m.Revision, m.Len(), n.cfg.VBuckets)
	}
	old := n.routing.table
	stateOf := func(vb uint16) vbmap.State {
		if old == nil {
			return vbmap.Active // a lone server serves everything
		}
		return old.State(vb)
	}
	next := vbmap.NewTable(n.cfg.NodeID, m, addrs)
	var promoted []uint16
	demoting := false
	for vb := range uint16(m.Len()) {
		was, now := stateOf(vb), next.State(vb)
		switch {
		case now == vbmap.Active && was != vbmap.Active:
			promoted = append(promoted, vb)
		case was == vbmap.Active && now != vbmap.Active:
			demoting = true
		}
	}
	if demoting {
		isPromoted := make(map[uint16]bool, len(promoted))
		for _, vb := range promoted {
			isPromoted[vb] = true
		}
		n.publish(next.Override(func(vb uint16, s vbmap.State) vbmap.State {
			if isPromoted[vb] {
				return stateOf(vb)
			}
			return s
		}))
	}
	n.rep.reconcile(next, false)
	if err := n.rep.branch(promoted); err != nil {
		n.publish(old)
		if rerr := n.rep.reconcile(old, true); rerr != nil {
			n.log.Error("cannot restart replication after a failed map change", "err", rerr)
		}
		return fmt.Errorf("map revision %d not applied: %w", m.Revision, err)
	}
	for _, b := range n.rep.buckets {
		for vb := range uint16(m.Len()) {
			if s := next.State(vb); b.Engine.State(vb) != s {
				if err := b.Engine.SetState(vb, s); err != nil {
					panic(fmt.Sprintf("node: %s engine refused a state of its own range: %v", b.Name, err))
				}
			}
		}
	}
	n.publish(next)
	n.routing.table = next
	if len(promoted) > 0 {
		n.removeLeftovers()
	}
	if err := n.rep.reconcile(next, true); err != nil {
		return fmt.Errorf("map revision %d applied, but replication did not start: %w", m.Revision, err)
	}
	n.log.Info("vbucket map applied", "revision", m.Revision, "active", next.Actives(), "promoted", len(promoted))
	return nil
}

// table is the node's view of the map it applied last (nil before the
// first).
func (n *Node) table() *vbmap.Table {
	n.routing.mu.Lock()
	defer n.routing.mu.Unlock()
	return n.routing.table
}
