// Package config holds the daemon's settings: defaults, the TOML file given
// with --config (unknown keys are an error) and command-line flags, which
// win over the file.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"shoal/internal/dump"
	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// Config is everything shoald can be told. Every field has a flag of the
// same name with dashes (max_value_size is --max-value-size) and a TOML key.
type Config struct {
	// Listen is the data port (clients and peers).
	Listen string `toml:"listen"`
	// HTTP is the address of /metrics, /status, /healthz, /readyz, the
	// console page and (with Pprof) /debug/pprof; "" or "off" disables it.
	HTTP string `toml:"http"`
	// Data is the data directory.
	Data string `toml:"data"`
	// LogDir holds root.log and stats.log; default DATA/log.
	LogDir string `toml:"log_dir"`
	// LogFormat is "text" or "json" for root.log.
	LogFormat string `toml:"log_format"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// StatsInterval is the period of stats.log lines; 0 disables stats.log.
	StatsInterval Duration `toml:"stats_interval"`
	// Credentials is a file of name:hex-secret lines; when set every client
	// must authenticate.
	Credentials string `toml:"credentials"`
	// TLSCert and TLSKey enable TLS on the data port.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// MaxValueSize is the largest value a record may have.
	MaxValueSize Size `toml:"max_value_size"`
	// MemoryLimit caps the kv engine's memory; 0 means no limit. At the limit
	// writes are refused with "out of memory" while reads and removes go on.
	MemoryLimit Size `toml:"memory_limit"`
	// MaxConnections caps open client connections.
	MaxConnections int `toml:"max_connections"`
	// EventLoop serves idle plain-TCP connections from epoll event loops
	// (Linux) instead of a goroutine each; off keeps every connection on
	// its goroutine.
	EventLoop bool `toml:"event_loop"`
	// VBuckets is the number of vBuckets (fixed when a cluster is created).
	VBuckets int `toml:"vbuckets"`
	// NodeID names the node; default: generated once and kept in DATA/node-id.
	NodeID string `toml:"node_id"`
	// Console prints a one-line status to stdout when it is a terminal.
	Console bool `toml:"console"`
	// HTTPAuth puts pages of the HTTP port behind HTTP basic auth with the
	// credentials of Credentials: off, on or all (http.go).
	HTTPAuth HTTPAuth `toml:"http_auth"`
	// Pprof serves /debug/pprof on the HTTP port.
	Pprof bool `toml:"pprof"`

	// QueueRingSize is the memory ring of every queue (a channel, or one
	// subscriber's queue of it) in bytes, 16-byte record headers included;
	// records beyond it overflow to disk.
	QueueRingSize Size `toml:"queue_ring_size"`
	// QueueRingSizeByPrefix overrides QueueRingSize for channels whose name
	// starts with a key (the TOML table [queue_ring_size_by_prefix]; no
	// flag). No key may be a prefix of another.
	QueueRingSizeByPrefix map[string]Size `toml:"queue_ring_size_by_prefix"`
	// QueueDurability is "memory" (a clean stop saves the queues, a crash
	// loses what is in memory) or "journal" (every push and pop is
	// journaled first).
	QueueDurability string `toml:"queue_durability"`
	// QueueFsyncInterval is, in journal mode, how often the journal is
	// fsynced; "always" fsyncs before every answer (group commit).
	QueueFsyncInterval FsyncInterval `toml:"queue_fsync_interval"`
	// QueueSubscriberIdle is how long a subscriber may go without a
	// consumer before /status lists it under queue.idle_subscribers (a
	// forgotten subscriber keeps every push and blocks pop); 0 lists none.
	QueueSubscriberIdle Duration `toml:"queue_subscriber_idle"`

	// LogFsync is the log engine's durability mode (log.go).
	LogFsync FsyncMode `toml:"log_fsync"`
	// LogSegmentSpan is the time span of a log segment file.
	LogSegmentSpan Duration `toml:"log_segment_span"`
	// LogCompressAfter zstd-compresses log segments that long after their
	// span ended; 0 never.
	LogCompressAfter Age `toml:"log_compress_after"`
	// LogRetention deletes log segments that long after their span ended;
	// 0 never.
	LogRetention Age `toml:"log_retention"`
	// DumpDir holds the kv dumps; default DATA/dump.
	DumpDir string `toml:"dump_dir"`
	// DumpInterval is the period of the kv dumps (the first one comes at a
	// random time within it); 0 dumps only on shutdown and on demand.
	DumpInterval Duration `toml:"dump_interval"`
	// DumpCodec compresses the kv dumps: zstd or s2.
	DumpCodec dump.Codec `toml:"dump_codec"`
	// OnCorruptDump is what start-up does with a kv dump that does not
	// verify: fail, backup or skip.
	OnCorruptDump dump.OnCorrupt `toml:"on_corrupt_dump"`

	Replication // the standby replica and liveness (repl.go)
	Cluster     // membership and metadata (cluster.go)
	RESP        // the Redis protocol port (resp.go)
}

// Default returns the settings of a node started with no arguments.
func Default() Config {
	return Config{
		Listen:              "127.0.0.1:7400",
		HTTP:                "127.0.0.1:7480",
		Data:                "./shoal-data",
		LogFormat:           "text",
		LogLevel:            "info",
		StatsInterval:       Duration(30e9),
		QueueSubscriberIdle: Duration(time.Hour),
		MaxValueSize:        1 << 20,
		MaxConnections:      5000,
		EventLoop:           true,
		VBuckets:            vbucket.Default,
		Console:             true,
		HTTPAuth:            HTTPAuthOff,

		QueueRingSize:   64 << 20,
		QueueDurability: "memory",
		LogFsync:        DefaultLogFsync,
		LogSegmentSpan:  Duration(time.Hour),
		DumpInterval:    DefaultDumpInterval,
		DumpCodec:       dump.CodecZstd,
		OnCorruptDump:   dump.OnCorruptBackup,

		Replication: defaultReplication(),
		Cluster:     defaultCluster(),
		RESP:        defaultRESP(),
	}
}

// ErrHelp is returned by Load when -h or --help was given.
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by Load when --version was given: the caller
// prints its version and exits.
var ErrVersion = errors.New("version asked")

// Load builds the configuration from defaults, the file named by --config
// (if any) and the flags in args, in that order of precedence (flags win).
// Usage and errors go to output.
func Load(args []string, output io.Writer) (Config, error) {
	// First pass: find --config only.
	pre := flag.NewFlagSet("shoald", flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	path := pre.String("config", "", "")
	pre.Bool("version", false, "")
	bind(pre, &Config{})
	_ = pre.Parse(args) // errors are reported by the second pass

	cfg := Default()
	if *path != "" {
		md, err := toml.DecodeFile(*path, &cfg)
		if err != nil {
			return cfg, fmt.Errorf("cannot read config file %s: %w", *path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return cfg, fmt.Errorf("config file %s: unknown keys: %s", *path, strings.Join(keys, ", "))
		}
	}
	fs := flag.NewFlagSet("shoald", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.String("config", "", "TOML file with the same settings as the flags (flags win)")
	version := fs.Bool("version", false, "print the version, the commit and the Go version, and exit")
	bind(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if *version {
		return cfg, ErrVersion
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(cfg.Data, "log")
	}
	return cfg, cfg.Validate()
}

func bind(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "data port address (clients and peers)")
	fs.StringVar(&c.HTTP, "http", c.HTTP, `HTTP address for /metrics, /status and the console page ("off" disables)`)
	fs.StringVar(&c.Data, "data", c.Data, "data directory")
	fs.StringVar(&c.LogDir, "log-dir", c.LogDir, "directory of root.log and stats.log (default DATA/log)")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "root.log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.Var(&c.StatsInterval, "stats-interval", "period of stats.log lines (0 disables)")
	fs.StringVar(&c.Credentials, "credentials", c.Credentials, "file of name:hex-secret lines; clients must authenticate")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "TLS certificate (PEM) for the data port")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "TLS private key (PEM)")
	fs.Var(&c.MaxValueSize, "max-value-size", "largest value of a record (e.g. 1MiB)")
	fs.Var(&c.MemoryLimit, "memory-limit", "kv memory limit (e.g. 4GiB; 0 = none)")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "most open client connections")
	fs.BoolVar(&c.EventLoop, "event-loop", c.EventLoop, "serve idle plain-TCP connections from epoll event loops, one per core (Linux); false: a goroutine per connection")
	fs.IntVar(&c.VBuckets, "vbuckets", c.VBuckets, "number of vBuckets")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "node name (default: generated and kept in DATA/node-id)")
	fs.BoolVar(&c.Console, "console", c.Console, "print a status line when stdout is a terminal")
	fs.Var(&c.QueueRingSize, "queue-ring-size", "memory ring of each queue (e.g. 64MiB); more overflows to disk")
	fs.StringVar(&c.QueueDurability, "queue-durability", c.QueueDurability, "queue durability: memory (a crash loses the rings) or journal")
	fs.Var(&c.QueueFsyncInterval, "queue-fsync-interval", "journal mode: fsync period (e.g. 10ms), or always (before every answer)")
	fs.Var(&c.QueueSubscriberIdle, "queue-subscriber-idle", "a queue subscriber without consumer this long is listed as idle in /status (0: never)")
	bindHTTP(fs, c)
	bindReplication(fs, c)
	bindCluster(fs, c)
	bindLog(fs, c)
	bindDump(fs, c)
	bindRESP(fs, c)
}

// Validate checks the settings and says what is wrong.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.HTTP != "" && c.HTTP != "off" {
		if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
			errs = append(errs, fmt.Errorf("http %q: %w", c.HTTP, err))
		}
	}
	if c.Data == "" {
		errs = append(errs, errors.New("data: must not be empty"))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log-format %q: want text or json", c.LogFormat))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key must be given together"))
	}
	if c.MaxValueSize < 0 || c.MaxValueSize > engine.MaxValueLen {
		errs = append(errs, fmt.Errorf("max-value-size %s: must be at most %s", c.MaxValueSize, Size(engine.MaxValueLen)))
	}
	if c.MaxConnections < 1 {
		errs = append(errs, fmt.Errorf("max-connections %d: must be at least 1", c.MaxConnections))
	}
	if c.NodeID != "" && !vbmap.ValidNodeID(c.NodeID) {
		errs = append(errs, fmt.Errorf("node-id %q: want 1..%d of A-Z a-z 0-9 . _ -", c.NodeID, vbmap.MaxNodeIDLen))
	}
	if c.VBuckets < 1 || c.VBuckets > vbucket.Max {
		errs = append(errs, fmt.Errorf("vbuckets %d: must be 1..%d", c.VBuckets, vbucket.Max))
	}
	errs = append(errs, c.validateHTTP()...)
	errs = append(errs, c.validateQueue()...)
	errs = append(errs, c.validateReplication()...)
	errs = append(errs, c.validateCluster()...)
	errs = append(errs, c.validateRESP()...)
	errs = append(errs, c.validateLog())
	return errors.Join(errs...)
}
