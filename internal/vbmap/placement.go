package vbmap

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Node is a data node given to Place.
type Node struct {
	// ID is the node's id: 1..MaxIDLen bytes, unique in the cluster.
	ID string
	// Zone is the node's failure zone (a rack, an availability zone).
	// Nodes with the same non-empty Zone share one zone; a node whose Zone
	// is "" shares its zone with no other node. So a cluster whose nodes
	// all have "" has no zone constraint beyond distinct nodes, and one
	// whose nodes all share one zone has none at all.
	Zone string
}

// MaxPlaceNodes is the largest node count Place accepts.
const MaxPlaceNodes = 256

// ErrPlacement is wrapped by Place's errors.
var ErrPlacement = errors.New("vbmap: cannot place vbuckets")

// Place computes the first map of a cluster of the given nodes: one chain
// [active, replica1, …] of node ids per vBucket, to be passed to
// (*Map)(nil).Next(rev, replicas, chains). It is a pure function of its
// arguments: the order of nodes does not matter (they are sorted by id
// first), and the same arguments always give the same chains.
//
// With k = min(1+replicas, len(nodes)) copies per vBucket, the chains
// obey, for every input:
//
//   - every chain has k distinct nodes: a replica is never on its active
//     or twice in a chain;
//   - actives: per-node active counts differ by at most 1 (vBucket vb's
//     active is the node at vb mod n of a fixed order of the nodes);
//   - zones: a chain's copies are spread over as many zones, as evenly,
//     as the zones allow. With h the smallest integer such that
//     Σ_zones min(size, h) ≥ k, every chain holds between
//     min(size, h-1) and min(size, h) copies in each zone. So with at
//     least k zones, the k copies are in k different zones; with z < k
//     zones, every chain has a copy in every zone. The chain is ordered
//     so that the first min(k, z) copies are in min(k, z) different zones
//     (first copies of zones before second copies);
//   - replicas: within the zone rule, the per-node replica counts are
//     the most balanced possible: no move of replicas between nodes
//     (however many chains it touches) lowers Σ count² — which makes the
//     largest count as small and the smallest as large as they can be.
//     Without zones (or with a single zone), replica counts differ by at
//     most 1, and so do the total copy counts (active + replica); with
//     zones of equal size, replica counts differ by at most 1 as well;
//     within one zone they differ by at most 1 whatever the sizes;
//   - pairs: with the above fixed, the replicas of one node's actives are
//     spread over the other nodes (those the zone rule allows) as evenly
//     as the counts allow (Σ pair count² is minimal), so the failover of
//     one node spreads its load. Without zones, the per-(active,
//     replica) pair counts over all ordered pairs of distinct nodes
//     differ by at most 2; so do the counts of (active, replica1) pairs
//     — the nodes that take over a failed node's actives — within
//     each active node, up to 3.
//
// It fails (wrapping ErrPlacement) for no nodes, more than MaxPlaceNodes,
// an empty id, an id longer than MaxIDLen, two nodes with the same id,
// replicas outside 0..MaxReplicas or vbuckets outside 1..65535.
func Place(nodes []Node, vbuckets, replicas int) ([][]string, error) {
	p, err := newPlacer(nodes, vbuckets, replicas)
	if err != nil {
		return nil, err
	}
	return p.place(), nil
}

// placer holds one Place computation. Nodes are numbered 0..n-1 in id
// order, zones 0..z-1 in the order of their first node.
type placer struct {
	n, k, vbs int
	ids       []string
	zoneOf    []int   // node -> zone
	zones     [][]int // zone -> its nodes, ascending
	ring      []int   // vb's active is ring[vb%n]
	act       []int   // node -> active count
	lo, hi    []int   // zone -> bounds on a chain's copies in it
}

