package stats

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLogWriterPrintsCounterDeltas(t *testing.T) {
	var reqs float64
	reg := &Registry{}
	reg.Add(SourceFunc(func(f *Fields) {
		f.Counter("request/Put/handled", "requests_handled_total", "h", reqs, "request", "Put")
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

func TestLatencyBuckets(t *testing.T) {
	var l Latency
	for _, d := range []time.Duration{time.Microsecond, 50 * time.Microsecond, 2 * time.Millisecond, time.Second} {
		l.Observe(d)
	}
	var f Fields
	l.Report(&f, "request/Get", "request", "Get")
	got := map[string]float64{}
	for _, fl := range f.List() {
		got[fl.Key] = fl.Value
	}
	for k, v := range map[string]float64{
		"request/Get/handled": 4, "request/Get/handled_10_micros": 1, "request/Get/handled_100_micros": 1,
		"request/Get/handled_1_ms": 0, "request/Get/handled_10_ms": 1, "request/Get/handled_over_100_ms": 1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
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
