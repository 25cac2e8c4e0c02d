package dump

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// Sink is the kv engine as Load fills it (kv.Store implements it).
type Sink interface {
	// Load inserts records of channel ch in vBucket vb, keeping their
	// seqno and expiry, and raises vb's seqno to at least seqno. recs alias
	// a buffer that is reused when Load returns. Load is called from
	// several goroutines at once, for different channels.
	Load(ch string, vb uint16, seqno uint64, recs []engine.Record) error
}

// OnCorrupt is what Load does with a channel whose dump does not verify
// (--on-corrupt-dump).
type OnCorrupt uint8

// Policies for a dump that does not verify.
const (
	// OnCorruptBackup loads ch.dump.backup instead, with a loud warning; if
	// there is no backup, or it does not verify either, Load fails.
	OnCorruptBackup OnCorrupt = iota
	// OnCorruptFail makes Load fail.
	OnCorruptFail
	// OnCorruptSkip starts without the channel, with a loud warning.
	OnCorruptSkip
)

// String returns "backup", "fail" or "skip".
func (p OnCorrupt) String() string {
	switch p {
	case OnCorruptBackup:
		return "backup"
	case OnCorruptFail:
		return "fail"
	case OnCorruptSkip:
		return "skip"
	}
	return fmt.Sprintf("OnCorrupt(%d)", uint8(p))
}

// ParseOnCorrupt parses "fail", "backup" or "skip".
func ParseOnCorrupt(s string) (OnCorrupt, error) {
	for _, p := range []OnCorrupt{OnCorruptBackup, OnCorruptFail, OnCorruptSkip} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("dump: unknown on-corrupt policy %q (want fail, backup or skip)", s)
}

// Set implements flag.Value.
func (p *OnCorrupt) Set(s string) error {
	v, err := ParseOnCorrupt(s)
	if err == nil {
		*p = v
	}
	return err
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (p *OnCorrupt) UnmarshalText(b []byte) error { return p.Set(string(b)) }

// LoadConfig configures Load.
type LoadConfig struct {
	FS        vfs.FS // nil means vfs.Default
	Dir       string
	VBuckets  int // the node's vBucket count; a dump with another count is refused
	Sink      Sink
	OnCorrupt OnCorrupt
	Parallel  int          // channels loaded at once; 0 means GOMAXPROCS
	Logger    *slog.Logger // nil means slog.Default()
	Now       func() time.Time
}

// LoadResult is what Load did with one channel.
type LoadResult struct {
	Channel    string
	File       string // the file loaded; "" if the channel was skipped
	FromBackup bool
	Records    int64
	Bytes      int64 // key plus value bytes
	Duration   time.Duration
	// Problem is what was wrong with ch.dump when the backup was loaded or
	// the channel skipped.
	Problem error
}

// progressEvery is the fraction of a channel's records between two
// progress lines; channels under progressMin records get none.
const (
	progressEvery = 10 // percent
	progressMin   = 100_000
)

// Load loads the dump of every channel of cfg.Dir into cfg.Sink, the
// channels in parallel, with progress lines in the log. A file is verified
// whole (Scan) before any of its records reaches the sink, so a damaged file
// is never loaded, even partly; what happens then is cfg.OnCorrupt's choice.
// Special cases:
//   - a leftover ch.dump.tmp is ignored with a warning;
//   - an empty ch.dump never fails Load: it is skipped with a warning, or
//     replaced by its backup under OnCorruptBackup;
//   - a ch.dump.backup without ch.dump (a dump interrupted between its two
//     renames) is loaded with a warning whatever the policy;
//   - a dump with another vBucket count fails Load with ErrVBucketMismatch
//     whatever the policy.
//
// Load returns the results of the channels it finished and the first error
// that made it stop; a missing directory is an empty one.
func Load(ctx context.Context, cfg LoadConfig) ([]LoadResult, error) {
	if err := checkVBuckets(cfg.VBuckets); err != nil {
		return nil, err
	}
	switch {
	case cfg.Dir == "":
		return nil, errors.New("dump: no directory to load")
	case cfg.Sink == nil:
		return nil, errors.New("dump: no sink to load into")
	}
	l := &loader{cfg: cfg, fs: cfg.FS, log: cfg.Logger, now: cfg.Now}
	if l.fs == nil {
		l.fs = vfs.Default
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.now == nil {
		l.now = time.Now
	}
	files, err := l.scanDir()
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for ch := range files {
			if !yield(ch) {
				return
			}
		}
	})
	start := l.now()
	l.log.Info("loading dumps", "dir", cfg.Dir, "channels", len(names), "on_corrupt", cfg.OnCorrupt.String())
	results := make([]LoadResult, len(names))
	done := make([]bool, len(names))
	g, gctx := errgroup.WithContext(ctx)
	parallel := cfg.Parallel
	if parallel <= 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	g.SetLimit(parallel)
	for i, ch := range names {
		g.Go(func() error {
			res, err := l.channel(gctx, ch, files[ch])
			results[i], done[i] = res, err == nil
			return err
		})
	}
	err = g.Wait()
	var out []LoadResult
	var records int64
	var backups, skipped int
	for i, res := range results {
		if !done[i] {
			continue
		}
		out = append(out, res)
		records += res.Records
		switch {
		case res.File == "":
			skipped++
		case res.FromBackup:
			backups++
		}
	}
	if err != nil {
		l.log.Error("loading dumps failed", "dir", cfg.Dir, "err", err)
		return out, err
	}
	l.log.Info("dumps loaded", "dir", cfg.Dir, "channels", len(out), "from_backup", backups,
		"skipped", skipped, "records", records, "duration", l.now().Sub(start))
	return out, nil
}

