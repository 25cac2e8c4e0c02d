package meta

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/raft"

	"shoal/internal/checkreport"
	"shoal/internal/raftstore"
	"shoal/internal/vfs"
)

// Files of the metadata directory (DATA/meta).
const (
	// RaftFile is raft's log and stable store (internal/raftstore).
	RaftFile = "raft.db"
	// SnapshotsDir holds raft's snapshots (hashicorp/raft's
	// FileSnapshotStore: a directory each, meta.json and state.bin).
	SnapshotsDir = "snapshots"
	// StateFile is the node's copy of the metadata it applied last, which
	// it serves from after a restart until the group has caught up.
	StateFile = "state"
	// brokenSnapshotsDir is where Check's repair moves damaged snapshots
	// (raft would read them again under SnapshotsDir).
	brokenSnapshotsDir = "broken-snapshots"
)

// maxSnapshotMetaSize bounds a snapshot's meta.json read back.
const maxSnapshotMetaSize = 16 << 20

// RejoinAdvice is what to do when this node's copy of the metadata cannot
// be used: it is rebuilt from the cluster's.
const RejoinAdvice = "move DATA/meta aside, remove the member on another node (shoal nodes remove ID) and start this node with --join to join afresh; a cluster of one must be created anew"

// ReadStateFile reads the applied-state file at path. Bytes after a whole
// document that decodes (stray bytes appended to the file) are not the
// node's: stray gives their offset (-1 when there are none) and the state
// is returned. A missing file is an error wrapping fs.ErrNotExist; a
// damaged one an error wrapping ErrCorrupt.
func ReadStateFile(path string) (st *State, stray int64, err error) {
	b, err := readBounded(path, maxSnapshotSize)
	if err != nil {
		return nil, -1, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var doc json.RawMessage
	if dec.Decode(&doc) == nil {
		end := dec.InputOffset()
		if len(bytes.TrimSpace(b[end:])) > 0 {
			if st, err := DecodeState(doc); err == nil {
				return st, end, nil
			}
		}
	}
	if st, err = DecodeState(b); err != nil {
		return nil, -1, fmt.Errorf("%s: %w", path, err)
	}
	return st, -1, nil
}

// readBounded reads the file at path, refusing one over limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, corruptError{fmt.Errorf("%s: over %d bytes", path, limit)}
	}
	return b, nil
}

// snapshotCheck is what verifying one snapshot directory found.
type snapshotCheck struct {
	name string
	meta *raft.SnapshotMeta // nil when meta.json does not decode: raft skips it
	err  error              // nil: raft can restore it
}

// snapshotPlan is what raft does with the snapshots and the log at start.
type snapshotPlan struct {
	snaps    []snapshotCheck // newest first, as raft tries them
	tmps     []string        // snapshots left half-written (raft ignores them)
	restored string          // the snapshot raft restores; "" for none
	index    uint64          // its index; 0 for none
	// refuses, when not empty, is why raft refuses to start as the files
	// are: no snapshot it lists restores. Without the damaged snapshots it
	// starts, unless gap is set too.
	refuses string
	// gap, when not empty, is why raft cannot start even without the
	// damaged snapshots: the log does not continue the one restored.
	gap string
}

// startable reports whether raft starts on these files once the damaged
// snapshots are moved aside.
func (p snapshotPlan) startable() bool { return p.gap == "" }

