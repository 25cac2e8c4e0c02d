package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/config"
	"shoal/internal/rebalance"
	"shoal/internal/vbmap"
)

// rebalanceCommand is `shoal rebalance [--wait] | --status | --stop` and
// `shoal rebalance plan`.
func rebalanceCommand(g *globals) *cobra.Command {
	var (
		status, stop, wait, outJSON bool
		moves                       int
		rate                        string
	)
	root := &cobra.Command{
		Use:   "rebalance",
		Short: "Rebalance the vBuckets over the members (--status, --stop, --wait; `plan` prints the moves only)",
		Long: "Rebalance gives new members their share of the vBuckets and restores the replica count\n" +
			"after failovers, while clients read and write. The metadata leader runs it (any member may\n" +
			"be asked): a few vBuckets at a time (--moves, default the leader's --rebalance-moves, 4),\n" +
			"each copied to its new node by a stream from its active, then, where the active changes,\n" +
			"taken over: the old active pauses the vBucket's requests for the moment the last\n" +
			"mutations drain, and the map naming the new active commits (clients retry meanwhile).\n" +
			"It returns once started; --wait follows it to the end with a progress line. --status\n" +
			"prints the progress (done/total, bytes, rate, ETA), --stop stops it: copies being built\n" +
			"are dropped, takeovers under way finish, the map stays consistent and a later rebalance\n" +
			"continues from it. `shoal rebalance plan` prints what a rebalance would move.",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			var st *client.RebalanceStatus
			var err error
			var start func() (*client.RebalanceStatus, error)
			switch {
			case status && stop:
				return &exitError{code: exitUsage, msg: "--status and --stop do not go together"}
			case status:
				st, err = c.RebalanceStatus(ctx)
			case stop:
				st, err = c.StopRebalance(ctx)
			default:
				o := client.RebalanceOptions{Moves: moves}
				if rate != "" {
					sz, perr := config.ParseSize(rate)
					if perr != nil {
						return &exitError{code: exitUsage, msg: fmt.Sprintf("--rate: %v", perr)}
					}
					o.Rate = int64(sz)
					if o.Rate == 0 {
						o.Rate = -1 // unlimited, whatever the leader's default
					}
				}
				start = func() (*client.RebalanceStatus, error) { return c.Rebalance(ctx, o) }
				st, err = start()
			}
			if err != nil {
				return clusterErr(c, err)
			}
			if wait {
				return waitRebalance(cmd, c, st, outJSON, start)
			}
			if outJSON {
				return printJSONOf(out, st)
			}
			printRebalanceStatus(out, st)
			return nil
		}),
	}
	root.Flags().BoolVar(&status, "status", false, "print the progress of the running or last rebalance")
	root.Flags().BoolVar(&stop, "stop", false, "stop the running rebalance (the map stays consistent; a later rebalance continues)")
	root.Flags().BoolVar(&wait, "wait", false, "follow the rebalance until it ends, with a progress line; exit 4 if it stopped before the end")
	root.Flags().BoolVar(&outJSON, "json", false, "print the status as JSON")
	root.Flags().IntVar(&moves, "moves", 0, "vBuckets moved at once (default: the leader's --rebalance-moves)")
	root.Flags().StringVar(&rate, "rate", "", "bytes per second the new copies may receive, e.g. 50MB; 0: unlimited (default: the leader's --rebalance-rate)")
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

// removeCommand is `shoal remove NODE`: a rebalance that moves every
// vBucket off NODE, then NODE leaves the cluster.
func removeCommand(g *globals) *cobra.Command {
	var moves int
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Move every vBucket off a member, then remove it from the cluster",
		Long: "Remove member NODE (its id) while clients keep working: a rebalance moves each of its\n" +
			"vBuckets to the other members (progress as `shoal rebalance --wait` shows it), then NODE\n" +
			"leaves and the leader takes it out of the metadata group. If the rebalance stops before\n" +
			"the end, NODE stays a member (exit 4); run the command again to continue. NODE must not be\n" +
			"the metadata leader when it is taken out (the leader hands over first).",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ctx, id := cmd.Context(), a[0]
			start := func() (*client.RebalanceStatus, error) {
				return c.Rebalance(ctx, client.RebalanceOptions{Without: []string{id}, Moves: moves})
			}
			st, err := start()
			if err != nil {
				return clusterErr(c, err)
			}
			if err := waitRebalance(cmd, c, st, false, start); err != nil {
				return err
			}
			// The rebalance is done; an election under way is waited out.
			for deadline := time.Now().Add(10 * time.Second); ; {
				err := c.RemoveNode(ctx, id)
				if err == nil {
					break
				}
				if !errors.Is(err, client.ErrNoQuorum) || time.Now().After(deadline) {
					return clusterErr(c, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s holds no vbucket and is leaving: the leader takes it out of the metadata group, and the node exits\n", id)
			return nil
		}),
	}
	cmd.Flags().IntVar(&moves, "moves", 0, "vBuckets moved at once (default: the leader's --rebalance-moves)")
	return cmd
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
	fmt.Fprintln(w, "nothing was changed: `shoal rebalance` makes these moves")
}

