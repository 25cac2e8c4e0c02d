package server

import (
	"testing"

	"shoal/internal/stats"
	"shoal/internal/wire"
)

// TestReportCountsAnswers: every answer with a status other than ok is
// an error of its request labelled by status (a bad request included, a
// not found too), except the stopped end of a stream; Get hits and misses
// are counted, and each request has a latency histogram.
func TestReportCountsAnswers(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	if st := r.put("users", "alice", "v1"); st != wire.StatusOK {
		t.Fatalf("put: %v", st)
	}
	r.get("users", "alice")
	r.get("users", "bob")
	r.get("nochannel", "bob")
	if h, _ := r.call(wire.OpGet, vbOf("k"), append(keyBody("c", "k"), 0)); h.Status != wire.StatusBadRequest {
		t.Fatalf("a malformed get: %v", h.Status)
	}
	ts.s.countAnswer(wire.OpConsume, wire.StatusStopped)

	var f stats.Fields
	ts.s.Report(&f)
	errs := map[string]float64{}
	got := map[string]float64{}
	var hists int
	for _, fl := range f.List() {
		switch {
		case fl.Metric == "request_errors_total":
			errs[fl.Labels[1]+" "+fl.Labels[3]] = fl.Value
		case fl.Hist != nil:
			hists++
			if fl.Metric != "request_duration_seconds" || fl.Key != "" {
				t.Errorf("histogram %s key %q", fl.Metric, fl.Key)
			}
		case fl.Metric != "":
			got[fl.Metric] = fl.Value
		}
	}
	want := map[string]float64{"Get not_found": 2, "Get bad_request": 1}
	if len(errs) != len(want) || errs["Get not_found"] != 2 || errs["Get bad_request"] != 1 {
		t.Errorf("errors %v, want %v", errs, want)
	}
	if got["kv_hits_total"] != 1 || got["kv_misses_total"] != 2 {
		t.Errorf("hits %v, misses %v", got["kv_hits_total"], got["kv_misses_total"])
	}
	if hists != 2 { // Put and Get
		t.Errorf("%d request histograms, want 2", hists)
	}
	if statusLabel(wire.StatusExists) != "exists_cas_mismatch" || statusLabel(wire.StatusNotMyVBucket) != "not_my_vbucket" {
		t.Errorf("labels %q %q", statusLabel(wire.StatusExists), statusLabel(wire.StatusNotMyVBucket))
	}
}
