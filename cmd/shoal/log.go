package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"shoal/client"
	"shoal/internal/datadir"
)

func logCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Append to and read log channels (records of timestamp and value)",
	}
	var ts, key string
	put := &cobra.Command{
		Use:   "put CHANNEL VALUE",
		Short: "Append VALUE (VALUE - reads stdin) with timestamp --ts (default now)",
		Args:  cobra.ExactArgs(2),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			t, err := parseTimestamp(ts)
			if err != nil {
				return err
			}
			v, err := readValue(a[1])
			if err != nil {
				return err
			}
			var opts []client.LogWriteOption
			if key != "" {
				opts = append(opts, client.RoutingKey([]byte(key)))
			}
			return c.LogPut(ctx, a[0], t, v, opts...)
		}),
	}
	put.Flags().StringVar(&ts, "ts", "now", "timestamp: unix seconds, RFC 3339 time, now or now-DURATION (now-1h)")
	put.Flags().StringVar(&key, "key", "", "routing key: store the record in this key's vBucket (default round-robin)")

	var filter, regex string
	var replicas, rangeJSON bool
	rng := &cobra.Command{
		Use:   "range CHANNEL FROM TO",
		Short: "Print the records with timestamps in [FROM, TO] as TIMESTAMP<TAB>VALUE lines (--json: JSON lines)",
		Long: "Print the records with timestamps in [FROM, TO], one TIMESTAMP<TAB>VALUE line each (--json: one\n" +
			"{\"timestamp\", \"value\"} line each). FROM and TO are unix seconds, RFC 3339 times\n" +
			"(2024-05-01T12:00:00Z), now, or now minus a duration (now-1h, now-15m). The records come in\n" +
			"timestamp order across the nodes (equal timestamps in append order).",
		Args: cobra.ExactArgs(3),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ctx := cmd.Context()
			from, err := parseTimestamp(a[1])
			if err != nil {
				return err
			}
			to, err := parseTimestamp(a[2])
			if err != nil {
				return err
			}
			var opts []client.RangeOption
			switch {
			case filter != "":
				opts = append(opts, client.FilterSubstring(filter))
			case regex != "":
				opts = append(opts, client.FilterRegexp(regex))
			}
			if replicas {
				opts = append(opts, client.RangeWithReplicaCopies())
			}
			return printLog(cmd.OutOrStdout(), c.LogRange(ctx, a[0], from, to, opts...), rangeJSON)
		}),
	}
	jsonFlag(rng, &rangeJSON, `print one {"timestamp", "value"} line per record`)
	rng.Flags().StringVar(&filter, "filter", "", "only records whose value contains this string")
	rng.Flags().StringVar(&regex, "regex", "", `only records whose value matches this regular expression (RE2; "(?i)" ignores case)`)
	rng.Flags().BoolVar(&replicas, "replica", false, "read the replica copies each node holds too (a record once per copy; may be stale)")
	rng.MarkFlagsMutuallyExclusive("filter", "regex")

	var channelsJSON bool
	channels := &cobra.Command{
		Use:   "channels",
		Short: "List the log channels, one name a line",
		Args:  cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			list, err := c.Channels(cmd.Context())
			if err != nil {
				return err
			}
			names := []string{}
			for _, ch := range list {
				if ch.Kind == "log" {
					names = append(names, ch.Name)
				}
			}
			if channelsJSON {
				return writeJSON(cmd.OutOrStdout(), names)
			}
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		}),
	}
	jsonFlag(channels, &channelsJSON, "print an array of names")
	cmd.AddCommand(put, rng, channels, logBenchCommand(g))
	return cmd
}

