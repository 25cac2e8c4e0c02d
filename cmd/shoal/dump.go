package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/dump"
	"shoal/internal/vfs"
)

// dumpCommands returns `dump` (with its subcommand `inspect`) and
// `restore`.
func dumpCommands(g *globals) []*cobra.Command {
	var now, asJSON bool
	var ext dumperConfig
	var codec string
	cmd := &cobra.Command{
		Use:   "dump (--now | --out DIR [--every D])",
		Short: "Make the node dump its kv channels now (--now), or dump them from outside into DIR (--out)",
		Long: `With --now the node writes its own dump of every kv channel now (needs the
admin credential when auth is on) and the command prints, per channel, the
records, bytes and duration; a failure makes it exit 4 (3 when the node
cannot be reached).

With --out DIR the command is an external dumper, a process of its own
beside the node (so that dumps cost the node only the reads): it
reads every kv channel of the node with GetAll and writes DIR/CHANNEL.dump
in the node's own format (written to a temporary file, fsynced, the
previous dump kept as .backup), which shoal restore and a node's dump
directory can load. A vBucket's seqno in these files is the highest CAS of
its records: a lower bound of the vBucket's seqno when it was read. A
channel whose read fails is retried after --retry-wait (3 attempts per
cycle); a partial file never replaces a good one. With --every the dumper
runs until stopped, through the node's restarts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case now && ext.out != "":
				return usageError{errors.New("give --now or --out, not both")}
			case now:
				return g.runCmd(func(cmd *cobra.Command, c *client.Client, _ []string) error {
					return dumpNow(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), c, asJSON)
				})(cmd, nil)
			case ext.out != "":
				c, err := dump.ParseCodec(codec)
				if err != nil {
					return usageError{err}
				}
				ext.codec = c
				return runDumper(cmd.Context(), g, ext)
			}
			return usageError{errors.New("give --now (the node dumps) or --out DIR (dump from outside)")}
		},
	}
	f := cmd.Flags()
	f.BoolVar(&now, "now", false, "make the node dump its kv channels now")
	f.StringVar(&ext.out, "out", "", "external dumper: write the dumps into this directory")
	f.DurationVar(&ext.every, "every", 0, "external dumper: repeat with this period, until stopped (0: once)")
	f.DurationVar(&ext.initialDelay, "initial-delay", 0, "external dumper with --every: wait this long before the first cycle")
	f.DurationVar(&ext.retryWait, "retry-wait", 30*time.Second, "external dumper: wait before retrying after a failure")
	f.StringVar(&codec, "codec", dump.CodecZstd.String(), "external dumper: compression, zstd or s2")
	jsonFlag(cmd, &asJSON, `--now: print one {"node", "channel", "records", "bytes", "file_bytes", "duration_ms", "error"} line per channel`)

	var allSeqnos, inspectJSON bool
	inspect := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Verify dump files and print their channel, records, bytes, size, creation time and seqnos",
		Long: `Verifies each file whole (every checksum, record and count) and prints its
channel, records, key+value bytes, file size, creation time, codec and the
non-zero vBucket seqnos (a summary, or all with --seqnos). Exits 1 if a
file does not verify, naming the file and the offset at fault.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if inspectJSON {
				return inspectFilesJSON(cmd.OutOrStdout(), files)
			}
			return inspectFiles(cmd.OutOrStdout(), cmd.ErrOrStderr(), files, allSeqnos)
		},
	}
	inspect.Flags().BoolVar(&allSeqnos, "seqnos", false, "print every non-zero vBucket seqno")
	jsonFlag(inspect, &inspectJSON, `print one {"file", "ok", "error", "channel", "records", "bytes", "file_size", "created", "codec", "vbuckets", "seqnos"} line per file`)
	cmd.AddCommand(inspect)
	return []*cobra.Command{cmd, restoreCommand(g)}
}

// dumpNow asks the node(s) to dump now and prints a line per channel as
// each is done (with asJSON, a JSON line).
func dumpNow(ctx context.Context, stdout, stderr io.Writer, c *client.Client, asJSON bool) error {
	const row = "%-24s %12v %14v %14v %10v\n"
	several := len(c.Nodes()) > 1
	if !asJSON {
		if several {
			fmt.Fprintf(stdout, "%-22s ", "NODE")
		}
		fmt.Fprintf(stdout, row, "CHANNEL", "RECORDS", "BYTES", "FILE BYTES", "DURATION")
	}
	failed := 0
	_, err := c.DumpNow(ctx, func(r client.DumpResult) {
		if r.Err != nil {
			failed++
		}
		if asJSON {
			d := dumpResultDoc{Node: r.Node, Channel: r.Channel, Records: r.Records, Bytes: r.Bytes, FileBytes: r.FileBytes, DurationMs: r.Duration.Milliseconds()}
			if r.Err != nil {
				d.Error = r.Err.Error()
			}
			writeJSON(stdout, d)
			return
		}
		if several {
			fmt.Fprintf(stdout, "%-22s ", r.Node)
		}
		d := r.Duration.Round(time.Millisecond)
		if r.Err != nil {
			fmt.Fprintf(stdout, row, r.Channel, "FAILED", "", "", d)
			fmt.Fprintf(stderr, "channel %q: %v\n", r.Channel, r.Err)
			return
		}
		fmt.Fprintf(stdout, row, r.Channel, r.Records, r.Bytes, r.FileBytes, d)
	})
	if err != nil {
		return fmt.Errorf("dump failed (%d channels failed, each keeps its previous dump): %w", failed, err)
	}
	return nil
}

