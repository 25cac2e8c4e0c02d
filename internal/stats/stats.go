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
)

// Field is one reported value.
type Field struct {
	Key     string   // stats.log key, e.g. "request/Put/handled"; "" for Prometheus only
	Metric  string   // Prometheus name without the shoal_ prefix, e.g. "request_errors_total"; "" for stats.log only
	Labels  []string // label name/value pairs, e.g. {"request", "Put"}
	Help    string   // Prometheus help text
	Value   float64
	Counter bool // cumulative; stats.log prints the delta since the previous line
	// Hist, when set, makes the field a Prometheus histogram (Value and
	// Counter unused). stats.log does not print histograms: their sources
	// add the stats.log keys they want with LogCounter.
	Hist *HistogramValue
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

// Histogram adds a Prometheus histogram (of seconds) with no stats.log key.
func (f *Fields) Histogram(metric, help string, h *Histogram, labels ...string) {
	v := h.Value()
	f.list = append(f.list, Field{Metric: metric, Help: help, Hist: &v, Labels: labels})
}

// LogCounter adds a counter to stats.log only (no Prometheus metric).
func (f *Fields) LogCounter(key string, v float64) {
	f.list = append(f.list, Field{Key: key, Value: v, Counter: true})
}

// LogGauge adds a gauge to stats.log only (no Prometheus metric).
func (f *Fields) LogGauge(key string, v float64) {
	f.list = append(f.list, Field{Key: key, Value: v})
}

// LogHistogram adds the stats.log keys of h in swarm's style: prefix+"/"+
// count (observations), prefix+"/"+seconds (their total time) and one
// counter per swarm latency bucket, prefix+"/"+bucket+"_10_micros" and so on.
func (f *Fields) LogHistogram(prefix, count, seconds, bucket string, h *Histogram) {
	v := h.Value()
	f.LogCounter(prefix+"/"+count, float64(v.Count))
	f.LogCounter(prefix+"/"+seconds, v.Sum)
	for i, c := range v.Swarm() {
		f.LogCounter(prefix+"/"+bucket+"_"+SwarmBucketSuffixes[i], float64(c))
	}
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

// SortFields orders fields by key, for stable output.
func SortFields(fs []Field) {
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Key < fs[j].Key })
}
