package discovery

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Phase is the discovery's phase: initial (the first InitialPhase, or
// until this node is a member of a cluster), then regular.
type Phase string

// Phases.
const (
	PhaseInitial Phase = "initial"
	PhaseRegular Phase = "regular"
)

// RetryType says why the next backend call comes when it does; it is
// chosen after every backend answer (CETS's retry types).
type RetryType string

// Retry types, in the order they are chosen: after_error when the last
// call failed, initial in the initial phase, after_nodedown when a node
// went down less than AfterNodedownInterval ago, regular otherwise.
const (
	RetryAfterError    RetryType = "after_error"
	RetryInitial       RetryType = "initial"
	RetryAfterNodedown RetryType = "after_nodedown"
	RetryRegular       RetryType = "regular"
)

// Defaults of Config (CETS's).
const (
	DefaultInitialInterval       = 5 * time.Second
	DefaultAfterErrorInterval    = time.Second
	DefaultAfterNodedownInterval = 30 * time.Second
	DefaultRegularInterval       = 5 * time.Minute
	DefaultInitialPhase          = 5 * time.Minute
	DefaultProbeInterval         = 5 * time.Second
)

// forgetAfter is how long a node that left the backend's answers, is not
// a member and is not a join target stays listed (as not discovered).
const forgetAfter = time.Hour

// maxErrLen bounds the error texts kept (another node's answers are in
// them).
const maxErrLen = 512

// Config configures a Machine.
type Config struct {
	// Self is this node's id: an address whose node answers with it is
	// this node, never probed again nor joined.
	Self string
	// SelfAddrs are this node's own addresses (its advertised data
	// address), known to be Self without a probe.
	SelfAddrs []Addr
	// The intervals between backend calls, by retry type.
	InitialInterval       time.Duration
	AfterErrorInterval    time.Duration
	AfterNodedownInterval time.Duration
	RegularInterval       time.Duration
	// InitialPhase is how long the initial phase lasts at most.
	InitialPhase time.Duration
	// ProbeInterval is how often each discovered address is probed (a
	// connection and HELLO): a node that stops answering is down.
	ProbeInterval time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.InitialInterval, DefaultInitialInterval)
	def(&c.AfterErrorInterval, DefaultAfterErrorInterval)
	def(&c.AfterNodedownInterval, DefaultAfterNodedownInterval)
	def(&c.RegularInterval, DefaultRegularInterval)
	def(&c.InitialPhase, DefaultInitialPhase)
	def(&c.ProbeInterval, DefaultProbeInterval)
	return c
}

// interval is the time to the next backend call after one of type t.
func (c Config) interval(t RetryType) time.Duration {
	switch t {
	case RetryAfterError:
		return c.AfterErrorInterval
	case RetryInitial:
		return c.InitialInterval
	case RetryAfterNodedown:
		return c.AfterNodedownInterval
	}
	return c.RegularInterval
}

// Event is an input of Machine.Step.
type Event interface{ event() }

// Tick is time passing: calls and probes that are due start.
type Tick struct{}

// CheckNow asks for a backend call now (or right after the one running).
type CheckNow struct{}

// BackendDone is the answer of the backend call a CallBackend started.
type BackendDone struct {
	Addrs []Addr
	Err   error
}

// ProbeDone is the outcome of the probe a Probe started: the id the node
// at Addr answered with, or why it did not answer.
type ProbeDone struct {
	Addr   Addr
	NodeID string
	Err    error
}

// Member is a member of this node's cluster.
type Member struct {
	ID   string
	Addr Addr
}

// Observed is what the node tells of itself: whether it is a member of a
// cluster, the members it knows, and when its join machinery last tried
// each address (the outcome of a join attempt, successful or not).
type Observed struct {
	Member  bool
	Members []Member
	Tried   map[Addr]time.Time
}

func (Tick) event()        {}
func (CheckNow) event()    {}
func (BackendDone) event() {}
func (ProbeDone) event()   {}
func (Observed) event()    {}

