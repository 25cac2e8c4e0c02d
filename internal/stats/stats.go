// Package stats is shoal's observability plumbing: metric sources report
// fields once per collection, and the same fields feed stats.log (one
// `key:value` line per interval, counters as deltas like swarm's
// stats.log), Prometheus /metrics (counters cumulative) and the console line.
//
// A field has a stats.log key such as "channel/users/records" and a
// Prometheus name with labels such as shoal_channel_records{channel="users"}.
package stats

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Field is one reported value.
type Field struct {
	Key     string   // stats.log key, e.g. "request/Put/handled"
	Metric  string   // Prometheus name without the shoal_ prefix, e.g. "requests_handled_total"
	Labels  []string // label name/value pairs, e.g. {"request", "Put"}
	Help    string   // Prometheus help text
	Value   float64
	Counter bool // cumulative; stats.log prints the delta since the previous line
}

// Fields collects the fields of one collection.
type Fields struct{ list []Field }

// Gauge adds a gauge.
func (f *Fields) Gauge(key, metric, help string, v float64, labels ...string) {
	f.list = append(f.list, Field{Key: key, Metric: metric, Help: help, Value: v, Labels: labels})
}

// Counter adds a cumulative counter.
func (f *Fields) Counter(key, metric, help string, v float64, labels ...string) {
	f.list = append(f.list, Field{Key: key, Metric: metric, Help: help, Value: v, Labels: labels, Counter: true})
}

// List returns the collected fields.
func (f *Fields) List() []Field { return f.list }

// Source reports fields.
type Source interface {
	Report(f *Fields)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(f *Fields)

// Report calls fn.
func (fn SourceFunc) Report(f *Fields) { fn(f) }

// Registry is the set of sources of a node.
type Registry struct {
	mu      sync.Mutex
	sources []Source
}

// Add registers a source.
func (r *Registry) Add(s Source) {
	r.mu.Lock()
	r.sources = append(r.sources, s)
	r.mu.Unlock()
}

// Collect asks every source for its fields.
func (r *Registry) Collect() []Field {
	r.mu.Lock()
	srcs := append([]Source(nil), r.sources...)
	r.mu.Unlock()
	var f Fields
	for _, s := range srcs {
		s.Report(&f)
	}
	return f.list
}

// Latency buckets of swarm's stats.log: handled within 10 µs, 100 µs, 1 ms,
// 10 ms, 100 ms, and over 100 ms.
var latencyBounds = [...]time.Duration{10 * time.Microsecond, 100 * time.Microsecond, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}

// LatencyBucketNames are the stats.log suffixes of the latency buckets.
var LatencyBucketNames = [...]string{"handled_10_micros", "handled_100_micros", "handled_1_ms", "handled_10_ms", "handled_100_ms", "handled_over_100_ms"}

// Latency counts handled requests by duration. Safe for concurrent use.
type Latency struct {
	buckets [len(latencyBounds) + 1]atomic.Uint64
	count   atomic.Uint64
	nanos   atomic.Uint64
}

// Observe records one request that took d.
func (l *Latency) Observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d >= latencyBounds[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.count.Add(1)
	l.nanos.Add(uint64(d))
}

// Count returns the number of observations.
func (l *Latency) Count() uint64 { return l.count.Load() }

// Report adds the latency fields under prefix (a stats.log key prefix such
// as "request/Put") with the given Prometheus labels.
func (l *Latency) Report(f *Fields, prefix string, labels ...string) {
	n := l.count.Load()
	f.Counter(prefix+"/handled", "requests_handled_total", "Requests handled.", float64(n), labels...)
	f.Counter(prefix+"/handled_seconds", "requests_seconds_total", "Time spent handling requests.", float64(l.nanos.Load())/1e9, labels...)
	for i := range l.buckets {
		le := "+Inf"
		if i < len(latencyBounds) {
			le = latencyBounds[i].String()
		}
		f.Counter(prefix+"/"+LatencyBucketNames[i], "requests_by_latency_total", "Requests by latency bucket (upper bound le).",
			float64(l.buckets[i].Load()), append(append([]string(nil), labels...), "le", le)...)
	}
}

// SortFields orders fields by key, for stable output.
func SortFields(fs []Field) {
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Key < fs[j].Key })
}

// Seconds is the total time observed, in seconds.
func (l *Latency) Seconds() float64 { return float64(l.nanos.Load()) / 1e9 }
