package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"shoal/internal/dump"
)

func TestDumpSettings(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DumpDir != "" || time.Duration(c.DumpInterval) != 6*time.Hour || c.DumpCodec != dump.CodecZstd || c.OnCorruptDump != dump.OnCorruptBackup {
		t.Fatalf("defaults: %+v", c)
	}
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte("dump_dir = \"/d\"\ndump_interval = \"30m\"\ndump_codec = \"s2\"\non_corrupt_dump = \"skip\"\n"), 0o644)
	c, err = Load([]string{"--config", path, "--on-corrupt-dump", "fail"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DumpDir != "/d" || time.Duration(c.DumpInterval) != 30*time.Minute || c.DumpCodec != dump.CodecS2 || c.OnCorruptDump != dump.OnCorruptFail {
		t.Fatalf("file and flags: %+v", c)
	}
	if c, err = Load([]string{"--dump-interval", "0"}, io.Discard); err != nil || c.DumpInterval != 0 {
		t.Fatalf("--dump-interval 0: %+v, %v", c, err)
	}
	for _, args := range [][]string{
		{"--dump-codec", "gzip"},
		{"--on-corrupt-dump", "ignore"},
		{"--dump-interval", "-1h"},
	} {
		if _, err := Load(args, io.Discard); err == nil {
			t.Errorf("Load(%q) accepted", args)
		}
	}
}
