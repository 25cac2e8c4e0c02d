package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReplicationSettings(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ReplicaOf != "" || c.ReplicaConnections != 1 || c.ReplicaNoopInterval != DefaultReplicaNoopInterval ||
		c.ReplicaIdleTimeout != DefaultReplicaIdleTimeout || c.LivenessTick != DefaultLivenessTick {
		t.Fatalf("defaults: %+v", c.Replication)
	}
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte(`
replica_of = "10.0.0.1:7400"
replica_user = "admin"
replica_secret_file = "/etc/shoal/admin.secret"
replica_connections = 2
replica_noop_interval = "250ms"
liveness_tick = "500ms"
`), 0o644)
	c, err = Load([]string{"--config", path, "--replica-connections", "4", "--replica-idle-timeout", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Replication{
		ReplicaOf: "10.0.0.1:7400", ReplicaUser: "admin", ReplicaSecretFile: "/etc/shoal/admin.secret",
		ReplicaConnections: 4, ReplicaNoopInterval: Duration(250 * time.Millisecond),
		ReplicaIdleTimeout: Duration(3 * time.Second), LivenessTick: Duration(500 * time.Millisecond),
	}
	if c.Replication != want {
		t.Fatalf("got %+v, want %+v", c.Replication, want)
	}
	for _, args := range [][]string{
		{"--replica-of", "nohostport"},
		{"--replica-user", "admin"},
		{"--replica-connections", "0"},
		{"--replica-connections", "65"},
		{"--replica-noop-interval", "0s"},
		{"--liveness-tick", "1ms"},
	} {
		if _, err := Load(args, io.Discard); err == nil {
			t.Errorf("Load(%q) accepted bad settings", args)
		}
	}
}