func newPlacer(nodes []Node, vbuckets, replicas int) (*placer, error) {
	switch {
	case len(nodes) == 0:
		return nil, fmt.Errorf("%w: no nodes", ErrPlacement)
	case len(nodes) > MaxPlaceNodes:
		return nil, fmt.Errorf("%w: %d nodes (at most %d)", ErrPlacement, len(nodes), MaxPlaceNodes)
	case replicas < 0 || replicas > MaxReplicas:
		return nil, fmt.Errorf("%w: %d replicas (0..%d)", ErrPlacement, replicas, MaxReplicas)
	case vbuckets < 1 || vbuckets > 65535:
		return nil, fmt.Errorf("%w: %d vbuckets (1..65535)", ErrPlacement, vbuckets)
	}
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	for i, nd := range sorted {
		switch {
		case nd.ID == "":
			return nil, fmt.Errorf("%w: empty node id", ErrPlacement)
		case len(nd.ID) > MaxIDLen:
			return nil, fmt.Errorf("%w: node id %.20q… longer than %d bytes", ErrPlacement, nd.ID, MaxIDLen)
		case i > 0 && sorted[i-1].ID == nd.ID:
			return nil, fmt.Errorf("%w: node id %q given twice", ErrPlacement, nd.ID)
		}
	}
	n := len(sorted)
	p := &placer{n: n, k: min(1+replicas, n), vbs: vbuckets, ids: make([]string, n), zoneOf: make([]int, n)}
	named := map[string]int{}
	for i, nd := range sorted {
		p.ids[i] = nd.ID
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
	// The ring takes the zones' first nodes, then their second nodes, …:
	// the V mod n nodes with one active more are spread over the zones.
	for j := 0; len(p.ring) < n; j++ {
		for _, zn := range p.zones {
			if j < len(zn) {
				p.ring = append(p.ring, zn[j])
			}
		}
	}
	p.act = make([]int, n)
	for j, a := range p.ring {
		p.act[a] = vbuckets / n
		if j < vbuckets%n {
			p.act[a]++
		}
	}
	h := 1
	for {
		sum := 0
		for _, zn := range p.zones {
			sum += min(len(zn), h)
		}
		if sum >= p.k {
			break
		}
		h++
	}
	p.lo, p.hi = make([]int, len(p.zones)), make([]int, len(p.zones))
	for z, zn := range p.zones {
		p.lo[z], p.hi[z] = min(len(zn), h-1), min(len(zn), h)
	}
	return p, nil
}

func (p *placer) place() [][]string {
	chains := make([][]string, p.vbs)
	if p.k == 1 {
		for vb := range chains {
			chains[vb] = []string{p.ids[p.ring[vb%p.n]]}
		}
		return chains
	}
	pairs := p.pairs(p.act)
	pos := make([]int, p.n) // node -> its index in the ring
	for j, a := range p.ring {
		pos[a] = j
	}
	for a := range p.n {
		for i, row := range p.deal(a, pairs[a]) {
			c := make([]string, 0, p.k)
			c = append(c, p.ids[a])
			for _, b := range row {
				c = append(c, p.ids[b])
			}
			chains[i*p.n+pos[a]] = c
		}
	}
	return chains
}

// deal turns active a's pair counts (cnt[b] = how many of a's chains
// have b as a replica) into a's chains' replicas, in chain order.
//
// Listed zone by zone and node by node, the replicas dealt round the
// chains one by one would land a node's copies in distinct chains and
// give every chain between ⌊q/A⌋ and ⌈q/A⌉ of the q copies of a zone
// (A chains): chains within the zone rule. That fixes each chain's
// profile (copies per zone). But it would also pair nodes rigidly (the
// chains that get the end of one zone's list get the start of the next
// one's), which can leave some node the only candidate for replica1 of
// many chains. So each zone's nodes are then spread over the groups of
// chains with the same profile (a flow minimising Σ count², starting
// from the dealing's counts), and dealt within each group; order then
// orders each chain.
func (p *placer) deal(a int, cnt []int) [][]int {
	A := p.act[a]
	if A == 0 {
		return nil
	}
	w := p.k - 1
	nz := len(p.zones)
	var items []int
	for _, zn := range p.zones {
		for _, b := range zn {
			for range cnt[b] {
				items = append(items, b)
			}
		}
	}
	// Profiles: prof[i*nz+z] copies of zone z in chain i; type[i] its
	// group.
	prof := make([]byte, A*nz) // at most 1+MaxReplicas
	for u, b := range items {
		prof[(u%A)*nz+p.zoneOf[b]]++
	}
	typ := make([]int, A)
	var members [][]int // group -> its chains
	ids := map[string]int{}
	for i := range A {
		key := prof[i*nz : (i+1)*nz]
		t, ok := ids[string(key)]
		if !ok {
			t = len(members)
			ids[string(key)] = t
			members = append(members, nil)
		}
		typ[i] = t
		members[t] = append(members[t], i)
	}
	// x[b][t]: how many of group t's chains hold b, first as dealt.
	x := make([][]int64, p.n)
	for u, b := range items {
		if x[b] == nil {
			x[b] = make([]int64, len(members))
		}
		x[b][typ[u%A]]++
	}
	dbgDeal -= dbgCancels
	rows := make([][]int, A)
	cells := make([]int, A*w)
	for i := range rows {
		rows[i] = cells[i*w : i*w : (i+1)*w]
	}
	for z, zn := range p.zones {
		var bs, ts []int
		for _, b := range zn {
			if cnt[b] > 0 {
				bs = append(bs, b)
			}
		}
		for t, m := range members {
			if prof[m[0]*nz+z] > 0 {
				ts = append(ts, t)
			}
		}
		if len(bs) > 1 && len(ts) > 1 {
			// A better first flow, optimal when the counts differ by one
			// at most: the groups' copies handed round the nodes (most
			// copies first), continuing from group to group.
			ring := slices.Clone(bs)
			slices.SortStableFunc(ring, func(b, c int) int { return cnt[c] - cnt[b] })
			got := make([]int64, p.n)
			var y [][]int64
			ok := true
			for j := 0; ok && j < len(bs); j++ {
				y = append(y, make([]int64, len(members)))
			}
			v := 0
			for _, t := range ts {
				d := len(members[t]) * int(prof[members[t][0]*nz+z])
				for range d {
					y[v%len(ring)][t]++
					got[ring[v%len(ring)]]++
					v++
				}
			}
			for j, b := range ring {
				ok = ok && got[b] == int64(cnt[b])
				for _, t := range ts {
					ok = ok && y[j][t] <= int64(len(members[t]))
				}
			}
			if ok {
				for j, b := range ring {
					copy(x[b], y[j])
				}
			}
			g := &flowNet{nodes: len(bs) + len(ts) + 1}
			sink := len(bs) + len(ts)
			arcs := make([][]int, len(bs))
			for bi, b := range bs {
				for ti, t := range ts {
					arcs[bi] = append(arcs[bi], len(g.arcs))
					g.add(bi, len(bs)+ti, 0, int64(len(members[t])), x[b][t], costPair, 0)
				}
			}
			for ti, t := range ts {
				d := int64(len(members[t]) * int(prof[members[t][0]*nz+z]))
				g.add(len(bs)+ti, sink, d, d, d, costFree, 0)
			}
			g.optimise()
			for bi, b := range bs {
				for ti, t := range ts {
					x[b][t] = g.arcs[arcs[bi][ti]].f
				}
			}
		}
		for ti, t := range ts {
			m := members[t]
			v := 0
			for j := range bs {
				b := bs[(j+ti)%len(bs)]
				for range x[b][t] {
					i := m[v%len(m)]
					rows[i] = append(rows[i], b)
					v++
				}
			}
		}
	}
	dbgDeal += dbgCancels
	p.order(a, rows)
	return rows
}

// order orders the replicas of a's chains position by position. The
// copies that may take a position are those of zones the chain has no
// copy of yet (the active is its zone's first copy), or, when none is
// left, all the chain's remaining replicas; among them, each position is
// given so that the nodes holding it in a's chains are spread as evenly
// as possible (Σ count² is minimal: a flow from the groups of chains
// with the same candidates to the nodes). Replica1 being spread, the
// failover of a spreads a's actives.
func (p *placer) order(a int, rows [][]int) {
	w := p.k - 1
	type key [MaxReplicas]int
	done := make([]int, len(rows)) // how many positions each row has
	seen := make([][]bool, len(rows))
	flags := make([]bool, len(rows)*len(p.zones))
	for i := range rows {
		seen[i] = flags[i*len(p.zones) : (i+1)*len(p.zones)]
		seen[i][p.zoneOf[a]] = true
	}
	// next returns row i's candidates for its next position, as nodes,
	// padded with -1 and sorted (so that rows with the same candidates
	// have the same key).
	next := func(i int) (k key) {
		row := rows[i]
		for x := range k {
			k[x] = -1
		}
		m := 0
		for _, b := range row[done[i]:] {
			if !seen[i][p.zoneOf[b]] {
				k[m] = b
				m++
			}
		}
		if m == 0 {
			copy(k[:], row[done[i]:])
		}
		slices.Sort(k[:])
		return k
	}
	groups := map[key][]int{}
	var keys []key
	for range w - 1 {
		// Group the rows by their candidates.
		clear(groups)
		keys = keys[:0]
		for i := range rows {
			k := next(i)
			if groups[k] == nil {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], i)
		}
		g := &flowNet{nodes: len(keys) + p.n + 1}
		sink := len(keys) + p.n
		type ref struct{ arc, b int }
		refs := make([][]ref, len(keys))
		load := make([]int64, p.n)
		for gi, k := range keys {
			var bs []int
			for _, b := range k {
				if b >= 0 {
					bs = append(bs, b)
				}
			}
			m := int64(len(groups[k]))
			for x, b := range bs {
				f := m / int64(len(bs))
				if int64((x+gi)%len(bs)) < m%int64(len(bs)) {
					f++
				}
				refs[gi] = append(refs[gi], ref{len(g.arcs), b})
				g.add(gi, len(keys)+b, 0, m, f, costFree, 0)
				load[b] += f
			}
		}
		for b := range p.n {
			g.add(len(keys)+b, sink, 0, int64(len(rows)), load[b], costPair, 0)
		}
		g.optimise()
		for gi, k := range keys {
			quota := make([]int64, len(refs[gi]))
			for x, r := range refs[gi] {
				quota[x] = g.arcs[r.arc].f
			}
			// Hand the group's rows round the nodes, each to its quota.
			x := 0
			for _, i := range groups[k] {
				for quota[x%len(quota)] == 0 {
					x++
				}
				b := refs[gi][x%len(quota)].b
				quota[x%len(quota)]--
				x++
				row := rows[i]
				c := done[i] + slices.Index(row[done[i]:], b)
				row[done[i]], row[c] = row[c], row[done[i]]
				seen[i][p.zoneOf[b]] = true
				done[i]++
			}
		}
	}
}

