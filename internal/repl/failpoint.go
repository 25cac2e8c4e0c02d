package repl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"shoal/internal/engine"
)

// FailpointsEnv is the environment variable that arms test hooks in
// shoald: comma-separated name=value pairs. It exists for the end-to-end
// tests of failures that no outside action can cause; production runs
// leave it unset.
const FailpointsEnv = "SHOAL_FAILPOINTS"

// ErrFailpoint is the error an armed failpoint injects.
var ErrFailpoint = errors.New("repl: injected failure (failpoint repl-apply-error)")

// ApplyFailpoint reads the failpoints of a SHOAL_FAILPOINTS value and
// returns the hook a Replicator calls before applying each mutation:
// repl-apply-error fails mutations ("once" the first, a number N the Nth,
// counted over every Replicator sharing the hook, "always" every one);
// repl-apply-delay=D (a Go duration, at most a second) sleeps D before
// each, so that a copy takes long enough to be caught in the middle. It
// returns nil when neither is armed.
func ApplyFailpoint(spec string) (func(*engine.Mutation) error, error) {
	var fail func(*engine.Mutation) error
	var delay time.Duration
	for _, kv := range strings.Split(spec, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch name {
		case "":
			continue
		case "repl-apply-delay":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 || d > time.Second {
				return nil, fmt.Errorf("%s: repl-apply-delay=%q: want a duration of at most 1s", FailpointsEnv, val)
			}
			delay = d
			continue
		case "repl-apply-error":
		case "durability-skip-wait": // read by the node (internal/node/durability.go)
			continue
		default:
			return nil, fmt.Errorf("%s: unknown failpoint %q", FailpointsEnv, name)
		}
		var nth int64
		switch val {
		case "always":
			fail = func(*engine.Mutation) error { return ErrFailpoint }
			continue
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
		fail = func(*engine.Mutation) error {
			if seen.Add(1) == nth {
				return ErrFailpoint
			}
			return nil
		}
	}
	switch {
	case delay == 0:
		return fail, nil
	case fail == nil:
		return func(*engine.Mutation) error { time.Sleep(delay); return nil }, nil
	}
	return func(m *engine.Mutation) error { time.Sleep(delay); return fail(m) }, nil
}
