package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogSettings(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogFsync != DefaultLogFsync || c.LogFsync.Always() || time.Duration(c.LogSegmentSpan) != time.Hour ||
		c.LogCompressAfter != 0 || c.LogRetention != 0 {
		t.Fatalf("log defaults: %+v", c)
	}
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte(`
log_fsync = "always"
log_segment_span = "10m"
log_compress_after = "90d"
log_retention = "397d"
`), 0o644)
	c, err = Load([]string{"--config", path, "--log-retention", "36h"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.LogFsync.Always() || c.LogFsync.String() != "always" || time.Duration(c.LogSegmentSpan) != 10*time.Minute ||
		time.Duration(c.LogCompressAfter) != 90*24*time.Hour || c.LogCompressAfter.String() != "90d" ||
		time.Duration(c.LogRetention) != 36*time.Hour || c.LogRetention.String() != "36h0m0s" {
		t.Fatalf("log settings from file and flags: %+v", c)
	}
	c, err = Load([]string{"--log-fsync", "250ms"}, io.Discard)
	if err != nil || time.Duration(c.LogFsync) != 250*time.Millisecond || c.LogFsync.String() != "250ms" {
		t.Fatalf("--log-fsync 250ms: %v %v", c.LogFsync, err)
	}
	for _, args := range [][]string{
		{"--log-fsync", "sometimes"},
		{"--log-fsync", "0s"},
		{"--log-fsync", "-1s"},
		{"--log-segment-span", "1500ms"},
		{"--log-segment-span", "0s"},
		{"--log-retention", "-5d"},
		{"--log-retention", "1.5d"},
		{"--log-compress-after", "forever"},
	} {
		if _, err := Load(args, io.Discard); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[0], "--")) && !strings.Contains(err.Error(), "bad") {
			t.Fatalf("%v: err = %v", args, err)
		}
	}
}
