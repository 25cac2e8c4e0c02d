package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count written as an integer or with a unit: "512", "64KiB",
// "1MiB", "2GiB", "1MB" (powers of 1000 for KB/MB/GB).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize parses a size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q: want a non-negative integer with an optional unit (KiB, MiB, GiB)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return Size(n * mult), nil
}

// String formats the size with the largest exact binary unit.
func (s Size) String() string {
	switch {
	case s != 0 && s%(1<<30) == 0:
		return strconv.FormatInt(int64(s>>30), 10) + "GiB"
	case s != 0 && s%(1<<20) == 0:
		return strconv.FormatInt(int64(s>>20), 10) + "MiB"
	case s != 0 && s%(1<<10) == 0:
		return strconv.FormatInt(int64(s>>10), 10) + "KiB"
	}
	return strconv.FormatInt(int64(s), 10)
}

// Set implements flag.Value.
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = n
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (s *Size) UnmarshalText(b []byte) error { return s.Set(string(b)) }

// UnmarshalTOML accepts a TOML integer or string.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("bad size %d: negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		return s.Set(x)
	}
	return fmt.Errorf("bad size %v: want an integer or a string such as \"64MiB\"", v)
}

// Duration is a time.Duration written as "30s", "6h", "100ms".
type Duration time.Duration

// String formats the duration.
func (d Duration) String() string { return time.Duration(d).String() }

// Set implements flag.Value.
func (d *Duration) Set(v string) error {
	x, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || x < 0 {
		return fmt.Errorf("bad duration %q: want e.g. 30s, 5m, 6h", v)
	}
	*d = Duration(x)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (d *Duration) UnmarshalText(b []byte) error { return d.Set(string(b)) }
