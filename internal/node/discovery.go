package node

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"shoal/internal/discovery"
)

// joins reports whether the node looks for a cluster to be in (--join or
// --discovery) instead of bootstrapping one of its own.
func (n *Node) joins() bool { return len(n.cfg.Join) > 0 || n.cfg.Discovery != "" }

// setupDiscovery prepares the discovery runner of --discovery (after
// setupCluster): the addresses it finds and finds answering are handed to
// the join machinery (joinTargets), one at a time.
func (n *Node) setupDiscovery() error {
	if n.cfg.Discovery == "" || n.cluster == nil {
		return nil
	}
	c := n.cluster
	spec, err := discovery.ParseSpec(n.cfg.Discovery)
	if err != nil {
		return err
	}
	var port int
	if _, p, err := net.SplitHostPort(c.addr); err == nil {
		port, _ = strconv.Atoi(p)
	}
	backend, err := spec.Backend(discovery.Options{DefaultPort: port, DNSServer: n.cfg.DiscoveryDNSServer})
	if err != nil {
		return err
	}
	var self []discovery.Addr
	for _, a := range []string{c.addr, n.ln.Addr().String()} {
		if sa, err := discovery.ParseAddr(a); err == nil && !slices.Contains(self, sa) {
			self = append(self, sa)
		}
	}
	cfg := n.cfg.Cluster
	n.disco = discovery.NewRunner(discovery.RunnerConfig{
		Spec:    n.cfg.Discovery,
		Backend: backend,
		Probe: func(ctx context.Context, a discovery.Addr) (string, error) {
			id, err := c.peers.hello(ctx, string(a))
			if err != nil {
				return "", probeError{err}
			}
			return id, nil
		},
		Observe:   n.discoveryObserved,
		OnTargets: func([]discovery.Addr) { n.nudgeCluster() },
		Machine: discovery.Config{
			Self: n.cfg.NodeID, SelfAddrs: self,
			InitialInterval:       time.Duration(cfg.DiscoveryInitialInterval),
			AfterErrorInterval:    time.Duration(cfg.DiscoveryAfterErrorInterval),
			AfterNodedownInterval: time.Duration(cfg.DiscoveryAfterNodedownInterval),
			RegularInterval:       time.Duration(cfg.DiscoveryRegularInterval),
			InitialPhase:          time.Duration(cfg.DiscoveryInitialPhase),
			ProbeInterval:         time.Duration(cfg.DiscoveryProbeInterval),
		},
		BackendTimeout: time.Duration(cfg.DiscoveryBackendTimeout),
		ConnectTimeout: time.Duration(cfg.DiscoveryConnectTimeout),
		Logger:         n.log.With("part", "discovery"),
	}, n.started)
	return nil
}

// probeError is a failed probe, without the local address of its socket
// in its text ("read tcp 127.0.0.1:PORT->"), which changes at every
// attempt: the discovery logs an address's error only when it changes.
type probeError struct{ err error }

func (e probeError) Error() string { return localAddr.ReplaceAllString(e.err.Error(), "") }
func (e probeError) Unwrap() error { return e.err }

// discoveryObserved is what the discovery needs to know of the node:
// whether it is a member, the members, and when the join machinery last
// tried each address.
func (n *Node) discoveryObserved() discovery.Observed {
	c := n.cluster
	obs := discovery.Observed{Member: n.inCluster(), Tried: map[discovery.Addr]time.Time{}}
	for _, m := range c.known().Nodes {
		a, err := discovery.ParseAddr(m.Addr)
		if err != nil {
			a = discovery.Addr(m.Addr)
		}
		obs.Members = append(obs.Members, discovery.Member{ID: m.ID, Addr: a})
	}
	c.mu.Lock()
	for _, ja := range c.join.Addresses {
		if ja.LastTry != nil {
			obs.Tried[discovery.Addr(ja.Addr)] = *ja.LastTry
		}
	}
	c.mu.Unlock()
	return obs
}

// discoveryTargets are the addresses the discovery handed to the join.
func (n *Node) discoveryTargets() []string {
	if n.disco == nil {
		return nil
	}
	var out []string
	for _, a := range n.disco.Targets() {
		out = append(out, string(a))
	}
	return out
}

// nudgeCluster wakes the cluster loop (a join round now).
func (n *Node) nudgeCluster() {
	select {
	case n.cluster.changed <- struct{}{}:
	default:
	}
}

// Readiness is whether the node is ready (/readyz, `shoal wait-ready`):
// the initial discovery is done (every discovered node joined or found
// unreachable), the node has the cluster's map, and its replica vBuckets
// have caught up. Missing says what it waits for.
type Readiness struct {
	Ready   bool     `json:"ready"`
	Missing []string `json:"missing,omitempty"`
}

// nodeReadiness computes the node's Readiness.
func (n *Node) nodeReadiness() Readiness {
	var missing []string
	if n.disco != nil {
		_, m := n.disco.Ready()
		missing = append(missing, m...)
	}
	switch {
	case n.cluster != nil:
		if !n.inCluster() {
			c := n.cluster
			c.mu.Lock()
			phase, waiting := c.join.Phase, c.join.Waiting
			c.mu.Unlock()
			msg := "cluster: this node has no map of a cluster it is a member of yet"
			if phase != "" {
				msg += " (" + phase
				if waiting != "" {
					msg += ": " + waiting
				}
				msg += ")"
			}
			missing = append(missing, msg)
		}
	case n.table() == nil:
		missing = append(missing, "this node has no vbucket map yet")
	}
	n.routing.mu.Lock()
	if n.routing.fenced && len(missing) == 0 { // a node not in a cluster yet is fenced too: said above
		missing = append(missing, "fenced: "+n.routing.fencedWhy)
	}
	n.routing.mu.Unlock()
	for _, r := range n.rep.replicators() {
		if st := r.Status(false); st.Lagging > 0 {
			missing = append(missing, fmt.Sprintf("replication: %d of %d %s replica vbuckets from %s have not caught up (%s)", st.Lagging, st.VBuckets, st.Bucket, st.Producer, st.State))
		}
	}
	if len(missing) > 0 && n.disco != nil {
		// Not waited for (they answered, by failing), but likely why.
		for _, u := range n.disco.Status().Unavailable {
			missing = append(missing, fmt.Sprintf("discovery: %s does not answer: %s", u.Addr, u.Error))
		}
	}
	return Readiness{Ready: len(missing) == 0, Missing: missing}
}

// discoveryStatus is the discovery section of /status; nil without
// --discovery.
func (n *Node) discoveryStatus() *discovery.Status {
	if n.disco == nil {
		return nil
	}
	st := n.disco.Status()
	return &st
}
