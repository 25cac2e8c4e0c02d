package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQueueSettings(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueRingSize != 64<<20 || c.QueueDurability != "memory" || c.QueueFsyncInterval != 0 || c.QueueFsyncInterval.String() != "always" {
		t.Fatalf("queue defaults: %+v", c)
	}
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte(`
queue_ring_size = "1MiB"
queue_durability = "journal"
queue_fsync_interval = "10ms"

[queue_ring_size_by_prefix]
big- = "256MiB"
tiny_ = 4096
`), 0o644)
	c, err = Load([]string{"--config", path, "--queue-fsync-interval", "always"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.QueueRingSize != 1<<20 || c.QueueDurability != "journal" || c.QueueFsyncInterval != 0 ||
		c.QueueRingSizeByPrefix["big-"] != 256<<20 || c.QueueRingSizeByPrefix["tiny_"] != 4096 {
		t.Fatalf("from the file: %+v", c)
	}
	c, err = Load([]string{"--config", path, "--queue-ring-size", "2MiB", "--queue-durability", "memory"}, io.Discard)
	if err != nil || c.QueueRingSize != 2<<20 || c.QueueDurability != "memory" || time.Duration(c.QueueFsyncInterval) != 10*time.Millisecond {
		t.Fatalf("flags over the file: %+v %v", c, err)
	}
	for _, bad := range [][]string{
		{"--queue-durability", "disk"},
		{"--queue-ring-size", "100"},
		{"--queue-fsync-interval", "sometimes"},
		{"--queue-fsync-interval", "-1s"},
	} {
		if _, err := Load(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	os.WriteFile(path, []byte("[queue_ring_size_by_prefix]\na = \"1MiB\"\nab = \"2MiB\"\n\"bad name\" = 4096\n"), 0o644)
	_, err = Load([]string{"--config", path}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "overlap") || !strings.Contains(err.Error(), "bad name") {
		t.Fatalf("overlapping and bad prefixes: %v", err)
	}
}