// Action is an output of Machine.Step, for the caller to carry out.
type Action interface{ action() }

// CallBackend: call the backend (in a worker, with a timeout) and step
// its answer as a BackendDone.
type CallBackend struct{}

// Probe: connect to Addr and ask its node id (in a worker, with a
// timeout), and step the outcome as a ProbeDone.
type Probe struct{ Addr Addr }

// TargetsChanged: the addresses handed to the join machinery changed;
// Targets are all of them now.
type TargetsChanged struct{ Targets []Addr }

// Log: a line for the node's log.
type Log struct {
	Level slog.Level
	Msg   string
	// Attrs are key, value pairs.
	Attrs []any
}

func (CallBackend) action()    {}
func (Probe) action()          {}
func (TargetsChanged) action() {}
func (Log) action()            {}

// node is what the machine knows of one address.
type node struct {
	addr       Addr
	id         string
	discovered bool
	lastSeen   time.Time // last backend answer that listed it
	self       bool
	probed     bool // a probe answered (or failed) at least once
	probing    bool
	nextProbe  time.Time
	lastProbe  time.Time
	up         bool
	lastErr    string
	nodeup     time.Time
	nodedown   time.Time
	joined     bool
	target     bool
	handedAt   time.Time
	tried      time.Time
}

// result is a backend answer.
type result struct {
	started, at time.Time
	addrs       []Addr
	err         string
	retry       RetryType
}

// Machine is the discovery's decision logic: events and the time in,
// actions out. It has no clock, goroutine or I/O; it is not safe for
// concurrent use.
type Machine struct {
	cfg   Config
	start time.Time
	phase Phase

	nodes map[Addr]*node

	running      bool
	runningSince time.Time
	queued       bool // a check was asked while a call ran
	calls        uint64
	last         *result
	retry        RetryType // of the next call
	next         time.Time // the next call

	lastNodedown time.Time
	member       bool
	members      []Member
	targets      []Addr

	initialDone   bool
	initialDoneAt time.Time
}

// NewMachine returns a machine whose node started at start; its first
// Step calls the backend.
func NewMachine(cfg Config, start time.Time) *Machine {
	cfg = cfg.withDefaults()
	m := &Machine{cfg: cfg, start: start, phase: PhaseInitial, nodes: map[Addr]*node{}, next: start, retry: RetryInitial}
	return m
}

// Step takes one event at now and returns what to do.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	var out []Action
	if m.phase == PhaseInitial && !now.Before(m.start.Add(m.cfg.InitialPhase)) {
		m.enterRegular(fmt.Sprintf("the initial phase (%s) is over", m.cfg.InitialPhase), &out)
	}
	switch e := ev.(type) {
	case CheckNow:
		if m.running {
			m.queued = true
		} else {
			m.next = now
		}
	case BackendDone:
		m.backendDone(now, e, &out)
	case ProbeDone:
		m.probeDone(now, e, &out)
	case Observed:
		m.observed(now, e, &out)
	}
	if !m.running && !now.Before(m.next) {
		m.running, m.runningSince = true, now
		out = append(out, CallBackend{})
	}
	for _, a := range m.sortedAddrs() {
		n := m.nodes[a]
		if n.discovered && !n.self && !n.probing && !now.Before(n.nextProbe) {
			n.probing = true
			out = append(out, Probe{Addr: a})
		}
	}
	m.handOver(now, &out)
	if !m.initialDone && len(m.missing()) == 0 {
		m.initialDone, m.initialDoneAt = true, now
		out = append(out, Log{Level: slog.LevelInfo, Msg: "initial discovery done", Attrs: []any{"discovered", len(m.discovered())}})
	}
	return out
}

// NextWake is the earliest time a Tick has something to do; zero when
// nothing is scheduled.
func (m *Machine) NextWake() time.Time {
	var w time.Time
	earlier := func(t time.Time) {
		if w.IsZero() || t.Before(w) {
			w = t
		}
	}
	if !m.running {
		earlier(m.next)
	}
	if m.phase == PhaseInitial {
		earlier(m.start.Add(m.cfg.InitialPhase))
	}
	for _, n := range m.nodes {
		if n.discovered && !n.self && !n.probing {
			earlier(n.nextProbe)
		}
	}
	return w
}

