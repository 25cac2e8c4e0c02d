package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
)

// clusterCommands are the cluster commands: nodes (and nodes remove),
// vbmap and cluster. Each asks the first node of --addr, any member.
func clusterCommands(g *globals) []*cobra.Command {
	var nodesJSON bool
	nodes := &cobra.Command{
		Use:   "nodes",
		Short: "List the members of the cluster: state, raft voter and leader, vBuckets held, zone, age of their state",
		Long: "Print the members of the cluster as the node at --addr (any member) sees them: id, data\n" +
			"address, state (joining, active, failed, leaving), whether it is a raft voter and the\n" +
			"metadata group's leader, how many vBuckets it is active and replica for, its zone and how\n" +
			"long it has been in its state. --json prints the members of the cluster document.",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			ci, err := c.Cluster(cmd.Context())
			if err != nil {
				return clusterErr(c, err)
			}
			out := cmd.OutOrStdout()
			if nodesJSON {
				var doc struct {
					Nodes json.RawMessage `json:"nodes"`
				}
				if err := json.Unmarshal(ci.Raw, &doc); err != nil {
					return fmt.Errorf("the cluster document does not decode: %w", err)
				}
				return printJSON(out, doc.Nodes)
			}
			// Liveness as the leader, which decides failovers, sees it.
			if ci.AutoFailover != nil && !ci.AutoFailover.Deciding && ci.LeaderAddr != "" {
				lg := *g
				lg.addr, lg.noRoute = ci.LeaderAddr, true
				if lc, err := lg.dial(cmd.Context()); err == nil {
					if li, err := lc.Cluster(cmd.Context()); err == nil && li.AutoFailover != nil {
						ci.AutoFailover = li.AutoFailover
					}
					lc.Close()
				}
			}
			printNodes(out, ci, time.Now())
			return nil
		}),
	}
	nodes.Flags().BoolVar(&nodesJSON, "json", false, "print the members as the cluster document has them (JSON)")

	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member that holds no vBucket (needs the admin credential when auth is on)",
		Long: "Make member ID leave the cluster: it is set leaving, and the leader takes it out of the\n" +
			"metadata group. The member must hold no vBucket (`shoal remove ID` moves them to the other\n" +
			"members first, then removes it) and must not be the metadata group's leader (stop it first:\n" +
			"another node takes over). Any member may be asked.",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ctx, id := cmd.Context(), a[0]
			ci, err := c.Cluster(ctx)
			if err != nil {
				return clusterErr(c, err)
			}
			for _, m := range ci.Nodes {
				if m.ID == id && m.Active+m.Replica > 0 {
					return fmt.Errorf("node %s is active for %d and replica for %d vbuckets: it cannot leave before a rebalance moves them to other nodes: `shoal remove %s` does both", id, m.Active, m.Replica, id)
				}
			}
			if err := c.RemoveNode(ctx, id); err != nil {
				return clusterErr(c, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s is leaving; the leader takes it out of the metadata group\n", id)
			return nil
		}),
	}
	nodes.AddCommand(remove)

	var (
		mapJSON bool
		vb      int
		key     string
	)
	vbmap := &cobra.Command{
		Use:   "vbmap",
		Short: "Show the vBucket map: revision, replicas, vBuckets per node; or one vBucket (--vb N, --key KEY)",
		Long: "Print the vBucket map the node at --addr applied last: its revision, the replica count and\n" +
			"how many vBuckets each member is active and replica for. --vb N shows vBucket N: its chain\n" +
			"(the active node first, then the replicas) with their addresses and states, and its epoch;\n" +
			"--key KEY shows the vBucket KEY hashes to (xxhash64(KEY) mod the vBucket count), for any\n" +
			"channel. --json prints the map (or the one vBucket) as JSON.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			byVB, byKey := cmd.Flags().Changed("vb"), cmd.Flags().Changed("key")
			switch {
			case byVB && byKey:
				return usageError{errors.New("--vb and --key go alone: give one of them")}
			case byKey && key == "":
				return usageError{errors.New("--key: an empty key has no vbucket")}
			}
			return g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
				m, err := c.ClusterMap(cmd.Context())
				if err != nil {
					return clusterErr(c, err)
				}
				out := cmd.OutOrStdout()
				if !byVB && !byKey {
					if mapJSON {
						return printJSONOf(out, m)
					}
					printVBMap(out, m)
					return nil
				}
				if byKey {
					vb = m.VBucketOf([]byte(key))
				}
				if vb < 0 || vb >= len(m.VBuckets) {
					return &exitError{code: exitNegative, msg: fmt.Sprintf("vbucket %d is out of range: the map of %s has %d vbuckets (0..%d)", vb, c.Nodes()[0], len(m.VBuckets), len(m.VBuckets)-1)}
				}
				doc := oneVBucket(m, vb, key)
				if mapJSON {
					return printJSONOf(out, doc)
				}
				printVBucket(out, doc, len(m.VBuckets))
				return nil
			})(cmd, args)
		},
	}
	vbmap.Flags().BoolVar(&mapJSON, "json", false, "print the map, or the vBucket, as JSON")
	vbmap.Flags().IntVar(&vb, "vb", -1, "show this vBucket")
	vbmap.Flags().StringVar(&key, "key", "", "show the vBucket of this key")

	var clusterJSON bool
	cluster := &cobra.Command{
		Use:   "cluster",
		Short: "Show the cluster: id, map revision, leader, this node's raft state, voters, nodes by state",
		Long: "Print the cluster as the node at --addr sees it: the cluster id, the vBucket map's revision,\n" +
			"the metadata group's leader (id and address), this node's raft state, the voters, the\n" +
			"replica and vBucket counts, the members by state and the leader changes this node saw.\n" +
			"--json prints the whole cluster document (also the cluster section of /status).",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			ci, err := c.Cluster(cmd.Context())
			if err != nil {
				return clusterErr(c, err)
			}
			out := cmd.OutOrStdout()
			if clusterJSON {
				return printJSON(out, ci.Raw)
			}
			printCluster(out, ci)
			return nil
		}),
	}
	cluster.Flags().BoolVar(&clusterJSON, "json", false, "print the cluster document (JSON)")
	return []*cobra.Command{nodes, vbmap, cluster}
}

