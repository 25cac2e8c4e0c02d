package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"shoal/client"
)

// splitChannels turns CHANNEL arguments and --channel flags (each possibly
// a comma-separated list) into one list.
func splitChannels(lists ...string) []string {
	var out []string
	for _, l := range lists {
		for _, ch := range strings.Split(l, ",") {
			if ch = strings.TrimSpace(ch); ch != "" {
				out = append(out, ch)
			}
		}
	}
	return out
}

func queueCommands(g *globals) []*cobra.Command {
	var more []string
	var key string
	push := &cobra.Command{
		Use:   "push CHANNEL VALUE",
		Short: "Push VALUE to a queue channel (VALUE - reads stdin; --channel adds channels)",
		Long: "Push VALUE to the queue channel CHANNEL and to every --channel (repeatable, or a comma-separated\n" +
			"list; CHANNEL may be one too): stored in all or in none. With several nodes in --addr the push goes\n" +
			"to the next one round-robin, or another when that one is down.",
		Args: cobra.ExactArgs(2),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			v, err := readValue(a[1])
			if err != nil {
				return err
			}
			var opts []client.PushOption
			if key != "" {
				opts = append(opts, client.WithRoutingKey([]byte(key)))
			}
			return c.Push(ctx, splitChannels(append([]string{a[0]}, more...)...), v, opts...)
		}),
	}
	push.Flags().StringSliceVar(&more, "channel", nil, "another channel to push to (repeatable, or a comma-separated list)")
	push.Flags().StringVar(&key, "key", "", "routing key: the record goes to this key's vBucket instead of the next one round-robin")

	pop := &cobra.Command{
		Use:   "pop CHANNEL",
		Short: "Pop the oldest record of a queue channel and print it (exit status 1 when empty)",
		Args:  cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			v, err := c.Pop(ctx, a[0])
			if errors.Is(err, client.ErrEmpty) {
				return &exitError{code: exitNegative, msg: fmt.Sprintf("empty: queue %q has no record", a[0])}
			}
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(v)
			return err
		}),
	}

	var subscriber string
	var count int
	consume := &cobra.Command{
		Use:   "consume CHANNEL",
		Short: "Print the records of a queue channel as they come, one per line, until interrupted or the channel is removed",
		Long: "Subscribe to CHANNEL as --subscriber (default \"\") on every node in --addr and print each record\n" +
			"on a line of its own. The first subscriber of a channel takes over its backlog; every other\n" +
			"subscriber name gets every record pushed from then on; consumers sharing a name split them.\n" +
			"A channel with subscribers can no longer be popped.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			// No request timeout: a consumer waits as long as it must.
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			w := bufio.NewWriterSize(os.Stdout, 64<<10)
			defer w.Flush()
			n := 0
			for v, err := range c.Consume(cmd.Context(), a[0], subscriber).All() {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				if err != nil {
					return err
				}
				w.Write(v)
				w.WriteByte('\n')
				if err := w.Flush(); err != nil {
					return err
				}
				if n++; n == count {
					break
				}
			}
			return nil
		},
	}
	consume.Flags().StringVar(&subscriber, "subscriber", "", "subscriber name (0-255 of A-Z a-z 0-9 _ -)")
	consume.Flags().IntVar(&count, "count", 0, "exit after this many records (0: never)")

	queues := &cobra.Command{
		Use:   "queues",
		Short: "List the queues: records, bytes, memory and overflow split, fullness, consumers",
		Args:  cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			list, err := c.Queues(ctx)
			if err != nil {
				return err
			}
			several := len(c.Nodes()) > 1
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			if several {
				fmt.Fprint(tw, "NODE\t")
			}
			fmt.Fprintln(tw, "CHANNEL\tSUBSCRIBER\tRECORDS\tBYTES\tMEM_RECORDS\tMEM_BYTES\tDISK_RECORDS\tDISK_BYTES\tFULL%\tCONSUMERS\t")
			for _, q := range list {
				if several {
					fmt.Fprintf(tw, "%s\t", q.Node)
				}
				sub := "-"
				if q.Subscribed {
					sub = fmt.Sprintf("%q", q.Subscriber)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", q.Channel, sub, q.Records, q.Bytes,
					q.MemoryRecords, q.MemoryBytes, q.OverflowRecords, q.OverflowBytes, q.Fullness, q.Consumers)
			}
			return tw.Flush()
		}),
	}
	return []*cobra.Command{push, pop, consume, queues}
}
