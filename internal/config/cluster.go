package config

import (
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"shoal/internal/discovery"
	"shoal/internal/meta"
	"shoal/internal/rebalance"
)

// Cluster holds the cluster membership and metadata settings (embedded in
// Config; the keys are top-level like the others).
type Cluster struct {
	// Join lists data addresses of nodes to find the cluster through: a
	// new node asks them to add it; with BootstrapExpect they are the
	// peers the first cluster is formed with.
	Join AddrList `toml:"join"`
	// BootstrapExpect is how many nodes form a new cluster: when that many
	// nodes with the same value have found each other through Join, one of
	// them bootstraps the cluster with all of them. 0: a node without Join
	// bootstraps a cluster of its own, one with Join joins a running one.
	BootstrapExpect int `toml:"bootstrap_expect"`
	// Voters is how many nodes vote in the metadata group (the first ones
	// to join; the others follow without voting). 3 or 5.
	Voters int `toml:"voters"`
	// Replicas is the replica count of a new cluster (0..3), fixed when it
	// is bootstrapped.
	Replicas int `toml:"replicas"`
	// Zone names the node's failure zone (rack, availability zone): the
	// copies of a vBucket are placed in different zones where possible.
	Zone string `toml:"zone"`
	// Advertise is the data address the other nodes reach this node at;
	// default the listen address.
	Advertise string `toml:"advertise"`
	// PeerUser and PeerSecretFile authenticate this node to its peers (raft
	// and join connections) when they have credentials: PeerUser must be
	// the admin credential or one named "node" in their credentials file.
	PeerUser       string `toml:"peer_user"`
	PeerSecretFile string `toml:"peer_secret_file"`
	// TLSCA verifies the certificates of peers when the node uses TLS
	// (default: the node's own certificate, for a cluster sharing one).
	TLSCA string `toml:"tls_ca"`
	// FailoverTimeout is how long a node may go without hearing the
	// metadata group's leader before it stops serving (its lease); a
	// cluster setting, fixed at bootstrap.
	FailoverTimeout Duration `toml:"failover_timeout"`
	// AutoFailover turns a new cluster's automatic failover on (a cluster
	// setting, changed later with shoal failover settings).
	AutoFailover bool `toml:"auto_failover"`
	// RebalanceMoves is how many vBuckets a rebalance this node runs (as
	// the metadata leader) moves at once; RebalanceRate bounds the bytes
	// per second its copies receive (0: unlimited). AutoRebalance starts a
	// rebalance when a node joins.
	RebalanceMoves int  `toml:"rebalance_moves"`
	RebalanceRate  Size `toml:"rebalance_rate"`
	AutoRebalance  bool `toml:"auto_rebalance"`
	// Raft timeouts of the metadata group (LAN values by default).
	RaftHeartbeatTimeout   Duration `toml:"raft_heartbeat_timeout"`
	RaftElectionTimeout    Duration `toml:"raft_election_timeout"`
	RaftLeaderLeaseTimeout Duration `toml:"raft_leader_lease_timeout"`

	// Discovery finds the nodes to join through a backend:
	// static:HOST:PORT,..., file:PATH (read at every call), dns:NAME[:PORT]
	// (A and AAAA records; the port defaults to this node's) or
	// dns+srv:_service._tcp.NAME (docs/design.md §11). With Join, the
	// union of both is asked.
	Discovery string `toml:"discovery"`
	// DiscoveryDNSServer (host:port) is the DNS server the dns backends
	// ask instead of the system's: for tests and private resolvers.
	DiscoveryDNSServer string `toml:"discovery_dns_server"`
	// The time between two backend calls: in the initial phase, after an
	// error, after a node went down (within that time), and otherwise.
	DiscoveryInitialInterval       Duration `toml:"discovery_initial_interval"`
	DiscoveryAfterErrorInterval    Duration `toml:"discovery_after_error_interval"`
	DiscoveryAfterNodedownInterval Duration `toml:"discovery_after_nodedown_interval"`
	DiscoveryRegularInterval       Duration `toml:"discovery_regular_interval"`
	// DiscoveryInitialPhase is how long the initial phase lasts at most
	// (it ends early once this node is a member of a cluster).
	DiscoveryInitialPhase Duration `toml:"discovery_initial_phase"`
	// DiscoveryProbeInterval is how often each discovered address is
	// probed (a connection and HELLO) for nodeup and nodedown.
	DiscoveryProbeInterval Duration `toml:"discovery_probe_interval"`
	// DiscoveryBackendTimeout bounds a backend call, DiscoveryConnectTimeout
	// a probe.
	DiscoveryBackendTimeout Duration `toml:"discovery_backend_timeout"`
	DiscoveryConnectTimeout Duration `toml:"discovery_connect_timeout"`
}

// AddrList is a comma-separated list of host:port addresses.
type AddrList []string

// String implements flag.Value.
func (l *AddrList) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *AddrList) Set(v string) error {
	*l = nil
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*l = append(*l, a)
		}
	}
	return nil
}

