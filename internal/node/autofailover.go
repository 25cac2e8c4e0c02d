package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"shoal/internal/failover"
	"shoal/internal/meta"
	"shoal/internal/server"
	"shoal/internal/stats"
	"shoal/internal/wire"
)

// Automatic failover (issue 12). Every tick (the failover timeout / 10)
// each member sends a heartbeat to every other active member, carrying
// its view: the members it has heard nothing from — no heartbeat and no
// replication frame — for half the failover timeout, and whether its own
// readiness checks fail. The metadata leader keeps the last view of each
// member, tagged with the tick it arrived at, and runs failover.Auto over
// them; when it decides, it runs the manual failover's plan and raft
// command for the down nodes (marked automatic: they count towards
// max-count).

// maxFailoverEvents bounds the recent failovers and refusals kept for
// /status.
const maxFailoverEvents = 20

// FailoverEvent is one automatic failover or refusal, for /status.
type FailoverEvent struct {
	At    time.Time `json:"at"`
	Nodes []string  `json:"nodes"`
	// Kind is "failover", "refused" or "failed" (the failover's command
	// did not commit).
	Kind   string `json:"kind"`
	Rule   string `json:"rule,omitempty"`
	Detail string `json:"detail"`
	// SilentMillis is how long the first down node had not been heard
	// when the failover was decided; DecisionMillis from the down set's
	// first sighting to the decision; CommitMillis the failover itself
	// (the seqno round, the lease wait, the raft commit).
	SilentMillis   int64 `json:"silent_ms,omitempty"`
	DecisionMillis int64 `json:"decision_ms,omitempty"`
	CommitMillis   int64 `json:"commit_ms,omitempty"`
}

// AutoFailoverStatus is the automatic failover's part of the cluster
// document.
type AutoFailoverStatus struct {
	Enabled   bool  `json:"enabled"`
	TimeoutMs int64 `json:"timeout_ms"`
	TickMs    int64 `json:"tick_ms"`
	MaxCount  int   `json:"max_count"`
	Count     int   `json:"count"`
	// Deciding is set on the metadata leader, which decides; the fields
	// below are its view.
	Deciding  bool                `json:"deciding"`
	Phase     string              `json:"phase,omitempty"`
	Down      []failover.Down     `json:"down,omitempty"`
	Refused   *failover.Refusal   `json:"refused,omitempty"`
	Suspected map[string][]string `json:"suspected,omitempty"`
	Stale     []string            `json:"stale,omitempty"`
	// Heard is, per member, how long ago this node last heard from it
	// (heartbeats and replication), in milliseconds.
	Heard  map[string]int64 `json:"heard_ms_ago,omitempty"`
	Recent []FailoverEvent  `json:"recent,omitempty"`
}

// autoFailover is the node's part of the automatic failover.
type autoFailover struct {
	mu       sync.Mutex
	tick     uint64
	heard    map[string]time.Time // per member: the last heartbeat received or answered
	seen     map[string]time.Time // per member: when this node first counted it (a member never heard is silent from then)
	reports  map[string]failover.Report
	decider  *failover.Auto // while this node is the leader
	last     failover.Decision
	downAt   time.Time // when the down set was first seen
	running  bool      // a failover is being committed
	recent   []FailoverEvent
	senders  map[string]*heartbeatSender // by member id
	refusals map[string]uint64           // by rule
	// done counts the failovers this node committed, by reason
	// ("manual", "unreachable", "not_ready").
	done           map[string]uint64
	leaderless     time.Time // since when no leader is known (zero: one is)
	leaderlessSaid bool      // the log said so for this stretch
}

// tickOf is the automatic failover's tick for a failover timeout.
func tickOf(timeout time.Duration) time.Duration { return max(timeout/10, 20*time.Millisecond) }

// autoFailoverLoop runs the heartbeats and, on the leader, the decision.
func (n *Node) autoFailoverLoop(ctx context.Context) {
	a := &n.auto
	defer func() {
		a.mu.Lock()
		senders := a.senders
		a.senders = nil
		a.mu.Unlock()
		for _, s := range senders { // not under a.mu: a sender takes it
			s.stop()
		}
	}()
	for {
		timeout := n.failoverTimeout()
		select {
		case <-ctx.Done():
			return
		case <-time.After(tickOf(timeout)):
		}
		n.autoTick(ctx, time.Now(), timeout)
		n.clearLeftMoves(ctx)
	}
}

