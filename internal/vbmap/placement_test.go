package vbmap

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// placeCase is one input of Place.
type placeCase struct {
	nodes              []Node
	vbuckets, replicas int
}

func (c placeCase) String() string {
	var b strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "%s@%s ", n.ID, n.Zone)
	}
	return fmt.Sprintf("%d vbuckets, %d replicas, nodes %s", c.vbuckets, c.replicas, b.String())
}

// genPlaceCase draws 1..16 nodes, 0..3 replicas, a vBucket count and
// zones of one of several shapes.
func genPlaceCase(t *rapid.T) placeCase {
	n := rapid.IntRange(1, 16).Draw(t, "n")
	ids := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z][a-z0-9]{0,4}`), n, n, rapid.ID).Draw(t, "ids")
	c := placeCase{
		vbuckets: rapid.OneOf(rapid.SampledFrom([]int{1, 7, 64, 1024}), rapid.IntRange(1, 2048)).Draw(t, "vbuckets"),
		replicas: rapid.IntRange(0, MaxReplicas).Draw(t, "replicas"),
	}
	k := min(1+c.replicas, n)
	zone := func(i int) string { return "" }
	switch rapid.SampledFrom([]string{"none", "one", "random", "fewer", "equal", "mixed"}).Draw(t, "zones") {
	case "one":
		zone = func(int) string { return "z" }
	case "random":
		pool := rapid.IntRange(1, n).Draw(t, "pool")
		zone = func(i int) string { return fmt.Sprint("z", rapid.IntRange(0, pool-1).Draw(t, "zone")) }
	case "fewer": // fewer zones than copies, where there can be
		pool := rapid.IntRange(1, max(1, k-1)).Draw(t, "pool")
		zone = func(i int) string { return fmt.Sprint("z", rapid.IntRange(0, pool-1).Draw(t, "zone")) }
	case "equal":
		var divisors []int
		for d := 1; d <= n; d++ {
			if n%d == 0 {
				divisors = append(divisors, d)
			}
		}
		pool := rapid.SampledFrom(divisors).Draw(t, "pool")
		zone = func(i int) string { return fmt.Sprint("z", i%pool) }
	case "mixed": // some nodes in no zone
		pool := rapid.IntRange(1, n).Draw(t, "pool")
		zone = func(i int) string {
			if rapid.Bool().Draw(t, "zoned") {
				return fmt.Sprint("z", rapid.IntRange(0, pool-1).Draw(t, "zone"))
			}
			return ""
		}
	}
	for i, id := range ids {
		c.nodes = append(c.nodes, Node{ID: id, Zone: zone(i)})
	}
	return c
}

// placed is a Place result with what the checks need, computed from the
// chains alone.
type placed struct {
	placeCase
	chains   [][]string
	k, h     int
	index    map[string]int // node id -> index in nodes
	zoneOf   []int          // node -> zone (a zone of its own for "", and for all when there is one zone)
	zones    [][]int        // zone -> its nodes
	act, rep []int          // node -> active, replica counts
	pair, p1 [][]int        // [a][b]: chains with active a and b a replica, b replica1
	equal    bool           // the zones all have the same size
}

// fataler is what the checks report to: *testing.T or *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

func runPlace(t fataler, c placeCase) *placed {
	chains, err := Place(c.nodes, c.vbuckets, c.replicas)
	if err != nil {
		t.Fatalf("%v: %v", c, err)
	}
	n := len(c.nodes)
	p := &placed{placeCase: c, chains: chains, k: min(1+c.replicas, n), index: map[string]int{}, zoneOf: make([]int, n),
		act: make([]int, n), rep: make([]int, n), pair: make([][]int, n), p1: make([][]int, n)}
	named := map[string]int{}
	for i, nd := range c.nodes {
		p.index[nd.ID] = i
		z, ok := named[nd.Zone]
		if !ok || nd.Zone == "" {
			z = len(p.zones)
			named[nd.Zone] = z
			p.zones = append(p.zones, nil)
		}
		p.zoneOf[i] = z
		p.zones[z] = append(p.zones[z], i)
		p.pair[i], p.p1[i] = make([]int, n), make([]int, n)
	}
	if len(p.zones) == 1 {
		p.zones = nil
		for i := range n {
			p.zoneOf[i] = i
			p.zones = append(p.zones, []int{i})
		}
	}
	p.equal = true
	for _, zn := range p.zones {
		p.equal = p.equal && len(zn) == len(p.zones[0])
	}
	for p.h = 1; ; p.h++ {
		sum := 0
		for _, zn := range p.zones {
			sum += min(len(zn), p.h)
		}
		if sum >= p.k {
			break
		}
	}
	if len(chains) != c.vbuckets {
		t.Fatalf("%v: %d chains", c, len(chains))
	}
	for vb, ch := range chains {
		if len(ch) != p.k {
			t.Fatalf("%v: vbucket %d: chain %q, want %d nodes", c, vb, ch, p.k)
		}
		for j, id := range ch {
			b, ok := p.index[id]
			if !ok {
				t.Fatalf("%v: vbucket %d: unknown node %q", c, vb, id)
			}
			if slices.Index(ch, id) != j {
				t.Fatalf("%v: vbucket %d: chain %q holds %q twice", c, vb, ch, id)
			}
			a := p.index[ch[0]]
			switch {
			case j == 0:
				p.act[b]++
			case j == 1:
				p.p1[a][b]++
				fallthrough
			default:
				p.rep[b]++
				p.pair[a][b]++
			}
		}
	}
	return p
}

func spread(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs) - slices.Min(xs)
}

// zoneCounts returns a chain's copies per zone.
func (p *placed) zoneCounts(ch []string) []int {
	cnt := make([]int, len(p.zones))
	for _, id := range ch {
		cnt[p.zoneOf[p.index[id]]]++
	}
	return cnt
}

// zoneRuleOK reports whether copies per zone are within the zone rule.
func (p *placed) zoneRuleOK(cnt []int) bool {
	for z, zn := range p.zones {
		if cnt[z] < min(len(zn), p.h-1) || cnt[z] > min(len(zn), p.h) {
			return false
		}
	}
	return true
}

func checkChains(t fataler, p *placed) {
	ids := map[string]bool{}
	for _, nd := range p.nodes {
		ids[nd.ID] = true
	}
	m := (*Map)(nil).Next(1, p.replicas, p.chains)
	if err := m.Validate(func(id string) bool { return ids[id] }); err != nil {
		t.Fatalf("%v: %v", p.placeCase, err)
	}
}

func checkActives(t fataler, p *placed) {
	if s := spread(p.act); s > 1 {
		t.Fatalf("%v: active counts %v differ by %d", p.placeCase, p.act, s)
	}
}

func checkReplicas(t fataler, p *placed) {
	for _, zn := range p.zones {
		var rs []int
		for _, b := range zn {
			rs = append(rs, p.rep[b])
		}
		if s := spread(rs); s > 1 {
			t.Fatalf("%v: replica counts %v in a zone differ by %d", p.placeCase, rs, s)
		}
	}
	if p.equal {
		if s := spread(p.rep); s > 1 {
			t.Fatalf("%v: replica counts %v differ by %d (zones of the same size)", p.placeCase, p.rep, s)
		}
	}
	if len(p.zones) == len(p.nodes) {
		copies := make([]int, len(p.nodes))
		for b := range copies {
			copies[b] = p.act[b] + p.rep[b]
		}
		if s := spread(copies); s > 1 {
			t.Fatalf("%v: copy counts %v differ by %d (no zones)", p.placeCase, copies, s)
		}
	}
}

func checkZones(t fataler, p *placed) {
	first := min(p.k, len(p.zones))
	for vb, ch := range p.chains {
		if cnt := p.zoneCounts(ch); !p.zoneRuleOK(cnt) {
			t.Fatalf("%v: vbucket %d: chain %q has %v copies per zone (h %d)", p.placeCase, vb, ch, cnt, p.h)
		}
		seen := map[int]bool{}
		for _, id := range ch[:first] {
			seen[p.zoneOf[p.index[id]]] = true
		}
		if len(seen) != first {
			t.Fatalf("%v: vbucket %d: chain %q: the first %d copies are in %d zones", p.placeCase, vb, ch, first, len(seen))
		}
	}
}

// checkNoBetterMove checks that no replica can move to another node
// within the zone rule and make the replica counts more even: in no
// chain can a replica on b be moved to a node c with 2 replicas fewer.
func checkNoBetterMove(t fataler, p *placed) {
	for vb, ch := range p.chains {
		cnt := p.zoneCounts(ch)
		for _, from := range ch[1:] {
			b := p.index[from]
			for c := range p.nodes {
				if p.rep[b] < p.rep[c]+2 || slices.Contains(ch, p.nodes[c].ID) {
					continue
				}
				cnt[p.zoneOf[b]]--
				cnt[p.zoneOf[c]]++
				if p.zoneRuleOK(cnt) {
					t.Fatalf("%v: vbucket %d: chain %q could move its replica from %s (%d replicas) to %s (%d)",
						p.placeCase, vb, ch, from, p.rep[b], p.nodes[c].ID, p.rep[c])
				}
				cnt[p.zoneOf[b]]++
				cnt[p.zoneOf[c]]--
			}
		}
	}
}

func checkPairs(t fataler, p *placed) {
	if p.k < 2 {
		return
	}
	for a := range p.nodes {
		if p.act[a] == 0 {
			continue
		}
		for _, zn := range p.zones {
			var xs []int
			for _, b := range zn {
				if b != a {
					xs = append(xs, p.pair[a][b])
				}
			}
			if s := spread(xs); s > 1 {
				t.Fatalf("%v: the replicas of %s's actives in a zone: %v, differ by %d", p.placeCase, p.nodes[a].ID, xs, s)
			}
		}
	}
	var xs []int
	for a := range p.nodes {
		for b := range p.nodes {
			if p.zoneOf[a] != p.zoneOf[b] {
				xs = append(xs, p.pair[a][b])
			}
		}
	}
	if (len(p.zones) == len(p.nodes) || p.equal && len(p.zones) >= p.k) && spread(xs) > 2 {
		t.Fatalf("%v: pair counts differ by %d", p.placeCase, spread(xs))
	}
}

func checkFailover(t fataler, p *placed) {
	if p.k < 2 {
		return
	}
	for a := range p.nodes {
		if p.act[a] == 0 {
			continue
		}
		var all []int
		for z, zn := range p.zones {
			if z == p.zoneOf[a] {
				continue
			}
			var xs []int
			for _, b := range zn {
				xs = append(xs, p.p1[a][b])
			}
			all = append(all, xs...)
			if s := spread(xs); s > 2 {
				t.Fatalf("%v: the replica1 of %s's actives in a zone: %v, differ by %d", p.placeCase, p.nodes[a].ID, xs, s)
			}
		}
		if len(p.zones) == len(p.nodes) && spread(all) > 1 {
			t.Fatalf("%v: the replica1 of %s's actives: %v, differ by %d", p.placeCase, p.nodes[a].ID, all, spread(all))
		}
	}
}

func placeProperty(check func(fataler, *placed)) func(*rapid.T) {
	return func(t *rapid.T) { check(t, runPlace(t, genPlaceCase(t))) }
}

func TestPlaceChainsProperty(t *testing.T)       { rapid.Check(t, placeProperty(checkChains)) }
func TestPlaceActivesProperty(t *testing.T)      { rapid.Check(t, placeProperty(checkActives)) }
func TestPlaceReplicasProperty(t *testing.T)     { rapid.Check(t, placeProperty(checkReplicas)) }
func TestPlaceZonesProperty(t *testing.T)        { rapid.Check(t, placeProperty(checkZones)) }
func TestPlaceNoBetterMoveProperty(t *testing.T) { rapid.Check(t, placeProperty(checkNoBetterMove)) }
func TestPlacePairsProperty(t *testing.T)        { rapid.Check(t, placeProperty(checkPairs)) }
func TestPlaceFailoverProperty(t *testing.T)     { rapid.Check(t, placeProperty(checkFailover)) }

var allChecks = []func(fataler, *placed){checkChains, checkActives, checkReplicas, checkZones, checkNoBetterMove, checkPairs, checkFailover}

// TestPlaceLarge runs every check on 65535 vBuckets.
func TestPlaceLarge(t *testing.T) {
	layouts := map[string]func(i int) string{
		"no zones":        func(int) string { return "" },
		"4 equal zones":   func(i int) string { return fmt.Sprint(i % 4) },
		"zones 1,3,5,7":   func(i int) string { return fmt.Sprint(min(i, 1) + min(i/4, 1) + min(i/9, 1)) },
		"2 zones (z < k)": func(i int) string { return fmt.Sprint(i % 2) },
	}
	for name, zone := range layouts {
		for _, r := range []int{1, 3} {
			c := placeCase{vbuckets: 65535, replicas: r}
			for i := range 16 {
				c.nodes = append(c.nodes, Node{ID: fmt.Sprintf("n%02d", i), Zone: zone(i)})
			}
			t.Run(fmt.Sprintf("%s/%d replicas", name, r), func(t *testing.T) {
				p := runPlace(t, c)
				for _, check := range allChecks {
					check(t, p)
				}
			})
		}
	}
}

func TestPlaceMaxNodes(t *testing.T) {
	c := placeCase{vbuckets: 1024, replicas: 2}
	for i := range MaxPlaceNodes {
		c.nodes = append(c.nodes, Node{ID: fmt.Sprintf("n%03d", i), Zone: fmt.Sprint(i % 8)})
	}
	p := runPlace(t, c)
	for _, check := range allChecks {
		check(t, p)
	}
	c.nodes = append(c.nodes, Node{ID: "one-too-many"})
	if _, err := Place(c.nodes, c.vbuckets, c.replicas); !errors.Is(err, ErrPlacement) {
		t.Fatalf("%d nodes: %v", len(c.nodes), err)
	}
}

func TestPlaceDeterministicProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genPlaceCase(t)
		want, err := Place(c.nodes, c.vbuckets, c.replicas)
		if err != nil {
			t.Fatal(err)
		}
		// The same nodes in another order, their zones renamed.
		d := c
		d.nodes = rapid.Permutation(c.nodes).Draw(t, "order")
		d.nodes = slices.Clone(d.nodes)
		for i := range d.nodes {
			if d.nodes[i].Zone != "" {
				d.nodes[i].Zone = "renamed-" + d.nodes[i].Zone
			}
		}
		got, err := Place(d.nodes, d.vbuckets, d.replicas)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("%v\nand %v\ngive different chains:\n%q\n%q", c, d, want, got)
		}
	})
}

func TestPlaceOneZoneIsNoZone(t *testing.T) {
	var none, one []Node
	for i := range 5 {
		none = append(none, Node{ID: fmt.Sprint("n", i)})
		one = append(one, Node{ID: fmt.Sprint("n", i), Zone: "rack1"})
	}
	a, err1 := Place(none, 100, 2)
	b, err2 := Place(one, 100, 2)
	if err1 != nil || err2 != nil || !slices.EqualFunc(a, b, slices.Equal) {
		t.Fatalf("no zone %q, %v; one zone %q, %v", a, err1, b, err2)
	}
}

func TestPlaceSmall(t *testing.T) {
	for _, tc := range []struct {
		name     string
		nodes    []Node
		vbuckets int
		replicas int
		want     [][]string
	}{
		{
			// Every node active twice and replica twice; each node's two
			// actives have their replicas on the two other nodes.
			name:     "3 nodes, 6 vbuckets, 1 replica",
			nodes:    []Node{{ID: "c"}, {ID: "a"}, {ID: "b"}},
			vbuckets: 6, replicas: 1,
			want: [][]string{{"a", "b"}, {"b", "a"}, {"c", "a"}, {"a", "c"}, {"b", "c"}, {"c", "b"}},
		},
		{
			// Actives twice and replicas four times each.
			name:     "4 nodes, 8 vbuckets, 2 replicas",
			nodes:    []Node{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}},
			vbuckets: 8, replicas: 2,
			want: [][]string{
				{"a", "b", "c"}, {"b", "a", "c"}, {"c", "a", "d"}, {"d", "a", "b"},
				{"a", "d", "b"}, {"b", "c", "d"}, {"c", "b", "d"}, {"d", "c", "a"},
			},
		},
		{
			// Two zones of two: actives alternate between the zones, every
			// replica is in the other zone, each node's two actives have
			// their replicas on both nodes of the other zone.
			name:     "2 zones of 2, 8 vbuckets, 1 replica",
			nodes:    []Node{{ID: "a", Zone: "x"}, {ID: "b", Zone: "x"}, {ID: "c", Zone: "y"}, {ID: "d", Zone: "y"}},
			vbuckets: 8, replicas: 1,
			want: [][]string{
				{"a", "c"}, {"c", "a"}, {"b", "c"}, {"d", "a"},
				{"a", "d"}, {"c", "b"}, {"b", "d"}, {"d", "b"},
			},
		},
		{
			// Four copies in two zones: two in each, the first two in
			// different zones.
			name:     "2 zones of 2, 4 vbuckets, 3 replicas",
			nodes:    []Node{{ID: "a", Zone: "x"}, {ID: "b", Zone: "x"}, {ID: "c", Zone: "y"}, {ID: "d", Zone: "y"}},
			vbuckets: 4, replicas: 3,
			want: [][]string{{"a", "c", "b", "d"}, {"c", "a", "b", "d"}, {"b", "c", "a", "d"}, {"d", "a", "b", "c"}},
		},
		{
			// Fewer nodes than copies: chains of every node.
			name:     "2 nodes, 3 vbuckets, 3 replicas",
			nodes:    []Node{{ID: "b"}, {ID: "a"}},
			vbuckets: 3, replicas: 3,
			want: [][]string{{"a", "b"}, {"b", "a"}, {"a", "b"}},
		},
		{
			name:     "1 node",
			nodes:    []Node{{ID: "solo", Zone: "x"}},
			vbuckets: 3, replicas: 1,
			want: [][]string{{"solo"}, {"solo"}, {"solo"}},
		},
		{
			name:     "no replicas",
			nodes:    []Node{{ID: "b"}, {ID: "a"}},
			vbuckets: 3, replicas: 0,
			want: [][]string{{"a"}, {"b"}, {"a"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.nodes, tc.vbuckets, tc.replicas)
			if err != nil || !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("got %q, %v\nwant %q", got, err, tc.want)
			}
		})
	}
}

func TestPlaceErrors(t *testing.T) {
	ab := []Node{{ID: "a"}, {ID: "b"}}
	long := strings.Repeat("x", MaxIDLen+1)
	for _, tc := range []struct {
		name               string
		nodes              []Node
		vbuckets, replicas int
	}{
		{"no nodes", nil, 16, 1},
		{"empty id", []Node{{ID: "a"}, {ID: ""}}, 16, 1},
		{"duplicate id", []Node{{ID: "a", Zone: "x"}, {ID: "b"}, {ID: "a", Zone: "y"}}, 16, 1},
		{"long id", []Node{{ID: long}}, 16, 1},
		{"negative replicas", ab, 16, -1},
		{"too many replicas", ab, 16, MaxReplicas + 1},
		{"no vbuckets", ab, 0, 1},
		{"too many vbuckets", ab, 65536, 1},
	} {
		if got, err := Place(tc.nodes, tc.vbuckets, tc.replicas); !errors.Is(err, ErrPlacement) || got != nil {
			t.Errorf("%s: %q, %v; want ErrPlacement", tc.name, got, err)
		}
	}
	if _, err := Place([]Node{{ID: strings.Repeat("x", MaxIDLen)}}, 65535, MaxReplicas); err != nil {
		t.Errorf("limits: %v", err)
	}
}
