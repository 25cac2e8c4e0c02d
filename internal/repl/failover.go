package repl

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"shoal/internal/stream"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// MaxLogEntries is the most entries a vBucket's failover log keeps; older
// ones are dropped (a consumer presenting a dropped uuid rolls back to 0).
const MaxLogEntries = 32

// Decide applies the DCP rules (couchbase.md §2.8) to a stream request
// against the producer's failover log of the vBucket (newest first) and
// its high seqno. It returns resume = true when the consumer may continue
// from req.Start, else the seqno it must roll back to.
//
//  1. The snapshot range is normalised: a start equal to the snapshot end
//     or start collapses the range onto it.
//  2. A request from seqno 0 always resumes: there is nothing to undo.
//  3. A uuid missing from the log rolls back to 0.
//  4. Otherwise the history of that uuid ends at upper: the seqno of the
//     next newer entry, or the high seqno when it is the newest. A
//     snapshot ending at or below upper resumes; one starting above upper
//     rolls back to upper; one straddling upper rolls back to its start.
//
// Purged tombstones (DCP's third rule) are the engines' business: their
// Stream answers engine.ErrRollback.
func Decide(log []stream.FailoverEntry, high uint64, req stream.Request) (rollbackTo uint64, resume bool) {
	start, snapStart, snapEnd := req.Start, req.SnapStart, req.SnapEnd
	if snapStart == 0 && snapEnd == 0 {
		snapStart, snapEnd = start, start
	}
	switch start {
	case snapEnd:
		snapStart = snapEnd
	case snapStart:
		snapEnd = snapStart
	}
	if start == 0 {
		return 0, true
	}
	i := slices.IndexFunc(log, func(e stream.FailoverEntry) bool { return e.UUID == req.UUID })
	if i < 0 {
		return 0, false
	}
	upper := high
	if i > 0 {
		upper = log[i-1].Seqno
	}
	switch {
	case snapEnd <= upper:
		return 0, true
	case snapStart > upper:
		return upper, false
	}
	return snapStart, false
}

// Logs are the failover logs of one engine's vBuckets on this node,
// persisted in one file (see the package comment for its format and when
// it is written). A producer checks stream requests against them; a
// consumer keeps the copy its producer sent, which tells it what uuid to
// present when it resumes. Safe for concurrent use.
type Logs struct {
	fs   vfs.FS
	path string
	log  *slog.Logger
	wmu  sync.Mutex // serialises writes of the file

	mu    sync.Mutex
	vbs   [][]stream.FailoverEntry // newest first
	dirty bool
}

// LogsConfig configures OpenLogs.
type LogsConfig struct {
	// Path is the file, e.g. DATA/repl/failover-kv. Its directory is created.
	Path string
	// VBuckets is the cluster's vBucket count.
	VBuckets int
	// FS is the file system; nil means vfs.Default.
	FS vfs.FS
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// OpenLogs reads the failover logs of an engine and brings them up to
// date with the engine's data, whose high seqnos high returns. A vBucket
// starts a new history (an entry with a fresh uuid at its high seqno) when
// it has no log yet, or when the file does not record a clean shutdown at
// exactly that high seqno: the data may have lost or gained mutations that
// consumers do not know about (a crash, a restart without a dump, a dump
// older than the last stream). A missing file is a first start; a damaged
// one is logged and replaced (consumers then roll back, which is safe).
// The file is rewritten at once, marked unclean until SaveClean.
func OpenLogs(cfg LogsConfig, high func(vb uint16) uint64) (*Logs, error) {
	if cfg.VBuckets < 1 || cfg.VBuckets > vbucket.Max {
		return nil, fmt.Errorf("repl: %d vbuckets", cfg.VBuckets)
	}
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Logs{fs: cfg.FS, path: cfg.Path, log: cfg.Logger, vbs: make([][]stream.FailoverEntry, cfg.VBuckets)}
	if err := cfg.FS.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the directory of %s: %w", cfg.Path, err)
	}
	f, err := readLogFile(cfg.FS, cfg.Path, cfg.VBuckets)
	switch {
	case errors.Is(err, os.ErrNotExist):
		l.log.Info("no failover log yet: every vbucket starts a history", "file", cfg.Path)
	case err != nil:
		l.log.Warn("failover log unreadable: every vbucket starts a new history (consumers roll back)", "file", cfg.Path, "err", err)
	}
	renewed := 0
	for vb := range l.vbs {
		h := high(uint16(vb))
		if err == nil {
			l.vbs[vb] = f.logs[vb]
			if f.clean && f.highs[vb] == h && len(f.logs[vb]) > 0 {
				continue
			}
		}
		l.branch(uint16(vb), h)
		renewed++
	}
	if err == nil && renewed > 0 {
		l.log.Info("vbuckets start a new history after an unclean stop or a changed high seqno", "file", cfg.Path, "vbuckets", renewed)
	}
	if err := l.write(nil); err != nil {
		return nil, err
	}
	return l, nil
}

// branch adds an entry with a fresh uuid at seqno to vb's log. l.mu is
// held or l is not shared yet.
func (l *Logs) branch(vb uint16, seqno uint64) {
	old := l.vbs[vb]
	var uuid uint64
	for uuid == 0 || slices.ContainsFunc(old, func(e stream.FailoverEntry) bool { return e.UUID == uuid }) {
		uuid = rand.Uint64()
	}
	n := min(len(old)+1, MaxLogEntries)
	log := make([]stream.FailoverEntry, n)
	log[0] = stream.FailoverEntry{UUID: uuid, Seqno: seqno}
	copy(log[1:], old)
	l.vbs[vb] = log
	l.dirty = true
}

