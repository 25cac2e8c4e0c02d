package repl

import (
	"math/rand/v2"
	"time"
)

// Defaults of the reconnect backoff.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 2 * time.Second
)

// backoff is the wait before reconnect attempt number failures (1 for the
// first): min doubling up to max, then ±20% jitter so that replicas of a
// restarted producer do not come back in step. rnd returns [0, 1).
func backoff(failures int, lo, hi time.Duration, rnd func() float64) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d + time.Duration((rnd()*0.4-0.2)*float64(d))
}

// jitter is the default random source of backoff.
func jitter() float64 { return rand.Float64() }