// pairs returns the pair counts cnt[a][b]: how many of the chains whose
// active is a hold b as a replica. They are the flow of a network
//
//	row a ──▶ group (a, zone) ──▶ column b ──▶ sink
//
// where row a sends act[a]·(k-1) units, a group carries a's replicas in
// one zone within the zone rule's bounds, a cell (group, column b)
// carries at most act[a] (b is once at most in a chain) and column b's
// flow is b's replica count. Any such flow can be dealt into chains
// (deal). The flow minimises, in this order, Σ replicas², Σ copies² and
// Σ cells²: a feasible flow is built, then negative cycles of the
// residual network are cancelled. With many vBuckets, the first flow is
// twice the optimum for half the actives (every bound is proportional to
// the actives, so it is feasible) plus a first flow for the odd ones,
// which leaves few cycles to cancel.
func (p *placer) pairs(act []int) [][]int {
	type grp struct {
		nodes  []int
		lo, hi int64 // bounds per active
	}
	groups := make([][]grp, p.n)
	for a := range p.n {
		ya := p.zoneOf[a]
		for z, zn := range p.zones {
			lo, hi := p.lo[z], p.hi[z]
			if z == ya {
				lo, hi = max(0, lo-1), hi-1
			}
			if len(p.zones) == 1 {
				lo = 0 // one zone: no bound beyond the row's
			}
			var allowed []int
			for _, b := range zn {
				if b != a {
					allowed = append(allowed, b)
				}
			}
			if hi > 0 && len(allowed) > 0 {
				groups[a] = append(groups[a], grp{allowed, int64(lo), int64(hi)})
			}
		}
	}
	// first returns a first flow for row a with A actives, cell by cell
	// (groups in order, nodes in order): a's replicas levelled over the
	// allowed nodes within the groups' bounds.
	first := func(a int, A int64) []int64 {
		gs := groups[a]
		r := A * int64(p.k-1)
		level := func(l int64) (sum int64) {
			for _, gr := range gs {
				sum += min(max(l*int64(len(gr.nodes)), A*gr.lo), A*gr.hi)
			}
			return sum
		}
		l0, l1 := int64(0), A
		for l0 < l1 {
			mid := (l0 + l1 + 1) / 2
			if level(mid) <= r {
				l0 = mid
			} else {
				l1 = mid - 1
			}
		}
		q := make([]int64, len(gs))
		left := r
		for i, gr := range gs {
			q[i] = min(max(l0*int64(len(gr.nodes)), A*gr.lo), A*gr.hi)
			left -= q[i]
		}
		for j := 0; left > 0; j++ {
			i := (a + j) % len(gs)
			gr := gs[i]
			more := min(max((l0+1)*int64(len(gr.nodes)), A*gr.lo), A*gr.hi) - q[i]
			more = min(more, left)
			q[i] += more
			left -= more
		}
		var out []int64
		for i, gr := range gs {
			m := len(gr.nodes)
			for j := range gr.nodes {
				f := q[i] / int64(m)
				if int64((j-a%m+m)%m) < q[i]%int64(m) {
					f++
				}
				out = append(out, f)
			}
		}
		return out
	}
	init := make([][]int64, p.n)
	if len(p.zones) > 1 && len(p.zones) < p.n && slices.Max(act) >= 16 {
		half := make([]int, p.n)
		for a := range half {
			half[a] = act[a] / 2
		}
		prev := p.pairs(half)
		for a := range p.n {
			if act[a] == 0 {
				continue
			}
			init[a] = first(a, int64(act[a]%2))
			x := 0
			for _, gr := range groups[a] {
				for _, b := range gr.nodes {
					init[a][x] += 2 * int64(prev[a][b])
					x++
				}
			}
		}
	} else {
		for a := range p.n {
			if act[a] > 0 {
				init[a] = first(a, int64(act[a]))
			}
		}
	}
	g := &flowNet{nodes: 2*p.n + 1}
	sink := 2 * p.n
	col := func(b int) int { return p.n + b }
	type cellRef struct{ arc, b int }
	cells := make([][]cellRef, p.n)
	load := make([]int64, p.n)
	for a := range p.n {
		A := int64(act[a])
		if A == 0 {
			continue
		}
		x := 0
		for _, gr := range groups[a] {
			from := a
			if len(gr.nodes) > 1 && len(p.zones) > 1 {
				var q int64
				for j := range gr.nodes {
					q += init[a][x+j]
				}
				from = g.nodes
				g.nodes++
				g.add(a, from, A*gr.lo, A*gr.hi, q, costFree, 0)
			}
			for _, b := range gr.nodes {
				lo, hi := int64(0), A
				if from == a {
					lo, hi = A*gr.lo, min(A*gr.hi, A)
				}
				f := init[a][x]
				x++
				cells[a] = append(cells[a], cellRef{len(g.arcs), b})
				g.add(from, col(b), lo, hi, f, costPair, 0)
				load[b] += f
			}
		}
	}
	for b := range p.n {
		g.add(col(b), sink, 0, int64(p.vbs)*int64(p.k), load[b], costLoad, int64(act[b]))
	}
	c0 := dbgCancels
	g.optimise()
	if dbgLevels {
		fmt.Println("level", slices.Max(act), dbgCancels-c0, len(g.arcs), g.nodes)
	}
	out := make([][]int, p.n)
	for a := range out {
		out[a] = make([]int, p.n)
		for _, c := range cells[a] {
			out[a][c.b] = int(g.arcs[c.arc].f)
		}
	}
	return out
}

