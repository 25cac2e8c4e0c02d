package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/liveness"
	"shoal/internal/repl"
)

func replCommands(g *globals) []*cobra.Command {
	var asJSON, vbuckets bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show a node's status: role, liveness of its peers, replication (--json for the document)",
		Long: "Print the status of the node at --addr (the first one): its engines, the liveness of the nodes\n" +
			"it exchanges replication traffic with (active/inactive, seconds since last heard, per channel)\n" +
			"and its own readiness, and, on a standby, its replication per engine (vBuckets caught up or\n" +
			"lagging, reconnects, last error); --json prints the whole document instead.\n\n" +
			"--vbuckets compares the copies of every vBucket across the cluster: for each vBucket and\n" +
			"engine, the high seqno of its active and of each replica (from every member's status), how\n" +
			"far each replica is behind, and a summary of the copies that differ; with --json, that\n" +
			"comparison as a document. On a node in no cluster (a standby) it prints the node's own\n" +
			"high seqnos per vBucket and engine, for comparing it with its active by hand.",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			ctx, stdout := cmd.Context(), cmd.OutOrStdout()
			if vbuckets && c.RoutingMap() != nil {
				return compareCopies(ctx, stdout, c, asJSON)
			}
			doc, err := c.Status(ctx, vbuckets)
			if err != nil {
				return err
			}
			if asJSON {
				var out bytes.Buffer
				if err := json.Indent(&out, doc, "", "  "); err != nil {
					return fmt.Errorf("the node sent a status that is not JSON: %w", err)
				}
				out.WriteByte('\n')
				_, err = stdout.Write(out.Bytes())
				return err
			}
			var st statusDoc
			if err := json.Unmarshal(doc, &st); err != nil {
				return fmt.Errorf("the node sent a status that does not decode: %w", err)
			}
			printStatus(stdout, &st, time.Now())
			return nil
		}),
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the status document (JSON)")
	status.Flags().BoolVar(&vbuckets, "vbuckets", false, "compare every vBucket's high seqno per engine across its copies (the active and each replica)")

	var forcePromote bool
	promote := &cobra.Command{
		Use:   "promote",
		Short: "Turn the standby at --addr into an active node (needs the admin credential when auth is on)",
		Long: "Manual failover: the standby stops replicating, starts a new history of every vBucket (a new\n" +
			"failover-log entry at its high seqno) and accepts writes. It will not start as a standby again\n" +
			"unless DATA/repl/promoted is deleted.\n\n" +
			"Refused while the active still streams to the standby (stop the active, or `shoal replica stop`\n" +
			"the standby, first: a standby cannot fence its active) and while the standby is behind what its\n" +
			"active announced (the lag is named); --force promotes it anyway and what it lacks is lost.",
		Args: cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			if err := c.Promote(ctx, forcePromote); err != nil {
				return err
			}
			fmt.Printf("%s is active\n", c.Nodes()[0])
			return nil
		}),
	}

	promote.Flags().BoolVar(&forcePromote, "force", false, "promote a standby that is behind its active (what it lacks is lost)")

	replica := &cobra.Command{
		Use:   "replica",
		Short: "Stop, start or retune a standby's replication at runtime (needs the admin credential when auth is on)",
	}
	simple := func(use, short string, fn func(*client.Client, context.Context) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error { return fn(c, ctx) }),
		}
	}
	var set client.ReplicaSettings
	setCmd := &cobra.Command{
		Use:   "set",
		Short: "Change the replication settings; the standby reopens its streams with them at once",
		Args:  cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			if set == (client.ReplicaSettings{}) {
				return usageError{fmt.Errorf("give --connections, --noop-interval or --idle-timeout")}
			}
			return c.ReplicaSet(ctx, set)
		}),
	}
	setCmd.Flags().IntVar(&set.Connections, "connections", 0, "stream connections per engine (1..64)")
	setCmd.Flags().DurationVar(&set.NoopInterval, "noop-interval", 0, "NOOP interval; 2 silent intervals = dead connection")
	setCmd.Flags().DurationVar(&set.IdleTimeout, "idle-timeout", 0, "dead connection after this long with nothing received")
	replica.AddCommand(
		simple("stop", "Stop replicating; the data stays and reads go on", (*client.Client).ReplicaStop),
		simple("start", "Start replicating again: reconnect and resume", (*client.Client).ReplicaStart),
		setCmd,
	)
	return []*cobra.Command{status, promote, replica}
}

