package config

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Log engine settings (Config.LogFsync, LogSegmentSpan, LogCompressAfter,
// LogRetention).

// DefaultLogFsync is the log engine's default fsync interval.
const DefaultLogFsync = FsyncMode(100 * time.Millisecond)

// FsyncMode is the log engine's durability mode: "always" (the zero
// value: an append is acknowledged once fsynced; concurrent appends share
// one fsync) or an interval such as "100ms" (acknowledged once written,
// fsynced every interval).
type FsyncMode time.Duration

// Always reports whether the mode is "always".
func (m FsyncMode) Always() bool { return m == 0 }

// String formats the mode as it is written.
func (m FsyncMode) String() string {
	if m.Always() {
		return "always"
	}
	return time.Duration(m).String()
}

// Set implements flag.Value.
func (m *FsyncMode) Set(v string) error {
	v = strings.TrimSpace(v)
	if v == "always" {
		*m = 0
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return fmt.Errorf("bad fsync mode %q: want always or an interval such as 100ms", v)
	}
	*m = FsyncMode(d)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (m *FsyncMode) UnmarshalText(b []byte) error { return m.Set(string(b)) }

// Age is a duration that may also be written in whole days, "90d", as
// retention periods are. 0 means never.
type Age time.Duration

const day = 24 * time.Hour

// String formats the age, in days when it is a whole number of them.
func (a Age) String() string {
	if d := time.Duration(a); d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return time.Duration(a).String()
}

// Set implements flag.Value.
func (a *Age) Set(v string) error {
	v = strings.TrimSpace(v)
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return fmt.Errorf("bad age %q: want e.g. 90d, 36h, 0", v)
		}
		*a = Age(time.Duration(days) * day)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("bad age %q: want e.g. 90d, 36h, 0", v)
	}
	*a = Age(d)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (a *Age) UnmarshalText(b []byte) error { return a.Set(string(b)) }

func bindLog(fs *flag.FlagSet, c *Config) {
	fs.Var(&c.LogFsync, "log-fsync", `log durability: "always" (acknowledge appends once fsynced) or an fsync interval such as 100ms`)
	fs.Var(&c.LogSegmentSpan, "log-segment-span", "time span of a log segment file, in record timestamps (whole seconds)")
	fs.Var(&c.LogCompressAfter, "log-compress-after", "zstd-compress log segments this long after their span ended (e.g. 90d; 0 = never)")
	fs.Var(&c.LogRetention, "log-retention", "delete log segments this long after their span ended (e.g. 397d; 0 = never)")
}

func (c *Config) validateLog() error {
	if span := time.Duration(c.LogSegmentSpan); span < time.Second || span%time.Second != 0 {
		return fmt.Errorf("log-segment-span %v: must be a whole number of seconds, at least 1s", span)
	}
	return nil
}
