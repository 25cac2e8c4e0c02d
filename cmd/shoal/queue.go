package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

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

	var popJSON bool
	pop := &cobra.Command{
		Use:   "pop CHANNEL",
		Short: "Pop the oldest record of a queue channel and print it (exit status 1 when empty)",
		Long: "Pop the oldest record of the queue channel CHANNEL and print its bytes as they are, with a\n" +
			"newline added only when stdout is a terminal (--json: {\"value\"}); exit status 1 when the\n" +
			"queue is empty. A channel with subscribers (consume --subscriber) cannot be popped until\n" +
			"`shoal queue unsubscribe` removes them.",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			v, err := c.Pop(cmd.Context(), a[0])
			if errors.Is(err, client.ErrEmpty) {
				return &exitError{code: exitNegative, msg: fmt.Sprintf("empty: queue %q has no record", a[0])}
			}
			if errors.Is(err, client.ErrSubscribed) {
				return fmt.Errorf("%w (see shoal queue subscribers %s; shoal queue unsubscribe %s NAME removes one)", err, a[0], a[0])
			}
			if err != nil {
				return err
			}
			if popJSON {
				return writeJSON(cmd.OutOrStdout(), valueDoc{text(v)})
			}
			return writeValue(cmd.OutOrStdout(), v)
		}),
	}
	jsonFlag(pop, &popJSON, `print {"value"}`)

	var subscriber string
	var count int
	var consumeJSON bool
	consume := &cobra.Command{
		Use:   "consume CHANNEL",
		Short: "Print the records of a queue channel as they come, one per line, until interrupted or the channel is removed",
		Long: "Subscribe to CHANNEL as --subscriber (default \"\") on every node in --addr and print each record\n" +
			"on a line of its own. The first subscriber of a channel takes over its backlog; every other\n" +
			"subscriber name gets every record pushed from then on; consumers sharing a name split them.\n" +
			"A channel with subscribers can no longer be popped; the subscription stays after the command\n" +
			"ends (shoal queue subscribers lists them, shoal queue unsubscribe removes one).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			// No request timeout: a consumer waits as long as it must.
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			defer w.Flush()
			n := 0
			for v, err := range c.Consume(cmd.Context(), a[0], subscriber).All() {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				if err != nil {
					return err
				}
				if consumeJSON {
					writeJSON(w, valueDoc{text(v)})
				} else {
					w.Write(v)
					w.WriteByte('\n')
				}
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
	jsonFlag(consume, &consumeJSON, `print one {"value"} line per record`)

	var queuesJSON bool
	queues := &cobra.Command{
		Use:   "queues",
		Short: "List the queues: records, bytes, memory and overflow split, fullness, consumers",
		Args:  cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			list, err := c.Queues(cmd.Context())
			if err != nil {
				return err
			}
			if queuesJSON {
				docs := []queueDoc{}
				for _, q := range list {
					d := queueDoc{Node: q.Node, Channel: q.Channel, Records: q.Records, Bytes: q.Bytes, MemoryRecords: q.MemoryRecords,
						MemoryBytes: q.MemoryBytes, OverflowRecords: q.OverflowRecords, OverflowBytes: q.OverflowBytes,
						RingSize: q.RingSize, FullnessPercent: q.Fullness, Consumers: q.Consumers}
					if q.Subscribed {
						d.Subscriber = &q.Subscriber
					}
					docs = append(docs, d)
				}
				return writeJSON(cmd.OutOrStdout(), docs)
			}
			several := len(c.Nodes()) > 1
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', tabwriter.AlignRight)
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
	jsonFlag(queues, &queuesJSON, "print the queues as an array")
	return []*cobra.Command{push, pop, consume, queues, queueCommand(g)}
}

// queueCommand is `shoal queue`: subscribers and unsubscribe.
func queueCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Manage the subscribers of queue channels (subscribers, unsubscribe)",
	}
	var subsJSON bool
	subs := &cobra.Command{
		Use:   "subscribers CHANNEL",
		Short: "List the subscribers of a queue channel: name, records waiting, consumers, idle time",
		Long: "List the subscribers of the queue channel CHANNEL, summed over the nodes: name, records and\n" +
			"bytes waiting in its queue, consumers attached now, and how long it has had none (IDLE, - while\n" +
			"one is attached). A subscriber stays after its consumers leave and keeps receiving every\n" +
			"push; while a channel has one, pop is refused. `shoal queue unsubscribe` removes one.",
		Args: cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			list, err := c.Subscribers(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if subsJSON {
				docs := []subscriberDoc{}
				for _, s := range list {
					docs = append(docs, subscriberDoc{Name: s.Name, Records: s.Records, Bytes: s.Bytes, Consumers: s.Consumers, IdleSeconds: int64(s.Idle / time.Second)})
				}
				return writeJSON(out, docs)
			}
			if len(list) == 0 {
				_, err := fmt.Fprintf(out, "queue %q has no subscribers\n", a[0])
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SUBSCRIBER\tRECORDS\tBYTES\tCONSUMERS\tIDLE")
			for _, s := range list {
				idle := "-"
				if s.Consumers == 0 {
					idle = s.Idle.Truncate(time.Second).String()
				}
				fmt.Fprintf(tw, "%q\t%d\t%d\t%d\t%s\n", s.Name, s.Records, s.Bytes, s.Consumers, idle)
			}
			return tw.Flush()
		}),
	}
	jsonFlag(subs, &subsJSON, `print [{"name", "records", "bytes", "consumers", "idle_seconds"}, ...]`)

	unsub := &cobra.Command{
		Use:   "unsubscribe CHANNEL NAME",
		Short: "Remove subscriber NAME of a queue channel (its waiting records go; exit status 1 when there is none)",
		Long: "Remove the subscriber NAME (\"\" for the empty name) of the queue channel CHANNEL on every node:\n" +
			"its consumers end, and its queue and the records waiting in it are dropped. When it is the\n" +
			"channel's last subscriber, its queue, records included, becomes the channel's plain queue\n" +
			"again, which pop serves. Needs the admin credential when auth is on. Exit status 1 when\n" +
			"there is no such subscriber.",
		Args: cobra.ExactArgs(2),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ok, err := c.Unsubscribe(cmd.Context(), a[0], a[1])
			if err != nil {
				return err
			}
			if !ok {
				return &exitError{code: exitNegative, msg: fmt.Sprintf("not found: queue %q has no subscriber %q", a[0], a[1])}
			}
			return nil
		}),
	}
	cmd.AddCommand(subs, unsub)
	return cmd
}

// valueDoc is a queue record in --json output.
type valueDoc struct {
	Value text `json:"value"`
}

// queueDoc is one queue in queues --json.
type queueDoc struct {
	Node            string  `json:"node"`
	Channel         string  `json:"channel"`
	Subscriber      *string `json:"subscriber,omitempty"`
	Records         int64   `json:"records"`
	Bytes           int64   `json:"bytes"`
	MemoryRecords   int64   `json:"memory_records"`
	MemoryBytes     int64   `json:"memory_bytes"`
	OverflowRecords int64   `json:"overflow_records"`
	OverflowBytes   int64   `json:"overflow_bytes"`
	RingSize        int64   `json:"ring_size"`
	FullnessPercent int     `json:"fullness_percent"`
	Consumers       int     `json:"consumers"`
}

// subscriberDoc is one subscriber in queue subscribers --json.
type subscriberDoc struct {
	Name        string `json:"name"`
	Records     int64  `json:"records"`
	Bytes       int64  `json:"bytes"`
	Consumers   int    `json:"consumers"`
	IdleSeconds int64  `json:"idle_seconds"`
}
