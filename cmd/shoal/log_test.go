package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseTimestamp(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]int64{
		"now": now.Unix(), "now-1h": now.Unix() - 3600, "now-90m": now.Unix() - 5400, "now+10s": now.Unix() + 10,
		"1700000000": 1700000000, "2024-05-01T12:00:00Z": 1714564800, "2024-05-01T14:00:00+02:00": 1714564800,
		"now-1000000h": 0, // before 1970: the first timestamp
	} {
		got, err := parseTimestampAt(in, now)
		if err != nil || int64(got) != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "now-", "now-x", "now1h", "now--1h", "-5", "2024-05-01"} {
		if _, err := parseTimestampAt(in, now); !isUsage(err) || !strings.Contains(err.Error(), "now-DURATION") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// TestLogCommandsJSON: log range with now-DURATION bounds, text and
// --json lines; log channels --json.
func TestLogCommandsJSON(t *testing.T) {
	addr := startNode(t)
	old := time.Now().Add(-2 * time.Hour).Unix()
	mustRun(t, addr, "log", "put", "events", "old", "--ts", jsonNumber(uint64(old)))
	mustRun(t, addr, "log", "put", "events", "recent")
	out := mustRun(t, addr, "log", "range", "events", "now-1h", "now")
	if !strings.HasSuffix(out, "\trecent\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("log range now-1h now: %q", out)
	}
	out = mustRun(t, addr, "log", "range", "--json", "events", "now-3h", "now")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var first logRecordDoc
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &struct {
		Timestamp *uint64 `json:"timestamp"`
	}{&first.Timestamp}) != nil || first.Timestamp != uint64(old) || !strings.HasSuffix(lines[0], `"value":"old"}`) {
		t.Errorf("log range --json: %q", out)
	}
	if out := mustRun(t, addr, "log", "channels", "--json"); out != `["events"]`+"\n" {
		t.Errorf("log channels --json: %q", out)
	}
}

func TestLogBenchJSON(t *testing.T) {
	addr := startNode(t)
	var res map[string]float64
	out := mustRun(t, addr, "log", "bench", "--json", "--writers", "2", "--duration", "200ms", "lb")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["records"] < 1 || res["records_per_sec"] <= 0 {
		t.Fatalf("log bench --json: %q %v", out, err)
	}
}
