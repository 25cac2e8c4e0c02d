package dump

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// DefaultInterval is the time between two periodic dumps (--dump-interval).
const DefaultInterval = 6 * time.Hour

// DeletedDir is the subdirectory of a dump directory where RemoveChannel
// moves the files of a removed channel (swarm's deleted/), so that an
// operator can undo the removal by moving them back before a restart.
// Load ignores it.
const DeletedDir = "deleted"

// Source is the kv engine as a dump reads it. kv.Store provides
// SnapshotChannel; the node adapts its channel listing to ChannelNames.
type Source interface {
	// SnapshotChannel calls fn for each vBucket holding records of ch, with
	// a copy of them taken under the vBucket's lock (one short pause per
	// vBucket) and the vBucket's seqno at the copy; fn runs without the lock.
	SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error
	// ChannelNames returns the kv channels to dump.
	ChannelNames() []string
}

// Config configures a Manager.
type Config struct {
	FS       vfs.FS // nil means vfs.Default
	Dir      string
	VBuckets int
	Source   Source
	Interval time.Duration // between periodic dumps; 0 means DefaultInterval
	Codec    Codec         // of the blocks; 0 means CodecZstd
	Logger   *slog.Logger  // nil means slog.Default()
	// Channels are the channels whose dumps Dir holds (those Load loaded).
	// They are dumped even when the Source no longer lists them, so that
	// the dump of a channel emptied since is emptied too instead of
	// bringing its records back at the next start.
	Channels []string
	// Now and After are the clock (nil: time.Now and time.After).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// FirstDelay picks the delay before the first periodic dump (nil: a
	// uniformly random one in [0, interval), so that the nodes of one host
	// do not dump together).
	FirstDelay func(interval time.Duration) time.Duration
	// Done, if set, is told the duration of every dump when it ends (the
	// node's dump histogram).
	Done func(time.Duration)
}

// Result is the outcome of one channel's dump.
type Result struct {
	Channel string
	Summary
	Duration time.Duration
	Err      error // nil if the dump is in place
}

// Stats describes the dumps of a Manager, for stats.log, /metrics and
// /status.
type Stats struct {
	Dumps        int64 // dumps of all channels finished (with or without failures)
	Failures     int64 // channel dumps that failed (not those abandoned at shutdown)
	Records      int64 // records written by successful channel dumps
	FileBytes    int64 // bytes of the files written by successful channel dumps
	Running      bool
	LastStart    time.Time
	LastDuration time.Duration
	Last         []Result // the channels of the last finished dump
	LastError    error    // the last channel dump that failed
	LastErrorAt  time.Time
	Next         time.Time // when the next periodic dump is due; zero if none
}

// Manager dumps the channels of a Source to a directory: periodically
// (Run), on demand (DumpNow, DumpEach) and once more when Run is stopped.
// One dump runs at a time. It dumps the channels the Source lists and
// those whose dumps it keeps (Config.Channels and every channel it dumped),
// until RemoveChannel.
type Manager struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}
	// fileMu is held while one channel's files are written and while
	// RemoveChannel moves them, so that a dump never puts back the files
	// of a channel removed during it.
	fileMu sync.Mutex

	mu      sync.Mutex
	stats   Stats
	kept    map[string]bool // channels whose dump files the Manager keeps current
	removed map[string]bool // channels removed since the running dump listed its channels
}

