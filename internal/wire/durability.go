package wire

import (
	"fmt"
	"time"
)

// Durable writes (docs/protocol.md §4.10). A write request with
// FlagDurable in its header starts its body with a durability prefix:
// u8 level, u32 timeout in milliseconds (0: the node's default); the
// request's own body follows.
const (
	// FlagDurable marks a write whose body starts with a durability prefix.
	FlagDurable = 0x04
	// DurablePrefixLen is the length of the durability prefix.
	DurablePrefixLen = 5
	// MaxDurableTimeout bounds the timeout a request may ask for.
	MaxDurableTimeout = 10 * time.Minute
	// DefaultDurableTimeout is the timeout of a durable write that does
	// not give one.
	DefaultDurableTimeout = 10 * time.Second
)

// Durability is a write's durability level.
type Durability uint8

// Durability levels. Values never change meaning.
const (
	// DurabilityNone: answered once the active holds the write (replication
	// is asynchronous).
	DurabilityNone Durability = 0
	// DurabilityMajority: answered once a majority of the vBucket's chain
	// (the active counting as one) holds the write in memory.
	DurabilityMajority Durability = 1
	// DurabilityPersistMajority: answered once a majority of the chain has
	// the write on disk. No engine honours it yet: it is refused.
	DurabilityPersistMajority Durability = 2
)

var durabilityNames = [...]string{"none", "majority", "persist-majority"}

// String names the level as the CLI and the settings spell it.
func (d Durability) String() string {
	if int(d) < len(durabilityNames) {
		return durabilityNames[d]
	}
	return fmt.Sprintf("durability(%d)", uint8(d))
}

// ParseDurability reads a level's name ("" is none).
func ParseDurability(s string) (Durability, error) {
	if s == "" {
		return DurabilityNone, nil
	}
	for i, n := range durabilityNames {
		if s == n {
			return Durability(i), nil
		}
	}
	return 0, fmt.Errorf("unknown durability %q: want none, majority or persist-majority", s)
}

// Statuses of durable writes.
const (
	// StatusAmbiguous: a durable write was applied by the active but not
	// acknowledged by a majority of its chain within its timeout (or the
	// connection or the node's role ended first): it may or may not
	// survive a failover. Never a success, never a plain failure.
	StatusAmbiguous Status = 40
	// StatusSyncWriteInProgress: the key has a durable write waiting for
	// its majority; nothing was done. Try again shortly.
	StatusSyncWriteInProgress Status = 41
)

func init() {
	statusNames[StatusAmbiguous] = "ambiguous"
	statusNames[StatusSyncWriteInProgress] = "sync write in progress"
}

// AppendDurablePrefix appends a durability prefix.
func AppendDurablePrefix(b []byte, d Durability, timeout time.Duration) []byte {
	return AppendU32(append(b, byte(d)), uint32(timeout/time.Millisecond))
}

// ParseDurablePrefix splits a durable request's body into its level,
// timeout (the default when 0 was sent) and the rest.
func ParseDurablePrefix(body []byte) (Durability, time.Duration, []byte, error) {
	if len(body) < DurablePrefixLen {
		return 0, 0, nil, fmt.Errorf("durability prefix of %d bytes", len(body))
	}
	d := Durability(body[0])
	if d > DurabilityPersistMajority {
		return 0, 0, nil, fmt.Errorf("unknown durability level %d", d)
	}
	ms := uint32(body[1]) | uint32(body[2])<<8 | uint32(body[3])<<16 | uint32(body[4])<<24
	t := time.Duration(ms) * time.Millisecond
	if t == 0 {
		t = DefaultDurableTimeout
	}
	if t > MaxDurableTimeout {
		return 0, 0, nil, fmt.Errorf("durability timeout %v over %v", t, MaxDurableTimeout)
	}
	return d, t, body[DurablePrefixLen:], nil
}
