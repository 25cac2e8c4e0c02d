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
	// Zone is the node's failure zone (a rack, an availability zone):
	// nodes with the same non-empty Zone are in one zone, a node whose
	// Zone is "" is a zone by itself.
	Zone string
}

// MaxIDLen is the longest node id, in bytes: Place takes no longer one,
// and AppendMap cannot encode one (its length is one byte).
const MaxIDLen = 255

// MaxPlaceNodes is the largest node count Place accepts.
const MaxPlaceNodes = 128

// ErrPlacement is wrapped by Place's errors.
var ErrPlacement = errors.New("vbmap: cannot place vbuckets")

// Place computes the first map of a cluster: one chain [active,
// replica1, …] of node ids per vBucket, to be passed to
// (*Map)(nil).Next(rev, replicas, chains). It is a pure function: the
// nodes are sorted by id first, so their order does not matter, and the
// same nodes, vbuckets and replicas always give the same chains. Zone
// names only group the nodes; a single zone for all the nodes is no zone
// at all (the chains are those without zones).
//
// With n nodes, z zones and k = min(1+replicas, n) copies per vBucket,
// the chains obey, whatever the input:
//
//   - every chain has k distinct nodes: a replica is never on its active
//     or twice in a chain;
//   - actives: vBucket vb's active is the node at vb mod n of a fixed
//     order of the nodes (the zones' first nodes, then their second
//     nodes, …), so per-node active counts differ by at most 1;
//   - zones: a chain's copies are spread over as many zones, as evenly,
//     as the zone sizes allow. With h the smallest integer such that
//     Σ_zones min(size, h) ≥ k, a chain has between min(size, h-1) and
//     min(size, h) copies in each zone: with z ≥ k its copies are in k
//     different zones, with z < k it has a copy in every zone. Its first
//     min(k, z) copies are in different zones (a zone's first copy comes
//     before any zone's second one);
//   - replicas: given the actives and the zone rule, the per-node replica
//     counts are as balanced as they can be — Σ count² is the least
//     possible, so the largest count is as small as it can be and the
//     smallest as large — and then so are the total copy counts (actives
//     plus replicas). Within a zone, replica counts differ by at most 1;
//     across all the nodes too when the zones all have the same size, in
//     particular without zones (where total copy counts differ by at most
//     1 as well);
//   - pairs: given the above, the replicas of each node's actives are
//     spread as evenly as they can be over the nodes the zone rule allows
//     (Σ count² is the least possible, over the counts of (active node,
//     replica node) pairs), so that the failover of a node spreads its
//     load. For each active node and each zone, the pair counts over the
//     zone's nodes differ by at most 1. Without zones, they differ by at
//     most 2 over all the ordered pairs of distinct nodes; so they do
//     over the pairs of nodes in different zones when there are at least
//     k zones, all of the same size;
//   - failover: the replica1 of a node's actives, which take them over if
//     it fails, are spread too: for each active node a and each zone but
//     a's, the numbers of a's actives whose replica1 is each node of that
//     zone differ by at most 2 (without zones: the numbers for each other
//     node differ by at most 1).
//
// It takes milliseconds for a few nodes and 1024 vBuckets; with 65535
// vBuckets, up to a tenth of a second for 16 nodes, a second for 64 and
// several seconds for 128 in zones of unequal sizes.
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
	unequal   bool    // there are zones of different sizes
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
	if len(p.zones) == 1 {
		// One zone is no zone: every node a zone of its own.
		p.zones = p.zones[:0]
		for i := range n {
			p.zoneOf[i] = i
			p.zones = append(p.zones, []int{i})
		}
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
	p.lo, p.hi = ZoneBounds(p.zones, p.k)
	for _, zn := range p.zones {
		p.unequal = p.unequal || len(zn) != len(p.zones[0])
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
// (A chains), which is within the zone rule. That fixes each chain's
// profile (its copies per zone). But it would also pair nodes rigidly
// (the chains that get the end of one zone's list get the start of the
// next one's), which can make some node the only candidate for replica1
// of many chains. So each zone's nodes are then spread over the groups of
// chains with the same profile as evenly as they can be (a flow
// minimising Σ count², from a first flow that hands each group's copies
// round the nodes), and dealt within each group; order then orders each
// chain.
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
			y := make([][]int64, len(ring))
			for j := range y {
				y[j] = make([]int64, len(members))
			}
			v := 0
			for _, t := range ts {
				for range len(members[t]) * int(prof[members[t][0]*nz+z]) {
					y[v%len(ring)][t]++
					v++
				}
			}
			ok := true
			for j, b := range ring {
				var sum int64
				for _, t := range ts {
					sum += y[j][t]
					ok = ok && y[j][t] <= int64(len(members[t]))
				}
				ok = ok && sum == int64(cnt[b])
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
	p.order(a, rows)
	return rows
}

// candSet is the candidates of a chain for a position: nodes, sorted,
// padded with -1.
type candSet [MaxReplicas]int

// balance moves rows between the candidates of their groups until the
// loads are as even as they can be. cands[g] are group g's candidates
// (-1: none), x[g][j] its rows given to cands[g][j], load[b] the rows
// given to b. The loads are then optimal (Σ load² is minimal, the
// largest load as small as it can be, the smallest as large) exactly
// when no chain of moves (b gives a row of a group to another candidate
// of it, which gives one of another group, …) leads from a node b to a
// node c with load[c] ≤ load[b]-2: each pass looks for one from the most
// loaded nodes (a breadth-first search), and moves a row along it.
func balance(cands []candSet, x [][]int64, load []int64) {
	holds := make([][]int, len(load)) // node -> the groups with a candidate slot for it
	for g, k := range cands {
		for _, b := range k {
			if b >= 0 {
				holds[b] = append(holds[b], g)
			}
		}
	}
	from := make([]int, len(load)) // BFS: node -> group it was reached through, -2 unseen
	prev := make([]int, len(load)) // BFS: node -> node it was reached from
	var queue []int
	for {
		lo, hi := int64(-1), int64(-1)
		for b := range load {
			if len(holds[b]) > 0 {
				if lo < 0 || load[b] < lo {
					lo = load[b]
				}
				hi = max(hi, load[b])
			}
		}
		moved := false
		for t := hi; t >= lo+2 && !moved; t-- {
			queue = queue[:0]
			for b := range from {
				from[b] = -2
				if len(holds[b]) > 0 && load[b] >= t {
					from[b] = -1
					queue = append(queue, b)
				}
			}
			for h := 0; h < len(queue) && !moved; h++ {
				b := queue[h]
				for _, g := range holds[b] {
					jb := slices.Index(cands[g][:], b)
					if x[g][jb] == 0 {
						continue
					}
					for _, c := range cands[g] {
						if c < 0 || from[c] != -2 {
							continue
						}
						from[c], prev[c] = g, b
						if load[c] > t-2 {
							queue = append(queue, c)
							continue
						}
						// Move one row along the path back to a source.
						load[c]++
						for v := c; from[v] >= 0; v = prev[v] {
							g := from[v]
							x[g][slices.Index(cands[g][:], v)]++
							x[g][slices.Index(cands[g][:], prev[v])]--
						}
						v := c
						for from[v] >= 0 {
							v = prev[v]
						}
						load[v]--
						moved = true
						break
					}
					if moved {
						break
					}
				}
			}
		}
		if !moved {
			return
		}
	}
}

// order orders the replicas of a's chains position by position. The
// copies that may take a position are those of zones the chain has no
// copy of yet (the active is its zone's first copy), or, when none is
// left, all the chain's remaining replicas. Among them, each position is
// given so that the nodes holding it in a's chains are spread as evenly
// as they can be: the chains with the same candidates form a group, each
// chain is given to the least loaded of its candidates (the groups with
// the fewest candidates first), then balance evens the loads out. With
// replica1 spread, the failover of a spreads a's actives.
func (p *placer) order(a int, rows [][]int) {
	w := p.k - 1
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
	next := func(i int) (k candSet) {
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
	groups := map[candSet][]int{}
	var keys []candSet
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
		// A first flow: the rows given one by one to their least loaded
		// candidate, the groups with the fewest candidates first.
		byFew := make([]int, len(keys))
		for gi := range byFew {
			byFew[gi] = gi
		}
		size := func(k candSet) (m int) {
			for _, b := range k {
				if b >= 0 {
					m++
				}
			}
			return m
		}
		slices.SortStableFunc(byFew, func(x, y int) int { return size(keys[y]) - size(keys[x]) })
		load := make([]int64, p.n)
		first := make([][]int64, len(keys))
		for _, gi := range byFew {
			k := keys[gi]
			first[gi] = make([]int64, len(k))
			for range groups[k] {
				best := -1
				for x, b := range k {
					if b >= 0 && (best < 0 || load[b] < load[k[best]]) {
						best = x
					}
				}
				first[gi][best]++
				load[k[best]]++
			}
		}
		balance(keys, first, load)
		for gi, k := range keys {
			quota := first[gi]
			cands := k[:]
			// Hand the group's rows round the nodes, each to its quota.
			x := 0
			for _, i := range groups[k] {
				for quota[x%len(quota)] == 0 {
					x++
				}
				b := cands[x%len(quota)]
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
// active is a hold b as a replica, for act[a] chains with active a. They
// are the flow of a network
//
//	row a ──▶ group (a, zone) ──▶ column b ──▶ sink
//
// where row a sends act[a]·(k-1) units, a group carries a's replicas in
// one zone within the zone rule's bounds (no group node for a zone with
// one allowed node: its bounds are the cell's), a cell (group, column b)
// carries at most act[a] (b is once at most in a chain) and column b's
// flow is b's replica count. Any such flow can be dealt into chains
// (deal), and any chains within the rules give one. The flow minimises,
// in this order, Σ replicas², Σ copies² and Σ cells²: a first flow is
// built, then negative cycles of the residual network are cancelled.
//
// The first flow levels each row's replicas over the nodes it may use.
// That is close to the optimum when the zones have the same size; when
// they do not and there are many vBuckets, it is better to start from
// the optimum for half the actives: twice its group totals (every bound
// is proportional to the actives, so that is within them) plus a first
// flow for the odd active, each group's total split evenly over its
// nodes.
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
	// nodes it may use within the groups' bounds (the highest per-node
	// level l such that the groups' clamp(l·nodes, lo, hi) fit, the rest
	// handed round the groups), each group's total split evenly.
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
	if p.unequal && slices.Max(act) >= 16 {
		half := make([]int, p.n)
		for a := range half {
			half[a] = act[a] / 2
		}
		prev := p.pairs(half)
		for a := range p.n {
			if act[a] == 0 {
				continue
			}
			// Twice the half's group totals plus a first flow for the odd
			// active, each group split evenly over its nodes.
			init[a] = first(a, int64(act[a]%2))
			x := 0
			for _, gr := range groups[a] {
				var q int64
				for j, b := range gr.nodes {
					q += init[a][x+j] + 2*int64(prev[a][b])
				}
				m := len(gr.nodes)
				for j := range gr.nodes {
					f := q / int64(m)
					if int64((j-a%m+m)%m) < q%int64(m) {
						f++
					}
					init[a][x+j] = f
				}
				x += m
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
			if len(gr.nodes) > 1 {
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
	g.optimise()
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
	up, down cost // the cost of one unit more, one unit less (kept by set)
}

// set sets the arc's flow.
func (e *flowArc) set(f int64) {
	e.f = f
	e.up = e.cost(f + 1).sub(e.cost(f))
	e.down = e.cost(f - 1).sub(e.cost(f))
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
func (g *flowNet) optimise() {
	for i := range g.arcs {
		g.arcs[i].set(g.arcs[i].f)
	}
	dist := make([]cost, g.nodes)
	par := make([]step, g.nodes)
	mark := make([]int, g.nodes)
	for {
		cycles := g.negativeCycles(dist, par, mark)
		if cycles == nil {
			return
		}
		for _, cyc := range cycles {
			g.cancel(cyc)
		}
	}
}

// cancel pushes round a negative cycle as many units as lower the cost
// most: the cost of pushing t units is convex in t, so that is the first
// t at which one more unit would not lower it.
func (g *flowNet) cancel(cyc []step) {
	room := int64(-1)
	for _, s := range cyc {
		e := &g.arcs[s.arc]
		r := e.hi - e.f
		if s.dir < 0 {
			r = e.f - e.lo
		}
		if room < 0 || r < room {
			room = r
		}
	}
	at := func(t int64) (c cost) {
		for _, s := range cyc {
			e := &g.arcs[s.arc]
			c = c.add(e.cost(e.f + s.dir*t).sub(e.cost(e.f)))
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
	for _, s := range cyc {
		e := &g.arcs[s.arc]
		e.set(e.f + s.dir*lo)
	}
}

// negativeCycles returns cycles of negative cost in the residual network,
// disjoint, nil if there is none. It is Bellman-Ford, looking for cycles
// among the parent pointers after every pass (any cycle there is
// negative). The distances start where the last call left them: any
// start will do (when no arc can be relaxed, the distances are a
// feasible potential, so there is no negative cycle), and this one is
// close to the end.
func (g *flowNet) negativeCycles(dist []cost, par []step, mark []int) [][]step {
	for v := range par {
		par[v] = step{arc: -1}
	}
	for pass := 0; ; pass++ {
		changed := false
		for i := range g.arcs {
			e := &g.arcs[i]
			if e.f < e.hi {
				if d := dist[e.from].add(e.up); d.less(dist[e.to]) {
					dist[e.to], par[e.to], changed = d, step{i, 1}, true
				}
			}
			if e.f > e.lo {
				if d := dist[e.to].add(e.down); d.less(dist[e.from]) {
					dist[e.from], par[e.from], changed = d, step{i, -1}, true
				}
			}
		}
		if !changed {
			return nil
		}
		if cycles := g.parentCycles(par, mark); cycles != nil {
			return cycles
		}
	}
}

// parentCycles returns the cycles among the parent pointers (they are
// disjoint: a node has one parent), nil if none.
func (g *flowNet) parentCycles(par []step, mark []int) (cycles [][]step) {
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
		// v is on a cycle not seen before: walk it once.
		var cyc []step
		for u := v; ; {
			s := par[u]
			cyc = append(cyc, s)
			u = tail(s)
			if u == v {
				break
			}
		}
		cycles = append(cycles, cyc)
	}
	return cycles
}

// ZoneBounds returns, for chains of k copies over zones (each a list of
// nodes), the fewest (lo) and the most (hi) copies of one vBucket each
// zone holds when the copies are spread as evenly as the zones allow: h
// is the least per-zone cap whose sum over the zones reaches k, and a
// zone holds between h-1 and h copies, never more than its nodes.
func ZoneBounds(zones [][]int, k int) (lo, hi []int) {
	h := 1
	for most := 0; ; h++ {
		sum := 0
		for _, zn := range zones {
			sum += min(len(zn), h)
			most = max(most, len(zn))
		}
		if sum >= k || h >= most {
			break
		}
	}
	lo, hi = make([]int, len(zones)), make([]int, len(zones))
	for z, zn := range zones {
		lo[z], hi[z] = min(len(zn), h-1), min(len(zn), h)
	}
	return lo, hi
}