// runCmd is run for a command body that also needs its command (output,
// flags).
func (g *globals) runCmd(fn func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(cmd, c, args)
	}
}

// clusterErr explains an error of a cluster request. The node's own
// message (no quorum, refused, bad request) is in err already.
func clusterErr(c *client.Client, err error) error {
	if errors.Is(err, client.ErrUnsupported) {
		return fmt.Errorf("%s is in no cluster: it is a standby (--replica-of) or a node without cluster support: %w", c.Nodes()[0], err)
	}
	return err
}

// printJSON writes the JSON document b indented.
func printJSON(w io.Writer, b []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("the node sent a document that is not JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// printJSONOf writes v as indented JSON.
func printJSONOf(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// printNodes writes the members table.
func printNodes(w io.Writer, ci *client.ClusterInfo, now time.Time) {
	if len(ci.Nodes) == 0 {
		fmt.Fprintf(w, "%s is in no cluster yet: %s\n", ci.Self, joinSummary(ci.Join))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tVOTER\tLEADER\tACTIVE\tREPLICA\tZONE\tSINCE\tLIVENESS (leader's view)")
	for _, m := range ci.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", m.ID, m.Addr, m.State, yesNo(m.Voter), yesNo(m.Leader),
			m.Active, m.Replica, dash(m.Zone), age(now, m.Since), livenessOf(ci.AutoFailover, m))
	}
	tw.Flush()
	if d := ci.Settings.Durability; d != "" && d != "none" {
		fmt.Fprintf(w, "default durability of kv writes: %s\n", d)
	}
	if af := ci.AutoFailover; af != nil && af.Deciding {
		state := "off"
		if af.Enabled {
			state = "on"
		}
		fmt.Fprintf(w, "automatic failover %s (timeout %v, %d of max-count %d used): %s\n", state,
			time.Duration(af.TimeoutMs)*time.Millisecond, af.Count, af.MaxCount, af.Phase)
		if af.Refused != nil {
			fmt.Fprintf(w, "refused by rule %s: %s\n", af.Refused.Rule, af.Refused.Detail)
		}
	}
}

// livenessOf is a member's liveness as the leader sees it: heard how long
// ago, or its place in the down set.
func livenessOf(af *client.AutoFailover, m client.ClusterMember) string {
	switch {
	case af == nil || !af.Deciding || m.State != "active":
		return "-"
	case m.Leader:
		return "up (the leader)"
	}
	for _, d := range af.Down {
		if d.Node == m.ID {
			return af.Phase + ": " + d.Reason
		}
	}
	if by, ok := af.Suspected[m.ID]; ok {
		return "unheard by " + strings.Join(by, ",") + " only (possible partition)"
	}
	if ms, ok := af.HeardMsAgo[m.ID]; ok {
		return fmt.Sprintf("up (heard %d ms ago)", ms)
	}
	return "not heard yet"
}

// printVBMap writes the map's summary: revision, replicas, vBuckets per node.
func printVBMap(w io.Writer, m *client.ClusterMap) {
	fmt.Fprintf(w, "revision %d, %d vbuckets, %s\n", m.Revision, len(m.VBuckets), plural(m.Replicas, "replica"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tACTIVE\tREPLICA")
	for _, n := range m.Nodes {
		a, r := m.Counts(n.ID)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", n.ID, n.Addr, n.State, a, r)
	}
	tw.Flush()
	var none, short, moving int
	for _, v := range m.VBuckets {
		if len(v.Pending) > 0 || v.Frozen {
			moving++
		}
		switch {
		case len(v.Chain) == 0:
			none++
		case len(v.Chain) < 1+m.Replicas:
			short++
		}
	}
	if none > 0 {
		fmt.Fprintf(w, "%s held by no node\n", plural(none, "vbucket"))
	}
	if short > 0 {
		fmt.Fprintf(w, "%s with fewer than %d copies\n", plural(short, "vbucket"), 1+m.Replicas)
	}
	if moving > 0 {
		fmt.Fprintf(w, "%s being moved by a rebalance (shoal rebalance --status)\n", plural(moving, "vbucket"))
	}
}

// vbucketDoc is one vBucket as vbmap --vb/--key prints it.
type vbucketDoc struct {
	VBucket  int         `json:"vbucket"`
	Key      string      `json:"key,omitempty"`
	Epoch    uint64      `json:"epoch"`
	Revision uint64      `json:"revision"`
	Chain    []chainNode `json:"chain"`
}

// chainNode is one node of a vBucket's chain.
type chainNode struct {
	ID string `json:"id"`
	// Role is the node's state for the vBucket: active or replica.
	Role string `json:"role"`
	Addr string `json:"addr"`
	// State is the member's state in the cluster.
	State string `json:"state"`
}

func oneVBucket(m *client.ClusterMap, vb int, key string) vbucketDoc {
	v := m.VBuckets[vb]
	doc := vbucketDoc{VBucket: vb, Key: key, Epoch: v.Epoch, Revision: m.Revision, Chain: []chainNode{}}
	for i, id := range v.Chain {
		role := "replica"
		if i == 0 {
			role = "active"
		}
		n, _ := m.Node(id)
		if i == 0 && v.Frozen {
			role = "active (frozen: being taken over)"
		}
		doc.Chain = append(doc.Chain, chainNode{ID: id, Role: role, Addr: n.Addr, State: n.State})
	}
	for _, id := range v.Pending {
		n, _ := m.Node(id)
		doc.Chain = append(doc.Chain, chainNode{ID: id, Role: "pending (a copy being built)", Addr: n.Addr, State: n.State})
	}
	return doc
}

// printVBucket writes one vBucket: its chain and epoch.
func printVBucket(w io.Writer, d vbucketDoc, n int) {
	if d.Key != "" {
		fmt.Fprintf(w, "key %q is in vbucket %d of %d\n", d.Key, d.VBucket, n)
	}
	fmt.Fprintf(w, "vbucket %d, epoch %d, map revision %d\n", d.VBucket, d.Epoch, d.Revision)
	if len(d.Chain) == 0 {
		fmt.Fprintln(w, "no node holds it: every copy was lost")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tNODE\tADDRESS\tNODE STATE")
	for _, c := range d.Chain {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Role, c.ID, dash(c.Addr), dash(c.State))
	}
	tw.Flush()
}

// nodeStateOrder is the order of the member counts in printCluster.
var nodeStateOrder = []string{client.NodeActive, client.NodeJoining, client.NodeLeaving, client.NodeFailed}

// printCluster writes the cluster summary.
func printCluster(w io.Writer, ci *client.ClusterInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	line("cluster", "%s", dash(ci.ClusterID))
	line("revision", "%d (metadata index %d)", ci.Revision, ci.Index)
	if ci.Leader != "" {
		line("leader", "%s at %s", ci.Leader, dash(ci.LeaderAddr))
	} else {
		line("leader", "none known")
	}
	self := ci.Self + ": " + dash(ci.RaftState)
	if ci.LastContactMillis > 0 {
		self += fmt.Sprintf(", heard the leader %s ago", time.Duration(ci.LastContactMillis)*time.Millisecond)
	}
	line("this node", "%s", self)
	line("voters", "%d of %d wanted: %s", len(ci.Voters), ci.WantVoters, dash(strings.Join(ci.Voters, ", ")))
	line("replicas", "%d", ci.Replicas)
	line("vbuckets", "%d", ci.VBuckets)
	counts := map[string]int{}
	for _, m := range ci.Nodes {
		counts[m.State]++
	}
	var parts []string
	for _, s := range nodeStateOrder {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
			delete(counts, s)
		}
	}
	for s, n := range counts { // states this CLI does not know
		parts = append(parts, fmt.Sprintf("%d %s", n, s))
	}
	line("nodes", "%d: %s", len(ci.Nodes), dash(strings.Join(parts, ", ")))
	line("leader changes", "%d", ci.LeaderChanges)
	if ci.Join.Phase != "member" {
		line("join", "%s", joinSummary(ci.Join))
	}
	tw.Flush()
}

func joinSummary(j client.JoinInfo) string {
	s := dash(j.Phase)
	if j.Waiting != "" {
		s += ": " + j.Waiting
	}
	return s
}

// age renders how long ago t was, to the second: 3m12s, 5h2m, 3d4h.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0).Truncate(time.Second)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return d.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
