// Package rebalance decides rebalances: pure functions of the vBucket map
// and of what the nodes report, no clock, no goroutine, no I/O. Plan turns
// the current map and the nodes that should hold data into a target map
// with few vBucket moves; Mover sequences the moves (build a pending copy
// by a stream, take over, commit, drop) from ticks and observations, and
// says what the node must do next.
package rebalance

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"shoal/internal/vbmap"
)

// ErrPlan is wrapped by Plan's errors.
var ErrPlan = errors.New("rebalance: cannot plan")

// Move is the change of one vBucket's chain.
type Move struct {
	// VBucket is the vBucket moved.
	VBucket uint16
	// From is its chain in the current map, To its chain in the target.
	From, To []string
	// Build are the nodes of To not in From: each gets a copy built as a
	// pending vBucket by a stream from the active (in To's order).
	Build []string
	// Drop are the nodes of From not in To: their copies are dropped once
	// the map naming To has committed.
	Drop []string
	// Takeover is set when the active changes (To[0] != From[0]): the old
	// active stops taking writes, the rest drains, then To[0] becomes
	// active with a higher epoch.
	Takeover bool
}

// Result is a planned rebalance.
type Result struct {
	// Chains are the target chains, one per vBucket: pass them to the
	// current map's Next (a vBucket whose active changes gets a higher
	// epoch).
	Chains [][]string
	// Moves are the vBuckets whose chain changes, in vBucket order.
	Moves []Move
	// Built counts the copies to build (Σ len(Build)), Takeovers the
	// moves that change the active.
	Built, Takeovers int
	// MinBuilt is a lower bound on the copies any map with the target's
	// per-node counts must build: the larger of Σ over the nodes of
	// max(0, copies in the target − copies held now) and Σ over the
	// vBuckets of max(0, k − copies held now by the nodes).
	MinBuilt int
	// MinTakeovers is a lower bound on the moves of the active any map
	// with the target's per-node active counts needs: the larger of
	// Σ max(0, actives in the target − actives held now) and the number
	// of vBuckets whose active is not among the nodes.
	MinTakeovers int
	// Fallback is set when the plan could not reach the target counts
	// from the current chains and used Place's chains instead (every
	// rule holds, the moves are not few).
	Fallback bool
}

// Plan computes the target map of a rebalance: the current map cur, the
// nodes that should hold data (their zones) and the replica count. It is
// a pure function of its arguments (the nodes' order does not matter).
//
// The target meets Place's rules on counts: every chain has
// k = min(1+replicas, len(nodes)) distinct nodes; per node, the number of
// actives and the number of copies (actives plus replicas) are those of
// Place's map for the same nodes (so actives differ by at most 1 and,
// without zones, copies too), given within each zone to the nodes that
// hold the most now; every chain's copies are spread over the zones as
// Place spreads them (between min(size, h-1) and min(size, h) copies per
// zone, its first copies in different zones). Place's spreading of the
// pairs and of replica1 is not sought: a rebalance keeps what it can.
//
// Of the maps with those counts, it looks for one that keeps the most of
// the current copies and actives: each node over its count gives copies
// to nodes under theirs, chains short of copies (a node removed or failed
// over, replicas raised) are filled by nodes under their count, a
// vBucket keeps its active unless that node has too many. Result.Built
// and Result.MinBuilt say how close it came. The bounds, checked by
// property tests over random maps and changes (nodes added, removed and
// failed over, replica counts changed): without zones, Built ≤
// MinBuilt + MinBuilt/5 + 4 and Takeovers ≤ MinTakeovers +
// MinTakeovers/2 + 2; with zones, twice the lower bounds plus 4 and 2,
// unless Result.Fallback. In practice both are the lower bounds: in
// about 99 % of random cases (the rest mostly lower the replica count),
// and for every join and leave of one node tested
// (TestPlanJoinsMeetTheBounds).
//
// For one node joining (BenchmarkPlanJoin) it takes a few milliseconds
// for 1024 vBuckets and under 0.1 s (44 MB allocated) for 65535 over 17
// nodes, and builds exactly MinBuilt copies with MinTakeovers takeovers.
// It fails (wrapping ErrPlan) when cur is nil or invalid, or Place fails
// for the nodes (none, too many, ids given twice, replicas out of range).
func Plan(cur *vbmap.Map, nodes []vbmap.Node, replicas int) (Result, error) {
	if cur == nil {
		return Result{}, fmt.Errorf("%w: no current map", ErrPlan)
	}
	if err := cur.Validate(nil); err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	ideal, err := vbmap.Place(nodes, cur.Len(), replicas)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	p := newPlanner(cur, nodes, replicas, ideal)
	chains, ok := p.run()
	var res Result
	if !ok {
		chains, res.Fallback = ideal, true
	}
	res.Chains = chains
	res.MinBuilt, res.MinTakeovers = p.bounds(chains)
	for vb, to := range chains {
		from := cur.VBuckets[vb].Chain
		if slices.Equal(from, to) {
			continue
		}
		mv := Move{VBucket: uint16(vb), From: slices.Clone(from), To: slices.Clone(to)}
		for _, b := range to {
			if !slices.Contains(from, b) {
				mv.Build = append(mv.Build, b)
			}
		}
		for _, b := range from {
			if !slices.Contains(to, b) {
				mv.Drop = append(mv.Drop, b)
			}
		}
		mv.Takeover = len(from) == 0 || from[0] != to[0]
		res.Built += len(mv.Build)
		if mv.Takeover {
			res.Takeovers++
		}
		res.Moves = append(res.Moves, mv)
	}
	return res, nil
}

