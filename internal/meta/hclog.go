package meta

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// HCLogNameKey is the attribute under which the loggers of NewHCLogger put
// their hclog name ("raft", "raft.snapshot", ...).
const HCLogNameKey = "component"

// NewHCLogger returns an hclog.Logger, the logger interface of
// hashicorp/raft, that writes slog records to l's handler.
//
// Levels map to slog's: Trace to slog.LevelDebug-4, Debug, Info, Warn and
// Error to their namesakes (NoLevel to Info). Records below minLevel are dropped
// before the handler sees them; raft logs every election, snapshot and
// compaction at Info, so a node may pass slog.LevelWarn. The handler's own
// level applies as well. SetLevel changes the minimum of this logger and of
// every logger derived from it.
//
// Key/value arguments become attributes: a key that is not a string is
// formatted with %v, a dangling last value gets the key
// hclog.MissingKey; hclog.Fmt, Hex, Octal, Binary and Quote values are
// rendered as hclog renders them. name, and the names Named appends, are
// the attribute HCLogNameKey; an empty name adds none.
func NewHCLogger(l *slog.Logger, name string, minLevel slog.Level) hclog.Logger {
	h := &hcLogger{base: l.Handler(), name: name, level: new(atomic.Int32)}
	h.level.Store(int32(hclogLevelFor(minLevel)))
	h.handler = h.derive()
	return h
}

// hcLogger implements hclog.Logger over a slog.Handler.
type hcLogger struct {
	base    slog.Handler  // the caller's handler
	handler slog.Handler  // base with the name and implied attributes
	name    string        // hclog name, dotted
	implied []any         // With's key/value pairs, normalized
	level   *atomic.Int32 // minimum hclog.Level, shared with derived loggers
}

// derive returns the handler for l's name and implied arguments.
func (l *hcLogger) derive() slog.Handler {
	var attrs []slog.Attr
	if l.name != "" {
		attrs = append(attrs, slog.String(HCLogNameKey, l.name))
	}
	attrs = appendAttrs(attrs, l.implied)
	if len(attrs) == 0 {
		return l.base
	}
	return l.base.WithAttrs(attrs)
}

func (l *hcLogger) clone() *hcLogger {
	c := *l
	c.implied = append([]any(nil), l.implied...)
	return &c
}

// slogLevel maps an hclog level to slog's.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // NoLevel, Info
		return slog.LevelInfo
	}
}

// hclogLevelFor is the lowest hclog level whose records pass a slog minimum.
func hclogLevelFor(minLevel slog.Level) hclog.Level {
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if slogLevel(lv) >= minLevel {
			return lv
		}
	}
	return hclog.Off
}

// enabled reports whether a record at level would be handled.
func (l *hcLogger) enabled(level hclog.Level) bool {
	if level == hclog.Off {
		return false
	}
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	minLevel := hclog.Level(l.level.Load())
	if minLevel == hclog.Off || level < minLevel {
		return false
	}
	return l.handler.Enabled(context.Background(), slogLevel(level))
}

// emit logs a record whose caller is skip frames above emit's caller.
func (l *hcLogger) emit(skip int, level hclog.Level, msg string, args []any) {
	if !l.enabled(level) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(skip+2, pcs[:]) // runtime.Callers, emit
	r := slog.NewRecord(time.Now(), slogLevel(level), msg, pcs[0])
	r.AddAttrs(appendAttrs(nil, normalize(args))...)
	_ = l.handler.Handle(context.Background(), r)
}

// normalize makes args an even list of string keys and values, the way
// hclog does: a dangling CapturedStacktrace is the stacktrace, any other
// dangling value gets hclog.MissingKey.
func normalize(args []any) []any {
	if len(args) == 0 {
		return nil
	}
	out := make([]any, 0, len(args)+1)
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			k = fmt.Sprintf("%v", args[i])
		}
		out = append(out, k, args[i+1])
	}
	if len(args)%2 == 1 {
		last := args[len(args)-1]
		if st, ok := last.(hclog.CapturedStacktrace); ok {
			out = append(out, "stacktrace", st)
		} else {
			out = append(out, hclog.MissingKey, last)
		}
	}
	return out
}

// appendAttrs appends a normalized key/value list as attributes.
func appendAttrs(attrs []slog.Attr, kv []any) []slog.Attr {
	for i := 0; i+1 < len(kv); i += 2 {
		attrs = append(attrs, slog.Any(kv[i].(string), value(kv[i+1])))
	}
	return attrs
}

