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
	var putJSON bool
	put := &cobra.Command{
		Use:   "put CHANNEL KEY VALUE",
		Short: "Store VALUE under KEY (VALUE - reads stdin)",
		Args:  cobra.ExactArgs(3),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			v, err := readValue(a[2])
			if err != nil {
				return err
			}
			cas, err := c.Put(cmd.Context(), a[0], []byte(a[1]), v, client.WithTTL(ttl))
			if err == nil && putJSON {
				err = writeJSON(cmd.OutOrStdout(), casDoc{cas})
			}
			return err
		}),
	}
	put.Flags().DurationVar(&ttl, "ttl", 0, "expire the record after this long (e.g. 10m)")
	jsonFlag(put, &putJSON, `print {"cas": N}`)

	var showCAS, replica, getJSON bool
	get := &cobra.Command{
		Use:   "get CHANNEL KEY",
		Short: "Print the value of KEY (exit status 1 when there is none)",
		Long: "Print the value of KEY, read from the active node of its vBucket (exit status 1 when there is\n" +
			"none): its bytes as they are, with a newline added only when stdout is a terminal. --replica\n" +
			"reads a replica's copy instead (the active's when no replica answers), which may be stale:\n" +
			"stderr then says which node answered and from which copy. --json prints\n" +
			`{"key", "value", "cas"} (and "node", "replica" with --replica).`,
		Args: cobra.ExactArgs(2),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ctx := cmd.Context()
			doc := getDoc{Key: text(a[1])}
			var err error
			if replica {
				var rv client.ReplicaValue
				rv, err = c.GetReplica(ctx, a[0], []byte(a[1]))
				doc.Value, doc.CAS, doc.Node, doc.Replica = rv.Value, rv.CAS, rv.Node, &rv.Replica
				if err == nil && !getJSON {
					if rv.Replica {
						fmt.Fprintf(cmd.ErrOrStderr(), "read from the replica copy on %s (may be stale)\n", rv.Node)
					} else {
						fmt.Fprintf(cmd.ErrOrStderr(), "read from the active copy on %s\n", rv.Node)
					}
				}
			} else {
				var v []byte
				v, doc.CAS, err = c.Gets(ctx, a[0], []byte(a[1]))
				doc.Value = v
			}
			if errors.Is(err, client.ErrNotFound) {
				return notFound(a[0], a[1])
			}
			if err != nil {
				return err
			}
			if getJSON {
				return writeJSON(cmd.OutOrStdout(), doc)
			}
			if showCAS {
				fmt.Fprintf(cmd.ErrOrStderr(), "cas %d\n", doc.CAS)
			}
			return writeValue(cmd.OutOrStdout(), doc.Value)
		}),
	}
	get.Flags().BoolVar(&showCAS, "cas", false, "also print the record's CAS (on stderr), for update")
	get.Flags().BoolVar(&replica, "replica", false, "read a replica's copy (may be stale)")
	jsonFlag(get, &getJSON, `print {"key", "value", "cas"}`)

	var existsJSON bool
	exists := &cobra.Command{
		Use:   "exists CHANNEL KEY",
		Short: "Print true or false (exit status 1 for false)",
		Args:  cobra.ExactArgs(2),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			ok, err := c.Exists(cmd.Context(), a[0], []byte(a[1]))
			if err != nil {
				return err
			}
			if existsJSON {
				err = writeJSON(cmd.OutOrStdout(), map[string]bool{"exists": ok})
			} else {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), ok)
			}
			if err == nil && !ok {
				return quietExit(exitNegative)
			}
			return err
		}),
	}
	jsonFlag(exists, &existsJSON, `print {"exists": true|false}`)

	var rmJSON bool
	rm := &cobra.Command{
		Use:   "rm CHANNEL KEY",
		Short: "Remove KEY (exit status 1 when there is none)",
		Args:  cobra.ExactArgs(2),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			removed, err := c.Remove(cmd.Context(), a[0], []byte(a[1]))
			if err != nil {
				return err
			}
			if rmJSON {
				if err := writeJSON(cmd.OutOrStdout(), map[string]bool{"removed": removed}); err != nil {
					return err
				}
			}
			if !removed {
				if rmJSON {
					return quietExit(exitNegative)
				}
				return notFound(a[0], a[1])
			}
			return nil
		}),
	}
	jsonFlag(rm, &rmJSON, `print {"removed": true|false}`)

	var cas uint64
	var uttl time.Duration
	var updateJSON bool
	update := &cobra.Command{
		Use:   "update CHANNEL KEY VALUE --cas N",
		Short: "Store VALUE only if the record's CAS is still N (see get --cas); prints the new CAS",
		Long: "Store VALUE under KEY only if the record's CAS is still N (see get --cas), and print the new\n" +
			"CAS; exit status 1 on a CAS mismatch or when there is no record. The record keeps its TTL\n" +
			"(as Redis's SET ... KEEPTTL) unless --ttl gives a new one; persist removes it.",
		Args: cobra.ExactArgs(3),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			v, err := readValue(a[2])
			if err != nil {
				return err
			}
			n, err := c.Update(cmd.Context(), a[0], []byte(a[1]), v, cas, client.WithTTL(uttl))
			if errors.Is(err, client.ErrNotFound) {
				return notFound(a[0], a[1])
			}
			if err != nil {
				return err
			}
			if updateJSON {
				return writeJSON(cmd.OutOrStdout(), casDoc{n})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), n)
			return err
		}),
	}
	update.Flags().Uint64Var(&cas, "cas", 0, "the CAS the record must still have")
	update.Flags().DurationVar(&uttl, "ttl", 0, "expire the record after this long (default: keep the record's expiry)")
	update.MarkFlagRequired("cas")
	jsonFlag(update, &updateJSON, `print {"cas": N}`)

	var keysOnly, allReplicas, getallJSON bool
	var filter string
	getall := &cobra.Command{
		Use:   "getall CHANNEL",
		Short: "Print every record as KEY<TAB>VALUE lines (--json: JSON lines)",
		Args:  cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
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
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			defer w.Flush()
			for r, err := range c.GetAll(cmd.Context(), a[0], opts...).All() {
				if err != nil {
					return err
				}
				if getallJSON {
					doc := recordDoc{Key: r.Key, CAS: r.CAS}
					if !keysOnly {
						v := text(r.Value)
						doc.Value = &v
					}
					if err := writeJSON(w, doc); err != nil {
						return err
					}
					continue
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
	jsonFlag(getall, &getallJSON, `print one {"key", "value", "cas"} line per record`)

	var refresh, mirrorJSON bool
	mirror := &cobra.Command{
		Use:   "mirror CHANNEL",
		Short: "Print the changes of CHANNEL as they happen: put|delete|refresh<TAB>KEY<TAB>VALUE",
		Args:  cobra.ExactArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			out := cmd.OutOrStdout()
			for ev, err := range c.Mirror(cmd.Context(), a[0], mirrorOpts(refresh)...).All() {
				if errors.Is(err, context.Canceled) {
					return nil
				}
				if err != nil {
					return err
				}
				if mirrorJSON {
					doc := mirrorDoc{Type: ev.Type.String()}
					switch ev.Type {
					case client.MirrorPut, client.MirrorRefresh:
						k, v := text(ev.Key), text(ev.Value)
						doc.Key, doc.Value = &k, &v
					case client.MirrorDelete:
						k := text(ev.Key)
						doc.Key = &k
					}
					if err := writeJSON(out, doc); err != nil {
						return err
					}
					continue
				}
				switch ev.Type {
				case client.MirrorPut, client.MirrorRefresh:
					fmt.Fprintf(out, "%s\t%s\t%s\n", ev.Type, ev.Key, ev.Value)
				case client.MirrorDelete:
					fmt.Fprintf(out, "%s\t%s\n", ev.Type, ev.Key)
				default:
					fmt.Fprintf(out, "%s\n", ev.Type)
				}
			}
			return nil
		}),
	}
	mirror.Flags().BoolVar(&refresh, "refresh", false, "start with every record of the channel")
	jsonFlag(mirror, &mirrorJSON, `print one {"type", "key", "value"} line per change`)
	return append([]*cobra.Command{put, get, exists, rm, update, getall, mirror}, ttlCommands(g)...)
}