type loader struct {
	cfg LoadConfig
	fs  vfs.FS
	log *slog.Logger
	now func() time.Time
}

// channelFiles is what the directory holds for one channel.
type channelFiles struct {
	dump, backup bool
	dumpSize     int64
}

func (l *loader) scanDir() (map[string]channelFiles, error) {
	entries, err := l.fs.ReadDir(l.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		l.log.Info("no dump directory, nothing to load", "dir", l.cfg.Dir)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read dump directory %q: %w", l.cfg.Dir, err)
	}
	files := make(map[string]channelFiles)
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(l.cfg.Dir, name)
		var ch string
		var isDump bool
		switch {
		case e.IsDir():
			continue
		case strings.HasSuffix(name, TmpExt):
			l.log.Warn("ignoring an unfinished dump: the node stopped while writing it", "file", path)
			continue
		case strings.HasSuffix(name, BackupExt):
			ch = strings.TrimSuffix(name, BackupExt)
		case strings.HasSuffix(name, Ext):
			ch, isDump = strings.TrimSuffix(name, Ext), true
		default:
			l.log.Debug("ignoring a file that is not a dump", "file", path)
			continue
		}
		if !engine.ValidChannelString(ch) {
			l.log.Warn("ignoring a dump file whose name is not a channel name", "file", path)
			continue
		}
		f := files[ch]
		if !isDump {
			f.backup = true
			files[ch] = f
			continue
		}
		fi, err := l.fs.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("cannot stat dump %q: %w", path, err)
		}
		f.dump, f.dumpSize = true, fi.Size()
		files[ch] = f
	}
	return files, nil
}

// unusableError marks an error found before any record of the file reached
// the sink: the file can be replaced by its backup or skipped.
type unusableError struct{ error }

func (e unusableError) Unwrap() error { return e.error }