// planner holds one Plan computation. Nodes are numbered 0..n-1 in id
// order.
type planner struct {
	n, k, vbs int
	ids       []string
	index     map[string]int
	zoneOf    []int
	zones     [][]int
	lo, hi    []int   // zone -> bounds on a chain's copies in it
	lower     bool    // some zone has a lower bound above 0
	trimmed   bool    // copies held now were shed because chains were too long
	qc, qa    []int   // node -> target copies, actives
	groups    [][]int // nodes that are alike (a zone; all without zones)
	cur       [][]int
	curActive []int  // vb -> its current active, -1 when not one of the nodes
	curA      []int  // node -> actives it holds now
	orphanIn  []int  // node -> chains it is in whose active must change (countOrphans)
	cursor    []int  // node -> the chain of its last direct hand-over (shed)
	handed    []int  // node -> direct hand-overs in chains it is the current active of (shed)
	noOrphan  []bool // node -> none of its chains whose active must change can take a copy of it (shed)
	curC      []int  // node -> copies it holds now
	orphans   int    // vBuckets whose active is not one of the nodes
}

func newPlanner(cur *vbmap.Map, nodes []vbmap.Node, replicas int, ideal [][]string) *planner {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b vbmap.Node) int { return strings.Compare(a.ID, b.ID) })
	n := len(sorted)
	p := &planner{n: n, k: min(1+replicas, n), vbs: cur.Len(), ids: make([]string, n), index: map[string]int{}, zoneOf: make([]int, n)}
	named := map[string]int{}
	for i, nd := range sorted {
		p.ids[i] = nd.ID
		p.index[nd.ID] = i
		z, ok := named[nd.Zone]
		if !ok || nd.Zone == "" {
			z = len(p.zones)
			p.zones = append(p.zones, nil)
			if nd.Zone != "" {
				named[nd.Zone] = z
			}
		}
		p.zoneOf[i] = z
		p.zones[z] = append(p.zones[z], i)
	}
	if len(p.zones) == 1 { // one zone is no zone
		p.zones = p.zones[:0]
		for i := range n {
			p.zoneOf[i] = i
			p.zones = append(p.zones, []int{i})
		}
	}
	p.lo, p.hi = vbmap.ZoneBounds(p.zones, p.k)
	for z := range p.zones {
		p.lower = p.lower || p.lo[z] > 0
	}
	// The current chains, restricted to the nodes.
	p.cur = make([][]int, p.vbs)
	p.curActive = make([]int, p.vbs)
	curC, curA := make([]int, n), make([]int, n)
	orphans := 0
	for vb, v := range cur.VBuckets {
		p.curActive[vb] = -1
		for i, id := range v.Chain {
			b, ok := p.index[id]
			if !ok {
				if i == 0 {
					orphans++
				}
				continue
			}
			p.cur[vb] = append(p.cur[vb], b)
			curC[b]++
			if i == 0 {
				curA[b]++
				p.curActive[vb] = b
			}
		}
		if len(v.Chain) == 0 {
			orphans++
		}
	}
	// Place's per-node counts, given within each zone to the nodes that
	// hold the most now (the nodes of a zone are interchangeable).
	idealC, idealA := make([]int, n), make([]int, n)
	for _, c := range ideal {
		for i, id := range c {
			b := p.index[id]
			idealC[b]++
			if i == 0 {
				idealA[b]++
			}
		}
	}
	p.qc, p.qa = make([]int, n), make([]int, n)
	groups := p.zones
	if len(p.zones) == n {
		// No zones: every node is a zone of its own, and all are alike.
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		groups = [][]int{all}
	}
	p.groups = groups
	for _, zn := range groups {
		type pair struct{ c, a int }
		var quotas []pair
		for _, b := range zn {
			quotas = append(quotas, pair{idealC[b], idealA[b]})
		}
		slices.SortStableFunc(quotas, func(x, y pair) int {
			if x.c != y.c {
				return y.c - x.c
			}
			return y.a - x.a
		})
		holders := slices.Clone(zn)
		slices.SortStableFunc(holders, func(x, y int) int {
			if curC[x] != curC[y] {
				return curC[y] - curC[x]
			}
			return curA[y] - curA[x]
		})
		for i, b := range holders {
			p.qc[b], p.qa[b] = quotas[i].c, quotas[i].a
		}
	}
	p.curA, p.curC, p.orphans = curA, curC, orphans
	return p
}