// NewManager checks cfg and returns a Manager.
func NewManager(cfg Config) (*Manager, error) {
	if err := checkVBuckets(cfg.VBuckets); err != nil {
		return nil, err
	}
	switch {
	case cfg.Dir == "":
		return nil, errors.New("dump: no directory")
	case cfg.Source == nil:
		return nil, errors.New("dump: no source")
	case cfg.Interval < 0:
		return nil, fmt.Errorf("dump: negative interval %v", cfg.Interval)
	}
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.FirstDelay == nil {
		cfg.FirstDelay = func(d time.Duration) time.Duration { return rand.N(d) }
	}
	if cfg.Codec == 0 {
		cfg.Codec = CodecZstd
	}
	if !cfg.Codec.valid() {
		return nil, fmt.Errorf("dump: unknown codec %d", cfg.Codec)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{cfg: cfg, log: log, sem: make(chan struct{}, 1), kept: make(map[string]bool), removed: make(map[string]bool)}
	for _, ch := range cfg.Channels {
		m.kept[ch] = true
	}
	return m, nil
}

// Run dumps every Interval, the first time after FirstDelay, until ctx is
// done; then it makes a final dump, which ctx does not cancel, and returns
// its error. A dump running when ctx is done is abandoned (its files are
// left as they were) before the final one starts. Failed periodic dumps are
// logged and counted, and the next one is tried at the usual time.
func (m *Manager) Run(ctx context.Context) error {
	delay := m.cfg.FirstDelay(m.cfg.Interval)
	for {
		next := m.cfg.Now().Add(delay)
		m.setNext(next)
		m.log.Info("next dump scheduled", "at", next, "in", delay)
		select {
		case <-ctx.Done():
			m.setNext(time.Time{})
			m.log.Info("final dump before shutdown", "dir", m.cfg.Dir)
			_, err := m.DumpNow(context.WithoutCancel(ctx))
			return err
		case <-m.cfg.After(delay):
		}
		start := m.cfg.Now()
		_, _ = m.DumpNow(ctx) // logged and counted by DumpNow
		// The next dump is due Interval after this one started, and not
		// sooner than a tenth of it after it ended.
		delay = max(m.cfg.Interval-m.cfg.Now().Sub(start), m.cfg.Interval/10)
	}
}

func (m *Manager) setNext(t time.Time) {
	m.mu.Lock()
	m.stats.Next = t
	m.mu.Unlock()
}

// DumpNow dumps every channel now, one after the other, and returns a
// result per channel; the error joins those of the failed channels. A
// failed channel leaves its previous dump in place and does not stop the
// others. If a dump is already running, DumpNow waits for it to end (or for
// ctx) and then makes its own.
func (m *Manager) DumpNow(ctx context.Context) ([]Result, error) { return m.DumpEach(ctx, nil) }

// DumpEach is DumpNow that also calls fn (if not nil) with each channel's
// result as soon as the channel is done (for `shoal dump --now`).
func (m *Manager) DumpEach(ctx context.Context, fn func(Result)) ([]Result, error) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.sem }()

	start := m.cfg.Now()
	m.mu.Lock()
	m.stats.Running, m.stats.LastStart = true, start
	clear(m.removed)
	m.mu.Unlock()

	var results []Result
	report := func(r Result) {
		results = append(results, r)
		if fn != nil {
			fn(r)
		}
	}
	if err := m.cfg.FS.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		report(Result{Err: fmt.Errorf("cannot create dump directory %q: %w", m.cfg.Dir, err)})
	} else {
		listed, names := m.channels()
		for _, ch := range names {
			if ctx.Err() != nil {
				break
			}
			if r, ok := m.dumpChannel(ctx, ch, listed[ch]); ok {
				report(r)
			}
		}
	}

	end := m.cfg.Now()
	var errs []error
	var records, fileBytes int64
	m.mu.Lock()
	m.stats.Running = false
	m.stats.Dumps++
	m.stats.LastDuration = end.Sub(start)
	m.stats.Last = results
	if m.cfg.Done != nil {
		m.cfg.Done(end.Sub(start))
	}
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
			if abandoned(ctx, r.Err) {
				continue
			}
			m.stats.Failures++
			m.stats.LastError, m.stats.LastErrorAt = r.Err, end
			continue
		}
		records += r.Records
		fileBytes += r.FileBytes
	}
	m.stats.Records += records
	m.stats.FileBytes += fileBytes
	m.mu.Unlock()

	m.log.Info("dump finished", "dir", m.cfg.Dir, "channels", len(results), "failed", len(errs),
		"records", records, "file_bytes", fileBytes, "duration", end.Sub(start))
	return results, errors.Join(errs...)
}

// channels returns the channels to dump, sorted: those the Source lists
// (marked in listed) and those whose dumps the Manager keeps.
func (m *Manager) channels() (listed map[string]bool, names []string) {
	listed = make(map[string]bool)
	for _, ch := range m.cfg.Source.ChannelNames() {
		listed[ch] = true
		names = append(names, ch)
	}
	m.mu.Lock()
	for ch := range m.kept {
		if !listed[ch] {
			names = append(names, ch)
		}
	}
	m.mu.Unlock()
	slices.Sort(names)
	return listed, names
}