// costKind is how an arc's flow is charged.
type costKind uint8

const (
	costFree costKind = iota
	costPair          // a cell: (0, 0, f²)
	costLoad          // a column of a node with param actives: (f², (param+f)², 0)
)

// cost is a lexicographically ordered cost.
type cost [3]int64

func (c cost) add(d cost) cost { return cost{c[0] + d[0], c[1] + d[1], c[2] + d[2]} }
func (c cost) sub(d cost) cost { return cost{c[0] - d[0], c[1] - d[1], c[2] - d[2]} }

func (c cost) less(d cost) bool {
	for i := range c {
		if c[i] != d[i] {
			return c[i] < d[i]
		}
	}
	return false
}

type flowArc struct {
	from, to int
	lo, hi   int64
	f        int64
	kind     costKind
	param    int64
}

func (e *flowArc) cost(f int64) cost {
	switch e.kind {
	case costPair:
		return cost{0, 0, f * f}
	case costLoad:
		t := e.param + f
		return cost{f * f, t * t, 0}
	}
	return cost{}
}

// flowNet is a network carrying a feasible flow (every arc within its
// bounds, every node but the sources and the sink balanced) whose cost
// optimise lowers to the minimum.
type flowNet struct {
	nodes int
	arcs  []flowArc
}

func (g *flowNet) add(from, to int, lo, hi, f int64, kind costKind, param int64) {
	g.arcs = append(g.arcs, flowArc{from: from, to: to, lo: lo, hi: hi, f: f, kind: kind, param: param})
}