// bounds returns the lower bounds of Result.MinBuilt and
// Result.MinTakeovers for maps with the per-node counts of chains.
func (p *planner) bounds(chains [][]string) (built, takeovers int) {
	tc, ta := make([]int, p.n), make([]int, p.n)
	for _, c := range chains {
		for i, id := range c {
			b := p.index[id]
			tc[b]++
			if i == 0 {
				ta[b]++
			}
		}
	}
	holes, sumA := 0, 0
	for _, c := range p.cur {
		holes += max(0, p.k-len(c))
	}
	for b := range p.n {
		built += max(0, tc[b]-p.curC[b])
		sumA += max(0, ta[b]-p.curA[b])
	}
	return max(built, holes), max(sumA, p.orphans)
}

// run computes the target chains; ok is false when it could not reach
// the counts within the rules.
func (p *planner) run() ([][]string, bool) {
	chains := make([][]int, p.vbs)
	cnt := make([]int, p.n)
	for vb, c := range p.cur {
		chains[vb] = slices.Clone(c)
		for _, b := range c {
			cnt[b]++
		}
	}
	zc := func(c []int, z int) (m int) {
		for _, b := range c {
			if p.zoneOf[b] == z {
				m++
			}
		}
		return m
	}
	// Too long chains and zones with too many copies shed the copies of
	// the nodes most over their counts (replicas before the active): one
	// copy per chain and pass, only copies of nodes over their counts
	// while there are such, then any.
	for strict := true; ; {
		dropped := false
		for vb, c := range chains {
			victim := -1
			for i, b := range c {
				if len(c) <= p.k && zc(c, p.zoneOf[b]) <= p.hi[p.zoneOf[b]] {
					continue
				}
				if strict && cnt[b] <= p.qc[b] {
					continue
				}
				if victim < 0 {
					victim = i
					continue
				}
				v := c[victim]
				isA, vA := p.curActive[vb] == b, p.curActive[vb] == v
				if isA != vA {
					if vA {
						victim = i
					}
					continue
				}
				if cnt[b]-p.qc[b] > cnt[v]-p.qc[v] {
					victim = i
				}
			}
			if victim >= 0 {
				cnt[c[victim]]--
				p.trimmed = true
				chains[vb] = slices.Delete(c, victim, victim+1)
				dropped = true
			}
		}
		if !dropped {
			if !strict {
				break
			}
			strict = false
		}
	}
	// fits reports whether chain c may take node u in place of node out
	// (-1: none) within the zone bounds (the lower bounds only once the
	// chain is full).
	fits := func(c []int, u, out int) bool {
		if slices.Contains(c, u) {
			return false
		}
		zu := p.zoneOf[u]
		add := zc(c, zu) + 1
		if out >= 0 && p.zoneOf[out] == zu {
			add--
		}
		if add > p.hi[zu] {
			return false
		}
		size := len(c) + 1
		if out >= 0 {
			size--
		}
		if !p.lower {
			return true
		}
		// The copies still to come must be able to lift every zone to its
		// lower bound.
		need := 0
		for z := range p.zones {
			m := zc(c, z)
			if z == zu {
				m++
			}
			if out >= 0 && p.zoneOf[out] == z {
				m--
			}
			need += max(0, p.lo[z]-m)
		}
		return need <= p.k-size
	}
	// Fill the short chains: nodes under their counts first (the most
	// under first), else any node that fits (it sheds a copy later).
	p.countOrphans(chains)
	filled := make([][]int, p.n) // node -> the chains it was given here
	for vb := range chains {
		for len(chains[vb]) < p.k {
			best := -1
			for u := range p.n {
				if !fits(chains[vb], u, -1) {
					continue
				}
				if best < 0 || p.better(chains[vb], vb, u, best, cnt) {
					best = u
				}
			}
			if best < 0 {
				return nil, false
			}
			if cnt[best] >= p.qc[best] && p.fillPath(chains, cnt, filled, vb, fits) {
				continue
			}
			chains[vb] = append(chains[vb], best)
			filled[best] = append(filled[best], vb)
			cnt[best]++
			if p.orphan(chains[vb], vb) {
				p.orphanIn[best]++
			}
		}
	}
	p.countOrphans(chains) // the paths moved copies
	// Nodes over their counts hand copies to nodes under theirs: a
	// replica first, the active only when no replica can go.
	for round := 0; ; round++ {
		if round > 4*p.vbs*p.k+16 {
			return nil, false
		}
		over := -1
		for b := range p.n {
			if cnt[b] > p.qc[b] && (over < 0 || cnt[b]-p.qc[b] > cnt[over]-p.qc[over]) {
				over = b
			}
		}
		if over < 0 {
			break
		}
		if !p.shed(chains, cnt, over, fits) {
			return nil, false
		}
	}
	for _, c := range chains {
		if !p.zonesOK(c) {
			return nil, false
		}
	}
	p.spreadActiveCounts(chains)
	acts, ok := p.actives(chains)
	if !ok {
		return nil, false
	}
	out := make([][]string, p.vbs)
	for vb, c := range chains {
		out[vb] = p.order(vb, c, acts[vb])
	}
	return out, true
}

