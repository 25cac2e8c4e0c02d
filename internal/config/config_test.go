package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7400" || c.HTTP != "127.0.0.1:7480" || c.Data != "./shoal-data" ||
		c.LogDir != filepath.Join("shoal-data", "log") || time.Duration(c.StatsInterval) != 30*time.Second ||
		c.MaxValueSize != 1<<20 || c.MemoryLimit != 0 || c.MaxConnections != 5000 || c.VBuckets != 1024 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestFileThenFlagsWin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte(`
listen = "127.0.0.1:9000"
data = "/tmp/x"
max_value_size = "64KiB"
memory_limit = 1048576
stats_interval = "5s"
vbuckets = 64
`), 0o644)
	c, err := Load([]string{"--config", path, "--vbuckets", "128", "--memory-limit", "2MiB"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9000" || c.Data != "/tmp/x" || c.MaxValueSize != 64<<10 ||
		c.MemoryLimit != 2<<20 || c.VBuckets != 128 || time.Duration(c.StatsInterval) != 5*time.Second ||
		c.LogDir != "/tmp/x/log" {
		t.Fatalf("got %+v", c)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte("listen = \"127.0.0.1:1\"\nmax_conections = 5\n"), 0o644)
	_, err := Load([]string{"--config", path}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "max_conections") {
		t.Fatalf("err = %v, want it to name the unknown key", err)
	}
}

func TestValidation(t *testing.T) {
	f := func(args ...string) {
		t.Helper()
		if _, err := Load(args, io.Discard); err == nil {
			t.Fatalf("Load(%q) accepted bad settings", args)
		}
	}
	f("--vbuckets", "0")
	f("--max-connections", "0")
	f("--tls-cert", "a.pem")
	f("--listen", "nope")
	f("--max-value-size", "1GiB")
	f("--stats-interval", "-1s")
	f("--log-format", "xml")
	f("stray")
}

func TestParseSize(t *testing.T) {
	f := func(in string, want Size) {
		t.Helper()
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Fatalf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	f("0", 0)
	f("512", 512)
	f("64KiB", 64<<10)
	f("1MiB", 1<<20)
	f("2GiB", 2<<30)
	f("1MB", 1000000)
	if _, err := ParseSize("-1"); err == nil {
		t.Fatal("negative size accepted")
	}
	if _, err := ParseSize("99999999999TiB"); err == nil {
		t.Fatal("overflowing size accepted")
	}
}
