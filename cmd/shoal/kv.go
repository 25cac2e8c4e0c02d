package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/wire"
)

// readValue returns arg, or standard input when arg is "-".
func readValue(arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, wire.MaxValueLen+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the value from stdin: %w", err)
	}
	return b, nil
}

func kvCommands(g *globals) []*cobra.Command {
	var ttl time.Duration
	put := &cobra.Command{
		Use:   "put CHANNEL KEY VALUE",
		Short: "Store VALUE under KEY (VALUE - reads stdin)",
		Args:  cobra.ExactArgs(3),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			v, err := readValue(a[2])
			if err != nil {
				return err
			}
			_, err = c.Put(ctx, a[0], []byte(a[1]), v, client.WithTTL(ttl))
			return err
		}),
	}
	put.Flags().DurationVar(&ttl, "ttl", 0, "expire the record after this long (e.g. 10m)")

	var showCAS, replica bool
	get := &cobra.Command{
		Use:   "get CHANNEL KEY",
		Short: "Print the value of KEY (exit status 1 when there is none)",
		Long: "Print the value of KEY, read from the active node of its vBucket (exit status 1 when there is\n" +
			"none). --replica reads a replica's copy instead (the active's when no replica answers), which\n" +
			"may be stale: stderr then says which node answered and from which copy.",
		Args: cobra.ExactArgs(2),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			var v []byte
			var cas uint64
			var err error
			if replica {
				var rv client.ReplicaValue
				rv, err = c.GetReplica(ctx, a[0], []byte(a[1]))
				v, cas = rv.Value, rv.CAS
				if err == nil {
					if rv.Replica {
						fmt.Fprintf(os.Stderr, "read from the replica copy on %s (may be stale)\n", rv.Node)
					} else {
						fmt.Fprintf(os.Stderr, "read from the active copy on %s\n", rv.Node)
					}
				}
			} else {
				v, cas, err = c.Gets(ctx, a[0], []byte(a[1]))
			}
			if errors.Is(err, client.ErrNotFound) {
				return notFound(a[0], a[1])
			}
			if err != nil {
				return err
			}
			if showCAS {
				fmt.Fprintf(os.Stderr, "cas %d\n", cas)
			}
			_, err = os.Stdout.Write(v)
			return err
		}),
	}
	get.Flags().BoolVar(&showCAS, "cas", false, "also print the record's CAS (on stderr), for update")
	get.Flags().BoolVar(&replica, "replica", false, "read a replica's copy (may be stale)")

	exists := &cobra.Command{
		Use:   "exists CHANNEL KEY",
		Short: "Print true or false (exit status 1 for false)",
		Args:  cobra.ExactArgs(2),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			ok, err := c.Exists(ctx, a[0], []byte(a[1]))
			if err != nil {
				return err
			}
			fmt.Println(ok)
			if !ok {
				return quietExit(exitNegative)
			}
			return nil
		}),
	}

	rm := &cobra.Command{
		Use:   "rm CHANNEL KEY",
		Short: "Remove KEY (exit status 1 when there is none)",
		Args:  cobra.ExactArgs(2),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			removed, err := c.Remove(ctx, a[0], []byte(a[1]))
			if err == nil && !removed {
				return notFound(a[0], a[1])
			}
			return err
		}),
	}

	var cas uint64
	var uttl time.Duration
	update := &cobra.Command{
		Use:   "update CHANNEL KEY VALUE --cas N",
		Short: "Store VALUE only if the record's CAS is still N (see get --cas); prints the new CAS",
		Args:  cobra.ExactArgs(3),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			v, err := readValue(a[2])
			if err != nil {
				return err
			}
			n, err := c.Update(ctx, a[0], []byte(a[1]), v, cas, client.WithTTL(uttl))
			if err != nil {
				return err
			}
			fmt.Println(n)
			return nil
		}),
	}
	update.Flags().Uint64Var(&cas, "cas", 0, "the CAS the record must still have")
	update.Flags().DurationVar(&uttl, "ttl", 0, "expire the record after this long")
	update.MarkFlagRequired("cas")

	var keysOnly, allReplicas bool
	var filter string
	getall := &cobra.Command{
		Use:   "getall CHANNEL",
		Short: "Print every record as KEY<TAB>VALUE lines",
		Args:  cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			var opts []client.GetAllOption
			if keysOnly {
				opts = append(opts, client.KeysOnly())
			}
			if filter != "" {
				opts = append(opts, client.ValueFilter([]byte(filter)))
			}
			if allReplicas {
				opts = append(opts, client.WithReplicaCopies())
			}
			w := bufio.NewWriterSize(os.Stdout, 64<<10)
			defer w.Flush()
			for r, err := range c.GetAll(ctx, a[0], opts...).All() {
				if err != nil {
					return err
				}
				w.Write(r.Key)
				if !keysOnly {
					w.WriteByte('\t')
					w.Write(r.Value)
				}
				w.WriteByte('\n')
			}
			return nil
		}),
	}
	getall.Flags().BoolVar(&keysOnly, "keys", false, "print keys only")
	getall.Flags().StringVar(&filter, "filter", "", "only records whose value contains this string")
	getall.Flags().BoolVar(&allReplicas, "replica", false, "read the replica copies each node holds too (a record once per copy; may be stale)")

	var refresh bool
	mirror := &cobra.Command{
		Use:   "mirror CHANNEL",
		Short: "Print the changes of CHANNEL as they happen: put|delete|refresh<TAB>KEY<TAB>VALUE",
		Args:  cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			for ev, err := range c.Mirror(ctx, a[0], mirrorOpts(refresh)...).All() {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				if err != nil {
					return err
				}
				switch ev.Type {
				case client.MirrorPut, client.MirrorRefresh:
					fmt.Printf("%s\t%s\t%s\n", ev.Type, ev.Key, ev.Value)
				case client.MirrorDelete:
					fmt.Printf("%s\t%s\n", ev.Type, ev.Key)
				default:
					fmt.Printf("%s\n", ev.Type)
				}
			}
			return nil
		}),
	}
	mirror.Flags().BoolVar(&refresh, "refresh", false, "start with every record of the channel")
	return []*cobra.Command{put, get, exists, rm, update, getall, mirror}
}