// fillPath fills one hole of chain vb when no node under its count
// fits it: vb takes a node u at its count, a chain that was given u here
// takes another node instead, …, ending at a node under its count (a
// breadth-first search over the copies given so far). It reports
// whether it found one; nothing changes when it did not.
func (p *planner) fillPath(chains [][]int, cnt []int, filled [][]int, vb int, fits func([]int, int, int) bool) bool {
	type hop struct {
		vb, prev int // chain vb takes this node in place of prev (-1: in its hole)
		seen     bool
	}
	hops := make([]hop, p.n)
	var queue []int
	for u := range p.n {
		if fits(chains[vb], u, -1) {
			hops[u] = hop{vb: vb, prev: -1, seen: true}
			queue = append(queue, u)
		}
	}
	for h := 0; h < len(queue); h++ {
		u := queue[h]
		if cnt[u] < p.qc[u] {
			for v := u; ; {
				hp := hops[v]
				if hp.prev < 0 {
					chains[hp.vb] = append(chains[hp.vb], v)
					filled[v] = append(filled[v], hp.vb)
					break
				}
				c := chains[hp.vb]
				c[slices.Index(c, hp.prev)] = v
				i := slices.Index(filled[hp.prev], hp.vb)
				filled[hp.prev] = slices.Delete(filled[hp.prev], i, i+1)
				filled[v] = append(filled[v], hp.vb)
				v = hp.prev
			}
			cnt[u]++
			return true
		}
		for _, w := range filled[u] {
			if w == vb {
				continue
			}
			for v := range p.n {
				if !hops[v].seen && fits(chains[w], v, u) {
					hops[v] = hop{vb: w, prev: u, seen: true}
					queue = append(queue, v)
				}
			}
		}
	}
	return false
}