// dumpResultDoc is one dump --now --json line.
type dumpResultDoc struct {
	Node       string `json:"node"`
	Channel    string `json:"channel"`
	Records    int64  `json:"records"`
	Bytes      int64  `json:"bytes"`
	FileBytes  int64  `json:"file_bytes"`
	DurationMs int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// inspectDoc is one dump inspect --json line.
type inspectDoc struct {
	File     string            `json:"file"`
	OK       bool              `json:"ok"`
	Error    string            `json:"error,omitempty"`
	Channel  string            `json:"channel,omitempty"`
	Records  int64             `json:"records"`
	Bytes    int64             `json:"bytes"`
	FileSize int64             `json:"file_size"`
	Created  *time.Time        `json:"created,omitempty"`
	Codec    string            `json:"codec,omitempty"`
	VBuckets int               `json:"vbuckets,omitempty"`
	Seqnos   map[string]uint64 `json:"seqnos,omitempty"` // non-zero ones, by vBucket
}

// inspectFilesJSON is inspectFiles with a JSON line per file.
func inspectFilesJSON(stdout io.Writer, files []string) error {
	bad := 0
	for _, path := range files {
		doc := inspectDoc{File: path}
		info, err := dump.Inspect(vfs.Default, path)
		if err != nil {
			bad++
			doc.Error = err.Error()
		} else {
			doc.OK, doc.Channel, doc.Records, doc.Bytes, doc.FileSize = true, info.Channel, info.Records, info.Bytes, info.FileSize
			doc.Codec, doc.VBuckets = info.Codec.String(), int(info.VBuckets)
			if !info.Created.IsZero() {
				c := info.Created.UTC()
				doc.Created = &c
			}
			doc.Seqnos = map[string]uint64{}
			for vb, s := range info.Seqnos {
				if s != 0 {
					doc.Seqnos[strconv.Itoa(vb)] = s
				}
			}
		}
		if err := writeJSON(stdout, doc); err != nil {
			return err
		}
	}
	if bad > 0 {
		return quietExit(exitNegative)
	}
	return nil
}

// inspectFiles verifies and describes each file; it returns an error
// naming the files that do not verify.
func inspectFiles(stdout, stderr io.Writer, files []string, allSeqnos bool) error {
	var bad []string
	for _, path := range files {
		info, err := dump.Inspect(vfs.Default, path)
		if err != nil {
			fmt.Fprintf(stderr, "%s: DOES NOT VERIFY: %v\n", path, err)
			bad = append(bad, path)
			continue
		}
		created := "unknown"
		if !info.Created.IsZero() {
			created = info.Created.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%s: ok\n  channel %s\n  records %d\n  bytes %d\n  file size %d\n  created %s\n  codec %s\n  vbuckets %d\n",
			path, info.Channel, info.Records, info.Bytes, info.FileSize, created, info.Codec, info.VBuckets)
		printSeqnos(stdout, info.Seqnos, allSeqnos)
	}
	if len(bad) > 0 {
		return &exitError{code: exitNegative, msg: fmt.Sprintf("%d of %d files do not verify: %v", len(bad), len(files), bad)}
	}
	return nil
}

// printSeqnos prints the non-zero seqnos: all of them, or how many there
// are with the lowest and the highest.
func printSeqnos(w io.Writer, seqnos []uint64, all bool) {
	var vbs []int
	for vb, s := range seqnos {
		if s != 0 {
			vbs = append(vbs, vb)
		}
	}
	if len(vbs) == 0 {
		fmt.Fprintf(w, "  seqnos none (no record)\n")
		return
	}
	if all {
		fmt.Fprintf(w, "  seqnos (vbucket seqno) of %d vbuckets:\n", len(vbs))
		for _, vb := range vbs {
			fmt.Fprintf(w, "    %d %d\n", vb, seqnos[vb])
		}
		return
	}
	lo := slices.MinFunc(vbs, func(a, b int) int { return cmp.Compare(seqnos[a], seqnos[b]) })
	hi := slices.MaxFunc(vbs, func(a, b int) int { return cmp.Compare(seqnos[a], seqnos[b]) })
	fmt.Fprintf(w, "  seqnos %d vbuckets non-zero, lowest %d (vbucket %d), highest %d (vbucket %d); --seqnos lists them\n",
		len(vbs), seqnos[lo], lo, seqnos[hi], hi)
}
