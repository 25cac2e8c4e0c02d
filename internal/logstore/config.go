package logstore

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"shoal/internal/logstore/segment"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// Defaults of Config.
const (
	// DefaultFsyncInterval is the server's default for Config.Fsync. (The
	// zero Fsync means "always", so it is not applied by Open.)
	DefaultFsyncInterval = 100 * time.Millisecond
	// DefaultSegmentSpan is the time bucket of a segment file.
	DefaultSegmentSpan = time.Hour
	// DefaultMaxValueSize is the largest value an append accepts.
	DefaultMaxValueSize = 1 << 20
	// DefaultMaintainEvery is how often retention runs in the background.
	DefaultMaintainEvery = time.Minute
	// DefaultMaxOpenWriters is how many segment files stay open for appends.
	DefaultMaxOpenWriters = 64
)

// Config configures a Store.
type Config struct {
	// Dir is the data directory; it is created if missing.
	Dir string
	// FS is the file system; nil means vfs.Default.
	FS vfs.FS
	// VBuckets is the cluster's vBucket count; 0 means vbucket.Default. It
	// may not change once the directory holds data.
	VBuckets int
	// Fsync is the durability mode: 0 acknowledges an append only once it
	// is fsynced (concurrent appends share one fsync: group commit); a
	// positive interval acknowledges once the data is written and fsyncs
	// every interval.
	Fsync time.Duration
	// SegmentSpan is the time bucket of a segment file, in whole seconds of
	// record timestamps; 0 means DefaultSegmentSpan.
	SegmentSpan time.Duration
	// CompressAfter zstd-compresses segments whose bucket ended that long
	// before Now; 0 never compresses.
	CompressAfter time.Duration
	// Retention deletes segments whose bucket ended that long before Now;
	// 0 keeps everything.
	Retention time.Duration
	// MaintainEvery is how often compression and retention run in the
	// background; 0 means DefaultMaintainEvery, negative never (call
	// Maintain instead).
	MaintainEvery time.Duration
	// MaxValueSize is the largest value accepted; 0 means
	// DefaultMaxValueSize. At most segment.MaxValueLen.
	MaxValueSize int
	// MaxOpenWriters bounds the segment files held open for appends; 0
	// means DefaultMaxOpenWriters.
	MaxOpenWriters int
	// Now is the clock retention compares bucket ends with; nil means
	// time.Now. Record timestamps are unix seconds in this comparison.
	Now func() time.Time
	// Logger receives root.log lines; nil means slog.Default().
	Logger *slog.Logger
	// OnFsync, if set, is told the duration of every fsync of a segment
	// file (the node's fsync histogram).
	OnFsync func(time.Duration)
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		return c, errors.New("logstore: no data directory")
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.VBuckets == 0 {
		c.VBuckets = vbucket.Default
	}
	if c.VBuckets < 1 || c.VBuckets > vbucket.Max {
		return c, fmt.Errorf("logstore: vbucket count %d out of 1..%d", c.VBuckets, vbucket.Max)
	}
	if c.Fsync < 0 {
		return c, fmt.Errorf("logstore: negative fsync interval %v", c.Fsync)
	}
	if c.SegmentSpan == 0 {
		c.SegmentSpan = DefaultSegmentSpan
	}
	if c.SegmentSpan < time.Second || c.SegmentSpan%time.Second != 0 {
		return c, fmt.Errorf("logstore: segment span %v is not a whole number of seconds", c.SegmentSpan)
	}
	if c.CompressAfter < 0 || c.Retention < 0 {
		return c, errors.New("logstore: negative compress-after or retention")
	}
	if c.MaintainEvery == 0 {
		c.MaintainEvery = DefaultMaintainEvery
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = DefaultMaxValueSize
	}
	if c.MaxValueSize < 0 || c.MaxValueSize > segment.MaxValueLen {
		return c, fmt.Errorf("logstore: max value size %d out of 0..%d", c.MaxValueSize, segment.MaxValueLen)
	}
	if c.MaxOpenWriters <= 0 {
		c.MaxOpenWriters = DefaultMaxOpenWriters
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
