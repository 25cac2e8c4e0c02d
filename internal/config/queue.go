package config

import (
	"fmt"
	"strings"
	"time"

	"shoal/internal/engine"
)

// FsyncInterval is how often a journal is fsynced: a duration such as
// "10ms", or "always" (the zero value) to fsync before every
// acknowledgement.
type FsyncInterval time.Duration

// String returns "always" or the duration.
func (f FsyncInterval) String() string {
	if f == 0 {
		return "always"
	}
	return time.Duration(f).String()
}

// Set implements flag.Value.
func (f *FsyncInterval) Set(v string) error {
	v = strings.TrimSpace(v)
	if v == "always" {
		*f = 0
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("bad fsync interval %q: want always or a duration such as 10ms", v)
	}
	*f = FsyncInterval(d)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (f *FsyncInterval) UnmarshalText(b []byte) error { return f.Set(string(b)) }

// minRingSize is the smallest queue ring accepted: room for a few small
// records.
const minRingSize = 1 << 10

// validateQueue checks the queue settings.
func (c *Config) validateQueue() []error {
	var errs []error
	if c.QueueDurability != "memory" && c.QueueDurability != "journal" {
		errs = append(errs, fmt.Errorf("queue-durability %q: want memory or journal", c.QueueDurability))
	}
	if c.QueueRingSize < minRingSize {
		errs = append(errs, fmt.Errorf("queue-ring-size %s: must be at least %s", c.QueueRingSize, Size(minRingSize)))
	}
	for p, size := range c.QueueRingSizeByPrefix {
		if !engine.ValidChannelString(p) {
			errs = append(errs, fmt.Errorf("queue_ring_size_by_prefix %q: a prefix is 1-255 of A-Z a-z 0-9 _ -", p))
		}
		if size < minRingSize {
			errs = append(errs, fmt.Errorf("queue_ring_size_by_prefix %q = %s: must be at least %s", p, size, Size(minRingSize)))
		}
		for o := range c.QueueRingSizeByPrefix {
			if o != p && strings.HasPrefix(o, p) {
				errs = append(errs, fmt.Errorf("queue_ring_size_by_prefix: %q and %q overlap", p, o))
			}
		}
	}
	return errs
}
