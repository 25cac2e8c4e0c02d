package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"shoal/internal/bench"
)

// benchCommand is `shoal bench`: a load generator against the node of
// --addr or a Redis server.
func benchCommand(g *globals) *cobra.Command {
	o := bench.DefaultOptions()
	var workload, target, driver string
	var asJSON, quiet, cleanup bool
	names := make([]string, len(bench.Workloads))
	for i, w := range bench.Workloads {
		names[i] = string(w)
	}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a node (or a Redis server) and print ops/s and latency percentiles",
		Long: `bench sends one workload over --conns connections, each with --pipeline
requests in flight per batch, for --duration (or --requests), after --warmup,
and prints ops/s and latency percentiles (p50, p99, p99.9).

Keys are key:%012d over --keys (redis-benchmark -r), values --value-size bytes
(-d). With --target redis://HOST:PORT the same workload goes to a Redis server
(SET/GET, LPUSH/RPOP, XADD/XRANGE), so both figures come from one tool.
The load workload sets every key of the key space once, then stops.
Requests still in flight when the time is up get 10s to finish.

Channels are named after --channel: NAME-kv for get, set, mix and load,
NAME-queue for push and pop, NAME-log for append, NAME-range for range.
--cleanup removes the run's channel at the end; it is on by default for
the queue and log workloads (push, pop, append, range) and off for the kv
ones, whose records a later get run reads. A run where more than 10% of
the gets (or pops) missed says so on stderr (and in --json's warnings):
fill the key space first with --workload load.

Against shoal it also reads every node's request counter and CPU time
(Info) when the measured time starts and ends, and prints each node's
ops/s and CPU per request (--json: "nodes"), lines of their own when the
cluster has more than one node. They count every request a node answered,
the run's and any other client's.

--driver picks how shoal is spoken to: client (the default) uses the Go
client, as an application does; frames writes a batch's frames in one
write and reads the answers on the same goroutine, like the built-in RESP
client does for Redis, and costs the load generator 1–2.5 µs less per
request: use it to compare servers (one node of a one-node cluster, no
TLS or authentication; get, set, mix, load, push, pop and append).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			if f.Changed("duration") && f.Changed("requests") {
				return usageError{errors.New("give --duration or --requests, not both")}
			}
			w, err := bench.ParseWorkload(workload)
			if err != nil {
				return usageError{err}
			}
			o.Workload = w
			o.Cleanup = w.CleansUpByDefault()
			if f.Changed("cleanup") {
				o.Cleanup = cleanup
			}
			if !quiet {
				o.Progress = cmd.ErrOrStderr()
			}
			if err := o.Validate(); err != nil {
				return usageError{err}
			}
			t, err := benchTarget(g, target, driver)
			if err != nil {
				return err
			}
			res, err := bench.Run(cmd.Context(), t, o)
			if res.Requests > 0 {
				if perr := printResult(cmd, res, asJSON); perr != nil {
					return perr
				}
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "shoal: warning: %s\n", w)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&workload, "workload", string(o.Workload), "one of "+strings.Join(names, ", "))
	f.StringVar(&target, "target", "shoal", "shoal (the node of --addr) or redis://HOST:PORT")
	f.StringVar(&driver, "driver", "client", "shoal targets: client (the Go client) or frames (a minimal one, for comparisons)")
	f.IntVar(&o.Conns, "conns", o.Conns, "connections")
	f.IntVar(&o.Pipeline, "pipeline", o.Pipeline, "requests per batch on each connection")
	f.Int64Var(&o.Keys, "keys", o.Keys, "key space (and the records of the range workload's log)")
	f.IntVar(&o.ValueSize, "value-size", o.ValueSize, "bytes of each value")
	f.DurationVar(&o.Duration, "duration", o.Duration, "measured time")
	f.Int64Var(&o.Requests, "requests", 0, "measured requests (instead of --duration)")
	f.DurationVar(&o.Warmup, "warmup", o.Warmup, "unrecorded load before measuring")
	f.Float64Var(&o.GetRatio, "get-ratio", o.GetRatio, "mix workload: share of gets (0..1)")
	f.IntVar(&o.RangeOf, "range-count", o.RangeOf, "range workload: records per request")
	f.StringVar(&o.Channel, "channel", o.Channel, "base channel name: NAME-kv, NAME-queue, NAME-log, NAME-range by workload")
	f.BoolVar(&cleanup, "cleanup", false, "remove the run's channel at the end (default: on for push, pop, append and range)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.BoolVar(&quiet, "quiet", false, "no progress line on stderr")
	return cmd
}

// benchTarget returns the target named by --target and --driver.
func benchTarget(g *globals, target, driver string) (bench.Target, error) {
	if target == "shoal" {
		switch driver {
		case "client":
			return bench.NewShoal(g.addr, g.dial), nil
		case "frames":
			if strings.Contains(g.addr, ",") || g.user != "" || g.tls || g.tlsCA != "" || g.tlsInsecure {
				return nil, usageError{errors.New("--driver frames speaks to one node (one --addr) without TLS or authentication")}
			}
			return bench.NewFrames(g.addr, g.dial), nil
		}
		return nil, usageError{fmt.Errorf("--driver %q: want client or frames", driver)}
	}
	if strings.HasPrefix(target, "redis://") {
		r, err := bench.NewRedis(target)
		if err != nil {
			return nil, usageError{err}
		}
		return r, nil
	}
	return nil, usageError{fmt.Errorf("--target %q: want shoal or redis://HOST:PORT", target)}
}

// printResult writes res as text or JSON on stdout.
func printResult(cmd *cobra.Command, res bench.Result, asJSON bool) error {
	w := cmd.OutOrStdout()
	if asJSON {
		return json.NewEncoder(w).Encode(res)
	}
	return res.WriteText(w)
}