// autoTick is one tick of the automatic failover.
func (n *Node) autoTick(ctx context.Context, now time.Time, timeout time.Duration) {
	st := n.cluster.known()
	if !st.Initialized() {
		return
	}
	n.noteDurabilitySetting(st.Settings.Durability)
	a := &n.auto
	var members, voters []string
	addrs := map[string]string{}
	for _, m := range st.Nodes {
		if m.State == meta.Active {
			members = append(members, m.ID)
			addrs[m.ID] = m.Addr
			if m.Voter {
				voters = append(voters, m.ID)
			}
		}
	}
	timeout = n.failoverTimeout() // the settings may have changed since the tick was scheduled
	view := n.autoView(now, members, timeout/2)
	var rev uint64
	if t := n.servedTable(); t != nil {
		rev = t.Map().Revision
	}
	hb := server.AppendHeartbeat(nil, server.Heartbeat{From: n.cfg.NodeID, NotReady: view.NotReady, Why: view.Why, Inactive: view.Inactive, Revision: rev})

	var stopped []*heartbeatSender
	defer func() { // after a.mu is released: a sender takes it
		for _, s := range stopped {
			s.stop()
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tick++
	switch _, leader := n.cluster.meta.Leader(); {
	case leader != "":
		a.leaderless, a.leaderlessSaid = time.Time{}, false
	case a.leaderless.IsZero():
		a.leaderless = now
	case !a.leaderlessSaid && now.Sub(a.leaderless) > timeout:
		a.leaderlessSaid = true
		n.log.Warn("automatic failover cannot decide: no metadata leader (no quorum of voters reachable); nothing is failed over", "for", now.Sub(a.leaderless).Round(time.Millisecond))
	}
	stopped = n.syncSenders(ctx, addrs)
	for _, s := range a.senders {
		s.send(hb)
	}
	if !n.cluster.meta.IsLeader() || len(members) < 2 {
		a.decider, a.reports, a.last = nil, nil, failover.Decision{}
		return
	}
	cfg := failover.AutoConfig{Enabled: !st.Settings.AutoFailoverOff, MaxCount: st.Settings.MaxFailovers}
	if a.decider == nil {
		a.decider = failover.NewAuto(cfg)
		a.reports = map[string]failover.Report{}
		n.log.Info("automatic failover: this node decides (metadata leader)", "timeout", timeout, "tick", tickOf(timeout), "max_count", cfg.MaxCount, "enabled", cfg.Enabled)
	}
	a.decider.SetConfig(cfg)
	a.reports[n.cfg.NodeID] = failover.Report{View: view, At: a.tick}
	d := a.decider.Step(failover.Input{
		Tick: a.tick, Self: n.cfg.NodeID, Members: members, Voters: voters,
		Reports: a.reports, Count: st.Failovers, Map: st.Map, Rebalancing: n.rebalancing(),
	})
	if d.Phase == failover.PhaseHalfDown {
		a.downAt = now
	}
	a.last = d
	for _, e := range d.Events {
		if d.Refused != nil || len(d.Failover) > 0 || strings.HasPrefix(e, "possible partition") {
			n.log.Warn("automatic failover: "+e, "tick", a.tick)
		} else {
			n.log.Info("automatic failover: "+e, "tick", a.tick)
		}
	}
	if d.NewRefusal {
		if a.refusals == nil {
			a.refusals = map[string]uint64{}
		}
		a.refusals[d.Refused.Rule]++
		a.record(FailoverEvent{At: now, Nodes: d.Refused.Nodes, Kind: "refused", Rule: d.Refused.Rule, Detail: d.Refused.Detail})
		if d.Refused.Rule != failover.RuleDisabled { // off by choice: not an event for the console
			n.events.add("failover refused", strings.Join(d.Refused.Nodes, ","), "automatic, rule "+d.Refused.Rule+": "+d.Refused.Detail)
		}
	}
	if len(d.Failover) == 0 || a.running {
		if len(d.Failover) > 0 {
			a.decider.Retry() // one at a time: decided again once the running one ends
		}
		return
	}
	targets := slices.DeleteFunc(slices.Clone(d.Failover), func(id string) bool { return id == n.cfg.NodeID })
	if len(targets) < len(d.Failover) {
		n.log.Warn("automatic failover: this node (the leader) is down by its own report and cannot fail itself over", "why", view.Why)
	}
	if len(targets) == 0 {
		return
	}
	var silent time.Duration
	if h, ok := a.heard[targets[0]]; ok {
		silent = now.Sub(h)
	}
	why := make([]string, 0, len(d.Down))
	for _, dn := range d.Down {
		why = append(why, dn.Node+": "+dn.Reason)
	}
	ev := FailoverEvent{At: now, Nodes: targets, Kind: "failover", Detail: strings.Join(why, "; "),
		SilentMillis: silent.Milliseconds(), DecisionMillis: now.Sub(a.downAt).Milliseconds()}
	a.running = true
	go n.runAutoFailover(targets, ev)
}

// runAutoFailover fails targets over one after the other (each its own
// plan and raft command, marked automatic) and records the outcome.
func (n *Node) runAutoFailover(targets []string, ev FailoverEvent) {
	a := &n.auto
	start := time.Now()
	var failed []string
	for _, id := range targets {
		res, err := n.failoverNode(id, false, true)
		if err != nil {
			failed = append(failed, id)
			n.log.Error("automatic failover did not commit", "node", id, "err", err)
			continue
		}
		n.log.Warn("automatic failover committed", "node", id, "revision", res.Revision, "promoted", res.Promoted,
			"silent_ms", ev.SilentMillis, "decision_ms", ev.DecisionMillis, "commit_ms", time.Since(start).Milliseconds())
		n.hist.failover.Observe(time.Since(start))
		n.hist.detection.Observe(time.Duration(ev.DecisionMillis) * time.Millisecond)
		n.events.add("failover", id, fmt.Sprintf("automatic (%s): revision %d: %d vBuckets promoted; %s", ev.Detail, res.Revision, res.Promoted, res.Note))
	}
	ev.CommitMillis = time.Since(start).Milliseconds()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.running = false
	if a.done == nil {
		a.done = map[string]uint64{}
	}
	reason := "unreachable"
	if strings.Contains(ev.Detail, "not ready") {
		reason = "not_ready"
	}
	a.done[reason] += uint64(len(targets) - len(failed))
	if len(failed) > 0 {
		ev.Kind, ev.Nodes = "failed", failed
		if a.decider != nil {
			a.decider.Retry()
		}
	}
	a.record(ev)
}

// record keeps ev among the recent events. a.mu is held.
func (a *autoFailover) record(ev FailoverEvent) {
	a.recent = append(a.recent, ev)
	if len(a.recent) > maxFailoverEvents {
		a.recent = slices.Delete(a.recent, 0, len(a.recent)-maxFailoverEvents)
	}
}

// autoView is this node's view: the members it has heard nothing from
// (heartbeats, replication frames) for window, and its readiness.
func (n *Node) autoView(now time.Time, members []string, window time.Duration) failover.View {
	var v failover.View
	heard := n.heardTimes(now, members)
	v.Inactive = n.silentMembers(now, heard, window)
	var failed []string
	for _, c := range n.readiness(now) {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Detail)
		}
	}
	// A node fenced for longer than a lease serves none of its actives and
	// may well stay so (it can send but not receive: a one-way partition);
	// it asks to be failed over.
	if d, why := n.fencedFor(now); d > 2*window {
		failed = append(failed, fmt.Sprintf("fenced for %v: %s", d.Round(time.Millisecond), why))
	}
	if len(failed) > 0 {
		v.NotReady, v.Why = true, strings.Join(failed, "; ")
	}
	return v
}