// printRebalanceStatus writes a rebalance's status for people.
func printRebalanceStatus(w io.Writer, st *client.RebalanceStatus) {
	if st.State == "" {
		fmt.Fprintf(w, "no rebalance has run since %s became the metadata leader\n", st.Leader)
		return
	}
	fmt.Fprintf(w, "rebalance %s (leader %s): %s\n", st.State, st.Leader, rebalanceLine(st))
	if st.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", st.Reason)
	}
	for _, m := range st.InFlight {
		fmt.Fprintf(w, "  vbucket %d %s: %s -> %s\n", m.VBucket, m.Phase, strings.Join(m.From, ","), strings.Join(m.To, ","))
	}
	if !st.Running && st.MapMoving > 0 {
		fmt.Fprintf(w, "the map still shows %s moving: the leader clears them\n", plural(st.MapMoving, "vbucket"))
	}
}

// rebalanceLine is the one-line progress of a rebalance.
func rebalanceLine(st *client.RebalanceStatus) string {
	pct := 100.0
	if st.Total > 0 {
		pct = float64(st.Done) * 100 / float64(st.Total)
	}
	line := fmt.Sprintf("%d/%d vbuckets (%.0f%%), %d moving, %d abandoned, %.1f MB at %.1f MB/s",
		st.Done, st.Total, pct, st.Moving, st.Abandoned, float64(st.Bytes)/1e6, st.Rate/1e6)
	switch {
	case st.State == "done":
		line += fmt.Sprintf(", took %v", (time.Duration(st.ElapsedMillis) * time.Millisecond).Round(time.Millisecond))
	case st.ETAMillis >= 0:
		line += fmt.Sprintf(", ETA %v", (time.Duration(st.ETAMillis) * time.Millisecond).Round(time.Second))
	}
	return line
}

// waitRebalance follows a rebalance until it ends: a progress line
// rewritten in place on a terminal, one every 5 s otherwise. A run ends
// when the metadata leader changes (the new leader clears its moves from
// the map); with start (the rebalance this command started) it is then
// started again on the new leader, which plans from the map as it is, up
// to maxLeaderChanges times.
func waitRebalance(cmd *cobra.Command, c *client.Client, st *client.RebalanceStatus, asJSON bool, start func() (*client.RebalanceStatus, error)) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	tty := isTerminal(out)
	var lastLine time.Time
	restarts := 0
	var refusedSince time.Time
	for {
		if !st.Running {
			if start == nil || !leaderChanged(st) || restarts >= maxLeaderChanges || (!refusedSince.IsZero() && time.Since(refusedSince) > 30*time.Second) {
				break
			}
			next, err := start()
			switch {
			case err == nil:
				restarts, refusedSince, st = restarts+1, time.Time{}, next
				if !asJSON {
					fmt.Fprintf(out, "\r\033[Kthe metadata leader changed during the rebalance; %s starts it again from the map as it is\n", st.Leader)
				}
				continue
			case errors.Is(err, client.ErrRefused): // the new leader still clears the old moves: ask again
				if refusedSince.IsZero() {
					refusedSince = time.Now()
				}
			default:
				return clusterErr(c, err)
			}
		}
		switch {
		case asJSON:
		case tty:
			fmt.Fprintf(out, "\r\033[Krebalance %s", rebalanceLine(st))
		case time.Since(lastLine) >= 5*time.Second:
			fmt.Fprintf(out, "rebalance %s\n", rebalanceLine(st))
			lastLine = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		next, err := c.RebalanceStatus(ctx)
		if err != nil {
			return clusterErr(c, err)
		}
		st = next
	}
	if restarts > 0 && st.State == "" {
		st.State, st.Reason = "stopped", "the metadata leader kept changing"
	}
	if tty && !asJSON {
		fmt.Fprint(out, "\r\033[K")
	}
	if asJSON {
		if err := printJSONOf(out, st); err != nil {
			return err
		}
	} else {
		printRebalanceStatus(out, st)
	}
	if st.State != "done" {
		return quietExit(exitOther)
	}
	return nil
}

// maxLeaderChanges bounds how often waitRebalance starts a rebalance
// again after the metadata leader changed.
const maxLeaderChanges = 5

// leaderChanged reports whether a status that is not running says the
// rebalance ended with a change of the metadata leader: the old leader's
// run stopped for it (it saw itself replaced, or its proposal failed),
// or the new leader has run none.
func leaderChanged(st *client.RebalanceStatus) bool {
	return st.State == "" || strings.Contains(st.Reason, "no longer the metadata leader") || strings.Contains(st.Reason, "the map could not be changed")
}