// ttlCommands are ttl, expire and persist.
func ttlCommands(g *globals) []*cobra.Command {
	var ttlJSON bool
	ttl := &cobra.Command{
		Use:   "ttl CHANNEL KEY",
		Short: "Print the time KEY has left before it expires, and when: LEFT<TAB>TIME, or never",
		Long: "Print how long the record of KEY has left (by the node's clock) and when it expires, as\n" +
			"LEFT<TAB>RFC 3339 TIME (59m58s<TAB>2026-05-01T12:00:00Z), or \"never\" for a record without\n" +
			"TTL; exit status 1 when there is no record. --json prints\n" +
			`{"ttl_seconds": N, "expires_at": TIME, "cas": N}, the first two null for never.`,
		Args: cobra.ExactArgs(2),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			e, err := c.TTL(cmd.Context(), a[0], []byte(a[1]))
			if errors.Is(err, client.ErrNotFound) {
				return notFound(a[0], a[1])
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if ttlJSON {
				doc := ttlDoc{CAS: e.CAS}
				if !e.Never() {
					sec := int64(e.Left / time.Second)
					at := e.At.UTC()
					doc.TTL, doc.At = &sec, &at
				}
				return writeJSON(out, doc)
			}
			if e.Never() {
				_, err = fmt.Fprintln(out, "never")
				return err
			}
			_, err = fmt.Fprintf(out, "%s\t%s\n", e.Left, e.At.UTC().Format(time.RFC3339))
			return err
		}),
	}
	jsonFlag(ttl, &ttlJSON, `print {"ttl_seconds", "expires_at", "cas"}`)

	var expireJSON bool
	expire := &cobra.Command{
		Use:   "expire CHANNEL KEY DURATION",
		Short: "Make KEY expire DURATION from now (10m, 1h30m, or seconds), keeping its value",
		Long: "Make the record of KEY expire DURATION from now (a Go duration such as 10m or 1h30m, or whole\n" +
			"seconds), keeping its value, as Redis's EXPIRE. It is a write: the record gets a new CAS\n" +
			`(--json prints {"cas": N}). Exit status 1 when there is no record.`,
		Args: cobra.ExactArgs(3),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			d, err := parseDuration(a[2])
			if err != nil {
				return err
			}
			cas, err := c.Expire(cmd.Context(), a[0], []byte(a[1]), d)
			if errors.Is(err, client.ErrNotFound) {
				return notFound(a[0], a[1])
			}
			if err == nil && expireJSON {
				err = writeJSON(cmd.OutOrStdout(), casDoc{cas})
			}
			return err
		}),
	}
	jsonFlag(expire, &expireJSON, `print {"cas": N}`)

	var persistJSON bool
	persist := &cobra.Command{
		Use:   "persist CHANNEL KEY",
		Short: "Remove the TTL of KEY: it no longer expires (its value stays)",
		Long: "Remove the TTL of KEY's record, keeping its value, as Redis's PERSIST. It is a write: the\n" +
			`record gets a new CAS (--json prints {"cas": N}). Exit status 1 when there is no record.`,
		Args: cobra.ExactArgs(2),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			cas, err := c.Persist(cmd.Context(), a[0], []byte(a[1]))
			if errors.Is(err, client.ErrNotFound) {
				return notFound(a[0], a[1])
			}
			if err == nil && persistJSON {
				err = writeJSON(cmd.OutOrStdout(), casDoc{cas})
			}
			return err
		}),
	}
	jsonFlag(persist, &persistJSON, `print {"cas": N}`)
	return []*cobra.Command{ttl, expire, persist}
}

