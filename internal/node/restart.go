package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"shoal/internal/meta"
)

// A node that restarts comes back with what its engines recovered: the
// log and a journaled queue from disk, kv from its last dump. After an
// unclean stop (kill -9, a crash, a power loss) that may be less than
// its replicas hold, and if it served its active vBuckets again its new
// histories would make the replicas roll back to it: every write since
// its last dump gone from every copy. So a restarted member holds its
// active vBuckets back (fenced, which also refuses the replicas' streams)
// until it has compared each with its replicas' copies, and hands those
// where a replica holds more to that replica — one map revision, the
// chains' first two members swapped, the epochs raised — becoming a
// replica of them itself (its copy then rolls back and catches up).

// holdBackWhy is the reason the cluster document gives while a restarted
// node compares its actives with their replicas.
const holdBackWhy = "restarted: comparing its active vBuckets with their replicas before serving them"

// handBackBehind compares this node's active vBuckets that have replicas
// with the replicas' copies (their high seqnos, summed over the engines,
// as a failover's promotion does) and hands each where a replica holds
// more to the replica that holds most. It returns once that map revision
// committed, when no replica holds more (or none answers), or with ctx.
func (n *Node) handBackBehind(ctx context.Context) {
	self := n.cfg.NodeID
	for said := false; ctx.Err() == nil; {
		st := n.cluster.known()
		if st.Map == nil {
			return
		}
		chains := st.Map.Chains()
		var mine []int
		asked := []string{self}
		for vb, ch := range chains {
			if len(ch) > 1 && ch[0] == self {
				mine = append(mine, vb)
				for _, r := range ch[1:] {
					if !slices.Contains(asked, r) {
						asked = append(asked, r)
					}
				}
			}
		}
		if len(mine) == 0 {
			return
		}
		seqnos := n.survivorSeqnos(st, asked)
		handed := 0
		for _, vb := range mine {
			best, most := self, sumSeqnos(seqnos[self], vb)
			for _, r := range chains[vb][1:] {
				if s := sumSeqnos(seqnos[r], vb); seqnos[r] != nil && s > most {
					best, most = r, s
				}
			}
			if best != self {
				chains[vb] = append([]string{best, self}, slices.DeleteFunc(slices.Clone(chains[vb][1:]), func(id string) bool { return id == best })...)
				handed++
			}
		}
		if handed == 0 {
			n.log.Info("restart: no replica holds more than this node of its active vbuckets; serving them", "active", len(mine), "replicas_answered", len(seqnos)-1, "replicas", len(asked)-1)
			return
		}
		pctx, cancel := context.WithTimeout(ctx, proposeTimeout)
		_, err := n.propose(pctx, &meta.Command{Op: meta.OpMap, ExpectRevision: st.Map.Revision, Chains: chains})
		cancel()
		if err == nil {
			n.log.Warn("restart: handed active vbuckets to replicas that hold more than this node (its data came back older than theirs: an unclean stop?); it is their replica now", "handed", handed, "active", len(mine))
			return
		}
		if !errors.Is(err, meta.ErrStaleMap) && !said {
			said = true
			n.log.Warn("restart: cannot hand active vbuckets to the replicas that hold more; still holding them back", "handed", handed, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sumSeqnos is the sum over the engines of a copy's high seqno of vb
// (what a failover's promotion compares).
func sumSeqnos(highs map[string][]uint64, vb int) uint64 {
	var s uint64
	for _, h := range highs {
		if vb < len(h) {
			s += h[vb]
		}
	}
	return s
}

// holdBack reports whether the node still holds its actives back after a
// restart, starting the comparison (once) now that it may serve: it holds
// a lease, so its map holds every failover committed before.
func (n *Node) holdBack(ctx context.Context, started *bool) bool {
	if !n.routing.holding.Load() {
		return false
	}
	if !*started && !n.activeWithReplicas() { // nothing to compare: no hold at all
		n.routing.holding.Store(false)
		return false
	}
	if !*started {
		*started = true
		go func() {
			n.handBackBehind(ctx)
			n.routing.holding.Store(false)
		}()
	}
	return true
}

// activeWithReplicas reports whether the map makes this node active for a
// vBucket that has replicas.
func (n *Node) activeWithReplicas() bool {
	m := n.cluster.known().Map
	if m == nil {
		return false
	}
	for _, ch := range m.Chains() {
		if len(ch) > 1 && ch[0] == n.cfg.NodeID {
			return true
		}
	}
	return false
}