func (m *Machine) enterRegular(why string, out *[]Action) {
	m.phase = PhaseRegular
	*out = append(*out, Log{Level: slog.LevelInfo, Msg: "discovery enters its regular phase", Attrs: []any{"why", why}})
}

func (m *Machine) backendDone(now time.Time, e BackendDone, out *[]Action) {
	if !m.running {
		return // no call was running: not an answer of ours
	}
	m.running = false
	m.calls++
	prev := m.last
	r := &result{started: m.runningSince, at: now}
	if e.Err != nil {
		r.err = clip(e.Err.Error())
		if prev == nil || prev.err != r.err {
			*out = append(*out, Log{Level: slog.LevelWarn, Msg: "discovery backend failed; retrying", Attrs: []any{"err", r.err, "retry_in", m.cfg.AfterErrorInterval.String()}})
		}
	} else {
		addrs := slices.Clone(e.Addrs)
		if len(addrs) > MaxNodes {
			addrs = addrs[:MaxNodes]
		}
		r.addrs = sortUnique(addrs)
		m.setDiscovered(now, r.addrs, out)
		if prev != nil && prev.err != "" {
			*out = append(*out, Log{Level: slog.LevelInfo, Msg: "discovery backend answers again", Attrs: []any{"nodes", len(r.addrs)}})
		}
	}
	switch {
	case r.err != "":
		r.retry = RetryAfterError
	case m.phase == PhaseInitial:
		r.retry = RetryInitial
	case !m.lastNodedown.IsZero() && now.Sub(m.lastNodedown) < m.cfg.AfterNodedownInterval:
		r.retry = RetryAfterNodedown
	default:
		r.retry = RetryRegular
	}
	m.last, m.retry = r, r.retry
	m.next = now.Add(m.cfg.interval(r.retry))
	if m.queued {
		m.queued = false
		m.next = now
	}
	m.prune(now)
}

// setDiscovered records a successful backend answer.
func (m *Machine) setDiscovered(now time.Time, addrs []Addr, out *[]Action) {
	in := make(map[Addr]bool, len(addrs))
	var added, gone []string
	for _, a := range addrs {
		in[a] = true
		n := m.nodes[a]
		if n == nil {
			n = &node{addr: a, nextProbe: now, self: slices.Contains(m.cfg.SelfAddrs, a)}
			if n.self {
				n.id = m.cfg.Self
			}
			m.nodes[a] = n
		}
		if !n.discovered {
			added = append(added, string(a))
			n.nextProbe = now
		}
		n.discovered, n.lastSeen = true, now
	}
	for _, a := range m.sortedAddrs() {
		if n := m.nodes[a]; n.discovered && !in[a] {
			n.discovered = false
			gone = append(gone, string(a))
		}
	}
	if len(added) > 0 || len(gone) > 0 {
		attrs := []any{"nodes", len(addrs)}
		if len(added) > 0 {
			attrs = append(attrs, "new", strings.Join(added, ","))
		}
		if len(gone) > 0 {
			attrs = append(attrs, "not_discovered", strings.Join(gone, ","))
		}
		*out = append(*out, Log{Level: slog.LevelInfo, Msg: "discovered nodes changed", Attrs: attrs})
	}
	targets := slices.DeleteFunc(slices.Clone(m.targets), func(a Addr) bool { return !in[a] })
	if len(targets) != len(m.targets) {
		for _, a := range m.targets {
			if !in[a] {
				m.nodes[a].target = false
			}
		}
		m.targets = targets
		*out = append(*out, TargetsChanged{Targets: slices.Clone(targets)})
	}
}

