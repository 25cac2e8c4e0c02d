package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/discovery"
)

// readinessDoc is the part of a node's status document discovery and
// wait-ready read.
type readinessDoc struct {
	NodeID    string            `json:"node_id"`
	Discovery *discovery.Status `json:"discovery"`
	Readiness struct {
		Ready   bool     `json:"ready"`
		Missing []string `json:"missing"`
	} `json:"readiness"`
}

// fetchReadiness asks the node for its status document.
func fetchReadiness(ctx context.Context, c *client.Client) (*readinessDoc, error) {
	b, err := c.Status(ctx, false)
	if err != nil {
		return nil, err
	}
	var d readinessDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("the node sent a status that does not decode: %w", err)
	}
	return &d, nil
}

// discoveryCommands are discovery and wait-ready.
func discoveryCommands(g *globals) []*cobra.Command {
	var asJSON bool
	disc := &cobra.Command{
		Use:   "discovery",
		Short: "Show a node's discovery (--discovery): backend, phase, last result, discovered, joined and unavailable nodes",
		Long: "Print the state of the discovery of the node at --addr: its backend, phase (initial or\n" +
			"regular), the last backend result and the retry type chosen after it, whether a call is\n" +
			"running, when the next one is due, and every address it knows: the node id there, whether\n" +
			"the backend lists it (not discovered: it did and no longer does; the node stays a member),\n" +
			"whether it is a member of this node's cluster, up or unavailable with the last error, and\n" +
			"when it last came up and went down. --json prints the discovery section of the status.",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			d, err := fetchReadiness(cmd.Context(), c)
			if err != nil {
				return err
			}
			if d.Discovery == nil {
				return fmt.Errorf("the node at %s (%s) runs no discovery: it was started without --discovery", c.Nodes()[0], d.NodeID)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.MarshalIndent(d.Discovery, "", "  ")
				if err != nil {
					return err
				}
				_, err = out.Write(append(b, '\n'))
				return err
			}
			printDiscovery(out, d, time.Now())
			return nil
		}),
	}
	disc.Flags().BoolVar(&asJSON, "json", false, "print the discovery section of the status document (JSON)")

	var (
		timeout     time.Duration
		backendOnly bool
	)
	wait := &cobra.Command{
		Use:   "wait-ready",
		Short: "Wait until a node is ready (initial discovery done, the cluster's map, replicas caught up); exit 1 on timeout",
		Long: "Wait until the node at --addr is ready, as its /readyz means it: the initial discovery is done\n" +
			"(every discovered node answered, and every one that answered is a member of the cluster),\n" +
			"the node has the map of a cluster it is a member of, and its replica vBuckets have caught\n" +
			"up. A node not started yet is waited for too. On timeout it exits 1 and says what is still\n" +
			"missing (3 when the node never answered). --backend-only returns once the node's current discovery backend call (and one\n" +
			"queued after it) has answered, and prints that answer.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return usageError{errors.New("--timeout must be positive")}
			}
			return waitReady(cmd.Context(), g, cmd.OutOrStdout(), timeout, backendOnly)
		},
	}
	wait.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	wait.Flags().BoolVar(&backendOnly, "backend-only", false, "wait only for the current discovery backend call")
	return []*cobra.Command{disc, wait}
}

// pollInterval is how often wait-ready asks the node.
const pollInterval = 200 * time.Millisecond

// waitReady polls the node's status until it is ready (or, backendOnly,
// until no backend call runs), or until timeout.
func waitReady(ctx context.Context, g *globals, out io.Writer, timeout time.Duration, backendOnly bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		c       *client.Client
		last    *readinessDoc
		lastErr error
	)
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		if c == nil {
			dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
			c, lastErr = g.dial(dctx)
			dcancel()
		}
		if c != nil {
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			d, err := fetchReadiness(sctx, c)
			scancel()
			switch {
			case err != nil:
				lastErr = err
				c.Close()
				c = nil
			case backendOnly && d.Discovery == nil:
				return fmt.Errorf("the node at %s (%s) runs no discovery: it was started without --discovery", g.addr, d.NodeID)
			case backendOnly:
				ds := d.Discovery
				if !ds.BackendRunning && !ds.CheckQueued && ds.LastResult != nil {
					printBackendResult(out, ds.LastResult)
					return nil
				}
				last, lastErr = d, nil
			case d.Readiness.Ready:
				fmt.Fprintf(out, "%s is ready\n", d.NodeID)
				return nil
			default:
				last, lastErr = d, nil
			}
		}
		select {
		case <-ctx.Done():
			if cerr := context.Cause(ctx); !errors.Is(cerr, context.DeadlineExceeded) {
				return cerr
			}
			code := exitNegative
			if last == nil {
				code = exitCluster // the node never answered
			}
			return &exitError{code: code, msg: notReady(g.addr, timeout, backendOnly, last, lastErr)}
		case <-time.After(pollInterval):
		}
	}
}