// statusDoc is the part of a node's status document the summary prints.
type statusDoc struct {
	NodeID        string `json:"node_id"`
	Version       string `json:"version"`
	Listen        string `json:"listen"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	VBuckets      int    `json:"vbuckets"`
	Connections   int64  `json:"connections"`
	KV            struct {
		Records int64 `json:"records"`
		Bytes   int64 `json:"bytes"`
	} `json:"kv"`
	Queue struct {
		Records int64 `json:"records"`
		Bytes   int64 `json:"bytes"`
	} `json:"queue"`
	Liveness    *liveness.Report `json:"liveness"`
	Replication struct {
		Role         string              `json:"role"`
		ReplicaOf    string              `json:"replica_of"`
		PromotedFrom string              `json:"promoted_from"`
		Engines      []repl.Status       `json:"engines"`
		HighSeqnos   map[string][]uint64 `json:"high_seqnos"`
	} `json:"replication"`
}

// printStatus writes the readable summary of st.
func printStatus(w io.Writer, st *statusDoc, now time.Time) {
	r := &st.Replication
	role := r.Role
	switch {
	case r.ReplicaOf != "":
		role += " of " + r.ReplicaOf
	case r.PromotedFrom != "":
		role += " (promoted; was a replica of " + r.PromotedFrom + ")"
	}
	fmt.Fprintf(w, "node %s  %s  %s  up %s  %s  %d vbuckets  version %s\n", st.NodeID, role, st.Listen,
		time.Duration(st.UptimeSeconds)*time.Second, plural(int(st.Connections), "connection"), st.VBuckets, st.Version)
	fmt.Fprintf(w, "kv %d records, %d bytes; queue %d records, %d bytes\n", st.KV.Records, st.KV.Bytes, st.Queue.Records, st.Queue.Bytes)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	if l := st.Liveness; l != nil {
		fmt.Fprintf(tw, "liveness (tick %d):\n", l.Tick)
		for _, nd := range l.Nodes {
			name := nd.Node
			if nd.Local {
				name += " (local)"
			}
			var chans []string
			for _, c := range nd.Channels {
				chans = append(chans, strings.TrimSpace(c.Channel+" "+string(c.State)+" "+ago(c.SecondsSinceLastHeard)))
			}
			for _, c := range nd.Checks {
				if c.Channel == "" {
					ok := "ok"
					if !c.OK {
						ok = "FAILED: " + c.Detail
					}
					chans = append(chans, c.Name+" "+ok)
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", name, nd.State, ago(nd.SecondsSinceLastHeard), strings.Join(chans, ", "))
		}
	} else {
		fmt.Fprintln(tw, "liveness: no tick yet")
	}
	if len(r.Engines) > 0 {
		fmt.Fprintf(tw, "replication:\n")
	}
	for _, e := range r.Engines {
		from := e.Producer
		if e.ProducerNode != "" {
			from += " (" + e.ProducerNode + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s from %s\t%d caught up, %d lagging\t%d conn, noop %s\tapplied %d, reconnects %d, rollbacks %d\n",
			e.Bucket, e.State, from, e.CaughtUp, e.Lagging, e.Connections, e.NoopInterval, e.Applied, e.Reconnects, e.Rollbacks)
		if e.LastError != "" && e.LastErrorAt != nil {
			fmt.Fprintf(tw, "  \tlast error %s ago: %s\n", now.Sub(*e.LastErrorAt).Round(time.Millisecond), e.LastError)
		}
	}
	tw.Flush()
	if len(r.HighSeqnos) > 0 {
		printHighSeqnos(w, r.HighSeqnos)
	}
}

// printHighSeqnos prints one line per vBucket: its high seqno per engine.
func printHighSeqnos(w io.Writer, seqnos map[string][]uint64) {
	names := make([]string, 0, len(seqnos))
	n := 0
	for name, s := range seqnos {
		names = append(names, name)
		n = max(n, len(s))
	}
	slices.Sort(names)
	fmt.Fprintf(w, "vbucket\t%s\n", strings.Join(names, "\t"))
	for vb := range n {
		fmt.Fprintf(w, "%d", vb)
		for _, name := range names {
			var v uint64
			if s := seqnos[name]; vb < len(s) {
				v = s[vb]
			}
			fmt.Fprintf(w, "\t%d", v)
		}
		fmt.Fprintln(w)
	}
}

// ago renders seconds since last heard, "" when never.
func ago(s *float64) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("%.1fs", *s)
}

// copiesDoc is `status --vbuckets` of a cluster: every vBucket's copies
// and their high seqnos per engine.
type copiesDoc struct {
	Revision uint64 `json:"revision"`
	// VBuckets has one entry per vBucket of the map.
	VBuckets []vbCopies `json:"vbuckets"`
	// Differ counts the replica copies whose seqno is not their active's.
	Differ int `json:"differ"`
	// Copies counts the replica copies compared.
	Copies int `json:"copies"`
	// Unreachable are the members whose status could not be read, with why.
	Unreachable map[string]string `json:"unreachable,omitempty"`
}

// vbCopies is one vBucket of copiesDoc.
type vbCopies struct {
	VBucket int                     `json:"vbucket"`
	Engines map[string]engineCopies `json:"engines"`
}

// engineCopies is one engine's copies of a vBucket.
type engineCopies struct {
	Active   copySeqno   `json:"active"`
	Replicas []copySeqno `json:"replicas"`
}

// copySeqno is one node's high seqno of a vBucket in an engine; Seqno is
// nil when that node's status could not be read.
type copySeqno struct {
	Node  string  `json:"node"`
	Seqno *uint64 `json:"seqno"`
	// Behind is, for a replica, the active's seqno minus its own
	// (negative: ahead); absent when either is unknown.
	Behind *int64 `json:"behind,omitempty"`
}

// compareCopies prints, for every vBucket and engine, the high seqno of
// its active and of each replica, read from every member's status
// document.
func compareCopies(ctx context.Context, w io.Writer, c *client.Client, asJSON bool) error {
	m := c.RoutingMap()
	seqnos := map[string]map[string][]uint64{} // node id -> engine -> by vBucket
	doc := copiesDoc{Revision: m.Revision}
	engines := map[string]bool{}
	for _, st := range c.Statuses(ctx, true) {
		var sd statusDoc
		err := st.Err
		if err == nil {
			err = json.Unmarshal(st.Doc, &sd)
		}
		if err != nil {
			if doc.Unreachable == nil {
				doc.Unreachable = map[string]string{}
			}
			doc.Unreachable[st.ID] = err.Error()
			continue
		}
		seqnos[st.ID] = sd.Replication.HighSeqnos
		for e := range sd.Replication.HighSeqnos {
			engines[e] = true
		}
	}
	names := slices.Sorted(maps.Keys(engines))
	seqnoOf := func(id, engine string, vb int) *uint64 {
		s, ok := seqnos[id][engine]
		if !ok || vb >= len(s) {
			return nil
		}
		v := s[vb]
		return &v
	}
	for vb, v := range m.VBuckets {
		vc := vbCopies{VBucket: vb, Engines: map[string]engineCopies{}}
		for _, e := range names {
			if len(v.Chain) == 0 {
				continue
			}
			ec := engineCopies{Active: copySeqno{Node: v.Chain[0], Seqno: seqnoOf(v.Chain[0], e, vb)}}
			for _, id := range v.Chain[1:] {
				cs := copySeqno{Node: id, Seqno: seqnoOf(id, e, vb)}
				doc.Copies++
				if cs.Seqno != nil && ec.Active.Seqno != nil {
					d := int64(*ec.Active.Seqno) - int64(*cs.Seqno)
					cs.Behind = &d
					if d != 0 {
						doc.Differ++
					}
				}
				ec.Replicas = append(ec.Replicas, cs)
			}
			vc.Engines[e] = ec
		}
		doc.VBuckets = append(doc.VBuckets, vc)
	}
	if asJSON {
		return printJSONOf(w, doc)
	}
	fmt.Fprintf(w, "map revision %d: %d vbuckets, %d members\n", m.Revision, len(m.VBuckets), len(m.Nodes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VBUCKET\tENGINE\tACTIVE\tSEQNO\tREPLICAS (seqno, behind)")
	num := func(p *uint64) string {
		if p == nil {
			return "?"
		}
		return fmt.Sprint(*p)
	}
	for _, vc := range doc.VBuckets {
		for _, e := range names {
			ec, ok := vc.Engines[e]
			if !ok {
				fmt.Fprintf(tw, "%d\t%s\t-\t-\tno copy\n", vc.VBucket, e)
				continue
			}
			var reps []string
			for _, r := range ec.Replicas {
				s := r.Node + " " + num(r.Seqno)
				if r.Behind != nil && *r.Behind != 0 {
					s += fmt.Sprintf(" (%+d)", -*r.Behind)
				}
				reps = append(reps, s)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", vc.VBucket, e, ec.Active.Node, num(ec.Active.Seqno), dash(strings.Join(reps, ", ")))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%d of %d replica copies differ from their active\n", doc.Differ, doc.Copies)
	for _, id := range slices.Sorted(maps.Keys(doc.Unreachable)) {
		fmt.Fprintf(w, "%s: status not read: %s\n", id, doc.Unreachable[id])
	}
	return nil
}