func (m *Machine) probeDone(now time.Time, e ProbeDone, out *[]Action) {
	n := m.nodes[e.Addr]
	if n == nil || !n.probing {
		return
	}
	n.probing, n.probed, n.lastProbe = false, true, now
	n.nextProbe = now.Add(m.cfg.ProbeInterval)
	if e.Err == nil {
		n.lastErr = ""
		if e.NodeID != "" {
			n.id = clip(e.NodeID)
		}
		if m.cfg.Self != "" && e.NodeID == m.cfg.Self {
			if !n.self {
				n.self, n.up = true, false
				*out = append(*out, Log{Level: slog.LevelInfo, Msg: "a discovered address is this node's", Attrs: []any{"addr", string(n.addr)}})
			}
			m.updateJoined(n)
			return
		}
		if !n.up {
			n.up = true
			attrs := []any{"addr", string(n.addr), "node", n.id}
			if !n.nodedown.IsZero() {
				attrs = append(attrs, "down_for", now.Sub(n.nodedown).String())
				// It came back (maybe at a new address, maybe restarted):
				// fresh backend data, as CETS does on nodeup.
				if m.running {
					m.queued = true
				} else {
					m.next = now
				}
				*out = append(*out, Log{Level: slog.LevelWarn, Msg: "discovered node is up again", Attrs: attrs})
			} else {
				*out = append(*out, Log{Level: slog.LevelInfo, Msg: "discovered node is up", Attrs: attrs})
			}
			n.nodeup = now
		}
		m.updateJoined(n)
		return
	}
	msg := clip(e.Err.Error())
	prevErr := n.lastErr
	n.lastErr = msg
	if n.up {
		n.up = false
		n.nodedown, m.lastNodedown = now, now
		*out = append(*out, Log{Level: slog.LevelWarn, Msg: "discovered node is down", Attrs: []any{"addr", string(n.addr), "node", n.id, "err", msg, "was_up_for", now.Sub(n.nodeup).String()}})
		if m.phase == PhaseRegular && m.last != nil && m.last.err == "" {
			// Fresh backend data soon: the node may come back elsewhere.
			// (A running call chooses after_nodedown itself.)
			if at := now.Add(m.cfg.AfterNodedownInterval); !m.running && at.Before(m.next) {
				m.next, m.retry = at, RetryAfterNodedown
			}
		}
		return
	}
	if msg != prevErr {
		*out = append(*out, Log{Level: slog.LevelWarn, Msg: "discovered node does not answer", Attrs: []any{"addr", string(n.addr), "err", msg}})
	}
}

func (m *Machine) observed(now time.Time, e Observed, out *[]Action) {
	m.member = e.Member
	m.members = slices.Clone(e.Members)
	for _, n := range m.nodes {
		m.updateJoined(n)
		if t, ok := e.Tried[n.addr]; ok {
			n.tried = t
		}
	}
	if e.Member && m.phase == PhaseInitial {
		m.enterRegular("this node is a member of a cluster", out)
	}
}

// updateJoined sets whether n's node is a member of this node's cluster.
func (m *Machine) updateJoined(n *node) {
	if n.self {
		n.joined = m.member
		return
	}
	n.joined = false
	for _, mb := range m.members {
		if mb.Addr == n.addr || n.id != "" && mb.ID == n.id {
			n.joined = true
			if n.id == "" {
				n.id = mb.ID
			}
			return
		}
	}
}

// handOver hands reachable discovered addresses to the join machinery
// one at a time: the next one only once the join machinery has tried
// every address handed before (CETS joins one node at a time). A member
// joins nothing.
func (m *Machine) handOver(now time.Time, out *[]Action) {
	if m.member {
		return
	}
	for _, a := range m.targets {
		if n := m.nodes[a]; n.tried.Before(n.handedAt) {
			return
		}
	}
	for _, a := range m.sortedAddrs() {
		n := m.nodes[a]
		if n.discovered && n.up && !n.self && !n.target {
			n.target, n.handedAt = true, now
			m.targets = append(m.targets, a)
			*out = append(*out, TargetsChanged{Targets: slices.Clone(m.targets)},
				Log{Level: slog.LevelInfo, Msg: "discovered node handed to the join", Attrs: []any{"addr", string(a), "node", n.id}})
			return
		}
	}
}