// step is one residual arc of a cycle: arc index and direction (+1 along
// the arc, -1 against it).
type step struct {
	arc int
	dir int64
}

// optimise cancels negative cycles until there is none: the flow is then
// of least cost (the costs are convex in the flow of each arc). Each
// cycle carries as many units as lower the cost most.
var dbgCancels, dbgPasses, dbgDeal int
var dbgLevels bool

func (g *flowNet) optimise() {
	out := make([][]step, g.nodes) // node -> the arcs at it, as residual steps away from it
	for i, e := range g.arcs {
		out[e.from] = append(out[e.from], step{i, 1})
		out[e.to] = append(out[e.to], step{i, -1})
	}
	s := &search{
		out:  out,
		dist: make([]cost, g.nodes),
		par:  make([]step, g.nodes),
		mark: make([]int, g.nodes),
		inq:  make([]bool, g.nodes),
	}
	for {
		cyc := g.negativeCycle(s)
		dbgCancels++
		if cyc == nil {
			return
		}
		room := int64(-1)
		for _, st := range cyc {
			e := &g.arcs[st.arc]
			r := e.hi - e.f
			if st.dir < 0 {
				r = e.f - e.lo
			}
			if room < 0 || r < room {
				room = r
			}
		}
		// The cost of pushing t units is convex in t: find the first t at
		// which one more unit would not lower it.
		at := func(t int64) (c cost) {
			for _, st := range cyc {
				e := &g.arcs[st.arc]
				c = c.add(e.cost(e.f + st.dir*t).sub(e.cost(e.f)))
			}
			return c
		}
		lo, hi := int64(1), room
		for lo < hi {
			mid := lo + (hi-lo)/2
			if at(mid + 1).less(at(mid)) {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		for _, st := range cyc {
			g.arcs[st.arc].f += st.dir * lo
		}
	}
}

// search is the state of negativeCycle, kept between calls.
type search struct {
	out   [][]step
	dist  []cost
	par   []step
	mark  []int
	inq   []bool
	queue []int
}

// negativeCycle returns a cycle of negative cost in the residual network,
// nil if there is none: Bellman-Ford from a virtual source (every node
// starts at distance 0), relaxing the arcs of the nodes whose distance
// fell (a queue), and looking for a cycle among the parent pointers
// every so many relaxations — there is one as soon as the distances keep
// falling round a negative cycle.
func (g *flowNet) negativeCycle(s *search) []step {
	clear(s.dist)
	for v := range s.par {
		s.par[v] = step{arc: -1}
	}
	for pass := 0; pass <= g.nodes; pass++ {
		changed := false
		for i := range g.arcs {
			e := &g.arcs[i]
			if e.f < e.hi {
				if d := s.dist[e.from].add(e.cost(e.f + 1).sub(e.cost(e.f))); d.less(s.dist[e.to]) {
					s.dist[e.to], s.par[e.to], changed = d, step{i, 1}, true
				}
			}
			if e.f > e.lo {
				if d := s.dist[e.to].add(e.cost(e.f - 1).sub(e.cost(e.f))); d.less(s.dist[e.from]) {
					s.dist[e.from], s.par[e.from], changed = d, step{i, -1}, true
				}
			}
		}
		if !changed {
			return nil
		}
		if cyc := g.parentCycle(s.par, s.mark); cyc != nil {
			return cyc
		}
	}
	return nil
}

// parentCycle returns a cycle among the parent pointers, nil if none.
func (g *flowNet) parentCycle(par []step, mark []int) []step {
	clear(mark)
	tail := func(s step) int {
		if s.dir > 0 {
			return g.arcs[s.arc].from
		}
		return g.arcs[s.arc].to
	}
	for v0 := range par {
		if mark[v0] != 0 {
			continue
		}
		v := v0
		for v >= 0 && mark[v] == 0 {
			mark[v] = v0 + 1
			if par[v].arc < 0 {
				v = -1
				break
			}
			v = tail(par[v])
		}
		if v < 0 || mark[v] != v0+1 {
			continue
		}
		// v is on a cycle: walk it once.
		var cyc []step
		for u := v; ; {
			s := par[u]
			cyc = append(cyc, s)
			u = tail(s)
			if u == v {
				break
			}
		}
		slices.Reverse(cyc)
		return cyc
	}
	return nil
}
