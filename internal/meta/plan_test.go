package meta

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

func peers(ids ...string) []Peer {
	var out []Peer
	for _, id := range ids {
		out = append(out, Peer{ID: id, Addr: id + ":1", Expect: 3})
	}
	return out
}

func TestPlanBootstrap(t *testing.T) {
	for _, tc := range []struct {
		self    string
		expect  int
		peers   []Peer
		boot    bool
		members string
		waiting string
	}{
		{"a", 3, peers("a", "b"), false, "", "2 of 3 expected nodes known"},
		{"a", 3, peers("b", "a", "c"), true, "a b c", ""},
		{"b", 3, peers("b", "a", "c"), false, "a b c", "waiting for a to bootstrap the cluster"},
		// More nodes than expected: the expect lowest ids form it.
		{"a", 3, peers("d", "c", "b", "a"), true, "a b c", ""},
		{"d", 3, peers("d", "c", "b", "a"), false, "a b c", "waiting for a"},
		// The same node heard twice counts once.
		{"a", 3, peers("a", "b", "b"), false, "", "2 of 3"},
		{"a", 1, peers("a"), true, "a", ""},
	} {
		p := PlanBootstrap(tc.self, tc.expect, tc.peers)
		var ids []string
		for _, m := range p.Members {
			ids = append(ids, m.ID)
		}
		if p.Bootstrap != tc.boot || strings.Join(ids, " ") != tc.members || !strings.HasPrefix(p.Waiting, tc.waiting) {
			t.Errorf("%s expect %d of %v: %+v", tc.self, tc.expect, tc.peers, p)
		}
	}
	if v := VoterIDs(peers("a", "b", "c", "d"), 3); !v["a"] || !v["c"] || v["d"] {
		t.Fatalf("voters %v", v)
	}
}

// cluster is a raft configuration and a State that the membership plan's
// actions are applied to, as the leader does, one plan after another.
type cluster struct {
	st      *State
	servers []Server
	leader  string
	idx     uint64
}

func (c *cluster) propose(t *testing.T, cmd *Command) {
	t.Helper()
	c.idx++
	next, err := c.st.Apply(c.idx, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd.Op, err)
	}
	c.st = next
}

func (c *cluster) do(t *testing.T, a Action) {
	t.Helper()
	i := slices.IndexFunc(c.servers, func(s Server) bool { return s.ID == a.ID })
	switch a.Kind {
	case AddVoter, AddNonvoter:
		s := Server{ID: a.ID, Addr: a.Addr, Voter: a.Kind == AddVoter || (i >= 0 && c.servers[i].Voter)}
		if i >= 0 {
			c.servers[i] = s
		} else {
			c.servers = append(c.servers, s)
		}
	case Demote:
		c.servers[i].Voter = false
	case RemoveServer:
		if a.ID == c.leader {
			t.Fatal("the plan removes the leader")
		}
		c.servers = slices.Delete(c.servers, i, i+1)
	case MarkActive:
		c.propose(t, &Command{Op: OpNodeState, NodeID: a.ID, State: Active})
	case MarkVoter, MarkNonvoter:
		c.propose(t, &Command{Op: OpNodeVoter, NodeID: a.ID, Voter: a.Kind == MarkVoter})
	case Forget:
		c.propose(t, &Command{Op: OpNodeRemove, NodeID: a.ID})
	default:
		t.Fatalf("unknown action %v", a)
	}
}

// settle runs plans until there is nothing left to do and returns the
// actions taken.
func (c *cluster) settle(t *testing.T) []string {
	t.Helper()
	var log []string
	for round := 0; ; round++ {
		acts := PlanMembership(c.st, c.servers, c.leader)
		if len(acts) == 0 {
			return log
		}
		if round > 20 {
			t.Fatalf("no convergence; still planning %v", acts)
		}
		c.do(t, acts[0]) // one at a time, as after a failure part way
		log = append(log, string(acts[0].Kind)+" "+acts[0].ID)
	}
}

// check asserts the settled cluster's invariants.
func (c *cluster) check(t *testing.T) {
	t.Helper()
	active := 0
	for _, n := range c.st.Nodes {
		if n.State == Active {
			active++
		}
		if n.State == Leaving {
			t.Fatalf("leaving node %s still a member", n.ID)
		}
		i := slices.IndexFunc(c.servers, func(s Server) bool { return s.ID == n.ID })
		if i < 0 || c.servers[i].Addr != n.Addr || c.servers[i].Voter != n.Voter {
			t.Fatalf("node %+v vs configuration %+v", n, c.servers)
		}
	}
	voters := 0
	for _, s := range c.servers {
		if _, ok := c.st.Node(s.ID); !ok {
			t.Fatalf("server %s is no member", s.ID)
		}
		if s.Voter {
			voters++
		}
	}
	if want := min(c.st.Voters, active); voters != want && !(voters == want+1 && !slices.ContainsFunc(c.st.Nodes, func(n Node) bool { return n.ID == c.leader && n.State == Active })) {
		t.Fatalf("%d voters for %d active nodes wanting %d: %+v", voters, active, c.st.Voters, c.servers)
	}
}