// heardTimes returns, per member, when it was last heard by heartbeat
// (when this node first counted it, for a member never heard).
func (n *Node) heardTimes(now time.Time, members []string) map[string]time.Time {
	n.auto.mu.Lock()
	defer n.auto.mu.Unlock()
	if n.auto.seen == nil {
		n.auto.seen = map[string]time.Time{}
	}
	heard := make(map[string]time.Time, len(members))
	for _, m := range members {
		if _, ok := n.auto.seen[m]; !ok {
			n.auto.seen[m] = now
		}
		heard[m] = n.auto.heard[m]
		if heard[m].IsZero() {
			heard[m] = n.auto.seen[m]
		}
	}
	return heard
}

// silentMembers returns the members of heard (but this node) heard from
// neither by heartbeat (heard) nor by replication frames for window,
// sorted.
func (n *Node) silentMembers(now time.Time, heard map[string]time.Time, window time.Duration) []string {
	var out []string
	for m, last := range heard {
		if m == n.cfg.NodeID {
			continue
		}
		if s := n.rep.spy.LastHeard(m); s.After(last) {
			last = s
		}
		if now.Sub(last) > window {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// heard records that member id was heard now (a heartbeat received or
// answered).
func (a *autoFailover) heardFrom(id string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.heard == nil {
		a.heard = map[string]time.Time{}
	}
	if now.After(a.heard[id]) {
		a.heard[id] = now
	}
}

// receiveHeartbeat records a member's heartbeat; the leader keeps its view.
func (n *Node) receiveHeartbeat(hb server.Heartbeat) {
	a := &n.auto
	a.heardFrom(hb.From, time.Now())
	if t := n.servedTable(); t != nil && hb.Revision > t.Map().Revision {
		n.peerAhead(hb.From, hb.Revision)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reports != nil {
		a.reports[hb.From] = failover.Report{View: failover.View{Inactive: hb.Inactive, NotReady: hb.NotReady, Why: hb.Why}, At: a.tick}
	}
}

// syncSenders keeps one heartbeat sender per other active member and
// returns those it took out, for the caller to stop once it has released
// a.mu (held here).
func (n *Node) syncSenders(ctx context.Context, addrs map[string]string) (stopped []*heartbeatSender) {
	a := &n.auto
	if a.senders == nil {
		a.senders = map[string]*heartbeatSender{}
	}
	for id, s := range a.senders {
		if addrs[id] != s.addr {
			stopped = append(stopped, s)
			delete(a.senders, id)
		}
	}
	for id, addr := range addrs {
		if id == n.cfg.NodeID || a.senders[id] != nil {
			continue
		}
		s := &heartbeatSender{n: n, id: id, addr: addr, next: make(chan []byte, 1), done: make(chan struct{})}
		sctx, cancel := context.WithCancel(ctx)
		s.cancel = cancel
		a.senders[id] = s
		go s.run(sctx)
	}
	return stopped
}

// heartbeatSender sends the heartbeats to one member over one kept
// connection, the latest body first: a slow member gets fewer, never a
// backlog.
type heartbeatSender struct {
	n      *Node
	id     string
	addr   string
	next   chan []byte
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *heartbeatSender) send(body []byte) {
	select {
	case s.next <- body:
	default:
		select { // replace the one waiting
		case <-s.next:
		default:
		}
		select {
		case s.next <- body:
		default:
		}
	}
}

func (s *heartbeatSender) stop() {
	s.cancel()
	<-s.done
}

func (s *heartbeatSender) run(ctx context.Context) {
	defer close(s.done)
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	var lastErr string
	for {
		var body []byte
		select {
		case <-ctx.Done():
			return
		case body = <-s.next:
		}
		timeout := 5 * tickOf(s.n.failoverTimeout())
		if conn == nil {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			c, err := s.n.cluster.peers.dial(dctx, s.addr)
			cancel()
			if err != nil {
				if msg := err.Error(); msg != lastErr {
					lastErr = msg
					s.n.log.Debug("heartbeat: cannot reach a member", "node", s.id, "addr", s.addr, "err", err)
				}
				continue
			}
			conn = c
		}
		conn.SetDeadline(time.Now().Add(timeout))
		if _, err := wire.RoundTrip(conn, wire.OpHeartbeat, 4, body, 1024); err != nil {
			conn.Close()
			conn = nil
			continue
		}
		lastErr = ""
		s.n.auto.heardFrom(s.id, time.Now())
	}
}

// autoStatus is the automatic failover's status for the cluster document.
func (n *Node) autoStatus(st *meta.State) *AutoFailoverStatus {
	timeout := n.failoverTimeout()
	out := &AutoFailoverStatus{Enabled: !st.Settings.AutoFailoverOff, TimeoutMs: timeout.Milliseconds(),
		TickMs: tickOf(timeout).Milliseconds(), MaxCount: st.Settings.MaxFailovers, Count: st.Failovers}
	a := &n.auto
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for id, h := range a.heard {
		if out.Heard == nil {
			out.Heard = map[string]int64{}
		}
		out.Heard[id] = now.Sub(h).Milliseconds()
	}
	out.Recent = slices.Clone(a.recent)
	if a.decider != nil {
		d := a.last
		out.Deciding, out.Phase, out.Down, out.Refused, out.Suspected, out.Stale = true, string(d.Phase), d.Down, d.Refused, d.Suspected, d.Stale
	}
	return out
}

// FailoverSettingsChange is the body of OpFailoverSettings: the fields
// given are changed.
type FailoverSettingsChange struct {
	Enabled    *bool  `json:"enabled,omitempty"`
	MaxCount   *int   `json:"max_count,omitempty"`
	TimeoutMs  *int64 `json:"timeout_ms,omitempty"`
	ResetCount bool   `json:"reset_count,omitempty"`
	// Durability is the default durability of kv writes (none or
	// majority; docs/design.md §19).
	Durability *string `json:"durability,omitempty"`
}

// minFailoverTimeout is the shortest failover timeout settable at run
// time: it must also exceed twice the raft election timeout.
const minFailoverTimeout = 500 * time.Millisecond

// failoverSettings applies an operator's change and returns the settings.
func (n *Node) failoverSettings(body []byte) (*AutoFailoverStatus, error) {
	var ch FailoverSettingsChange
	if len(body) > 0 {
		if err := json.Unmarshal(body, &ch); err != nil {
			return nil, fmt.Errorf("%w: failover settings: %w", meta.ErrBadCommand, err)
		}
	}
	st := n.cluster.known()
	if !st.Initialized() {
		return nil, fmt.Errorf("%w: this node is not in a cluster yet", meta.ErrNotInitialized)
	}
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	set := st.Settings
	changed := false
	if ch.Enabled != nil {
		set.AutoFailoverOff, changed = !*ch.Enabled, true
	}
	if ch.MaxCount != nil {
		if *ch.MaxCount < 0 || *ch.MaxCount > 100 {
			return nil, fmt.Errorf("%w: max-count %d: want 0..100", meta.ErrBadCommand, *ch.MaxCount)
		}
		set.MaxFailovers, changed = *ch.MaxCount, true
	}
	if ch.TimeoutMs != nil {
		if d := time.Duration(*ch.TimeoutMs) * time.Millisecond; d < minFailoverTimeout || d > time.Hour {
			return nil, fmt.Errorf("%w: timeout %v: want %v..1h (and at least twice the raft election timeout)", meta.ErrBadCommand, d, minFailoverTimeout)
		}
		set.FailoverTimeoutMillis, changed = *ch.TimeoutMs, true
	}
	if ch.Durability != nil {
		if d, err := wire.ParseDurability(*ch.Durability); err != nil || d == wire.DurabilityPersistMajority {
			return nil, fmt.Errorf("%w: default durability %q: want none or majority (kv cannot honour persist-majority)", meta.ErrBadCommand, *ch.Durability)
		}
		set.Durability, changed = *ch.Durability, true
	}
	if changed {
		if _, err := n.propose(ctx, &meta.Command{Op: meta.OpSettings, Settings: &set}); err != nil {
			return nil, err
		}
		n.log.Warn("automatic failover settings changed", "enabled", !set.AutoFailoverOff, "max_count", set.MaxFailovers, "timeout_ms", set.FailoverTimeoutMillis)
	}
	if ch.ResetCount {
		if _, err := n.propose(ctx, &meta.Command{Op: meta.OpFailoverReset}); err != nil {
			return nil, err
		}
		n.log.Warn("automatic failover count reset", "was", st.Failovers)
	}
	return n.autoStatus(n.cluster.known()), nil
}

// reportAutoFailover adds the automatic failover's counters to the stats.
func (n *Node) reportAutoFailover(f *stats.Fields) {
	a := &n.auto
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, reason := range []string{"manual", "unreachable", "not_ready"} {
		f.Counter("failover/"+reason, "failovers_total", "Failovers this node committed: by an operator (manual) or automatically, by the reason the node was down.", float64(a.done[reason]), "reason", reason)
	}
	for _, rule := range []string{failover.RuleDisabled, failover.RuleNoQuorum, failover.RuleLastNode, failover.RuleRebalance, failover.RuleMaxCount, failover.RuleLastCopy} {
		f.Counter("failover/refused_"+rule, "failover_refusals_total", "Automatic failovers refused, by the rule that refused them (counted once per refusal, not per tick).", float64(a.refusals[rule]), "rule", rule)
	}
}

// countManual counts a failover an operator asked this node for.
func (a *autoFailover) countManual() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		a.done = map[string]uint64{}
	}
	a.done["manual"]++
}