func mirrorOpts(refresh bool) []client.MirrorOption {
	if refresh {
		return []client.MirrorOption{client.InitialRefresh()}
	}
	return nil
}

func channelCommands(g *globals) []*cobra.Command {
	channels := &cobra.Command{
		Use:   "channels",
		Short: "List the channels and their kinds",
		Args:  cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			list, err := c.Channels(ctx)
			if err != nil {
				return err
			}
			for _, ch := range list {
				fmt.Printf("%s\t%s\n", ch.Name, ch.Kind)
			}
			return nil
		}),
	}
	size := &cobra.Command{
		Use:   "size [CHANNEL]",
		Short: "Print records and bytes of a channel, or of all channels",
		Args:  cobra.MaximumNArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			var s client.Size
			var err error
			if len(a) == 1 {
				s, err = c.ChannelSize(ctx, a[0])
			} else {
				s, err = c.Size(ctx)
			}
			if err != nil {
				return err
			}
			fmt.Printf("records %d\nbytes %d\n", s.Records, s.Bytes)
			return nil
		}),
	}
	rmchannel := &cobra.Command{
		Use:   "rmchannel CHANNEL",
		Short: "Remove CHANNEL and all its records (needs the admin credential when auth is on; exit status 1 when there is none)",
		Args:  cobra.ExactArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, a []string) error {
			list, err := c.Channels(ctx)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(list, func(ch client.Channel) bool { return ch.Name == a[0] }) {
				return &exitError{code: exitNegative, msg: fmt.Sprintf("no channel %q", a[0])}
			}
			return c.RemoveChannel(ctx, a[0])
		}),
	}
	info := &cobra.Command{
		Use:   "info",
		Short: "Print what each node reports about itself",
		Args:  cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			m, err := c.Info(ctx)
			if err != nil {
				return err
			}
			for _, addr := range c.Nodes() {
				fmt.Printf("%s\n", addr)
				printMap(m[addr])
			}
			return nil
		}),
	}
	conns := &cobra.Command{
		Use:   "connections",
		Short: "Print the number of open client connections of each node",
		Args:  cobra.NoArgs,
		RunE: g.run(func(ctx context.Context, c *client.Client, _ []string) error {
			m, err := c.NumConnections(ctx)
			if err != nil {
				return err
			}
			for _, addr := range c.Nodes() {
				fmt.Printf("%s\t%d\n", addr, m[addr])
			}
			return nil
		}),
	}
	return []*cobra.Command{channels, size, rmchannel, info, conns}
}

func printMap(m map[string]any) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := m[k]
		if f, ok := v.(float64); ok && f == float64(int64(f)) {
			v = strconv.FormatInt(int64(f), 10)
		}
		fmt.Printf("  %-16s %v\n", k, v)
	}
}
