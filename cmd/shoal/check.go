package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"shoal/internal/dump"
	"shoal/internal/logstore"
	"shoal/internal/meta"
	"shoal/internal/queue"
	"shoal/internal/repl"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

func checkCommand() *cobra.Command {
	var repair bool
	var dumpDir string
	cmd := &cobra.Command{
		Use:   "check DIR",
		Short: "Verify (and with --repair, repair) every file a stopped node reads at start-up",
		Long: "Verify, offline, every file a node reads when it starts, under DIR, its data directory: the\n" +
			"node id, the log engine's segments and state (log-data), the queue state file, overflow\n" +
			"segments and journal (queue), the kv dumps (dump, or --dump-dir), the failover logs (repl)\n" +
			"and the cluster metadata (meta: raft.db, the raft snapshots, the applied state). The node\n" +
			"must be stopped (check takes its lock). DIR may also be a log data directory alone. One line\n" +
			"per problem, then a summary per part.\n\n" +
			"--repair mends what is safe to mend: torn tails and stray bytes after the last valid record\n" +
			"are cut (a node does that itself at start, and says so in root.log), log files damaged in the\n" +
			"middle are rewritten (the original kept as NAME.broken), a damaged dump is replaced by its\n" +
			"backup when that verifies, a damaged failover log is removed (the node starts new histories,\n" +
			"as it would), a damaged raft snapshot the raft log still covers and a damaged meta/state are\n" +
			"moved aside (raft's files rebuild them), leftovers are removed. What cannot be mended without\n" +
			"losing data is reported with what to do. Exit status 1 when problems remain.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return check(cmd.OutOrStdout(), a[0], dumpDir, repair)
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "repair what can be repaired safely")
	cmd.Flags().StringVar(&dumpDir, "dump-dir", "", "the node's --dump-dir, when it is not DIR/dump")
	return cmd
}

// checkTally counts what check found.
type checkTally struct {
	problems, repaired int
}

// check verifies the data directory dir (or a log data directory) while
// holding its lock, so that no node runs on it meanwhile.
func check(out io.Writer, dir, dumpDir string, repair bool) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("cannot check %s: not a directory", dir)
	}
	if !isDataDir(dir) {
		// A log data directory given alone.
		rep, err := logstore.Check(vfs.Default, dir, repair, out)
		if err != nil {
			return err
		}
		return checkOutcome(out, repair, checkTally{problems: rep.Problems(), repaired: min(rep.Repaired, rep.Problems())}, func() (int, error) {
			after, err := logstore.Check(vfs.Default, dir, false, io.Discard)
			return after.Problems(), err
		})
	}
	unlock, err := lockDataDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if dumpDir == "" {
		dumpDir = filepath.Join(dir, "dump")
	}
	run := func(repair bool, out io.Writer) (checkTally, error) {
		var t checkTally
		for _, part := range []func(io.Writer, string, string, bool, *checkTally) error{checkNodeID, checkLog, checkQueue, checkDumps, checkFailoverLogs, checkMeta} {
			if err := part(out, dir, dumpDir, repair, &t); err != nil {
				return t, err
			}
		}
		return t, nil
	}
	t, err := run(repair, out)
	if err != nil {
		return err
	}
	return checkOutcome(out, repair, t, func() (int, error) {
		after, err := run(false, io.Discard)
		return after.problems, err
	})
}

// checkOutcome ends a check: exit status 1 while problems remain.
func checkOutcome(out io.Writer, repair bool, t checkTally, again func() (int, error)) error {
	switch {
	case t.problems == 0:
		fmt.Fprintln(out, "no problems found")
		return nil
	case !repair:
		return &exitError{code: exitNegative, msg: fmt.Sprintf("%s found; run with --repair to repair what can be", plural(t.problems, "problem"))}
	}
	n, err := again()
	if err != nil {
		return err
	}
	if n > 0 {
		return &exitError{code: exitNegative, msg: fmt.Sprintf("%s remain after the repair (see above for what to do)", plural(n, "problem"))}
	}
	fmt.Fprintln(out, "no problems remain")
	return nil
}