// parseDuration reads a positive Go duration (10m) or whole seconds (600).
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseUint(s, 10, 32)
		if nerr != nil {
			return 0, usageError{fmt.Errorf("bad duration %q: want a duration such as 10m or 1h30m, or whole seconds", s)}
		}
		d = time.Duration(n) * time.Second
	}
	if d <= 0 {
		return 0, usageError{fmt.Errorf("bad duration %q: it must be positive (persist removes a TTL)", s)}
	}
	return d, nil
}

// jsonFlag adds --json to cmd.
func jsonFlag(cmd *cobra.Command, v *bool, what string) {
	cmd.Flags().BoolVar(v, "json", false, what+" (JSON)")
}

// casDoc is the --json answer of a write.
type casDoc struct {
	CAS uint64 `json:"cas"`
}

// getDoc is get's --json answer.
type getDoc struct {
	Key     text   `json:"key"`
	Value   text   `json:"value"`
	CAS     uint64 `json:"cas"`
	Node    string `json:"node,omitempty"`
	Replica *bool  `json:"replica,omitempty"`
}

// recordDoc is one getall --json line.
type recordDoc struct {
	Key   text   `json:"key"`
	Value *text  `json:"value,omitempty"`
	CAS   uint64 `json:"cas"`
}

// mirrorDoc is one mirror --json line.
type mirrorDoc struct {
	Type  string `json:"type"`
	Key   *text  `json:"key,omitempty"`
	Value *text  `json:"value,omitempty"`
}