func defaultCluster() Cluster {
	return Cluster{
		Voters:                 3,
		Replicas:               1,
		PeerUser:               "node",
		FailoverTimeout:        Duration(meta.DefaultFailoverTimeout),
		AutoFailover:           true,
		RebalanceMoves:         rebalance.DefaultMaxMoves,
		RaftHeartbeatTimeout:   Duration(meta.DefaultHeartbeatTimeout),
		RaftElectionTimeout:    Duration(meta.DefaultElectionTimeout),
		RaftLeaderLeaseTimeout: Duration(meta.DefaultLeaderLeaseTimeout),

		DiscoveryInitialInterval:       Duration(discovery.DefaultInitialInterval),
		DiscoveryAfterErrorInterval:    Duration(discovery.DefaultAfterErrorInterval),
		DiscoveryAfterNodedownInterval: Duration(discovery.DefaultAfterNodedownInterval),
		DiscoveryRegularInterval:       Duration(discovery.DefaultRegularInterval),
		DiscoveryInitialPhase:          Duration(discovery.DefaultInitialPhase),
		DiscoveryProbeInterval:         Duration(discovery.DefaultProbeInterval),
		DiscoveryBackendTimeout:        Duration(discovery.DefaultBackendTimeout),
		DiscoveryConnectTimeout:        Duration(discovery.DefaultConnectTimeout),
	}
}

func bindCluster(fs *flag.FlagSet, c *Config) {
	fs.Var(&c.Join, "join", "data addresses of nodes to join the cluster through (host:port,host:port...)")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", c.BootstrapExpect, "form a new cluster once this many nodes (with the same value) found each other through --join or --discovery")
	fs.IntVar(&c.Voters, "voters", c.Voters, "how many nodes vote in the metadata group: 3 or 5 (the first to join)")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "replica count of a new cluster, 0..3 (fixed at bootstrap)")
	fs.StringVar(&c.Zone, "zone", c.Zone, "failure zone of this node (copies of a vBucket go to different zones)")
	fs.StringVar(&c.Advertise, "advertise", c.Advertise, "data address the other nodes reach this node at (default: --listen)")
	fs.StringVar(&c.PeerUser, "peer-user", c.PeerUser, `credential this node authenticates to its peers as ("node" or the admin's)`)
	fs.StringVar(&c.PeerSecretFile, "peer-secret-file", c.PeerSecretFile, "file holding the hex secret of --peer-user (when the nodes have --credentials)")
	fs.StringVar(&c.TLSCA, "tls-ca", c.TLSCA, "CA certificate (PEM) that signs the peers' TLS certificates (default: this node's own)")
	fs.Var(&c.FailoverTimeout, "failover-timeout", "a new cluster's failover timeout: a node that hears no leader this long stops serving; a member unheard this long is failed over automatically when that is on (a cluster setting: shoal failover settings --timeout)")
	fs.BoolVar(&c.AutoFailover, "auto-failover", c.AutoFailover, "a new cluster fails unreachable members over automatically (a cluster setting: shoal failover settings --enable|--disable)")
	fs.IntVar(&c.RebalanceMoves, "rebalance-moves", c.RebalanceMoves, "how many vBuckets a rebalance moves at once (when this node runs it, as the metadata leader)")
	fs.Var(&c.RebalanceRate, "rebalance-rate", "bytes per second a rebalance's copies may receive, e.g. 50MB (0: unlimited)")
	fs.BoolVar(&c.AutoRebalance, "auto-rebalance", c.AutoRebalance, "start a rebalance when a node joins (when this node is the metadata leader)")
	fs.Var(&c.RaftHeartbeatTimeout, "raft-heartbeat-timeout", "metadata group: a follower that hears no leader this long starts an election")
	fs.Var(&c.RaftElectionTimeout, "raft-election-timeout", "metadata group: how long a candidate waits for votes")
	fs.Var(&c.RaftLeaderLeaseTimeout, "raft-leader-lease-timeout", "metadata group: a leader that cannot reach a majority this long steps down")
	fs.StringVar(&c.Discovery, "discovery", c.Discovery, "find the nodes to join through a backend: static:HOST:PORT,..., file:PATH, dns:NAME[:PORT] or dns+srv:_service._tcp.NAME")
	fs.StringVar(&c.DiscoveryDNSServer, "discovery-dns-server", c.DiscoveryDNSServer, "DNS server (host:port) the dns backends ask instead of the system's (tests, private resolvers)")
	fs.Var(&c.DiscoveryInitialInterval, "discovery-initial-interval", "discovery: time between backend calls in the initial phase")
	fs.Var(&c.DiscoveryAfterErrorInterval, "discovery-after-error-interval", "discovery: time to the next backend call after one failed")
	fs.Var(&c.DiscoveryAfterNodedownInterval, "discovery-after-nodedown-interval", "discovery: time to the next backend call after a discovered node went down")
	fs.Var(&c.DiscoveryRegularInterval, "discovery-regular-interval", "discovery: time between backend calls after the initial phase")
	fs.Var(&c.DiscoveryInitialPhase, "discovery-initial-phase", "discovery: longest initial phase (it ends once this node is a member)")
	fs.Var(&c.DiscoveryProbeInterval, "discovery-probe-interval", "discovery: how often each discovered address is probed (nodeup, nodedown)")
	fs.Var(&c.DiscoveryBackendTimeout, "discovery-backend-timeout", "discovery: longest backend call")
	fs.Var(&c.DiscoveryConnectTimeout, "discovery-connect-timeout", "discovery: longest probe of a discovered address (connect and HELLO)")
}

