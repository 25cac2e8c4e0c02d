package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/vbmap"
	"shoal/internal/wire"
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
	fenced bool
	// holding is set while a restarted node compares its active vBuckets
	// with their replicas before it serves them (handBackBehind).
	holding   atomic.Bool
	fencedWhy string
	// fencedAt is when the fence went up (unix nanoseconds; 0: not
	// fenced) and fencedNote its reason, readable without mu (which a map
	// change holds for long).
	fencedAt   atomic.Int64
	fencedNote atomic.Pointer[string]
	// peerFenced are the vBuckets this node is active for in its map
	// whose epoch a peer's newer map (peerRev) raised: they serve nothing
	// until this node applies a map at least that new (fenceFromPeer).
	peerFenced map[uint16]bool
	peerRev    uint64
	peerAsking atomic.Bool // a peer's map is being fetched
	// drops are the maps applied whose copies left are not dropped yet,
	// oldest first, with when each was applied; a timer is set while
	// there are any (scheduleDrops). Under mu.
	drops []appliedMap
	// appliedAt is when the node last published the table of a new map
	// (unix nanoseconds): a takeover's freeze holds from freezeGrace after.
	appliedAt atomic.Int64
}

// appliedMap is a map and when the node applied it.
type appliedMap struct {
	m  *vbmap.Map
	at time.Time
}

// publish makes t the server's routing table, without its active
// vBuckets while the node is fenced, and without those a takeover froze.
// routing.mu is held.
func (n *Node) publish(t *vbmap.Table) {
	if t == nil && n.routing.fenced { // before any map: a lone server's view, fenced
		t = vbmap.NewTable(n.cfg.NodeID, vbmap.Solo(n.cfg.NodeID, n.cfg.VBuckets), nil)
	}
	if t != nil && (n.routing.fenced || len(n.routing.peerFenced) > 0 || t.Map().Moving() > 0) {
		all, some, vbs := n.routing.fenced, n.routing.peerFenced, t.Map().VBuckets
		t = t.Override(func(vb uint16, s vbmap.State) vbmap.State {
			if s == vbmap.Active && (all || some[vb] || vbs[vb].Frozen) {
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
	if on {
		n.routing.fencedNote.Store(&why)
		n.routing.fencedAt.Store(time.Now().UnixNano())
	} else {
		n.routing.fencedAt.Store(0)
	}
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
//  5. the routing table of m: the server answers by it (without the
//     vBuckets a takeover froze: their engines are Dead meanwhile);
//  6. the copies of vBuckets m gives the node no part in are dropped a
//     moment later (scheduleDrops), when the node is an active member;
//  7. the feeds of its new replica and pending vBuckets start: new feeds,
//     and new vBuckets requested on the running sessions of the others.
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
	handedOver := map[uint16]bool{}
	for vb := range uint16(m.Len()) {
		was, now := stateOf(vb), next.State(vb)
		switch {
		case now == vbmap.Active && was != vbmap.Active:
			promoted = append(promoted, vb)
		case was == vbmap.Active && now != vbmap.Active:
			demoting = true
			if now == vbmap.Replica && old != nil && old.Map().VBuckets[vb].Frozen {
				handedOver[vb] = true
			}
		}
	}
	n.rep.handedOverVBs.Store(&handedOver)
	defer n.rep.handedOverVBs.Store(nil)
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
			s := next.State(vb)
			if s == vbmap.Active && m.VBuckets[vb].Frozen {
				s = vbmap.Dead // no pop, no round-robin write, no expiry while it drains
			}
			if b.Engine.State(vb) != s {
				if err := b.Engine.SetState(vb, s); err != nil {
					panic(fmt.Sprintf("node: %s engine refused a state of its own range: %v", b.Name, err))
				}
			}
		}
	}
	if m.Revision >= n.routing.peerRev {
		n.routing.peerFenced = nil // this map is at least as new as the peer's that fenced them
	}
	n.publish(next)
	n.routing.appliedAt.Store(time.Now().UnixNano())
	n.routing.table = next
	if len(promoted) > 0 {
		n.removeLeftovers()
	}
	n.scheduleDrops(m)
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

// peerAhead is told that peer from has applied map revision rev, newer
// than this node's: it fetches that peer's map and fences the vBuckets
// whose epoch it raised (fenceFromPeer). One fetch at a time.
func (n *Node) peerAhead(from string, rev uint64) {
	if !n.routing.peerAsking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer n.routing.peerAsking.Store(false)
		st := n.cluster.known()
		m, ok := st.Node(from)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		body, err := n.cluster.peers.call(ctx, m.Addr, wire.OpGetClusterMap, nil)
		if err != nil {
			n.log.Debug("cannot read a peer's newer map", "node", from, "revision", rev, "err", err)
			return
		}
		peerMap, err := decodeClusterMap(body)
		if err != nil {
			n.log.Warn("a peer's map does not decode", "node", from, "err", err)
			return
		}
		n.fenceFromPeer(peerMap, from)
	}()
}

// fenceFromPeer fences, at once, the vBuckets this node is active for
// whose epoch peerMap — newer than this node's map — raised to another
// active: a failover this node has not applied yet (it may not hear the
// leader) gave them away. They serve again, or not, by the map this node
// applies next.
func (n *Node) fenceFromPeer(peerMap *vbmap.Map, from string) {
	n.routing.mu.Lock()
	defer n.routing.mu.Unlock()
	t := n.routing.table
	if t == nil || peerMap.Revision <= t.Map().Revision || peerMap.Len() != t.Map().Len() {
		return
	}
	mine := t.Map()
	var fenced []uint16
	for vb := range peerMap.Len() {
		v := uint16(vb)
		if t.State(v) == vbmap.Active && !n.routing.peerFenced[v] && peerMap.VBuckets[vb].Epoch > mine.VBuckets[vb].Epoch && peerMap.Active(v) != n.cfg.NodeID {
			fenced = append(fenced, v)
		}
	}
	if len(fenced) == 0 {
		return
	}
	if n.routing.peerFenced == nil {
		n.routing.peerFenced = map[uint16]bool{}
	}
	for _, vb := range fenced {
		n.routing.peerFenced[vb] = true
	}
	n.routing.peerRev = max(n.routing.peerRev, peerMap.Revision)
	n.publish(t)
	n.log.Warn("a peer's newer map raised the epoch of vbuckets this node is active for: they take no writes until this node applies that map",
		"peer", from, "peer_revision", peerMap.Revision, "revision", mine.Revision, "vbuckets", len(fenced))
}

// decodeClusterMap decodes a GetClusterMap answer's map (the members
// skipped).
func decodeClusterMap(b []byte) (*vbmap.Map, error) {
	d := wire.NewDecoder(b)
	for range int(d.U16()) {
		d.Bytes8()
		d.Bytes8()
		d.Bytes8()
		d.U8()
		d.Bytes8()
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("the members of a cluster map: %w", err)
	}
	m, _, err := vbmap.DecodeMap(d.Rest())
	return m, err
}

// fencedFor returns how long the node has been fenced, and why (0 when it
// is not).
func (n *Node) fencedFor(now time.Time) (time.Duration, string) {
	at := n.routing.fencedAt.Load()
	if at == 0 {
		return 0, ""
	}
	why := ""
	if p := n.routing.fencedNote.Load(); p != nil {
		why = *p
	}
	return now.Sub(time.Unix(0, at)), why
}