// ttlDoc is ttl's --json answer.
type ttlDoc struct {
	TTL *int64     `json:"ttl_seconds"`
	At  *time.Time `json:"expires_at"`
	CAS uint64     `json:"cas"`
}

func mirrorOpts(refresh bool) []client.MirrorOption {
	if refresh {
		return []client.MirrorOption{client.InitialRefresh()}
	}
	return nil
}

func channelCommands(g *globals) []*cobra.Command {
	var channelsJSON bool
	channels := &cobra.Command{
		Use:   "channels",
		Short: "List the channels and their kinds",
		Args:  cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			list, err := c.Channels(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if channelsJSON {
				docs := []channelDoc{}
				for _, ch := range list {
					docs = append(docs, channelDoc{ch.Name, ch.Kind})
				}
				return writeJSON(out, docs)
			}
			for _, ch := range list {
				fmt.Fprintf(out, "%s\t%s\n", ch.Name, ch.Kind)
			}
			return nil
		}),
	}
	jsonFlag(channels, &channelsJSON, `print [{"name", "kind"}, ...]`)

	var sizeJSON bool
	size := &cobra.Command{
		Use:   "size [CHANNEL]",
		Short: "Print records and bytes of a channel, or of all channels",
		Args:  cobra.MaximumNArgs(1),
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, a []string) error {
			var s client.Size
			var err error
			if len(a) == 1 {
				s, err = c.ChannelSize(cmd.Context(), a[0])
			} else {
				s, err = c.Size(cmd.Context())
			}
			if err != nil {
				return err
			}
			if sizeJSON {
				return writeJSON(cmd.OutOrStdout(), sizeDoc{Kind: s.Kind, Records: s.Records, Bytes: s.Bytes})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "records %d\nbytes %d\n", s.Records, s.Bytes)
			return err
		}),
	}
	jsonFlag(size, &sizeJSON, `print {"records", "bytes"} (and "kind" of a channel)`)

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

	var infoJSON bool
	info := &cobra.Command{
		Use:   "info",
		Short: "Print what each node reports about itself",
		Args:  cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			m, err := c.Info(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if infoJSON {
				return writeJSON(out, m)
			}
			for _, addr := range c.Nodes() {
				fmt.Fprintf(out, "%s\n", addr)
				printMap(out, m[addr])
			}
			return nil
		}),
	}
	jsonFlag(info, &infoJSON, `print {ADDR: {field: value, ...}, ...}`)

	var connsJSON bool
	conns := &cobra.Command{
		Use:   "connections",
		Short: "Print the number of open client connections of each node",
		Args:  cobra.NoArgs,
		RunE: g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
			m, err := c.NumConnections(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if connsJSON {
				return writeJSON(out, m)
			}
			for _, addr := range c.Nodes() {
				fmt.Fprintf(out, "%s\t%s\n", addr, plural(int(m[addr]), "connection"))
			}
			return nil
		}),
	}
	jsonFlag(conns, &connsJSON, `print {ADDR: N, ...}`)
	return []*cobra.Command{channels, size, rmchannel, info, conns}
}

// channelDoc is one channel in channels --json.
type channelDoc struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// sizeDoc is size's --json answer.
type sizeDoc struct {
	Kind    string `json:"kind,omitempty"`
	Records int64  `json:"records"`
	Bytes   int64  `json:"bytes"`
}

func printMap(w io.Writer, m map[string]any) {
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
		fmt.Fprintf(w, "  %-16s %v\n", k, v)
	}
}
