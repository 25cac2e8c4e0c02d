package stats

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes a Registry to Prometheus. Metric names get the prefix
// "shoal_". Fields with the same metric name must use the same label names.
type Collector struct{ reg *Registry }

// NewCollector returns a Prometheus collector over reg.
func NewCollector(reg *Registry) *Collector { return &Collector{reg: reg} }

// Describe implements prometheus.Collector. The collector is unchecked: its
// metrics vary with the channels that exist.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	fields := c.reg.Collect()
	descs := map[string]*prometheus.Desc{}
	sort.SliceStable(fields, func(i, j int) bool { return fields[i].Metric < fields[j].Metric })
	seen := map[string]bool{}
	for _, f := range fields {
		if f.Metric == "" {
			continue
		}
		names := make([]string, 0, len(f.Labels)/2)
		values := make([]string, 0, len(f.Labels)/2)
		for i := 0; i+1 < len(f.Labels); i += 2 {
			names = append(names, f.Labels[i])
			values = append(values, f.Labels[i+1])
		}
		d, ok := descs[f.Metric]
		if !ok {
			d = prometheus.NewDesc("shoal_"+f.Metric, f.Help, names, nil)
			descs[f.Metric] = d
		}
		id := f.Metric
		for _, v := range values {
			id += "\xff" + v
		}
		if seen[id] {
			continue // a duplicate series would fail the whole scrape
		}
		seen[id] = true
		var m prometheus.Metric
		var err error
		if h := f.Hist; h != nil {
			buckets := make(map[float64]uint64, len(h.Cumulative))
			for i, c := range h.Cumulative {
				buckets[Bounds[i].Seconds()] = c
			}
			m, err = prometheus.NewConstHistogram(d, h.Count, h.Sum, buckets, values...)
		} else {
			vt := prometheus.GaugeValue
			if f.Counter {
				vt = prometheus.CounterValue
			}
			m, err = prometheus.NewConstMetric(d, vt, f.Value, values...)
		}
		if err != nil {
			continue
		}
		ch <- m
	}
}