// prune forgets nodes that left the backend's answers long ago, and the
// oldest of them beyond 2×MaxNodes.
func (m *Machine) prune(now time.Time) {
	keep := func(n *node) bool { return n.discovered || n.joined || n.target || n.probing }
	for a, n := range m.nodes {
		if !keep(n) && now.Sub(n.lastSeen) >= forgetAfter {
			delete(m.nodes, a)
		}
	}
	if len(m.nodes) <= 2*MaxNodes {
		return
	}
	var old []*node
	for _, n := range m.nodes {
		if !keep(n) {
			old = append(old, n)
		}
	}
	slices.SortFunc(old, func(a, b *node) int { return a.lastSeen.Compare(b.lastSeen) })
	for _, n := range old[:min(len(old), len(m.nodes)-2*MaxNodes)] {
		delete(m.nodes, n.addr)
	}
}

func (m *Machine) sortedAddrs() []Addr {
	out := make([]Addr, 0, len(m.nodes))
	for a := range m.nodes {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (m *Machine) discovered() []Addr {
	var out []Addr
	for _, a := range m.sortedAddrs() {
		if m.nodes[a].discovered {
			out = append(out, a)
		}
	}
	return out
}

// missing lists what the initial discovery still waits for: a successful
// backend answer, then an answer from every discovered node, and every
// one that answered a member of this node's cluster (CETS's verify_ready).
func (m *Machine) missing() []string {
	var out []string
	switch {
	case m.last == nil && m.running:
		return []string{"discovery: the first backend call has not answered yet"}
	case m.last == nil:
		return []string{"discovery: the backend has not been called yet"}
	case m.last.err != "":
		return []string{"discovery: the last backend call failed: " + m.last.err}
	}
	for _, a := range m.sortedAddrs() {
		n := m.nodes[a]
		switch {
		case !n.discovered || n.self:
		case !n.probed:
			out = append(out, fmt.Sprintf("discovery: %s has not answered yet", a))
		case n.up && !n.joined:
			out = append(out, fmt.Sprintf("discovery: %s (%s) answers but is not a member of this node's cluster yet", a, n.id))
		}
	}
	return out
}

// Ready reports whether the initial discovery is done: once every
// discovered node answered, and every one that answered is a member. It
// stays done (a node added later does not make this node unready); until
// then, missing says what it waits for.
func (m *Machine) Ready() (ready bool, missing []string) {
	if m.initialDone {
		return true, nil
	}
	return false, m.missing()
}

// Targets are the addresses handed to the join machinery.
func (m *Machine) Targets() []Addr { return slices.Clone(m.targets) }

func clip(s string) string {
	if len(s) > maxErrLen {
		return s[:maxErrLen] + "..."
	}
	return s
}

// Status is the discovery's state for /status and `shoal discovery`.
type Status struct {
	// Backend is the --discovery value.
	Backend string `json:"backend"`
	Phase   Phase  `json:"phase"`
	// StartTime is when the node started.
	StartTime time.Time `json:"start_time"`
	// BackendRunning says whether a backend call is running, since when.
	BackendRunning bool       `json:"backend_running"`
	RunningSince   *time.Time `json:"running_since,omitempty"`
	// CheckQueued: another call follows the running one at once.
	CheckQueued bool `json:"check_queued,omitempty"`
	// BackendCalls counts the calls answered.
	BackendCalls uint64 `json:"backend_calls"`
	// LastResult is the last backend answer and the retry type chosen
	// after it.
	LastResult *Result `json:"last_result,omitempty"`
	// RetryType and NextCheck are those of the next backend call.
	RetryType RetryType  `json:"retry_type"`
	NextCheck *time.Time `json:"next_check,omitempty"`
	// Discovered are the addresses of the last successful answer; Joined
	// those whose node is a member of this node's cluster (this node's
	// own included); Unavailable the discovered ones that do not answer;
	// NotDiscovered the ones listed before and no longer (never removed
	// from the cluster for that).
	Discovered    []Addr        `json:"discovered"`
	Joined        []Addr        `json:"joined"`
	Unavailable   []Unavailable `json:"unavailable"`
	NotDiscovered []Addr        `json:"not_discovered"`
	// JoinTargets are the addresses handed to the join machinery.
	JoinTargets []Addr `json:"join_targets"`
	Nodes       []Node `json:"nodes"`
	// InitialDone is set once the initial discovery was done (Ready);
	// Missing says what it still waits for.
	InitialDone   bool       `json:"initial_done"`
	InitialDoneAt *time.Time `json:"initial_done_at,omitempty"`
	Missing       []string   `json:"missing,omitempty"`
}

// Result is one backend answer.
type Result struct {
	Started time.Time `json:"started"`
	At      time.Time `json:"at"`
	OK      bool      `json:"ok"`
	Nodes   []Addr    `json:"nodes,omitempty"`
	Error   string    `json:"error,omitempty"`
	// RetryType was chosen after this answer.
	RetryType RetryType `json:"retry_type"`
}

// Unavailable is a discovered address that does not answer.
type Unavailable struct {
	Addr  Addr   `json:"addr"`
	Error string `json:"error"`
}

// Node is one address the discovery knows.
type Node struct {
	Addr Addr `json:"addr"`
	// NodeID is the id its node answered with (or the member's there).
	NodeID     string `json:"node_id,omitempty"`
	Self       bool   `json:"self,omitempty"`
	Discovered bool   `json:"discovered"`
	Joined     bool   `json:"joined"`
	// Up: the last probe was answered.
	Up        bool       `json:"up"`
	Probing   bool       `json:"probing,omitempty"`
	LastProbe *time.Time `json:"last_probe,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	// Nodeup and Nodedown are when it last came up and went down.
	Nodeup     *time.Time `json:"nodeup,omitempty"`
	Nodedown   *time.Time `json:"nodedown,omitempty"`
	JoinTarget bool       `json:"join_target,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Status returns the machine's state.
func (m *Machine) Status() Status {
	st := Status{
		Phase: m.phase, StartTime: m.start, BackendRunning: m.running, CheckQueued: m.queued, BackendCalls: m.calls,
		RetryType: m.retry, Discovered: []Addr{}, Joined: []Addr{}, Unavailable: []Unavailable{}, NotDiscovered: []Addr{},
		JoinTargets: slices.Clone(m.targets), Nodes: []Node{}, InitialDone: m.initialDone, InitialDoneAt: timePtr(m.initialDoneAt),
	}
	if st.JoinTargets == nil {
		st.JoinTargets = []Addr{}
	}
	if m.running {
		st.RunningSince = timePtr(m.runningSince)
	} else {
		st.NextCheck = timePtr(m.next)
	}
	if r := m.last; r != nil {
		st.LastResult = &Result{Started: r.started, At: r.at, OK: r.err == "", Nodes: slices.Clone(r.addrs), Error: r.err, RetryType: r.retry}
	}
	for _, a := range m.sortedAddrs() {
		n := m.nodes[a]
		st.Nodes = append(st.Nodes, Node{
			Addr: a, NodeID: n.id, Self: n.self, Discovered: n.discovered, Joined: n.joined, Up: n.up, Probing: n.probing,
			LastProbe: timePtr(n.lastProbe), LastError: n.lastErr, Nodeup: timePtr(n.nodeup), Nodedown: timePtr(n.nodedown), JoinTarget: n.target,
		})
		switch {
		case n.discovered:
			st.Discovered = append(st.Discovered, a)
		default:
			st.NotDiscovered = append(st.NotDiscovered, a)
		}
		if n.joined {
			st.Joined = append(st.Joined, a)
		}
		if n.discovered && !n.self && n.probed && !n.up {
			st.Unavailable = append(st.Unavailable, Unavailable{Addr: a, Error: n.lastErr})
		}
	}
	_, st.Missing = m.Ready()
	return st
}