// value renders hclog's formatting types as hclog does; other values pass
// through to the handler.
func value(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		if f, ok := v[0].(string); ok {
			return fmt.Sprintf(f, v[1:]...)
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return "0x" + strconv.FormatUint(uint64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatUint(uint64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatUint(uint64(v), 2)
	case hclog.Quote:
		return strconv.Quote(string(v))
	case hclog.CapturedStacktrace:
		return string(v)
	}
	return v
}

// Log emits a record at level.
func (l *hcLogger) Log(level hclog.Level, msg string, args ...any) { l.emit(1, level, msg, args) }

// Trace emits a record at slog.LevelDebug-4.
func (l *hcLogger) Trace(msg string, args ...any) { l.emit(1, hclog.Trace, msg, args) }

// Debug emits a record at slog.LevelDebug.
func (l *hcLogger) Debug(msg string, args ...any) { l.emit(1, hclog.Debug, msg, args) }

// Info emits a record at slog.LevelInfo.
func (l *hcLogger) Info(msg string, args ...any) { l.emit(1, hclog.Info, msg, args) }

// Warn emits a record at slog.LevelWarn.
func (l *hcLogger) Warn(msg string, args ...any) { l.emit(1, hclog.Warn, msg, args) }

// Error emits a record at slog.LevelError.
func (l *hcLogger) Error(msg string, args ...any) { l.emit(1, hclog.Error, msg, args) }

// IsTrace reports whether Trace records would be emitted.
func (l *hcLogger) IsTrace() bool { return l.enabled(hclog.Trace) }

// IsDebug reports whether Debug records would be emitted.
func (l *hcLogger) IsDebug() bool { return l.enabled(hclog.Debug) }

// IsInfo reports whether Info records would be emitted.
func (l *hcLogger) IsInfo() bool { return l.enabled(hclog.Info) }

// IsWarn reports whether Warn records would be emitted.
func (l *hcLogger) IsWarn() bool { return l.enabled(hclog.Warn) }

// IsError reports whether Error records would be emitted.
func (l *hcLogger) IsError() bool { return l.enabled(hclog.Error) }

// ImpliedArgs returns the key/value pairs given to With, in order.
func (l *hcLogger) ImpliedArgs() []any { return append([]any(nil), l.implied...) }

// With returns a logger that adds args to every record.
func (l *hcLogger) With(args ...any) hclog.Logger {
	c := l.clone()
	c.implied = append(c.implied, normalize(args)...)
	c.handler = c.derive()
	return c
}

// Name returns the logger's name.
func (l *hcLogger) Name() string { return l.name }

// Named returns a logger whose name is this one's with "."+name appended.
func (l *hcLogger) Named(name string) hclog.Logger {
	if l.name != "" {
		name = l.name + "." + name
	}
	return l.ResetNamed(name)
}

// ResetNamed returns a logger named name.
func (l *hcLogger) ResetNamed(name string) hclog.Logger {
	c := l.clone()
	c.name = name
	c.handler = c.derive()
	return c
}

// SetLevel sets the minimum level of this logger and of every logger
// derived from the same NewHCLogger.
func (l *hcLogger) SetLevel(level hclog.Level) {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	l.level.Store(int32(level))
}

// GetLevel returns the minimum level.
func (l *hcLogger) GetLevel() hclog.Level { return hclog.Level(l.level.Load()) }

// StandardLogger returns a log.Logger that writes through StandardWriter.
func (l *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each write as one record, with
// hclog's options: ForceLevel, or InferLevels from a "[WARN]"-style prefix
// (after a timestamp with InferLevelsWithTimestamp), or else Info.
func (l *hcLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{l: l, opts: *opts}
}

type stdWriter struct {
	l    *hcLogger
	opts hclog.StandardLoggerOptions
}

// logTimestamp matches a leading timestamp such as "2006/01/02 15:04:05.000000".
var logTimestamp = regexp.MustCompile(`^[\d\s:/.+\-TZ]*`)

// Write logs p, less trailing white space, as one record.
func (w *stdWriter) Write(p []byte) (int, error) {
	s := strings.TrimRight(string(p), " \t\n")
	level := hclog.Info
	switch {
	case w.opts.ForceLevel != hclog.NoLevel:
		_, s = pickLevel(s)
		level = w.opts.ForceLevel
	case w.opts.InferLevels:
		if w.opts.InferLevelsWithTimestamp {
			s = s[logTimestamp.FindStringIndex(s)[1]:]
		}
		level, s = pickLevel(s)
	}
	// The record's source is the caller of log.Logger's Print* (frames:
	// Write, log.Logger.output, Print*); a direct Write reports a frame
	// above its caller.
	w.l.emit(3, level, s, nil)
	return len(p), nil
}

// pickLevel strips a level prefix as hclog's standard logger adapter does.
func pickLevel(s string) (hclog.Level, string) {
	for _, p := range []struct {
		prefix string
		level  hclog.Level
	}{
		{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error},
	} {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, s
}
