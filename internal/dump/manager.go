package dump

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"shoal/internal/kv"
	"shoal/internal/vfs"
)

// DefaultInterval is the time between two periodic dumps (--dump-interval).
const DefaultInterval = 6 * time.Hour

// Source is the kv engine as a dump reads it. kv.Store provides
// SnapshotChannel; the node adapts its channel listing to ChannelNames.
type Source interface {
	// SnapshotChannel calls fn for each vBucket holding records of ch, with
	// a copy of them taken under the vBucket's lock (one short pause per
	// vBucket) and the vBucket's seqno at the copy; fn runs without the lock.
	SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []kv.Record) error) error
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
	Logger   *slog.Logger  // nil means slog.Default()
	// Now and After are the clock (nil: time.Now and time.After).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// FirstDelay picks the delay before the first periodic dump (nil: a
	// uniformly random one in [0, interval), so that the nodes of one host
	// do not dump together).
	FirstDelay func(interval time.Duration) time.Duration
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
// (Run), on demand (DumpNow) and once more when Run is stopped. One dump
// runs at a time.
type Manager struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}

	mu    sync.Mutex
	stats Stats
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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, log: log, sem: make(chan struct{}, 1)}, nil
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
func (m *Manager) DumpNow(ctx context.Context) ([]Result, error) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.sem }()

	start := m.cfg.Now()
	m.mu.Lock()
	m.stats.Running, m.stats.LastStart = true, start
	m.mu.Unlock()

	var results []Result
	if err := m.cfg.FS.MkdirAll(m.cfg.Dir, 0o755); err != nil {
		results = []Result{{Err: fmt.Errorf("cannot create dump directory %q: %w", m.cfg.Dir, err)}}
	} else {
		for _, ch := range slices.Sorted(slices.Values(m.cfg.Source.ChannelNames())) {
			if ctx.Err() != nil {
				break
			}
			results = append(results, m.dumpChannel(ctx, ch))
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

func (m *Manager) dumpChannel(ctx context.Context, ch string) Result {
	start := m.cfg.Now()
	h := Header{Channel: ch, VBuckets: m.cfg.VBuckets, Created: start}
	sum, err := WriteFile(m.cfg.FS, m.cfg.Dir, h, func(e *Encoder) error {
		return m.cfg.Source.SnapshotChannel(ch, func(vb uint16, seqno uint64, recs []kv.Record) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return e.Add(vb, seqno, recs)
		})
	})
	r := Result{Channel: ch, Summary: sum, Duration: m.cfg.Now().Sub(start), Err: err}
	switch {
	case err == nil:
	case abandoned(ctx, err):
		m.log.Info("dump abandoned, the previous dump is kept", "channel", ch, "reason", err)
		return r
	default:
		m.log.Error("dump failed, the previous dump is kept", "channel", ch, "err", err)
		return r
	}
	m.log.Info("channel dumped", "channel", ch, "records", sum.Records, "bytes", sum.Bytes,
		"file_bytes", sum.FileBytes, "duration", r.Duration, "records_per_s", rate(sum.Records, r.Duration))
	return r
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
