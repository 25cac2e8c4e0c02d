package main

import (
	"fmt"
	"io"
	"strings"

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
	return []*cobra.Command{fail, rec}
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
