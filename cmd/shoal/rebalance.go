package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/rebalance"
	"shoal/internal/vbmap"
)

// rebalanceCommand is `shoal rebalance plan [--without NODE]... [--json]`:
// the moves a rebalance would make, computed here from the map of the
// node asked (the online moves themselves are not built yet).
func rebalanceCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "rebalance",
		Short: "Rebalance the vBuckets over the members (only `rebalance plan` exists yet: the moves it would make)",
		Long: "Rebalance gives new members their share of the vBuckets and restores the replica count\n" +
			"after failovers. The online moves (a copy built by a stream, then a takeover) are not\n" +
			"built yet: `shoal rebalance plan` prints the moves a rebalance would make from the current\n" +
			"map, and changes nothing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &exitError{code: exitOther, msg: "online rebalance is not available yet: `shoal rebalance plan` prints the moves it would make"}
		},
	}
	var (
		without []string
		asJSON  bool
	)
	plan := &cobra.Command{
		Use:   "plan",
		Short: "Print the moves a rebalance would make from the current map (changes nothing)",
		Long: "Compute, from the vBucket map of the node at --addr (any member), the target map of a\n" +
			"rebalance over the active members (without those given by --without, as `shoal remove`\n" +
			"would move everything off them) and print what it would move: per node the active and\n" +
			"replica counts now and after, the vBuckets whose chain changes, the copies to build (a\n" +
			"stream from the active each) and the takeovers (the active changes), with the lower\n" +
			"bounds of both for maps with the same per-node counts. The plan keeps every copy it can\n" +
			"and follows the placement rules of the first map: balanced actives and copies, no two\n" +
			"copies on a node, zones spread. --json prints the plan with every move.",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			m, err := c.ClusterMap(cmd.Context())
			if err != nil {
				return clusterErr(c, err)
			}
			doc, err := planRebalance(m, without)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSONOf(cmd.OutOrStdout(), doc)
			}
			printRebalancePlan(cmd.OutOrStdout(), doc)
			return nil
		}),
	}
	plan.Flags().StringArrayVar(&without, "without", nil, "plan as if this member (id) held nothing: everything moves off it (repeatable)")
	plan.Flags().BoolVar(&asJSON, "json", false, "print the plan, every move included, as JSON")
	root.AddCommand(plan)
	return root
}

// rebalancePlanDoc is what `shoal rebalance plan` prints.
type rebalancePlanDoc struct {
	Revision  uint64              `json:"revision"`
	VBuckets  int                 `json:"vbuckets"`
	Replicas  int                 `json:"replicas"`
	Nodes     []rebalancePlanNode `json:"nodes"`
	Moves     int                 `json:"moves"`
	Built     int                 `json:"copies_built"`
	MinBuilt  int                 `json:"copies_built_lower_bound"`
	Takeovers int                 `json:"takeovers"`
	MinTake   int                 `json:"takeovers_lower_bound"`
	Fallback  bool                `json:"fallback,omitempty"`
	Detail    []rebalance.Move    `json:"detail,omitempty"`
}

// rebalancePlanNode is one node's counts now and after the plan.
type rebalancePlanNode struct {
	ID     string       `json:"id"`
	Zone   string       `json:"zone,omitempty"`
	Holds  bool         `json:"holds_data"`
	Now    vbmap.Counts `json:"now"`
	After  vbmap.Counts `json:"after"`
	Builds int          `json:"copies_to_build"`
	Drops  int          `json:"copies_to_drop"`
}

// errNoDataNodes is planRebalance's error when no member may hold data.
var errNoDataNodes = errors.New("no active member is left to hold the vbuckets")

// planRebalance plans a rebalance of m over its active members but
// those in without.
func planRebalance(m *client.ClusterMap, without []string) (*rebalancePlanDoc, error) {
	members := map[string]bool{}
	var nodes []vbmap.Node
	for _, n := range m.Nodes {
		members[n.ID] = true
		if n.State == client.NodeActive && !slices.Contains(without, n.ID) {
			nodes = append(nodes, vbmap.Node{ID: n.ID, Zone: n.Zone})
		}
	}
	for _, id := range without {
		if !members[id] {
			return nil, &exitError{code: exitNegative, msg: fmt.Sprintf("--without %s: no such member", id)}
		}
	}
	if len(nodes) == 0 {
		return nil, errNoDataNodes
	}
	cur := &vbmap.Map{Revision: m.Revision, Replicas: m.Replicas, VBuckets: make([]vbmap.VBucket, len(m.VBuckets))}
	for vb, v := range m.VBuckets {
		cur.VBuckets[vb] = vbmap.VBucket{Chain: slices.Clone(v.Chain), Epoch: v.Epoch}
	}
	res, err := rebalance.Plan(cur, nodes, m.Replicas)
	if err != nil {
		return nil, err
	}
	target := cur.Next(cur.Revision+1, m.Replicas, res.Chains)
	doc := &rebalancePlanDoc{Revision: m.Revision, VBuckets: len(m.VBuckets), Replicas: m.Replicas,
		Moves: len(res.Moves), Built: res.Built, MinBuilt: res.MinBuilt, Takeovers: res.Takeovers,
		MinTake: res.MinTakeovers, Fallback: res.Fallback, Detail: res.Moves}
	now, after := cur.Counts(), target.Counts()
	builds, drops := map[string]int{}, map[string]int{}
	for _, mv := range res.Moves {
		for _, n := range mv.Build {
			builds[n]++
		}
		for _, n := range mv.Drop {
			drops[n]++
		}
	}
	seen := map[string]bool{}
	add := func(id, zone string) {
		if seen[id] {
			return
		}
		seen[id] = true
		holds := slices.ContainsFunc(nodes, func(n vbmap.Node) bool { return n.ID == id })
		doc.Nodes = append(doc.Nodes, rebalancePlanNode{ID: id, Zone: zone, Holds: holds, Now: now[id], After: after[id], Builds: builds[id], Drops: drops[id]})
	}
	for _, n := range m.Nodes {
		add(n.ID, n.Zone)
	}
	for _, id := range cur.Nodes() { // holders that are no members any more
		add(id, "")
	}
	return doc, nil
}

// printRebalancePlan writes the plan for people.
func printRebalancePlan(w io.Writer, d *rebalancePlanDoc) {
	fmt.Fprintf(w, "plan from map revision %d: %d vbuckets, %s\n", d.Revision, d.VBuckets, plural(d.Replicas, "replica"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tZONE\tACTIVE\tREPLICA\tAFTER ACTIVE\tAFTER REPLICA\tBUILD\tDROP")
	for _, n := range d.Nodes {
		zone := n.Zone
		if zone == "" {
			zone = "-"
		}
		id := n.ID
		if !n.Holds {
			id += " (leaves)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", id, zone, n.Now.Active, n.Now.Replica, n.After.Active, n.After.Replica, n.Builds, n.Drops)
	}
	tw.Flush()
	if d.Moves == 0 {
		fmt.Fprintln(w, "nothing to move: the map is balanced")
		return
	}
	copies := fmt.Sprintf("%d copies", d.Built)
	if d.Built == 1 {
		copies = "1 copy"
	}
	fmt.Fprintf(w, "%s move: %s to build (at least %d), %s (at least %d)\n", plural(d.Moves, "vbucket"),
		copies, d.MinBuilt, plural(d.Takeovers, "takeover"), d.MinTake)
	if d.Fallback {
		fmt.Fprintln(w, "the current chains could not be kept within the placement rules: the plan is the first map's placement")
	}
	fmt.Fprintln(w, "nothing was changed (online moves are not built yet)")
}