// shed moves one copy of node over (over its count) to a node under its
// count, directly when a chain of over's can take one, else along a path
// (over's copy to a node at its count, whose copy elsewhere goes to …, a
// node under its count), found breadth first.
func (p *planner) shed(chains [][]int, cnt []int, over int, fits func([]int, int, int) bool) bool {
	type hop struct {
		vb      int // the chain where the previous node gives its copy to this one
		prev    int
		hasPrev bool
		reached bool
	}
	// A direct hand-over first, to the node that suits the chain best.
	bestVB, best := -1, -1
	if p.cursor == nil {
		p.cursor = make([]int, p.n)
	}
	if p.noOrphan == nil {
		p.noOrphan = make([]bool, p.n)
	}
	if p.handed == nil {
		p.handed = make([]int, p.n)
	}
	// Of the chains where over is a replica, those whose active has seen
	// the fewest hand-overs come first (within one): the new copies are
	// spread over the actives, so that each node over its active count
	// can give actives to the nodes under theirs in chains they share.
	minHanded := -1
	for y := range p.n {
		if p.curA[y] > 0 && (minHanded < 0 || p.handed[y] < minHanded) {
			minHanded = p.handed[y]
		}
	}
	// Pass 0: chains whose active must change (a node under its count
	// taking a replica there can take the active too: fewer takeovers),
	// until none of over's can take one; pass 1: chains where over is a
	// replica; pass 2: any.
	for pass := 0; pass < 3 && best < 0; pass++ {
		if pass == 0 && p.noOrphan[over] {
			continue
		}
		spareVB, spare := -1, -1 // pass 1: the first chain that can, if none is within one of the fewest
		// From where the last hand-over of over was found, round the
		// chains: those before it mostly cannot take another.
		for i := range chains {
			vb := (p.cursor[over] + i) % len(chains)
			c := chains[vb]
			if !slices.Contains(c, over) || (pass < 2) == (p.curActive[vb] == over) || (pass == 0 && !p.orphan(c, vb)) {
				continue
			}
			for u := range p.n {
				if cnt[u] >= p.qc[u] || !fits(c, u, over) {
					continue
				}
				if best < 0 || (bestVB == vb && p.better(c, vb, u, best, cnt)) {
					bestVB, best = vb, u
				}
			}
			crowded := pass == 1 && p.curActive[vb] >= 0 && p.handed[p.curActive[vb]] > minHanded+1
			// With copies trimmed (replicas lowered), a chain where a node
			// that held a copy takes it back builds nothing: look on.
			if best >= 0 && (crowded || (p.trimmed && !slices.Contains(p.cur[vb], best))) {
				if spare < 0 {
					spareVB, spare = bestVB, best
				}
				bestVB, best = -1, -1
				continue
			}
			if best >= 0 {
				break // the first chain that can: plans stay linear in the moves
			}
		}
		if best < 0 && spare >= 0 {
			bestVB, best = spareVB, spare
		}
		if pass == 0 && best < 0 {
			p.noOrphan[over] = true
		}
	}
	if best >= 0 {
		p.cursor[over] = bestVB
		if y := p.curActive[bestVB]; y >= 0 {
			p.handed[y]++
		}
		c := chains[bestVB]
		was := p.orphan(c, bestVB)
		c[slices.Index(c, over)] = best
		cnt[best]++
		cnt[over]--
		if was {
			p.orphanIn[over]--
		}
		if p.orphan(c, bestVB) {
			if !was {
				p.countOrphans(chains)
			} else {
				p.orphanIn[best]++
			}
		}
		return true
	}
	hops := make([]hop, p.n)
	hops[over] = hop{reached: true}
	queue := []int{over}
	// Chains are scanned replicas first so that actives stay.
	for h := 0; h < len(queue); h++ {
		b := queue[h]
		for pass := range 2 {
			for vb, c := range chains {
				if !slices.Contains(c, b) || (pass == 0) == (p.curActive[vb] == b) {
					continue
				}
				if hops[b].hasPrev && hops[b].vb == vb {
					continue
				}
				for u := range p.n {
					if hops[u].reached || !fits(c, u, b) {
						continue
					}
					hops[u] = hop{vb: vb, prev: b, hasPrev: true, reached: true}
					if cnt[u] < p.qc[u] {
						// Apply the path back to over.
						for v := u; hops[v].hasPrev; v = hops[v].prev {
							cc := chains[hops[v].vb]
							cc[slices.Index(cc, hops[v].prev)] = v
						}
						cnt[u]++
						cnt[over]--
						return true
					}
					queue = append(queue, u)
				}
			}
		}
	}
	return false
}

