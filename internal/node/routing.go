package node

import (
	"fmt"
	"sync"

	"shoal/internal/vbmap"
)

// routing is the vBucket map the node applied last.
type routing struct {
	mu    sync.Mutex   // serialises applyMap
	table *vbmap.Table // the node's view of the applied map, under mu; nil before the first
	// served is the table the server answers by (the interim one during
	// a change): the replication producer checks stream requests against
	// it, without waiting for a change in progress.
	served vbmap.Holder
}

// setTable makes t the table the server answers by and the producer
// checks streams against.
func (n *Node) setTable(t *vbmap.Table) {
	n.srv.SetTable(t)
	n.routing.served.Store(t)
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
		n.setTable(next.Override(func(vb uint16, s vbmap.State) vbmap.State {
			if isPromoted[vb] {
				return stateOf(vb)
			}
			return s
		}))
	}
	n.rep.reconcile(next, false)
	if err := n.rep.branch(promoted); err != nil {
		n.setTable(old)
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
	n.setTable(next)
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
