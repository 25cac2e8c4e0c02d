package liveness

import (
	"math"
	"slices"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultTick          = time.Second
	DefaultInactiveTicks = 2
)

// State is the state of a node or channel in a Report.
type State string

// States. Peers and their channels are active or inactive; the local node
// and its channels are ready or not ready.
const (
	Active   State = "active"
	Inactive State = "inactive"
	Ready    State = "ready"
	NotReady State = "not_ready"
)

// Config configures a Monitor.
type Config struct {
	// Self is the local node's name; it is reported with its readiness.
	Self string
	// Tick is the interval the caller ticks at. Default DefaultTick.
	// InactiveTicks ticks must exceed the streams' NOOP interval plus the
	// 100 ms between two reports of a connection, or idle peers flap.
	Tick time.Duration
	// InactiveTicks: a channel is inactive when nothing was heard on it for
	// more than this many ticks. Default DefaultInactiveTicks.
	InactiveTicks int
}

// Check is the result of one local readiness check (engines loaded, disk
// healthy) that the caller ran for a tick.
type Check struct {
	Name string `json:"name"`
	// Channel names the channel the check concerns; empty for the node.
	Channel string `json:"channel,omitempty"`
	OK      bool   `json:"ok"`
	// Detail says what failed.
	Detail string `json:"detail,omitempty"`
}

// Report is the monitor's view after a tick.
type Report struct {
	Tick  uint64       `json:"tick"`
	Nodes []NodeStatus `json:"nodes"`
	// Changes lists what changed state at this tick (a first appearance
	// counts, with From empty).
	Changes []Change `json:"changes,omitempty"`
}

// NodeStatus is one node's state.
type NodeStatus struct {
	Node  string `json:"node"`
	Local bool   `json:"local,omitempty"`
	State State  `json:"state"`
	// SecondsSinceLastHeard is nil for a peer never heard, and for the
	// local node.
	SecondsSinceLastHeard *float64        `json:"seconds_since_last_heard,omitempty"`
	Channels              []ChannelStatus `json:"channels"`
	// Checks are the local node's readiness checks.
	Checks []Check `json:"checks,omitempty"`
}

// ChannelStatus is the state of one channel of a node.
type ChannelStatus struct {
	Channel               string   `json:"channel"`
	State                 State    `json:"state"`
	SecondsSinceLastHeard *float64 `json:"seconds_since_last_heard,omitempty"`
}

// Change is one state change.
type Change struct {
	Node    string `json:"node"`
	Channel string `json:"channel,omitempty"` // empty: the node itself
	From    State  `json:"from"`
	To      State  `json:"to"`
}

// Monitor turns what the Spy heard into node and channel states at each
// tick. It is not safe for concurrent use: one goroutine ticks it (and
// may publish the Reports).
type Monitor struct {
	cfg   Config
	spy   *Spy
	peers map[string]bool                 // the peers to report; nil: every peer heard
	heard map[string]map[string]time.Time // remembered last-heard, per peer and channel
	prev  map[stateKey]State              // last tick's states
	ticks uint64
}

// NewMonitor returns a monitor of what spy hears.
func NewMonitor(cfg Config, spy *Spy) *Monitor {
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.InactiveTicks <= 0 {
		cfg.InactiveTicks = DefaultInactiveTicks
	}
	return &Monitor{cfg: cfg, spy: spy, heard: make(map[string]map[string]time.Time), prev: make(map[stateKey]State)}
}

// SetPeers sets the peer nodes to report (the cluster's other nodes). From
// then on a listed peer is reported even if never heard (inactive), and
// traffic from unlisted nodes is ignored and forgotten. Until SetPeers is
// called, every node heard is reported.
func (m *Monitor) SetPeers(nodes []string) {
	m.peers = make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if n != m.cfg.Self {
			m.peers[n] = true
		}
	}
	for n := range m.heard {
		if !m.peers[n] {
			delete(m.heard, n)
		}
	}
}

// Tick computes the states at now from what the spy heard and from the
// local checks, counts a tick and reports the changes since the last one.
func (m *Monitor) Tick(now time.Time, checks []Check) Report {
	m.ticks++
	r := m.View(now, checks)
	r.Changes = m.changes(r.Nodes)
	return r
}