// Get returns a copy of vb's log, newest first (nil for a vBucket out of
// range).
func (l *Logs) Get(vb uint16) []stream.FailoverEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(vb) >= len(l.vbs) {
		return nil
	}
	return slices.Clone(l.vbs[vb])
}

// UUID returns the uuid of vb's newest entry, 0 if it has none.
func (l *Logs) UUID(vb uint16) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(vb) >= len(l.vbs) || len(l.vbs[vb]) == 0 {
		return 0
	}
	return l.vbs[vb][0].UUID
}

// Ensure gives vb a first entry at seqno if its log is empty (a vBucket
// rolled back to 0 as a consumer, then asked for as a producer), and
// returns its log.
func (l *Logs) Ensure(vb uint16, seqno uint64) []stream.FailoverEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(vb) >= len(l.vbs) {
		return nil
	}
	if len(l.vbs[vb]) == 0 {
		l.branch(vb, seqno)
	}
	return slices.Clone(l.vbs[vb])
}

// Replace makes log (a producer's, newest first) vb's log: a consumer
// whose stream was accepted now follows the producer's history. Entries
// past MaxLogEntries are dropped.
func (l *Logs) Replace(vb uint16, log []stream.FailoverEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(vb) >= len(l.vbs) {
		return
	}
	log = log[:min(len(log), MaxLogEntries)]
	if slices.Equal(l.vbs[vb], log) {
		return
	}
	l.vbs[vb] = slices.Clone(log)
	l.dirty = true
}

// Reset empties vb's log: the consumer rolled back to 0 and holds nothing.
func (l *Logs) Reset(vb uint16) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(vb) < len(l.vbs) && len(l.vbs[vb]) > 0 {
		l.vbs[vb] = nil
		l.dirty = true
	}
}

// Branch starts a new history of vb at seqno (a replica promoted to
// active) and writes the file at once.
func (l *Logs) Branch(vb uint16, seqno uint64) error {
	l.mu.Lock()
	if int(vb) >= len(l.vbs) {
		l.mu.Unlock()
		return fmt.Errorf("repl: branch vbucket %d of %d", vb, len(l.vbs))
	}
	l.branch(vb, seqno)
	l.mu.Unlock()
	return l.Save()
}

// BranchAll is Branch for every vBucket with one write of the file.
func (l *Logs) BranchAll(high func(vb uint16) uint64) error {
	vbs := make([]uint16, len(l.vbs))
	for vb := range vbs {
		vbs[vb] = uint16(vb)
	}
	_, err := l.BranchVBuckets(vbs, high)
	return err
}

// BranchVBuckets starts a new history of every vBucket in vbs at its high
// seqno (replicas promoted to active) with one write of the file. If the
// write fails the logs are left as they were. undo puts the previous
// histories back and writes the file, for a promotion that fails after
// this step.
func (l *Logs) BranchVBuckets(vbs []uint16, high func(vb uint16) uint64) (undo func() error, err error) {
	l.mu.Lock()
	prev := make(map[uint16][]stream.FailoverEntry, len(vbs))
	for _, vb := range vbs {
		if int(vb) >= len(l.vbs) {
			l.mu.Unlock()
			return nil, fmt.Errorf("repl: branch vbucket %d of %d", vb, len(l.vbs))
		}
		prev[vb] = l.vbs[vb]
		l.branch(vb, high(vb))
	}
	l.mu.Unlock()
	restore := func() {
		l.mu.Lock()
		for vb, log := range prev {
			l.vbs[vb] = log
		}
		l.dirty = true
		l.mu.Unlock()
	}
	if err := l.Save(); err != nil {
		restore()
		return nil, err
	}
	return func() error { restore(); return l.Save() }, nil
}

// Save writes the file if anything changed since the last write (marked
// unclean). Consumers' copies are saved lazily this way: a copy older
// than the data can only make a later resume roll back, never resume on
// a diverged history.
func (l *Logs) Save() error {
	l.mu.Lock()
	dirty := l.dirty
	l.mu.Unlock()
	if !dirty {
		return nil
	}
	return l.write(nil)
}

// SaveClean writes the file marked clean with the engine's high seqnos,
// for a clean shutdown: the engine must not change any more. A later
// OpenLogs keeps every history whose high seqno is found again.
func (l *Logs) SaveClean(high func(vb uint16) uint64) error {
	l.mu.Lock()
	highs := make([]uint64, len(l.vbs))
	l.mu.Unlock()
	for vb := range highs {
		highs[vb] = high(uint16(vb))
	}
	return l.write(highs)
}

// write encodes the logs (clean when highs is not nil) and replaces the
// file: temp file, fsync, rename, directory fsync.
func (l *Logs) write(highs []uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	b := encodeLogFile(l.vbs, highs)
	l.dirty = false
	l.mu.Unlock()
	if err := vfs.WriteFileAtomic(l.fs, l.path, b, 0o644); err != nil {
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return fmt.Errorf("cannot write failover log %s: %w", l.path, err)
	}
	return nil
}