// dumpChannel dumps ch, unless it was removed since the dump began (then
// ok is false). listed says whether the Source listed ch: a channel it
// did not list is forgotten once its dump is empty.
func (m *Manager) dumpChannel(ctx context.Context, ch string, listed bool) (r Result, ok bool) {
	m.fileMu.Lock()
	defer m.fileMu.Unlock()
	m.mu.Lock()
	removed := m.removed[ch]
	m.mu.Unlock()
	if removed {
		return Result{}, false
	}
	start := m.cfg.Now()
	h := Header{Channel: ch, VBuckets: m.cfg.VBuckets, Created: start, Codec: m.cfg.Codec}
	sum, err := WriteFile(m.cfg.FS, m.cfg.Dir, h, func(e *Encoder) error {
		return m.cfg.Source.SnapshotChannel(ch, func(vb uint16, seqno uint64, recs []engine.Record) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return e.Add(vb, seqno, recs)
		})
	})
	r = Result{Channel: ch, Summary: sum, Duration: m.cfg.Now().Sub(start), Err: err}
	switch {
	case err == nil:
	case abandoned(ctx, err):
		m.log.Info("dump abandoned, the previous dump is kept", "channel", ch, "reason", err)
		return r, true
	default:
		m.log.Error("dump failed, the previous dump is kept", "channel", ch, "err", err)
		return r, true
	}
	m.mu.Lock()
	if listed || sum.Records > 0 {
		m.kept[ch] = true
	} else {
		delete(m.kept, ch)
	}
	m.mu.Unlock()
	m.log.Info("channel dumped", "channel", ch, "records", sum.Records, "bytes", sum.Bytes,
		"file_bytes", sum.FileBytes, "duration", r.Duration, "records_per_s", rate(sum.Records, r.Duration))
	return r, true
}

// RemoveChannel moves the dump files of ch (ch.dump and ch.dump.backup)
// to Dir/deleted/, replacing those an earlier removal of ch left there, and
// stops dumping ch until the Source lists it again. A dump of ch in
// progress finishes first, so it cannot put the files back. Call it after
// the channel is removed from the Source.
func (m *Manager) RemoveChannel(ch string) error {
	m.fileMu.Lock()
	defer m.fileMu.Unlock()
	m.mu.Lock()
	delete(m.kept, ch)
	m.removed[ch] = true
	m.mu.Unlock()

	deleted := filepath.Join(m.cfg.Dir, DeletedDir)
	var moved []string
	for _, ext := range []string{Ext, BackupExt} {
		from, to := filepath.Join(m.cfg.Dir, ch+ext), filepath.Join(deleted, ch+ext)
		if _, err := m.cfg.FS.Stat(from); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cannot stat dump %q: %w", from, err)
			}
			// Keep deleted/ to the files of one removal.
			if err := m.cfg.FS.Remove(to); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cannot remove old deleted dump %q: %w", to, err)
			}
			continue
		}
		if err := m.cfg.FS.MkdirAll(deleted, 0o755); err != nil {
			return fmt.Errorf("cannot create %q: %w", deleted, err)
		}
		if err := m.cfg.FS.Rename(from, to); err != nil {
			return fmt.Errorf("cannot move dump %q to %q: %w", from, to, err)
		}
		moved = append(moved, to)
	}
	if len(moved) == 0 {
		return nil
	}
	for _, dir := range []string{deleted, m.cfg.Dir} {
		if err := m.cfg.FS.SyncDir(dir); err != nil {
			return fmt.Errorf("cannot sync directory %q after moving the dumps of %q: %w", dir, ch, err)
		}
	}
	m.log.Info("dumps of a removed channel moved aside; move them back before a restart to undo",
		"channel", ch, "files", moved)
	return nil
}

// abandoned reports whether err ended a dump because ctx was done (the node
// is stopping), which is not counted as a failure.
func abandoned(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}

// Stats returns a copy of the Manager's statistics.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Last = slices.Clone(s.Last)
	return s
}
