package bench

import (
	"math"
	"testing"
)

func TestNodeResults(t *testing.T) {
	before := map[string]NodeCount{
		"b:1": {Requests: 100, CPUSeconds: 1},
		"a:1": {Requests: 0, CPUSeconds: 2},
		"c:1": {Requests: 50, CPUSeconds: 1}, // restarted: counters went back
		"d:1": {Requests: 10},                // gone after
	}
	after := map[string]NodeCount{
		"b:1": {Requests: 2100, CPUSeconds: 1.01},
		"a:1": {Requests: 1000, CPUSeconds: 2}, // no CPU reported
		"c:1": {Requests: 5},
		"e:1": {Requests: 99}, // joined in between
	}
	got := nodeResults(before, after, 2)
	if len(got) != 2 || got[0].Addr != "a:1" || got[1].Addr != "b:1" {
		t.Fatalf("nodes %+v, want a:1 and b:1 in that order", got)
	}
	if got[0].Requests != 1000 || got[0].OpsPerSec != 500 || got[0].CPUMicrosPerRequest != 0 {
		t.Errorf("a:1 = %+v", got[0])
	}
	if got[1].Requests != 2000 || got[1].OpsPerSec != 1000 || math.Abs(got[1].CPUMicrosPerRequest-5) > 1e-6 {
		t.Errorf("b:1 = %+v, want 2000 requests, 1000 ops/s, 5 µs/request", got[1])
	}
}