// notReady says what wait-ready still waited for at its timeout.
func notReady(addr string, timeout time.Duration, backendOnly bool, last *readinessDoc, lastErr error) string {
	var b strings.Builder
	switch {
	case backendOnly && last != nil:
		fmt.Fprintf(&b, "the discovery backend call of %s (%s) did not answer within %s", addr, last.NodeID, timeout)
		if s := last.Discovery.RunningSince; s != nil {
			fmt.Fprintf(&b, " (running since %s)", s.Format(time.RFC3339))
		}
	case last != nil:
		fmt.Fprintf(&b, "%s (%s) is not ready after %s:", addr, last.NodeID, timeout)
		for _, m := range last.Readiness.Missing {
			b.WriteString("\n  - " + m)
		}
	default:
		fmt.Fprintf(&b, "%s did not answer within %s", addr, timeout)
	}
	if lastErr != nil {
		fmt.Fprintf(&b, "\n  (the last attempt: %v)", lastErr)
	}
	return b.String()
}

func printBackendResult(w io.Writer, r *discovery.Result) {
	if !r.OK {
		fmt.Fprintf(w, "the backend call at %s failed: %s (next: %s)\n", r.At.Format(time.RFC3339), r.Error, r.RetryType)
		return
	}
	fmt.Fprintf(w, "the backend call at %s listed %s (next: %s)\n", r.At.Format(time.RFC3339), plural(len(r.Nodes), "node"), r.RetryType)
	for _, a := range r.Nodes {
		fmt.Fprintln(w, "  "+string(a))
	}
}

// printDiscovery writes the readable summary of a node's discovery.
func printDiscovery(w io.Writer, d *readinessDoc, now time.Time) {
	ds := d.Discovery
	fmt.Fprintf(w, "%s: discovery %s, %s phase, started %s ago, %s\n", d.NodeID, ds.Backend, ds.Phase, age(now, ds.StartTime), plural(int(ds.BackendCalls), "backend call"))
	switch r := ds.LastResult; {
	case r == nil:
		fmt.Fprintln(w, "no backend answer yet")
	case r.OK:
		fmt.Fprintf(w, "last call %s ago: %s, then %s\n", age(now, r.At), plural(len(r.Nodes), "node"), r.RetryType)
	default:
		fmt.Fprintf(w, "last call %s ago failed: %s; then %s\n", age(now, r.At), r.Error, r.RetryType)
	}
	switch {
	case ds.BackendRunning && ds.RunningSince != nil:
		fmt.Fprintf(w, "a call is running, for %s\n", age(now, *ds.RunningSince))
	case ds.NextCheck != nil:
		fmt.Fprintf(w, "next call in %s (%s)\n", until(now, *ds.NextCheck), ds.RetryType)
	}
	if ds.InitialDone {
		fmt.Fprintf(w, "initial discovery done")
		if ds.InitialDoneAt != nil {
			fmt.Fprintf(w, " %s ago", age(now, *ds.InitialDoneAt))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "initial discovery not done:")
		for _, m := range ds.Missing {
			fmt.Fprintln(w, "  - "+m)
		}
	}
	if !d.Readiness.Ready {
		fmt.Fprintln(w, "node not ready:")
		for _, m := range d.Readiness.Missing {
			fmt.Fprintln(w, "  - "+m)
		}
	}
	if len(ds.Nodes) == 0 {
		fmt.Fprintln(w, "no address known")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tNODE\tDISCOVERED\tJOINED\tSTATE\tNODEUP\tNODEDOWN\tLAST ERROR")
	for _, n := range ds.Nodes {
		state := "unavailable"
		switch {
		case n.Self:
			state = "this node"
		case n.Up:
			state = "up"
		case n.LastProbe == nil:
			state = "probing"
		}
		id := dash(n.NodeID)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Addr, id, yesNo(n.Discovered), yesNo(n.Joined), state,
			agoPtr(now, n.Nodeup), agoPtr(now, n.Nodedown), dash(n.LastError))
	}
	tw.Flush()
}

func agoPtr(now time.Time, t *time.Time) string {
	if t == nil {
		return "-"
	}
	return age(now, *t) + " ago"
}

func until(now, t time.Time) string {
	return max(t.Sub(now), 0).Round(100 * time.Millisecond).String()
}
