package config

import (
	"errors"
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

func TestDiscoveryFlags(t *testing.T) {
	c, err := Load([]string{"--discovery", "file:/etc/shoal/nodes", "--bootstrap-expect", "3", "--discovery-initial-interval", "200ms",
		"--discovery-after-error-interval", "100ms", "--discovery-after-nodedown-interval", "2s", "--discovery-regular-interval", "1m",
		"--discovery-initial-phase", "30s", "--discovery-probe-interval", "300ms", "--discovery-backend-timeout", "1s",
		"--discovery-connect-timeout", "500ms", "--discovery-dns-server", "127.0.0.1:5353"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Discovery != "file:/etc/shoal/nodes" || c.DiscoveryDNSServer != "127.0.0.1:5353" || time.Duration(c.DiscoveryInitialInterval) != 200*time.Millisecond ||
		time.Duration(c.DiscoveryAfterErrorInterval) != 100*time.Millisecond || time.Duration(c.DiscoveryAfterNodedownInterval) != 2*time.Second ||
		time.Duration(c.DiscoveryRegularInterval) != time.Minute || time.Duration(c.DiscoveryInitialPhase) != 30*time.Second ||
		time.Duration(c.DiscoveryProbeInterval) != 300*time.Millisecond || time.Duration(c.DiscoveryBackendTimeout) != time.Second ||
		time.Duration(c.DiscoveryConnectTimeout) != 500*time.Millisecond {
		t.Fatalf("got %+v", c.Cluster)
	}
	d, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(d.DiscoveryInitialInterval) != 5*time.Second || time.Duration(d.DiscoveryAfterErrorInterval) != time.Second ||
		time.Duration(d.DiscoveryAfterNodedownInterval) != 30*time.Second || time.Duration(d.DiscoveryRegularInterval) != 5*time.Minute ||
		time.Duration(d.DiscoveryInitialPhase) != 5*time.Minute {
		t.Fatalf("defaults %+v", d.Cluster)
	}
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte("discovery = \"dns:shoal.default.svc.cluster.local\"\ndiscovery_regular_interval = \"10m\"\nbootstrap_expect = 3\n"), 0o644)
	if c, err := Load([]string{"--config", path}, io.Discard); err != nil || c.Discovery != "dns:shoal.default.svc.cluster.local" || time.Duration(c.DiscoveryRegularInterval) != 10*time.Minute {
		t.Fatalf("from TOML: %+v, %v", c.Cluster, err)
	}
	for _, args := range [][]string{
		{"--discovery", "nope"},
		{"--discovery", "static:"},
		{"--discovery", "dns:"},
		{"--discovery", "file:x", "--discovery-initial-interval", "0s"},
		{"--discovery", "file:x", "--discovery-regular-interval", "48h"},
		{"--discovery", "file:x", "--discovery-connect-timeout", "1ms"},
		{"--discovery", "file:x", "--discovery-dns-server", "localhost"},
		{"--discovery", "file:x", "--replica-of", "127.0.0.1:7400"},
		{"--bootstrap-expect", "3"},
	} {
		if _, err := Load(args, io.Discard); err == nil {
			t.Errorf("Load(%q) accepted bad settings", args)
		}
	}
}

// TestVersionAndHelp: --version is its own outcome (before validation);
// -h shows a placeholder for --replica-of's value, not words of its text.
func TestVersionAndHelp(t *testing.T) {
	if _, err := Load([]string{"--version"}, io.Discard); !errors.Is(err, ErrVersion) {
		t.Errorf("--version: %v", err)
	}
	if _, err := Load([]string{"--vbuckets", "0", "--version"}, io.Discard); !errors.Is(err, ErrVersion) {
		t.Errorf("--version with a bad setting: %v", err)
	}
	var out strings.Builder
	if _, err := Load([]string{"-h"}, &out); !errors.Is(err, ErrHelp) {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "-replica-of ADDR\n") || strings.Contains(out.String(), "-replica-of shoal") || !strings.Contains(out.String(), "-version\n") {
		t.Errorf("usage:\n%s", out.String())
	}
}
