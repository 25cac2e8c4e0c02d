package stats

import (
	"sync/atomic"
	"time"
)

// Bounds are the upper bounds (inclusive, as Prometheus's le) of the
// buckets of every Histogram: from 10 µs, a request served from memory, to
// 10 minutes, a long dump. They include the bounds of swarm's stats.log
// latency buckets (10 µs, 100 µs, 1 ms, 10 ms, 100 ms).
var Bounds = [...]time.Duration{
	10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second,
	10 * time.Second, 30 * time.Second, time.Minute,
	2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
}

// swarmBounds are the stats.log latency buckets' bounds, as indexes into
// Bounds.
var swarmBounds = [...]int{0, 3, 6, 9, 12}

// SwarmBucketSuffixes name swarm's stats.log latency buckets: within 10
// µs, 100 µs, 1 ms, 10 ms, 100 ms, and over 100 ms.
var SwarmBucketSuffixes = [...]string{"10_micros", "100_micros", "1_ms", "10_ms", "100_ms", "over_100_ms"}

// Histogram counts durations in the buckets of Bounds. The zero value is
// ready; it is safe for concurrent use.
type Histogram struct {
	buckets [len(Bounds) + 1]atomic.Uint64 // not cumulative; the last one is over every bound
	count   atomic.Uint64
	nanos   atomic.Uint64
}

// Observe records one duration (a negative one counts as 0).
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	lo, hi := 0, len(Bounds) // the first bound >= d
	for lo < hi {
		m := (lo + hi) / 2
		if Bounds[m] >= d {
			hi = m
		} else {
			lo = m + 1
		}
	}
	h.buckets[lo].Add(1)
	h.count.Add(1)
	h.nanos.Add(uint64(d))
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Seconds is the total time observed, in seconds.
func (h *Histogram) Seconds() float64 { return float64(h.nanos.Load()) / 1e9 }

// Value returns the histogram as Prometheus wants it: cumulative counts.
// Observations that land between the loads may make the count differ
// from the last bucket by a few; Value takes the count from the buckets.
func (h *Histogram) Value() HistogramValue {
	v := HistogramValue{Cumulative: make([]uint64, len(Bounds)), Sum: h.Seconds()}
	var c uint64
	for i := range Bounds {
		c += h.buckets[i].Load()
		v.Cumulative[i] = c
	}
	v.Count = c + h.buckets[len(Bounds)].Load()
	return v
}

// Latency is a Histogram of request latencies, the name the request
// servers (the data port, RESP) use.
type Latency = Histogram

// Report adds a request kind's latency fields: to stats.log swarm's
// prefix/handled, prefix/handled_seconds and prefix/handled_10_micros …
// handled_over_100_ms (prefix such as "request/Put"), to Prometheus the
// histogram shoal_request_duration_seconds with labels (such as
// "request", "Put").
func (h *Histogram) Report(f *Fields, prefix string, labels ...string) {
	f.LogHistogram(prefix, "handled", "handled_seconds", "handled", h)
	f.Histogram("request_duration_seconds", "Time from reading a request to its answer (to its end for streams).", h, labels...)
}

// HistogramValue is a snapshot of a Histogram.
type HistogramValue struct {
	// Cumulative[i] counts the observations up to Bounds[i].
	Cumulative []uint64
	Count      uint64
	Sum        float64 // seconds
}

// Swarm returns the counts of swarm's stats.log buckets (not cumulative),
// in the order of SwarmBucketSuffixes.
func (v HistogramValue) Swarm() [len(SwarmBucketSuffixes)]uint64 {
	var out [len(SwarmBucketSuffixes)]uint64
	var prev uint64
	for i, b := range swarmBounds {
		c := v.Cumulative[b]
		out[i] = c - prev
		prev = c
	}
	out[len(out)-1] = v.Count - prev
	return out
}
