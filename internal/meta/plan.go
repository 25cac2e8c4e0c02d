package meta

import (
	"fmt"
	"slices"
)

// Peer is a node seen before the cluster exists, as a join exchange
// describes it.
type Peer struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	HTTP   string `json:"http,omitempty"`
	Zone   string `json:"zone,omitempty"`
	Expect int    `json:"expect"`
}

// BootstrapPlan is what a node decides about forming a cluster.
type BootstrapPlan struct {
	// Bootstrap is set when this node must bootstrap the group now, with
	// Members (sorted by id): exactly one of the nodes that see the same
	// peers decides so, the one with the lowest id.
	Bootstrap bool
	Members   []Peer
	// Waiting says, for people, why not yet.
	Waiting string
}

// PlanBootstrap decides, on a node that has no cluster yet and was started
// with --bootstrap-expect expect, whether to bootstrap. peers are the
// nodes it heard from (itself included), all with the same expect (the
// caller refuses the others). When at least expect are known, the expect
// nodes with the lowest ids form the cluster and the lowest of them
// bootstraps it; everyone else waits to be contacted by the group (or to
// join it, if it is not among the first expect).
func PlanBootstrap(self string, expect int, peers []Peer) BootstrapPlan {
	ps := slices.Clone(peers)
	slices.SortFunc(ps, func(a, b Peer) int { return cmpString(a.ID, b.ID) })
	ps = slices.CompactFunc(ps, func(a, b Peer) bool { return a.ID == b.ID })
	if len(ps) < expect {
		return BootstrapPlan{Waiting: fmt.Sprintf("%d of %d expected nodes known", len(ps), expect)}
	}
	members := ps[:expect]
	if members[0].ID != self {
		return BootstrapPlan{Members: members, Waiting: fmt.Sprintf("waiting for %s to bootstrap the cluster", members[0].ID)}
	}
	return BootstrapPlan{Bootstrap: true, Members: members}
}

// VoterIDs returns the ids of the first voters of members (sorted by
// id): all of them up to voters.
func VoterIDs(members []Peer, voters int) map[string]bool {
	out := map[string]bool{}
	for i, p := range members {
		if i < voters {
			out[p.ID] = true
		}
	}
	return out
}

// Action is a membership change the leader makes (PlanMembership).
type Action struct {
	Kind ActionKind
	ID   string
	Addr string
}

// ActionKind is what an Action does.
type ActionKind string

// Membership actions.
const (
	// AddVoter / AddNonvoter put a node into the raft configuration (or
	// update its address there).
	AddVoter    ActionKind = "add-voter"
	AddNonvoter ActionKind = "add-nonvoter"
	// Demote makes a voter a non-voter.
	Demote ActionKind = "demote"
	// RemoveServer takes a server out of the raft configuration.
	RemoveServer ActionKind = "remove-server"
	// MarkActive records that a joining node is in the group.
	MarkActive ActionKind = "mark-active"
	// MarkVoter / MarkNonvoter record a node's suffrage in the metadata.
	MarkVoter    ActionKind = "mark-voter"
	MarkNonvoter ActionKind = "mark-nonvoter"
	// Forget removes a leaving member from the metadata once it is out of
	// the raft configuration.
	Forget ActionKind = "forget"
)

// PlanMembership is the leader's reconciliation of the metadata's members
// with the raft configuration: pure, one step at a time (the leader
// applies the first action, then plans again), so that a failure part way
// leaves a state from which the next plan continues.
//
//   - Members that are joining, active or failed belong in the raft
//     configuration; leaving members and unknown servers do not (removed,
//     never the leader itself).
//   - The wanted voters are the first st.Voters members by join order
//     among the active ones (failed and joining ones are not chosen); a
//     voter that leaves or fails is thereby replaced by the next
//     non-voter. The leader stays a voter while it leads.
//   - A joining member that is in the configuration becomes active.
//   - The metadata's voter flags follow the configuration.
func PlanMembership(st *State, servers []Server, leader string) []Action {
	if !st.Initialized() {
		return nil
	}
	inConf := map[string]Server{}
	for _, s := range servers {
		inConf[s.ID] = s
	}
	// Wanted voters: active members in join order.
	ordered := slices.Clone(st.Nodes)
	slices.SortStableFunc(ordered, func(a, b Node) int {
		switch {
		case a.Order < b.Order:
			return -1
		case a.Order > b.Order:
			return 1
		}
		return cmpString(a.ID, b.ID)
	})
	want := map[string]bool{}
	for _, n := range ordered {
		if len(want) < st.Voters && n.State == Active {
			want[n.ID] = true
		}
	}
	if _, ok := st.Node(leader); ok && !want[leader] && inConf[leader].Voter {
		want[leader] = true // never demote the leader itself
	}
	var acts []Action
	// Leaving members and unknown servers go first (they free voter seats).
	for _, s := range servers {
		if s.ID == leader {
			continue
		}
		if n, ok := st.Node(s.ID); !ok || n.State == Leaving {
			acts = append(acts, Action{Kind: RemoveServer, ID: s.ID, Addr: s.Addr})
		}
	}
	// Extra voters are demoted before new ones are added, so the voter
	// count never exceeds what is wanted for long.
	for _, s := range servers {
		if s.Voter && s.ID != leader && !want[s.ID] {
			if n, ok := st.Node(s.ID); ok && n.State != Leaving {
				acts = append(acts, Action{Kind: Demote, ID: s.ID, Addr: s.Addr})
			}
		}
	}
	for _, n := range ordered {
		if n.State == Leaving {
			continue
		}
		s, ok := inConf[n.ID]
		switch {
		case !ok || s.Addr != n.Addr:
			k := AddNonvoter // a newcomer catches up before it votes
			if want[n.ID] {
				k = AddVoter
			}
			acts = append(acts, Action{Kind: k, ID: n.ID, Addr: n.Addr})
		case want[n.ID] && !s.Voter:
			acts = append(acts, Action{Kind: AddVoter, ID: n.ID, Addr: n.Addr})
		}
	}
	for _, n := range ordered {
		s, ok := inConf[n.ID]
		if n.State == Leaving && !ok {
			acts = append(acts, Action{Kind: Forget, ID: n.ID})
			continue
		}
		if !ok || s.Addr != n.Addr {
			continue
		}
		if n.State == Joining {
			acts = append(acts, Action{Kind: MarkActive, ID: n.ID})
		}
		if n.Voter != s.Voter {
			k := MarkNonvoter
			if s.Voter {
				k = MarkVoter
			}
			acts = append(acts, Action{Kind: k, ID: n.ID})
		}
	}
	return acts
}