// channel loads one channel by the rules of Load.
func (l *loader) channel(ctx context.Context, ch string, f channelFiles) (LoadResult, error) {
	res := LoadResult{Channel: ch}
	start := l.now()
	dumpPath := Path(l.cfg.Dir, ch)
	backupPath := filepath.Join(l.cfg.Dir, ch+BackupExt)
	var unusable unusableError
	tryBackup := false
	switch {
	case !f.dump:
		res.Problem = fmt.Errorf("dump %q is missing", dumpPath)
		l.log.Warn("dump missing, loading its backup: a dump was interrupted between its renames",
			"channel", ch, "file", backupPath)
		tryBackup = true
	case f.dumpSize == 0:
		res.Problem = fmt.Errorf("dump %q is empty", dumpPath)
		tryBackup = l.cfg.OnCorrupt == OnCorruptBackup && f.backup
		l.log.Warn("empty dump file", "channel", ch, "file", dumpPath, "load_backup", tryBackup)
	default:
		err := l.file(ctx, ch, dumpPath, &res)
		if err == nil {
			return l.loaded(res, start), nil
		}
		if !errors.As(err, &unusable) {
			return res, err
		}
		res.Problem = err
		switch l.cfg.OnCorrupt {
		case OnCorruptFail:
			return res, fmt.Errorf("%w (--on-corrupt-dump=fail)", err)
		case OnCorruptBackup:
			if !f.backup {
				return res, fmt.Errorf("%w, and there is no backup %q; --on-corrupt-dump=skip starts without the channel", err, backupPath)
			}
			l.log.Error("DUMP DOES NOT VERIFY, LOADING THE PREVIOUS DUMP: recent writes of the channel are lost",
				"channel", ch, "file", dumpPath, "backup", backupPath, "err", err)
			tryBackup = true
		default:
			l.log.Error("DUMP DOES NOT VERIFY, CHANNEL NOT LOADED (--on-corrupt-dump=skip)",
				"channel", ch, "file", dumpPath, "err", err)
		}
	}
	if tryBackup {
		err := l.file(ctx, ch, backupPath, &res)
		switch {
		case err == nil:
			res.FromBackup = true
		case errors.As(err, &unusable) && l.cfg.OnCorrupt == OnCorruptSkip:
			l.log.Error("BACKUP DOES NOT VERIFY EITHER, CHANNEL NOT LOADED", "channel", ch, "file", backupPath, "err", err)
			res.Problem = errors.Join(res.Problem, err)
		default:
			return res, errors.Join(res.Problem, err)
		}
	}
	if res.File == "" {
		return res, nil
	}
	return l.loaded(res, start), nil
}

// loaded logs a loaded channel and sets its duration.
func (l *loader) loaded(res LoadResult, start time.Time) LoadResult {
	res.Duration = l.now().Sub(start)
	l.log.Info("dump loaded", "channel", res.Channel, "file", res.File, "records", res.Records, "bytes", res.Bytes,
		"duration", res.Duration, "records_per_s", rate(res.Records, res.Duration))
	return res
}

// file verifies path with Scan, then decodes it into the sink. Errors found
// before the first record reached the sink are unusableErrors, except
// ErrVBucketMismatch.
func (l *loader) file(ctx context.Context, ch, path string, res *LoadResult) error {
	f, err := l.fs.Open(path)
	if err != nil {
		return unusableError{fmt.Errorf("cannot open dump %q: %w", path, err)}
	}
	defer f.Close()
	info, err := Scan(f, path)
	switch {
	case err != nil:
		return unusableError{err}
	case info.VBuckets != l.cfg.VBuckets:
		return fmt.Errorf("%w: %q was written by a node with %d vbuckets, this node has %d; "+
			"refusing to load it (restore it through a node of the same cluster with `shoal restore`)",
			ErrVBucketMismatch, path, info.VBuckets, l.cfg.VBuckets)
	case info.Channel != ch:
		return unusableError{&CorruptError{File: path, Offset: 0, Reason: fmt.Sprintf("header names channel %q", info.Channel)}}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return unusableError{fmt.Errorf("cannot rewind dump %q: %w", path, err)}
	}
	l.log.Info("loading dump", "channel", ch, "file", path, "records", info.Records, "bytes", info.Bytes,
		"created", info.Created)
	var loaded int64
	next := int64(progressEvery)
	_, err = Decode(f, path, func(vb uint16, seqno uint64, recs []engine.Record) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := l.cfg.Sink.Load(ch, vb, seqno, recs); err != nil {
			return fmt.Errorf("cannot load channel %q vbucket %d: %w", ch, vb, err)
		}
		loaded += int64(len(recs))
		if info.Records >= progressMin && loaded*100 >= next*info.Records {
			l.log.Info("loading dump", "channel", ch, "percent", loaded*100/info.Records, "records", loaded)
			next = loaded*100/info.Records + progressEvery
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("loading %q stopped after %d records, the channel is partly loaded: %w", path, loaded, err)
	}
	res.File, res.Records, res.Bytes = path, info.Records, info.Bytes
	return nil
}

// rate returns n per second over d, 0 for a zero d.
func rate(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}