// isDataDir reports whether dir looks like a node's data directory rather
// than a log data directory.
func isDataDir(dir string) bool {
	for _, name := range []string{"LOCK", "node-id", "log-data", "queue", "meta", "repl"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

func checkNodeID(out io.Writer, dir, _ string, _ bool, t *checkTally) error {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	if id := strings.TrimSpace(string(b)); id != "" && !vbmap.ValidNodeID(id) {
		t.problems++
		fmt.Fprintf(out, "%s: holds %q, not a node id; cannot be repaired: write the node's id into it (shoal nodes on another member lists them)\n", path, id)
	}
	return nil
}

func checkLog(out io.Writer, dir, _ string, repair bool, t *checkTally) error {
	ld := filepath.Join(dir, "log-data")
	if _, err := os.Stat(ld); err != nil {
		return nil
	}
	fmt.Fprintf(out, "checking %s\n", ld)
	rep, err := logstore.Check(vfs.Default, ld, repair, out)
	if err != nil {
		return err
	}
	t.problems += rep.Problems()
	t.repaired += min(rep.Repaired, rep.Problems())
	return nil
}

func checkQueue(out io.Writer, dir, _ string, repair bool, t *checkTally) error {
	qd := filepath.Join(dir, "queue")
	if _, err := os.Stat(qd); err != nil {
		return nil
	}
	fmt.Fprintf(out, "checking %s\n", qd)
	rep, err := queue.Check(vfs.Default, qd, repair, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "checked %s: %s%s\n", plural(rep.Files, "file"), plural(rep.Problems, "problem"), repairedNote(repair, rep.Repaired))
	t.problems += rep.Problems
	t.repaired += rep.Repaired
	return nil
}

func checkDumps(out io.Writer, _, dumpDir string, repair bool, t *checkTally) error {
	ents, err := os.ReadDir(dumpDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", dumpDir, err)
	}
	fmt.Fprintf(out, "checking %s\n", dumpDir)
	files, problems, repaired := 0, 0, 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, dump.Ext) || e.IsDir() {
			continue
		}
		files++
		path := filepath.Join(dumpDir, name)
		if err := scanDump(path); err == nil {
			continue
		} else {
			problems++
			backup := strings.TrimSuffix(path, dump.Ext) + dump.BackupExt
			berr := scanDump(backup)
			switch {
			case berr == nil && repair:
				if rerr := replaceWithBackup(path, backup); rerr != nil {
					fmt.Fprintf(out, "%s: %v; cannot put its backup in its place: %v\n", path, err, rerr)
					continue
				}
				repaired++
				fmt.Fprintf(out, "%s: %v; repaired: replaced by its backup (the damaged file kept as %s.broken)\n", path, err, name)
			case berr == nil:
				fmt.Fprintf(out, "%s: %v (its backup verifies: --repair puts it in its place; a node with --on-corrupt-dump=backup, the default, loads it)\n", path, err)
			default:
				fmt.Fprintf(out, "%s: %v; no backup that verifies: start the node with --on-corrupt-dump=skip to start without the channel, or restore it from an external dump (shoal restore)\n", path, err)
			}
		}
	}
	fmt.Fprintf(out, "checked %s: %s%s\n", plural(files, "dump"), plural(problems, "problem"), repairedNote(repair, repaired))
	t.problems += problems
	t.repaired += repaired
	return nil
}

// scanDump verifies one dump file whole.
func scanDump(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = dump.Scan(f, path)
	return err
}

// replaceWithBackup moves path aside as path.broken and copies backup in
// its place (the backup stays, as the node keeps one).
func replaceWithBackup(path, backup string) error {
	b, err := os.ReadFile(backup)
	if err != nil {
		return err
	}
	if err := os.Rename(path, path+".broken"); err != nil {
		return err
	}
	return vfs.WriteFileAtomic(vfs.Default, path, b, 0o644)
}

func checkFailoverLogs(out io.Writer, dir, _ string, repair bool, t *checkTally) error {
	rd := filepath.Join(dir, "repl")
	ents, err := os.ReadDir(rd)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", rd, err)
	}
	fmt.Fprintf(out, "checking %s\n", rd)
	files, problems, repaired := 0, 0, 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "failover-") || e.IsDir() || strings.HasSuffix(e.Name(), vfs.AtomicTempSuffix) {
			continue
		}
		files++
		path := filepath.Join(rd, e.Name())
		err := repl.VerifyLogFile(vfs.Default, path)
		if err == nil {
			continue
		}
		problems++
		if repair {
			if rerr := os.Remove(path); rerr != nil {
				fmt.Fprintf(out, "%s: %v; cannot remove it: %v\n", path, err, rerr)
				continue
			}
			repaired++
			fmt.Fprintf(out, "%s: %v; repaired: removed (every vbucket of the engine starts a new history: its replicas roll back and catch up)\n", path, err)
			continue
		}
		fmt.Fprintf(out, "%s: %v (a node replaces it at start, starting new histories; --repair removes it)\n", path, err)
	}
	fmt.Fprintf(out, "checked %s: %s%s\n", plural(files, "failover log"), plural(problems, "problem"), repairedNote(repair, repaired))
	t.problems += problems
	t.repaired += repaired
	return nil
}

func checkMeta(out io.Writer, dir, _ string, repair bool, t *checkTally) error {
	md := filepath.Join(dir, "meta")
	if _, err := os.Stat(md); err != nil {
		return nil
	}
	fmt.Fprintf(out, "checking %s\n", md)
	rep, err := meta.Check(md, repair, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "checked %s: %s%s\n", plural(rep.Files, "file"), plural(rep.Problems, "problem"), repairedNote(repair, rep.Repaired))
	t.problems += rep.Problems
	t.repaired += rep.Repaired
	return nil
}

func repairedNote(repair bool, n int) string {
	if !repair {
		return ""
	}
	return fmt.Sprintf(", %d repaired", n)
}