// spreadActiveCounts gives again, among alike nodes, their active
// counts (Place's, a multiset): the larger ones to the nodes that can
// keep the most of their current actives in chains, then to those in the
// most chains whose active must change, then to those that share the
// fewest chains with nodes needing actives (the smaller counts go where
// an active can be handed over without an augmenting path). The copy
// counts stay.
func (p *planner) spreadActiveCounts(chains [][]int) {
	keep, orphan := make([]int, p.n), make([]int, p.n)
	for vb, c := range chains {
		a := p.curActive[vb]
		if a >= 0 && slices.Contains(c, a) {
			keep[a]++
			continue
		}
		for _, b := range c {
			orphan[b]++
		}
	}
	// A node keeping fewer actives than the smallest count of its group
	// needs more; shares counts, per node, the chains it keeps as their
	// active that such a node is in (where it can hand an active over).
	needy := make([]bool, p.n)
	for _, g := range p.groups {
		least := p.qa[g[0]]
		for _, b := range g {
			least = min(least, p.qa[b])
		}
		for _, b := range g {
			needy[b] = keep[b] < least
		}
	}
	shares := make([]int, p.n)
	for vb, c := range chains {
		a := p.curActive[vb]
		if a < 0 || !slices.Contains(c, a) {
			continue
		}
		for _, b := range c {
			if b != a && needy[b] {
				shares[a]++
				break
			}
		}
	}
	for _, g := range p.groups {
		var as []int
		for _, b := range g {
			as = append(as, p.qa[b])
		}
		slices.Sort(as)
		slices.Reverse(as)
		class := slices.Clone(g)
		slices.SortStableFunc(class, func(x, y int) int {
			if kx, ky := min(keep[x], as[0]), min(keep[y], as[0]); kx != ky {
				return ky - kx
			}
			if orphan[x] != orphan[y] {
				return orphan[y] - orphan[x]
			}
			// The smaller counts to the nodes that can hand actives over.
			return shares[x] - shares[y]
		})
		for i, b := range class {
			p.qa[b] = as[i]
		}
	}
}

