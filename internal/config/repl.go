package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"time"
)

// Replication holds the standby replica and liveness settings (embedded
// in Config; the keys are top-level like the others).
type Replication struct {
	// ReplicaOf makes the node a standby replica of the node at this data
	// port address: it holds every vBucket of every engine as a replica and
	// refuses writes until promoted. Empty: the node is active.
	ReplicaOf string `toml:"replica_of"`
	// ReplicaUser and ReplicaSecretFile authenticate the standby to the
	// active (which then requires the admin credential).
	ReplicaUser       string `toml:"replica_user"`
	ReplicaSecretFile string `toml:"replica_secret_file"`
	// ReplicaConnections is the number of stream connections per engine.
	ReplicaConnections int `toml:"replica_connections"`
	// ReplicaNoopInterval: each side sends a NOOP after sending nothing
	// for this long; two intervals with nothing received declare the
	// connection dead.
	ReplicaNoopInterval Duration `toml:"replica_noop_interval"`
	// ReplicaIdleTimeout declares a stream connection dead after this long
	// with nothing received, if shorter than two NOOP intervals.
	ReplicaIdleTimeout Duration `toml:"replica_idle_timeout"`
	// LivenessTick is the period of the liveness monitor: a peer heard
	// nothing from for two ticks is inactive.
	LivenessTick Duration `toml:"liveness_tick"`
}

// Defaults of the replication settings.
const (
	DefaultReplicaNoopInterval = Duration(time.Second)
	DefaultReplicaIdleTimeout  = Duration(360 * time.Second)
	DefaultLivenessTick        = Duration(time.Second)
)

func defaultReplication() Replication {
	return Replication{
		ReplicaConnections:  1,
		ReplicaNoopInterval: DefaultReplicaNoopInterval,
		ReplicaIdleTimeout:  DefaultReplicaIdleTimeout,
		LivenessTick:        DefaultLivenessTick,
	}
}

func bindReplication(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.ReplicaOf, "replica-of", c.ReplicaOf, "run as a standby replica of the node whose data port is `ADDR` (read-only until shoal promote)")
	fs.StringVar(&c.ReplicaUser, "replica-user", c.ReplicaUser, "credential name the standby authenticates as (the active's admin)")
	fs.StringVar(&c.ReplicaSecretFile, "replica-secret-file", c.ReplicaSecretFile, "file holding the hex secret of --replica-user")
	fs.IntVar(&c.ReplicaConnections, "replica-connections", c.ReplicaConnections, "stream connections per engine from the standby to the active")
	fs.Var(&c.ReplicaNoopInterval, "replica-noop-interval", "NOOP interval of replication streams; 2 silent intervals = dead connection")
	fs.Var(&c.ReplicaIdleTimeout, "replica-idle-timeout", "replication stream connection dead after this long with nothing received")
	fs.Var(&c.LivenessTick, "liveness-tick", "period of the liveness monitor (a peer is inactive after 2 ticks unheard)")
}

// validateReplication checks the replication settings.
func (c *Config) validateReplication() []error {
	var errs []error
	if c.ReplicaOf != "" {
		if _, _, err := net.SplitHostPort(c.ReplicaOf); err != nil {
			errs = append(errs, fmt.Errorf("replica-of %q: %w", c.ReplicaOf, err))
		}
	}
	if (c.ReplicaUser == "") != (c.ReplicaSecretFile == "") {
		errs = append(errs, errors.New("replica-user and replica-secret-file must be given together"))
	}
	if c.ReplicaConnections < 1 || c.ReplicaConnections > 64 {
		errs = append(errs, fmt.Errorf("replica-connections %d: must be 1..64", c.ReplicaConnections))
	}
	if c.ReplicaNoopInterval < Duration(time.Millisecond) || c.ReplicaNoopInterval > Duration(time.Hour) {
		errs = append(errs, fmt.Errorf("replica-noop-interval %s: must be 1ms..1h", c.ReplicaNoopInterval))
	}
	if c.LivenessTick < Duration(10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("liveness-tick %s: must be at least 10ms", c.LivenessTick))
	}
	return errs
}
