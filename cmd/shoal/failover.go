package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
)

// failoverCommands are `shoal failover NODE [--force]` and `shoal recover
// NODE`.
func failoverCommands(g *globals) []*cobra.Command {
	var force, failJSON bool
	fail := &cobra.Command{
		Use:   "failover NODE",
		Short: "Fail a member over: the replica holding the most becomes active for each of its vBuckets",
		Long: "Fail NODE (a member's id or data address) over, through any other member: for every\n" +
			"vBucket NODE is active for, the surviving replicas are asked for their high seqnos and the\n" +
			"one holding the most becomes active (its epoch raised); the new map and NODE's failed state\n" +
			"commit in one metadata change, checked against the map it was planned from. It refuses,\n" +
			"naming them, when vBuckets would have no copy left; --force fails over anyway and those\n" +
			"vBuckets start empty on a survivor (their data is lost). The vBuckets keep fewer copies until\n" +
			"a rebalance; NODE, if it comes back, serves nothing until `shoal recover` or a rebalance.",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			res, err := c.Failover(cmd.Context(), a[0], force)
			if err != nil {
				return clusterErr(c, err)
			}
			if failJSON {
				return printJSONOf(cmd.OutOrStdout(), res)
			}
			printFailover(cmd.OutOrStdout(), "failed over", res)
			return nil
		}),
	}
	fail.Flags().BoolVar(&force, "force", false, "fail over even if vBuckets lose their last copy (their data is lost)")
	fail.Flags().BoolVar(&failJSON, "json", false, "print the result as JSON")

	var recJSON bool
	rec := &cobra.Command{
		Use:   "recover NODE",
		Short: "Make a failed member a replica again of the vBuckets short of copies",
		Long: "Recover NODE, a failed member that is back: it becomes the last replica of every vBucket\n" +
			"short of copies and catches up by replication from their actives (rolling back first what\n" +
			"their new histories do not hold). It gets active vBuckets only from a rebalance.",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			res, err := c.Recover(cmd.Context(), a[0])
			if err != nil {
				return clusterErr(c, err)
			}
			if recJSON {
				return printJSONOf(cmd.OutOrStdout(), res)
			}
			printFailover(cmd.OutOrStdout(), "recovered", res)
			return nil
		}),
	}
	rec.Flags().BoolVar(&recJSON, "json", false, "print the result as JSON")
	fail.AddCommand(failoverSettingsCommand(g), failoverResetCommand(g))
	return []*cobra.Command{fail, rec}
}

// failoverSettingsCommand is `shoal failover settings`.
func failoverSettingsCommand(g *globals) *cobra.Command {
	var (
		timeout         time.Duration
		maxCount        int
		enable, disable bool
		asJSON          bool
		durability      string
	)
	cmd := &cobra.Command{
		Use:   "settings",
		Short: "Show or change the automatic failover: --enable/--disable, --timeout, --max-count",
		Long: "Without flags, show the automatic failover's settings and, as the node asked sees it, the\n" +
			"down set and the recent failovers and refusals (ask the leader for its decision). A member\n" +
			"that every other member has heard nothing from for half the timeout, for two more ticks\n" +
			"(timeout/10), is failed over, unless a rule refuses: no quorum, a vBucket would lose its\n" +
			"last copy, max-count reached (shoal failover reset-count), the last member. The timeout is\n" +
			"also the nodes' lease: a node that hears no leader that long stops serving.",
		Args: cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			var ch client.FailoverSettingsChange
			if enable && disable {
				return usageError{errors.New("--enable and --disable together")}
			}
			if enable || disable {
				ch.Enabled = &enable
			}
			if cmd.Flags().Changed("max-count") {
				ch.MaxCount = &maxCount
			}
			if cmd.Flags().Changed("durability") {
				ch.Durability = &durability
			}
			if cmd.Flags().Changed("timeout") {
				ms := timeout.Milliseconds()
				ch.TimeoutMs = &ms
			}
			af, err := c.FailoverSettings(cmd.Context(), ch)
			if err != nil {
				return clusterErr(c, err)
			}
			if asJSON {
				return printJSONOf(cmd.OutOrStdout(), af)
			}
			printAutoFailover(cmd.OutOrStdout(), af)
			return nil
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "failover timeout (at least 500ms; at least twice the raft election timeout)")
	cmd.Flags().IntVar(&maxCount, "max-count", 0, "automatic failovers allowed before an operator resets the count")
	cmd.Flags().StringVar(&durability, "durability", "", "the cluster's default durability of kv writes that give none: none or majority (shown by shoal cluster)")
	cmd.Flags().BoolVar(&enable, "enable", false, "turn the automatic failover on")
	cmd.Flags().BoolVar(&disable, "disable", false, "turn the automatic failover off")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON")
	return cmd
}

