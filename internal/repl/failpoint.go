package repl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"shoal/internal/engine"
)

// FailpointsEnv is the environment variable that arms test hooks in
// shoald: comma-separated name=value pairs. It exists for the end-to-end
// tests of failures that no outside action can cause; production runs
// leave it unset.
const FailpointsEnv = "SHOAL_FAILPOINTS"

// ErrFailpoint is the error an armed failpoint injects.
var ErrFailpoint = errors.New("repl: injected failure (failpoint repl-apply-error)")

// ApplyFailpoint reads the failpoint repl-apply-error from a
// SHOAL_FAILPOINTS value and returns the hook a Replicator calls before
// applying each mutation: "once" fails the first mutation, a number N the
// Nth (counted over every Replicator sharing the hook), "always" every one.
// It returns nil when the failpoint is absent.
func ApplyFailpoint(spec string) (func(*engine.Mutation) error, error) {
	for _, kv := range strings.Split(spec, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if name != "repl-apply-error" {
			if name != "" {
				return nil, fmt.Errorf("%s: unknown failpoint %q", FailpointsEnv, name)
			}
			continue
		}
		var nth int64
		switch val {
		case "always":
			return func(*engine.Mutation) error { return ErrFailpoint }, nil
		case "once":
			nth = 1
		default:
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%s: repl-apply-error=%q: want once, always or a count", FailpointsEnv, val)
			}
			nth = n
		}
		var seen atomic.Int64
		return func(*engine.Mutation) error {
			if seen.Add(1) == nth {
				return ErrFailpoint
			}
			return nil
		}, nil
	}
	return nil, nil
}