// View computes the states at now without counting a tick or recording
// changes: what a status request shows between ticks. A peer is inactive
// once nothing was heard from it for InactiveTicks ticks, so a View at
// request time shows a silent peer inactive within that time of its last
// frame; a Tick may show it up to one tick later.
func (m *Monitor) View(now time.Time, checks []Check) Report {
	for node, chans := range m.spy.latest() {
		if node == m.cfg.Self || (m.peers != nil && !m.peers[node]) {
			continue
		}
		mem := m.heard[node]
		if mem == nil {
			mem = make(map[string]time.Time)
			m.heard[node] = mem
		}
		for ch, at := range chans {
			if at.After(mem[ch]) {
				mem[ch] = at
			}
		}
	}
	names := make([]string, 0, len(m.heard)+len(m.peers)+1)
	for n := range m.heard {
		names = append(names, n)
	}
	for n := range m.peers {
		if m.heard[n] == nil {
			names = append(names, n)
		}
	}
	r := Report{Tick: m.ticks, Nodes: make([]NodeStatus, 0, len(names)+1)}
	for _, n := range names {
		r.Nodes = append(r.Nodes, m.peer(n, now))
	}
	if m.cfg.Self != "" {
		r.Nodes = append(r.Nodes, local(m.cfg.Self, checks))
	}
	slices.SortFunc(r.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	return r
}

// peer returns the status of peer node at now.
func (m *Monitor) peer(node string, now time.Time) NodeStatus {
	window := time.Duration(m.cfg.InactiveTicks) * m.cfg.Tick
	st := NodeStatus{Node: node, State: Inactive, Channels: []ChannelStatus{}}
	var last time.Time
	for ch, at := range m.heard[node] {
		since := now.Sub(at)
		cs := ChannelStatus{Channel: ch, State: Inactive, SecondsSinceLastHeard: seconds(since)}
		if since <= window {
			cs.State = Active
			st.State = Active
		}
		st.Channels = append(st.Channels, cs)
		if at.After(last) {
			last = at
		}
	}
	if !last.IsZero() {
		st.SecondsSinceLastHeard = seconds(now.Sub(last))
	}
	sortChannels(st.Channels)
	return st
}

// local returns the local node's status from its checks.
func local(self string, checks []Check) NodeStatus {
	st := NodeStatus{Node: self, Local: true, State: Ready, Channels: []ChannelStatus{}, Checks: checks}
	idx := map[string]int{}
	for _, c := range checks {
		if !c.OK {
			st.State = NotReady
		}
		if c.Channel == "" {
			continue
		}
		i, ok := idx[c.Channel]
		if !ok {
			i = len(st.Channels)
			idx[c.Channel] = i
			st.Channels = append(st.Channels, ChannelStatus{Channel: c.Channel, State: Ready})
		}
		if !c.OK {
			st.Channels[i].State = NotReady
		}
	}
	sortChannels(st.Channels)
	return st
}

// stateKey names a node (channel empty) or one of its channels.
type stateKey struct{ node, channel string }

// changes compares this tick's states with the previous tick's.
func (m *Monitor) changes(nodes []NodeStatus) []Change {
	now := make(map[stateKey]State, len(m.prev))
	var out []Change
	note := func(node, channel string, s State) {
		k := stateKey{node, channel}
		now[k] = s
		if was := m.prev[k]; was != s {
			out = append(out, Change{Node: node, Channel: channel, From: was, To: s})
		}
	}
	for _, n := range nodes {
		note(n.Node, "", n.State)
		for _, c := range n.Channels {
			note(n.Node, c.Channel, c.State)
		}
	}
	m.prev = now
	return out
}

func sortChannels(cs []ChannelStatus) {
	slices.SortFunc(cs, func(a, b ChannelStatus) int { return strings.Compare(a.Channel, b.Channel) })
}

// seconds renders d in seconds, to the millisecond.
func seconds(d time.Duration) *float64 {
	s := math.Round(d.Seconds()*1000) / 1000
	return &s
}