// failoverResetCommand is `shoal failover reset-count`.
func failoverResetCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reset-count",
		Short: "Set the count of automatic failovers to 0 (max-count allows more again)",
		Args:  cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			af, err := c.FailoverSettings(cmd.Context(), client.FailoverSettingsChange{ResetCount: true})
			if err != nil {
				return clusterErr(c, err)
			}
			printAutoFailover(cmd.OutOrStdout(), af)
			return nil
		}),
	}
}

// printAutoFailover writes the automatic failover's state for people.
func printAutoFailover(w io.Writer, af *client.AutoFailover) {
	state := "off"
	if af.Enabled {
		state = "on"
	}
	fmt.Fprintf(w, "automatic failover %s: timeout %v (tick %v), %d of max-count %d used\n",
		state, time.Duration(af.TimeoutMs)*time.Millisecond, time.Duration(af.TickMs)*time.Millisecond, af.Count, af.MaxCount)
	if af.Deciding {
		fmt.Fprintf(w, "this node decides (metadata leader): %s\n", af.Phase)
		for _, d := range af.Down {
			fmt.Fprintf(w, "  down: %s (%s)\n", d.Node, d.Reason)
		}
		if af.Refused != nil {
			fmt.Fprintf(w, "  refused by rule %s: %s\n", af.Refused.Rule, af.Refused.Detail)
		}
		for n, by := range af.Suspected {
			fmt.Fprintf(w, "  possible partition: %s unheard by %s only\n", n, strings.Join(by, ", "))
		}
	}
	for _, e := range af.Recent {
		fmt.Fprintf(w, "%s %s %s", e.At.Local().Format(time.DateTime), e.Kind, strings.Join(e.Nodes, ","))
		if e.Rule != "" {
			fmt.Fprintf(w, " (rule %s)", e.Rule)
		}
		if e.Kind != "refused" {
			fmt.Fprintf(w, " silent %dms, decided in %dms, committed in %dms", e.SilentMillis, e.DecisionMillis, e.CommitMillis)
		}
		fmt.Fprintf(w, ": %s\n", e.Detail)
	}
}

// printFailover writes a failover's or recovery's result for people.
func printFailover(w io.Writer, what string, r *client.FailoverResult) {
	fmt.Fprintf(w, "%s %s at map revision %d\n", r.Node, what, r.Revision)
	if r.Promoted > 0 {
		fmt.Fprintf(w, "%d vbuckets have a new active (answered: %s)\n", r.Promoted, strings.Join(r.Survivors, ", "))
	}
	if len(r.Unanswered) > 0 {
		fmt.Fprintf(w, "did not answer, so not promoted: %s\n", strings.Join(r.Unanswered, ", "))
	}
	if len(r.Lost) > 0 {
		fmt.Fprintf(w, "LOST: %d vbuckets had no copy left and start empty: %v\n", len(r.Lost), r.Lost)
	}
	if r.Replicas > 0 {
		fmt.Fprintf(w, "%d vbuckets have it as a replica again\n", r.Replicas)
	}
	fmt.Fprintln(w, r.Note)
}