// better reports whether node u suits chain c (of vBucket vb) better
// than node v as a new copy: one under its copy count, then one that
// holds a copy of vb now, then the one further under its count, then,
// for a chain whose current active is gone, the one that holds fewer
// actives now (it will take actives), else the one that holds more.
func (p *planner) better(c []int, vb, u, v int, cnt []int) bool {
	if uu, vu := cnt[u] < p.qc[u], cnt[v] < p.qc[v]; uu != vu {
		return uu
	}
	// A node that holds a copy now (one the replica count lowered away)
	// costs no copy.
	if hu, hv := slices.Contains(p.cur[vb], u), slices.Contains(p.cur[vb], v); hu != hv {
		return hu
	}
	if du, dv := p.qc[u]-cnt[u], p.qc[v]-cnt[v]; du != dv {
		return du > dv
	}
	su, sv := p.curA[u]+p.orphanIn[u], p.curA[v]+p.orphanIn[v]
	if p.orphan(c, vb) {
		return su < sv
	}
	return su > sv
}

// orphan reports whether chain c of vb no longer holds its current
// active (its active must change).
func (p *planner) orphan(c []int, vb int) bool {
	return p.curActive[vb] < 0 || !slices.Contains(c, p.curActive[vb])
}

// countOrphans sets orphanIn: per node, the chains it is in whose active
// must change.
func (p *planner) countOrphans(chains [][]int) {
	p.orphanIn = make([]int, p.n)
	for vb, c := range chains {
		if p.orphan(c, vb) {
			for _, b := range c {
				p.orphanIn[b]++
			}
		}
	}
}

// actives picks each chain's active: the current one while its node is
// within its count, then, for the others, the chain's node furthest
// under its count, with augmenting paths (a node's active handed to
// another node of that chain) when every node of the chain is at its
// count. ok is false when the counts cannot be met.
func (p *planner) actives(chains [][]int) ([]int, bool) {
	acts := make([]int, p.vbs)
	got := make([]int, p.n)
	// The chains each node can keep as their active; a node with more
	// than its count keeps first those whose other nodes will have no
	// room for more actives, and releases those where a node will (a new
	// node, most often), so that few need an augmenting path.
	keepable := make([][]int, p.n)
	held := make([]int, p.n)
	for vb := range acts {
		acts[vb] = -1
		if a := p.curActive[vb]; a >= 0 && slices.Contains(chains[vb], a) {
			keepable[a] = append(keepable[a], vb)
			held[a]++
		}
	}
	room := func(vb, a int) int {
		r := 0
		for _, b := range chains[vb] {
			if b != a {
				r = max(r, p.qa[b]-min(held[b], p.qa[b]))
			}
		}
		return r
	}
	for a, vbs := range keepable {
		if len(vbs) > p.qa[a] {
			slices.SortStableFunc(vbs, func(x, y int) int { return room(x, a) - room(y, a) })
			vbs = vbs[:p.qa[a]]
		}
		for _, vb := range vbs {
			acts[vb] = a
			got[a]++
		}
	}
	owned := make([][]int, p.n) // node -> the chains it is the active of
	for w, a := range acts {
		if a >= 0 {
			owned[a] = append(owned[a], w)
		}
	}
	for vb, c := range chains {
		if acts[vb] >= 0 {
			continue
		}
		best := -1
		for _, b := range c {
			if got[b] < p.qa[b] && (best < 0 || p.qa[b]-got[b] > p.qa[best]-got[best]) {
				best = b
			}
		}
		if best < 0 {
			best = p.swapActiveCount(c, got)
		}
		if best >= 0 {
			acts[vb] = best
			got[best]++
			owned[best] = append(owned[best], vb)
			continue
		}
		if !p.augment(chains, acts, got, owned, vb) {
			return nil, false
		}
	}
	return acts, true
}