func logBenchCommand(g *globals) *cobra.Command {
	var writers, batch, size int
	var dur time.Duration
	var benchJSON bool
	cmd := &cobra.Command{
		Use:   "bench CHANNEL",
		Short: "Append to CHANNEL from concurrent writers for a while and print the throughput",
		Long: "Append --size-byte values to CHANNEL from --writers goroutines sharing one client for\n" +
			"--duration, one record per LogPut or --batch per LogPutBatch, and print records/s and\n" +
			"MB/s of values. The records stay in the channel.",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ctx := cmd.Context()
			if writers < 1 || batch < 1 || size < 0 {
				return usageError{errors.New("--writers and --batch must be at least 1, --size at least 0")}
			}
			var n atomic.Int64
			ctx, cancel := context.WithTimeout(ctx, dur)
			defer cancel()
			value := make([]byte, size)
			start := time.Now()
			eg, gctx := errgroup.WithContext(ctx)
			for range writers {
				eg.Go(func() error {
					recs := make([]client.LogRecord, batch)
					for gctx.Err() == nil {
						ts := uint64(time.Now().Unix())
						var err error
						if batch == 1 {
							err = c.LogPut(gctx, a[0], ts, value)
						} else {
							for i := range recs {
								recs[i] = client.LogRecord{Timestamp: ts, Value: value}
							}
							_, err = c.LogPutBatch(gctx, a[0], recs)
						}
						if err != nil {
							if gctx.Err() != nil {
								return nil // the duration is over
							}
							return err
						}
						n.Add(int64(batch))
					}
					return nil
				})
			}
			if err := eg.Wait(); err != nil {
				return err
			}
			sec := time.Since(start).Seconds()
			if benchJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]float64{"records": float64(n.Load()), "seconds": sec,
					"records_per_sec": float64(n.Load()) / sec, "mb_per_sec": float64(n.Load()) * float64(size) / sec / 1e6})
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%d records in %.1f s: %.0f records/s, %.1f MB/s of values\n",
				n.Load(), sec, float64(n.Load())/sec, float64(n.Load())*float64(size)/sec/1e6)
			return err
		}),
	}
	cmd.Flags().IntVar(&writers, "writers", 50, "concurrent writers")
	cmd.Flags().IntVar(&batch, "batch", 1, "records per request: 1 uses LogPut, more LogPutBatch")
	cmd.Flags().IntVar(&size, "size", 100, "value size in bytes")
	cmd.Flags().DurationVar(&dur, "duration", 10*time.Second, "how long to append")
	jsonFlag(cmd, &benchJSON, `print {"records", "seconds", "records_per_sec", "mb_per_sec"}`)
	return cmd
}

// parseTimestamp reads unix seconds, an RFC 3339 time, "now", or now
// minus or plus a duration ("now-1h", "now-90m", "now+10s").
func parseTimestamp(s string) (uint64, error) {
	return parseTimestampAt(s, time.Now())
}

func parseTimestampAt(s string, now time.Time) (uint64, error) {
	bad := func() (uint64, error) {
		return 0, usageError{fmt.Errorf("bad timestamp %q: want unix seconds, an RFC 3339 time such as 2024-05-01T12:00:00Z, now, or now-DURATION such as now-1h", s)}
	}
	if rest, ok := strings.CutPrefix(s, "now"); ok {
		t := now
		if rest != "" {
			if rest[0] != '-' && rest[0] != '+' {
				return bad()
			}
			d, err := time.ParseDuration(rest[1:])
			if err != nil || d < 0 {
				return bad()
			}
			if rest[0] == '-' {
				d = -d
			}
			t = now.Add(d)
		}
		if t.Unix() < 0 {
			return 0, nil
		}
		return uint64(t.Unix()), nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return n, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || t.Unix() < 0 {
		return bad()
	}
	return uint64(t.Unix()), nil
}

// printLog writes one TIMESTAMP<TAB>VALUE line per record, or with
// asJSON one {"timestamp", "value"} line.
func printLog(out io.Writer, s *client.Stream[client.LogRecord], asJSON bool) error {
	w := bufio.NewWriterSize(out, 64<<10)
	for r, err := range s.All() {
		if err != nil {
			w.Flush()
			return err
		}
		if asJSON {
			if err := writeJSON(w, logRecordDoc{r.Timestamp, text(r.Value)}); err != nil {
				return err
			}
			continue
		}
		w.WriteString(strconv.FormatUint(r.Timestamp, 10))
		w.WriteByte('\t')
		w.Write(r.Value)
		w.WriteByte('\n')
	}
	return w.Flush()
}

// lockDataDir takes the lock a running shoald holds on DIR/LOCK.
func lockDataDir(dir string) (unlock func(), err error) {
	f, err := datadir.Lock(dir)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// logRecordDoc is one log range --json line.
type logRecordDoc struct {
	Timestamp uint64 `json:"timestamp"`
	Value     text   `json:"value"`
}