// planSnapshots verifies the snapshots under dir (DATA/meta) as raft's
// start reads them, and whether the log (first..last, 0..0 for an empty
// one) continues the snapshot raft would restore.
func planSnapshots(dir string, first, last uint64) (snapshotPlan, error) {
	var p snapshotPlan
	sd := filepath.Join(dir, SnapshotsDir)
	ents, err := os.ReadDir(sd)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, fmt.Errorf("cannot list %s: %w", sd, err)
	}
	for _, e := range ents {
		switch {
		case !e.IsDir():
		case strings.HasSuffix(e.Name(), ".tmp"):
			p.tmps = append(p.tmps, filepath.Join(sd, e.Name()))
		default:
			m, err := verifySnapshot(filepath.Join(sd, e.Name()))
			p.snaps = append(p.snaps, snapshotCheck{name: e.Name(), meta: m, err: err})
		}
	}
	// Newest first by term, index and id (raft's order); those raft
	// cannot list last.
	slices.SortStableFunc(p.snaps, func(a, b snapshotCheck) int {
		if a.meta == nil || b.meta == nil {
			return cmp.Compare(b2i(a.meta == nil), b2i(b.meta == nil))
		}
		return cmp.Or(cmp.Compare(b.meta.Term, a.meta.Term), cmp.Compare(b.meta.Index, a.meta.Index), strings.Compare(b.meta.ID, a.meta.ID))
	})
	listed := false
	for _, s := range p.snaps {
		listed = listed || s.meta != nil
		if s.err == nil && p.restored == "" {
			p.restored, p.index = s.name, s.meta.Index
		}
	}
	if p.restored == "" && listed {
		p.refuses = "no snapshot restores (raft refuses to start while the damaged ones are there)"
	}
	if last > p.index && first > p.index+1 {
		p.gap = fmt.Sprintf("the raft log starts at entry %d but the snapshot raft restores (%s) ends at %d: entries %d to %d are missing (raft cannot start)",
			first, restoredName(p.restored), p.index, p.index+1, first-1)
	}
	return p, nil
}