// swapActiveCount looks for a node u of chain c and a node w alike to it
// with a larger active count that it does not use up: they swap counts,
// and u is returned (-1 when there is none).
func (p *planner) swapActiveCount(c []int, got []int) int {
	for _, g := range p.groups {
		for _, u := range c {
			if !slices.Contains(g, u) {
				continue
			}
			for _, w := range g {
				if w != u && p.qa[w] > p.qa[u] && got[w] <= p.qa[u] && got[u] < p.qa[w] {
					p.qa[u], p.qa[w] = p.qa[w], p.qa[u]
					return u
				}
			}
		}
	}
	return -1
}

// augment gives chain vb an active along a path: vb takes node b, one of
// b's chains takes another of its nodes, …, ending at a node under its
// count. Of the paths, it takes one that moves the fewest current
// actives (a 0-1 breadth-first search: taking a chain from the node that
// is its active now costs one, from a node given it by this plan
// nothing).
func (p *planner) augment(chains [][]int, acts, got []int, owned [][]int, vb int) bool {
	const unseen = -1
	dist := make([]int, p.n)
	via := make([]int, p.n) // node -> the chain that takes it as its active
	for b := range dist {
		dist[b] = unseen
	}
	var deque []int
	for _, b := range chains[vb] {
		if dist[b] == unseen {
			dist[b], via[b] = 0, vb
			deque = append(deque, b)
		}
	}
	done := make([]bool, p.n)
	for len(deque) > 0 {
		// Pop the node with the least distance (a short deque: nodes are
		// few).
		bi := 0
		for i, b := range deque {
			if dist[b] < dist[deque[bi]] {
				bi = i
			}
		}
		b := deque[bi]
		deque = slices.Delete(deque, bi, bi+1)
		if done[b] {
			continue
		}
		done[b] = true
		if got[b] >= p.qa[b] {
			p.swapActiveCount([]int{b}, got)
		}
		if got[b] < p.qa[b] {
			for v := b; ; {
				w := via[v]
				prev := acts[w]
				acts[w] = v
				owned[v] = append(owned[v], w)
				if prev >= 0 {
					i := slices.Index(owned[prev], w)
					owned[prev] = slices.Delete(owned[prev], i, i+1)
				}
				if prev < 0 {
					break
				}
				v = prev
			}
			got[b]++
			return true
		}
		for _, w := range owned[b] {
			c := 0
			if p.curActive[w] == b {
				c = 1
			}
			for _, u := range chains[w] {
				if !done[u] && (dist[u] == unseen || dist[b]+c < dist[u]) {
					dist[u], via[u] = dist[b]+c, w
					deque = append(deque, u)
				}
			}
		}
	}
	return false
}

// order returns chain c as ids: the active a first, then the other
// replicas in their current order, the new ones after them, reordered so
// that a zone's first copy comes before any zone's second.
func (p *planner) order(vb int, c []int, a int) []string {
	rest := make([]int, 0, len(c))
	for _, b := range p.cur[vb] {
		if b != a && slices.Contains(c, b) {
			rest = append(rest, b)
		}
	}
	for _, b := range c {
		if b != a && !slices.Contains(rest, b) {
			rest = append(rest, b)
		}
	}
	seen := map[int]int{p.zoneOf[a]: 1}
	var firsts, others []int
	for _, b := range rest {
		if seen[p.zoneOf[b]] == 0 {
			firsts = append(firsts, b)
		} else {
			others = append(others, b)
		}
		seen[p.zoneOf[b]]++
	}
	out := []string{p.ids[a]}
	for _, b := range append(firsts, others...) {
		out = append(out, p.ids[b])
	}
	return out
}

// zonesOK reports whether chain c has k copies within every zone's
// bounds.
func (p *planner) zonesOK(c []int) bool {
	if len(c) != p.k {
		return false
	}
	per := make([]int, len(p.zones))
	for _, b := range c {
		per[p.zoneOf[b]]++
	}
	for z, m := range per {
		if m < p.lo[z] || m > p.hi[z] {
			return false
		}
	}
	return true
}
