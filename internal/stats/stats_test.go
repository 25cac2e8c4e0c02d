package stats

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLogWriterPrintsCounterDeltas(t *testing.T) {
	var reqs float64
	reg := &Registry{}
	reg.Add(SourceFunc(func(f *Fields) {
		f.Counter("request/Put/handled", "requests_total", "h", reqs, "request", "Put")
		f.Gauge("channel/users/records", "channel_records", "h", 7, "channel", "users")
	}))
	var buf bytes.Buffer
	w := NewLogWriter(&buf)
	at := time.Date(2026, 11, 22, 1, 2, 3, 4e6, time.UTC)
	reqs = 10
	w.Write(at, reg.Collect())
	reqs = 25
	w.Write(at, reg.Collect())
	want := "2026-11-22 01:02:03,004 channel/users/records:7 request/Put/handled:10\n" +
		"2026-11-22 01:02:03,004 channel/users/records:7 request/Put/handled:15\n"
	if buf.String() != want {
		t.Fatalf("stats.log:\n%s\nwant:\n%s", buf.String(), want)
	}
}

// TestHistogramBuckets: observations land in the first bucket whose
// bound is at least them; stats.log gets swarm's six buckets.
func TestHistogramBuckets(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{time.Microsecond, 10 * time.Microsecond, 50 * time.Microsecond, 2 * time.Millisecond, time.Second, time.Hour} {
		h.Observe(d)
	}
	v := h.Value()
	if v.Count != 6 || v.Cumulative[0] != 2 || v.Cumulative[len(Bounds)-1] != 5 {
		t.Fatalf("count %d, cumulative %v", v.Count, v.Cumulative)
	}
	for i := 1; i < len(v.Cumulative); i++ {
		if v.Cumulative[i] < v.Cumulative[i-1] {
			t.Fatalf("buckets are not cumulative: %v", v.Cumulative)
		}
	}
	if want := (time.Microsecond + 10*time.Microsecond + 50*time.Microsecond + 2*time.Millisecond + time.Second + time.Hour).Seconds(); v.Sum != want {
		t.Errorf("sum %v, want %v", v.Sum, want)
	}
	var f Fields
	h.Report(&f, "request/Get", "request", "Get")
	got := map[string]float64{}
	for _, fl := range f.List() {
		if fl.Hist != nil {
			if fl.Key != "" || fl.Metric != "request_duration_seconds" || fl.Hist.Count != 6 || len(fl.Labels) != 2 {
				t.Errorf("histogram field %+v", fl)
			}
			continue
		}
		got[fl.Key] = fl.Value
		if fl.Metric != "" {
			t.Errorf("%s has a Prometheus name %q", fl.Key, fl.Metric)
		}
	}
	for k, v := range map[string]float64{
		"request/Get/handled": 6, "request/Get/handled_10_micros": 2, "request/Get/handled_100_micros": 1,
		"request/Get/handled_1_ms": 0, "request/Get/handled_10_ms": 1, "request/Get/handled_100_ms": 0, "request/Get/handled_over_100_ms": 2,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// TestCollectorExposesHistograms: a histogram field is a Prometheus
// histogram with cumulative buckets in seconds; stats.log skips it.
func TestCollectorExposesHistograms(t *testing.T) {
	var h Histogram
	h.Observe(3 * time.Millisecond)
	h.Observe(7 * time.Second)
	reg := &Registry{}
	reg.Add(SourceFunc(func(f *Fields) {
		f.Histogram("request_duration_seconds", "Time to answer a request.", &h, "request", "Get")
	}))
	var b strings.Builder
	b.WriteString("# HELP shoal_request_duration_seconds Time to answer a request.\n# TYPE shoal_request_duration_seconds histogram\n")
	for _, bound := range Bounds {
		c := 0
		if bound >= 3*time.Millisecond {
			c++
		}
		if bound >= 7*time.Second {
			c++
		}
		fmt.Fprintf(&b, "shoal_request_duration_seconds_bucket{request=\"Get\",le=\"%s\"} %d\n", strconv.FormatFloat(bound.Seconds(), 'g', -1, 64), c)
	}
	b.WriteString("shoal_request_duration_seconds_bucket{request=\"Get\",le=\"+Inf\"} 2\n")
	b.WriteString("shoal_request_duration_seconds_sum{request=\"Get\"} 7.003\n")
	b.WriteString("shoal_request_duration_seconds_count{request=\"Get\"} 2\n")
	if err := testutil.CollectAndCompare(NewCollector(reg), strings.NewReader(b.String())); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	at := time.Unix(0, 0)
	NewLogWriter(&buf).Write(at, reg.Collect())
	if buf.String() != at.Format("2006-01-02 15:04:05,000")+"\n" {
		t.Errorf("stats.log prints a histogram: %q", buf.String())
	}
}

func TestCollectorExposesFields(t *testing.T) {
	reg := &Registry{}
	reg.Add(SourceFunc(func(f *Fields) {
		f.Counter("bytes_sent", "bytes_sent_total", "Bytes sent.", 42)
		f.Gauge("channel/a/records", "channel_records", "Records.", 3, "channel", "a")
		f.Gauge("channel/a/records", "channel_records", "Records.", 3, "channel", "a") // duplicates are dropped
	}))
	want := `# HELP shoal_bytes_sent_total Bytes sent.
# TYPE shoal_bytes_sent_total counter
shoal_bytes_sent_total 42
# HELP shoal_channel_records Records.
# TYPE shoal_channel_records gauge
shoal_channel_records{channel="a"} 3
`
	if err := testutil.CollectAndCompare(NewCollector(reg), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestProcessReportsCPUAndRSS(t *testing.T) {
	var f Fields
	Process{}.Report(&f)
	keys := map[string]bool{}
	for _, fl := range f.List() {
		keys[fl.Key] = true
	}
	for _, k := range []string{"cpu_user", "cpu_system", "rss", "go_heap_inuse"} {
		if !keys[k] {
			t.Errorf("process stats lack %s", k)
		}
	}
}