func restoredName(name string) string {
	if name == "" {
		return "none"
	}
	return name
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// verifySnapshot reads one snapshot directory as raft's start does (its
// meta.json, state.bin against the checksum meta.json gives) and decodes
// the state as the FSM's Restore does. The meta is nil when meta.json
// does not decode (raft then does not list the snapshot).
func verifySnapshot(path string) (*raft.SnapshotMeta, error) {
	b, err := readBounded(filepath.Join(path, "meta.json"), maxSnapshotMetaSize)
	if err != nil {
		return nil, fmt.Errorf("meta.json: %w", err)
	}
	var m struct {
		raft.SnapshotMeta
		CRC []byte
	}
	// As raft reads it: the first JSON value (bytes after it are ignored).
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&m); err != nil {
		return nil, fmt.Errorf("meta.json: %w", err)
	}
	if m.Version < raft.SnapshotVersionMin || m.Version > raft.SnapshotVersionMax {
		return nil, fmt.Errorf("meta.json: snapshot version %d, raft reads %d to %d", m.Version, raft.SnapshotVersionMin, raft.SnapshotVersionMax)
	}
	state, err := readBounded(filepath.Join(path, "state.bin"), maxSnapshotSize)
	if err != nil {
		return &m.SnapshotMeta, fmt.Errorf("state.bin: %w", err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(state)
	if !bytes.Equal(h.Sum(nil), m.CRC) {
		return &m.SnapshotMeta, fmt.Errorf("state.bin: checksum %x, meta.json says %x", h.Sum(nil), m.CRC)
	}
	if _, err := DecodeState(state); err != nil {
		return &m.SnapshotMeta, fmt.Errorf("state.bin: %w", err)
	}
	return &m.SnapshotMeta, nil
}

// CheckReport is what Check found in a metadata directory.
type CheckReport struct {
	Files    int // raft.db, snapshots and the applied-state file checked
	Problems int // problems found (repaired or not)
	Repaired int // problems repair mended
}

// Check verifies, offline, every file Open and the node read in dir
// (DATA/meta): raft.db (every page and log entry, see raftstore.Check),
// every snapshot (meta.json, state.bin's checksum, the state it holds),
// that the log continues the snapshot raft restores, and the node's
// applied-state file. The node must not run. It writes one line per
// problem to out. With repair it mends what is safe to mend: leftovers of
// interrupted writes are removed, stray bytes after the applied-state
// document are cut, a damaged snapshot that raft skips anyway (an older
// one restores and the log continues it) is moved to
// DATA/meta/broken-snapshots, and a damaged applied-state file is moved
// aside as state.broken when raft's files can rebuild it. What cannot be
// mended (a damaged raft.db, no usable snapshot) is reported with what to
// do. An error is returned only when dir cannot be read.
func Check(dir string, repair bool, out io.Writer) (CheckReport, error) {
	c := &checker{dir: dir, found: checkreport.Findings{Out: out, Repair: repair, RepairNote: " (--repair mends it)"}}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return c.report(), nil
	}
	if err != nil {
		return c.report(), fmt.Errorf("cannot list %s: %w", dir, err)
	}
	for _, e := range ents {
		if path := filepath.Join(dir, e.Name()); !e.IsDir() && strings.HasSuffix(e.Name(), vfs.AtomicTempSuffix) {
			c.found.Problem(path, "a file left half-written by a crash (never read)", "", func() error { return os.Remove(path) })
		}
	}
	raftOK := true
	var in raftstore.Inspection
	path := filepath.Join(dir, RaftFile)
	if in, err = raftstore.Inspect(path, raftstore.Options{}); err == nil {
		c.files++
		for _, p := range in.Problems {
			fmt.Fprintf(out, "%s: %s\n", path, p)
		}
		if len(in.Problems) > 0 {
			raftOK = false
			c.found.Problem(path, plural(len(in.Problems), "problem")+" above", "it cannot be repaired: it is this node's copy of the cluster metadata; "+RejoinAdvice, nil)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return c.report(), err
	}
	plan, err := planSnapshots(dir, in.First, in.Last)
	if err != nil {
		return c.report(), err
	}
	for _, tmp := range plan.tmps {
		c.found.Problem(tmp, "a snapshot left half-written by a crash (raft ignores it)", "", func() error { return os.RemoveAll(tmp) })
	}
	usable := raftOK && plan.startable()
	for _, s := range plan.snaps {
		c.files++
		if s.err == nil {
			continue
		}
		sp := filepath.Join(dir, SnapshotsDir, s.name)
		if usable {
			to := filepath.Join(dir, brokenSnapshotsDir, s.name)
			what := fmt.Sprintf("raft skips it at start and restores %s, then replays its log", restoredName(plan.restored))
			if plan.refuses != "" {
				what = "raft refuses to start while it is there; without it raft replays its log"
			}
			c.found.Repairable(sp, fmt.Sprintf("%v (%s; --repair moves it to %s)", s.err, what, to), "", func() error {
				if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
					return err
				}
				return os.Rename(sp, to)
			})
			continue
		}
		c.found.Problem(sp, s.err.Error(), "it cannot be repaired: "+RejoinAdvice, nil)
	}
	if raftOK && !plan.startable() {
		c.found.Problem(filepath.Join(dir, SnapshotsDir), plan.gap, "it cannot be repaired: "+RejoinAdvice, nil)
	}
	c.state(usable)
	return c.report(), nil
}

// state checks the applied-state file; rebuildable says whether raft's
// files can rebuild it.
func (c *checker) state(rebuildable bool) {
	path := filepath.Join(c.dir, StateFile)
	_, stray, err := ReadStateFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	c.files++
	switch {
	case err == nil && stray >= 0:
		c.found.Problem(path, fmt.Sprintf("stray bytes after the end of the state, from offset %d", stray), "", func() error { return os.Truncate(path, stray) })
	case err == nil:
	case rebuildable:
		c.found.Repairable(path, fmt.Sprintf("%v (the node refuses to start; --repair moves it aside as %s.broken, and the node rebuilds it from its raft log and snapshots once the metadata group has a leader)", err, StateFile), "", func() error {
			return os.Rename(path, path+".broken")
		})
	default:
		c.found.Problem(path, err.Error(), "it cannot be repaired while raft's files are damaged too (above)", nil)
	}
}

type checker struct {
	dir   string
	found checkreport.Findings
	files int
}

// report is what the check found so far.
func (c *checker) report() CheckReport {
	return CheckReport{Files: c.files, Problems: c.found.Problems, Repaired: c.found.Repaired}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