// validateCluster checks the cluster settings.
func (c *Config) validateCluster() []error {
	var errs []error
	for _, a := range c.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("join %q: %w", a, err))
		}
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 64 {
		errs = append(errs, fmt.Errorf("bootstrap-expect %d: must be 0..64", c.BootstrapExpect))
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 && c.Discovery == "" {
		errs = append(errs, fmt.Errorf("bootstrap-expect %d needs --join with the addresses of the other nodes, or --discovery", c.BootstrapExpect))
	}
	if c.Voters != 1 && c.Voters != 3 && c.Voters != 5 && c.Voters != 7 {
		errs = append(errs, fmt.Errorf("voters %d: want 3 or 5 (1 or 7 also work)", c.Voters))
	}
	if len(c.Zone) > 255 {
		errs = append(errs, fmt.Errorf("zone: at most 255 bytes"))
	}
	if c.Replicas < 0 || c.Replicas > 3 {
		errs = append(errs, fmt.Errorf("replicas %d: must be 0..3", c.Replicas))
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("advertise %q: %w", c.Advertise, err))
		}
	}
	if c.RebalanceMoves < 1 || c.RebalanceMoves > 64 {
		errs = append(errs, fmt.Errorf("rebalance-moves %d: must be 1..64", c.RebalanceMoves))
	}
	if c.RebalanceRate < 0 {
		errs = append(errs, fmt.Errorf("rebalance-rate %d: must not be negative", c.RebalanceRate))
	}
	if c.PeerSecretFile != "" && c.PeerUser == "" {
		errs = append(errs, fmt.Errorf("peer-secret-file needs --peer-user"))
	}
	if c.FailoverTimeout < Duration(time.Second) || c.FailoverTimeout < 2*c.RaftElectionTimeout {
		errs = append(errs, fmt.Errorf("failover-timeout %s: must be at least 1s and twice the raft election timeout (%s)", c.FailoverTimeout, c.RaftElectionTimeout))
	}
	lease, hb, el := c.RaftLeaderLeaseTimeout, c.RaftHeartbeatTimeout, c.RaftElectionTimeout
	if lease < Duration(5*time.Millisecond) || lease > hb || hb > el {
		errs = append(errs, fmt.Errorf("raft timeouts: want 5ms <= leader lease (%s) <= heartbeat (%s) <= election (%s)", lease, hb, el))
	}
	if c.ReplicaOf != "" && (len(c.Join) > 0 || c.BootstrapExpect > 0 || c.Discovery != "") {
		errs = append(errs, fmt.Errorf("replica-of makes a standby outside any cluster: it cannot be given with --join, --discovery or --bootstrap-expect"))
	}
	return append(errs, c.validateDiscovery()...)
}

// validateDiscovery checks the discovery settings.
func (c *Config) validateDiscovery() []error {
	var errs []error
	if c.Discovery != "" {
		if _, err := discovery.ParseSpec(c.Discovery); err != nil {
			errs = append(errs, err)
		}
	}
	if c.DiscoveryDNSServer != "" {
		if _, _, err := net.SplitHostPort(c.DiscoveryDNSServer); err != nil {
			errs = append(errs, fmt.Errorf("discovery-dns-server %q: %w", c.DiscoveryDNSServer, err))
		}
	}
	for _, d := range []struct {
		name     string
		v        Duration
		min, max time.Duration
	}{
		{"discovery-initial-interval", c.DiscoveryInitialInterval, 10 * time.Millisecond, 24 * time.Hour},
		{"discovery-after-error-interval", c.DiscoveryAfterErrorInterval, 10 * time.Millisecond, 24 * time.Hour},
		{"discovery-after-nodedown-interval", c.DiscoveryAfterNodedownInterval, 10 * time.Millisecond, 24 * time.Hour},
		{"discovery-regular-interval", c.DiscoveryRegularInterval, 10 * time.Millisecond, 24 * time.Hour},
		{"discovery-initial-phase", c.DiscoveryInitialPhase, 0, 24 * time.Hour},
		{"discovery-probe-interval", c.DiscoveryProbeInterval, 10 * time.Millisecond, time.Hour},
		{"discovery-backend-timeout", c.DiscoveryBackendTimeout, 10 * time.Millisecond, 10 * time.Minute},
		{"discovery-connect-timeout", c.DiscoveryConnectTimeout, 10 * time.Millisecond, time.Minute},
	} {
		if v := time.Duration(d.v); v < d.min || v > d.max || v == 0 {
			errs = append(errs, fmt.Errorf("%s %s: want %s..%s", d.name, v, max(d.min, time.Millisecond), d.max))
		}
	}
	return errs
}