func newCluster(t *testing.T, voters int, ids ...string) *cluster {
	c := &cluster{st: &State{Channels: map[string]engine.Kind{}}, leader: ids[0]}
	in := &Init{ClusterID: "c1", VBuckets: 4, Replicas: 1, Voters: voters, Settings: DefaultSettings()}
	for i, id := range ids {
		v := i < voters
		in.Nodes = append(in.Nodes, Node{ID: id, Addr: id + ":1", Voter: v})
		c.servers = append(c.servers, Server{ID: id, Addr: id + ":1", Voter: v})
	}
	var place []vbmap.Node
	for _, id := range ids {
		place = append(place, vbmap.Node{ID: id})
	}
	chains, err := vbmap.Place(place, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	in.Chains = chains
	c.propose(t, &Command{Op: OpInit, Init: in})
	return c
}

func TestMembershipJoinsLeavesAndMoves(t *testing.T) {
	c := newCluster(t, 3, "a")
	if got := c.settle(t); len(got) != 0 {
		t.Fatalf("a fresh cluster of one plans %v", got)
	}
	// b joins: it enters as a non-voter, becomes active, then votes.
	c.propose(t, &Command{Op: OpNodeAdd, Node: &Node{ID: "b", Addr: "b:1", State: Joining}})
	if got := strings.Join(c.settle(t), ", "); got != "add-nonvoter b, mark-active b, add-voter b, mark-voter b" {
		t.Fatalf("b joins: %s", got)
	}
	c.check(t)
	for _, id := range []string{"c", "d", "e"} {
		c.propose(t, &Command{Op: OpNodeAdd, Node: &Node{ID: id, Addr: id + ":1"}})
		c.settle(t)
		c.check(t)
	}
	if n, _ := c.st.Node("d"); n.Voter {
		t.Fatal("the fourth node votes in a cluster of 3 voters")
	}
	// Joining again with the same address is a no-op; a new address moves it.
	c.propose(t, &Command{Op: OpNodeAdd, Node: &Node{ID: "e", Addr: "e:1"}})
	if got := c.settle(t); len(got) != 0 {
		t.Fatalf("a second join plans %v", got)
	}
	c.propose(t, &Command{Op: OpNodeAdd, Node: &Node{ID: "e", Addr: "e:2"}})
	if got := strings.Join(c.settle(t), ", "); got != "add-nonvoter e" {
		t.Fatalf("e moves: %s", got)
	}
	c.check(t)
	// A voter holding no vBuckets leaves: the next non-voter replaces it.
	c.propose(t, &Command{Op: OpMap, ExpectRevision: c.st.Map.Revision, Chains: [][]string{{"a", "c"}, {"c", "a"}, {"a", "c"}, {"c", "a"}}})
	c.propose(t, &Command{Op: OpNodeState, NodeID: "b", State: Leaving})
	if got := strings.Join(c.settle(t), ", "); got != "remove-server b, add-voter d, forget b, mark-voter d" {
		t.Fatalf("b leaves: %s", got)
	}
	c.check(t)
	// A node that still holds vBuckets cannot leave.
	if _, err := c.st.Apply(c.idx+1, &Command{Op: OpNodeState, NodeID: "c", State: Leaving}); err == nil {
		t.Fatal("a node holding vbuckets was allowed to leave")
	}
}

func TestMembershipNeverTouchesTheLeader(t *testing.T) {
	// The leader is a voter past the wanted count (it joined last): it
	// is neither demoted nor removed while it leads.
	c := newCluster(t, 1, "a", "b")
	c.leader = "b"
	c.servers[1].Voter = true
	c.settle(t)
	if i := slices.IndexFunc(c.servers, func(s Server) bool { return s.ID == "b" }); i < 0 || !c.servers[i].Voter {
		t.Fatalf("leader demoted or removed: %+v", c.servers)
	}
	// An unknown server in the configuration is removed.
	c.servers = append(c.servers, Server{ID: "ghost", Addr: "g:1"})
	if got := strings.Join(c.settle(t), ", "); !strings.Contains(got, "remove-server ghost") {
		t.Fatalf("ghost: %s", got)
	}
}

// TestMembershipConverges: from any mix of member states and raft
// configurations, plans applied one action at a time settle, with the
// invariants of check.
func TestMembershipConverges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 7).Draw(rt, "nodes")
		voters := rapid.SampledFrom([]int{1, 3, 5}).Draw(rt, "voters")
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("n%d", i)
		}
		c := newCluster(t, voters, ids...)
		for _, id := range ids[1:] {
			switch rapid.IntRange(0, 3).Draw(rt, "state "+id) {
			case 1:
				c.propose(t, &Command{Op: OpNodeState, NodeID: id, State: Failed})
			case 2:
				c.servers = slices.DeleteFunc(c.servers, func(s Server) bool { return s.ID == id })
			case 3:
				i := slices.IndexFunc(c.servers, func(s Server) bool { return s.ID == id })
				c.servers[i].Voter = !c.servers[i].Voter
			}
		}
		c.settle(t)
		c.check(t)
	})
}
