package rebalance

import (
	"fmt"
	"slices"
	"strings"
)

// Config bounds a rebalance run.
type Config struct {
	// MaxMoves is how many vBuckets move at once (--rebalance-moves; 0:
	// DefaultMaxMoves).
	MaxMoves int
	// Rate is the bandwidth of the builds in bytes per second
	// (--rebalance-rate; 0: unlimited). No move starts while the bytes
	// reported exceed what the rate allowed so far, and each build is
	// given its share (Action.Rate) to pace its stream.
	Rate int64
	// CatchUp is the lag, in seqnos, under which a pending copy is close
	// enough for the takeover (0: DefaultCatchUp).
	CatchUp uint64
	// BuildTimeout is how long, in milliseconds, a build may report no
	// progress before its move is abandoned (0: DefaultBuildTimeout).
	BuildTimeout int64
	// DrainTimeout is how long, in milliseconds, a takeover may wait for
	// the new active to hold everything the old one had once it stopped
	// taking writes (0: DefaultDrainTimeout). Past it the old active is
	// revived and the move abandoned: writes pause at most that long.
	DrainTimeout int64
}

// Defaults of Config.
const (
	DefaultMaxMoves     = 4
	DefaultCatchUp      = 1000
	DefaultBuildTimeout = 30_000
	DefaultDrainTimeout = 5_000
)

func (c Config) withDefaults() Config {
	if c.MaxMoves <= 0 {
		c.MaxMoves = DefaultMaxMoves
	}
	if c.CatchUp == 0 {
		c.CatchUp = DefaultCatchUp
	}
	if c.BuildTimeout <= 0 {
		c.BuildTimeout = DefaultBuildTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// ActionKind is what an Action asks a node to do.
type ActionKind string

// The actions of a rebalance.
const (
	// Build: Node starts a pending copy of VBucket, streamed from Source
	// (backfill, then live), and reports its lag (ObsProgress). The copy
	// takes no client writes.
	Build ActionKind = "build"
	// Cancel: Node drops its pending copy of VBucket (a move rolled back).
	Cancel ActionKind = "cancel"
	// Freeze: Node, VBucket's active, stops taking writes for it
	// (requests answered not my vbucket, state dead for writes) and
	// reports its high seqnos (ObsFrozen). The node carries the actions
	// out as map changes, so a leader that vanishes leaves a map its
	// successor clears: a vBucket is never left without an active.
	Freeze ActionKind = "freeze"
	// Thaw: Node takes writes for VBucket again (a takeover rolled back).
	Thaw ActionKind = "thaw"
	// Commit: the leader proposes the map in which VBucket's chain is
	// Chain (the epoch raised when the active changes) and reports the
	// outcome (ObsCommitted or ObsCommitFailed).
	Commit ActionKind = "commit"
	// Drop: Node drops its copy of VBucket, which the committed map no
	// longer gives it.
	Drop ActionKind = "drop"
)

// Action is one thing the node running the rebalance must make happen.
type Action struct {
	// Kind is what to do, for VBucket.
	Kind    ActionKind
	VBucket uint16
	// Node is the node that acts (for Commit: none, the leader).
	Node string
	// Source is the node a Build streams from.
	Source string
	// Chain is a Commit's chain.
	Chain []string
	// Rate is a Build's share of Config.Rate (bytes/s; 0: unlimited).
	Rate int64
}

// String is the action for logs and scenario tests.
func (a Action) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s vb=%d", a.Kind, a.VBucket)
	if a.Node != "" {
		fmt.Fprintf(&b, " node=%s", a.Node)
	}
	if a.Source != "" {
		fmt.Fprintf(&b, " from=%s", a.Source)
	}
	if a.Chain != nil {
		fmt.Fprintf(&b, " chain=%s", strings.Join(a.Chain, ","))
	}
	if a.Rate > 0 {
		fmt.Fprintf(&b, " rate=%d", a.Rate)
	}
	return b.String()
}

// ObsKind is what an Observation reports.
type ObsKind string

// The observations a rebalance run is fed.
const (
	// ObsProgress: Node's pending copy of VBucket is Lag seqnos behind
	// its source and Bytes more bytes arrived since the last report.
	ObsProgress ObsKind = "progress"
	// ObsFrozen: Node (VBucket's old active) no longer takes writes for
	// it.
	ObsFrozen ObsKind = "frozen"
	// ObsDrained: Node (VBucket's new active) holds everything the frozen
	// old active had.
	ObsDrained ObsKind = "drained"
	// ObsCommitted: the map with the move's chain for VBucket committed.
	ObsCommitted ObsKind = "committed"
	// ObsCommitFailed: it did not (another map came first, no leader):
	// nothing of the move is in the map. A node that cannot tell (its
	// proposal's outcome is unknown) reads the map and reports one of
	// the two.
	ObsCommitFailed ObsKind = "commit-failed"
	// ObsFailed: an action on Node failed (Why); the move is abandoned.
	ObsFailed ObsKind = "failed"
	// ObsNodeDown: Node is unreachable or was failed over.
	ObsNodeDown ObsKind = "node-down"
)

// Observation is what the node running the rebalance saw.
type Observation struct {
	// Kind is what is reported, about VBucket's move and Node.
	Kind    ObsKind
	VBucket uint16
	Node    string
	// Lag is a pending copy's lag in seqnos, Bytes the bytes it received
	// since its last report (ObsProgress).
	Lag   uint64
	Bytes int64
	// Why says what failed (ObsFailed, ObsCommitFailed).
	Why string
}

// RunState is where a rebalance run is.
type RunState string

// Run states.
const (
	// Running: moves start and proceed.
	Running RunState = "running"
	// Stopping: no move starts; moves still building roll back, takeovers
	// and commits under way finish.
	Stopping RunState = "stopping"
	// Stopped: stopped before the end (Progress.Reason says why); the
	// map is consistent and a new Plan continues from it.
	Stopped RunState = "stopped"
	// Done: every move committed.
	Done RunState = "done"
)

// Progress is a rebalance run's progress.
type Progress struct {
	State RunState `json:"state"`
	// Reason says why a run stopped ("" for an operator's stop and while
	// running).
	Reason string `json:"reason,omitempty"`
	// Total moves of the plan; Done committed; Moving in flight;
	// Abandoned rolled back.
	Total     int `json:"total"`
	Done      int `json:"done"`
	Moving    int `json:"moving"`
	Abandoned int `json:"abandoned"`
	// Bytes streamed into pending copies.
	Bytes int64 `json:"bytes"`
	// Rate is the bytes per second since the start, VBucketsPerSec the
	// moves done per second; ETAMillis the time left at that pace (-1:
	// unknown yet).
	Rate           float64 `json:"rate_bytes_per_s"`
	VBucketsPerSec float64 `json:"vbuckets_per_s"`
	ETAMillis      int64   `json:"eta_ms"`
	// ElapsedMillis since the start.
	ElapsedMillis int64 `json:"elapsed_ms"`
}

// phase is where one move is.
type phase uint8

const (
	queued phase = iota
	building
	freezing // Freeze sent, waiting for ObsFrozen
	draining // frozen, waiting for ObsDrained
	committing
	finished
	abandoned
)

type move struct {
	Move
	phase  phase
	lag    map[string]uint64 // build node -> last lag reported (absent: none yet)
	since  int64             // when the phase began or progress was last seen
	frozen bool              // Freeze was sent (a rollback thaws)
}

// Run is one rebalance: a pure state machine fed with the time and what
// the node observed, returning what it must do. Not safe for concurrent
// use. It assumes every node named by the moves is up when it starts.
type Run struct {
	cfg     Config
	moves   []*move
	byVB    map[uint16]*move
	next    int // first queued move
	state   RunState
	reason  string
	start   int64
	now     int64
	started bool
	bytes   int64
	done    int
	down    map[string]bool // nodes reported down: sent nothing more
}

// NewRun returns the run of plan's moves.
func NewRun(plan Result, cfg Config) *Run {
	r := &Run{cfg: cfg.withDefaults(), byVB: map[uint16]*move{}, state: Running, down: map[string]bool{}}
	for _, mv := range plan.Moves {
		m := &move{Move: mv}
		r.moves = append(r.moves, m)
		r.byVB[mv.VBucket] = m
	}
	if len(r.moves) == 0 {
		r.state = Done
	}
	return r
}

// Stop stops the run (shoal rebalance --stop, a failover to come): no
// move starts any more, those building roll back, takeovers under way
// finish. The actions are those of the rollback.
func (r *Run) Stop(reason string) []Action {
	if r.state != Running {
		return nil
	}
	r.state, r.reason = Stopping, reason
	var acts []Action
	for _, m := range r.moves {
		if m.phase == building {
			acts = append(acts, r.abandon(m)...)
		}
	}
	r.settle()
	return r.reachable(acts)
}

// reachable drops the actions for nodes down: the map change that ends
// the run undoes their pending copies and freezes, and a node that comes
// back follows the committed map.
func (r *Run) reachable(acts []Action) []Action {
	return slices.DeleteFunc(acts, func(a Action) bool { return a.Node != "" && r.down[a.Node] })
}

// Abort ends the run at once, for a node that is no longer the raft
// leader (it cannot commit): moves building roll back, takeovers frozen
// but not yet committing are thawed; a move whose commit was proposed is
// left to the map — its outcome is unknown here, and a thaw arriving
// before the old active applied a committed map would let two nodes take
// writes (the old active's freeze ends with the map that commits or
// clears it). The run is then stopped; a new leader plans again from the
// committed map.
func (r *Run) Abort(reason string) []Action {
	if r.state != Running && r.state != Stopping {
		return nil
	}
	var acts []Action
	for _, m := range r.moves {
		switch m.phase {
		case building, freezing, draining:
			acts = append(acts, r.abandon(m)...)
		case committing:
			m.phase, m.frozen = abandoned, false
		}
	}
	r.state, r.reason = Stopped, reason
	return r.reachable(acts)
}

// Rebalancing reports whether the run still changes the map (running or
// stopping): automatic failover waits for it to stop.
func (r *Run) Rebalancing() bool { return r.state == Running || r.state == Stopping }

// Step feeds the run the time now (milliseconds, from any origin, never
// going back) and the observations since the last step, and returns the
// actions to take, in order.
func (r *Run) Step(now int64, obs []Observation) []Action {
	if !r.started {
		r.started, r.start = true, now
	}
	r.now = max(r.now, now)
	var acts []Action
	for _, o := range obs {
		acts = append(acts, r.observe(o)...)
	}
	if r.state == Running || r.state == Stopping {
		acts = append(acts, r.timeouts()...)
		acts = append(acts, r.advance()...)
	}
	if r.state == Running {
		acts = append(acts, r.startMoves()...)
	}
	r.settle()
	return r.reachable(acts)
}

func (r *Run) observe(o Observation) []Action {
	if o.Kind == ObsNodeDown {
		return r.nodeDown(o.Node)
	}
	m := r.byVB[o.VBucket]
	if m == nil || m.phase == queued || m.phase == finished || m.phase == abandoned {
		return nil // late news of a move that is over, or none
	}
	switch o.Kind {
	case ObsProgress:
		if m.phase == building && slices.Contains(m.Build, o.Node) {
			if o.Bytes > 0 {
				r.bytes += o.Bytes
			}
			if old, ok := m.lag[o.Node]; !ok || o.Lag < old || o.Bytes > 0 {
				m.since = r.now
			}
			m.lag[o.Node] = o.Lag
		}
	case ObsFrozen:
		if m.phase == freezing && o.Node == m.From[0] {
			m.phase, m.since = draining, r.now
		}
	case ObsDrained:
		// Drained implies frozen: a report of both in the wrong order
		// still counts.
		if (m.phase == draining || m.phase == freezing) && o.Node == m.To[0] {
			return r.commit(m)
		}
	case ObsCommitted:
		if m.phase == committing {
			m.phase = finished
			r.done++
			var acts []Action
			for _, n := range m.Drop {
				acts = append(acts, Action{Kind: Drop, VBucket: m.VBucket, Node: n})
			}
			return acts
		}
	case ObsCommitFailed:
		if m.phase == committing {
			r.fail(fmt.Sprintf("the map moving vbucket %d did not commit: %s", m.VBucket, o.Why))
			return r.abandon(m)
		}
	case ObsFailed:
		r.fail(fmt.Sprintf("moving vbucket %d: %s failed: %s", m.VBucket, o.Node, o.Why))
		return r.abandon(m)
	}
	return nil
}

// nodeDown abandons the moves that need node and stops the run.
func (r *Run) nodeDown(node string) []Action {
	r.down[node] = true
	var acts []Action
	hit := false
	role := "a node of the remaining moves"
	for _, m := range r.moves {
		if m.phase != finished && m.phase != abandoned && len(m.From) > 0 && m.From[0] == node {
			role = "a source (automatic failover decides)"
		}
	}
	for _, m := range r.moves {
		if m.phase == queued || m.phase == finished || m.phase == abandoned {
			continue
		}
		needs := slices.Contains(m.Build, node) || (len(m.From) > 0 && m.From[0] == node) || (m.Takeover && m.To[0] == node)
		if !needs {
			continue
		}
		hit = true
		if m.phase == committing {
			continue // the commit decides: the map is consistent either way
		}
		acts = append(acts, r.abandonWithout(m, node)...)
	}
	if hit || r.involves(node) {
		r.fail(fmt.Sprintf("node %s is down, %s", node, role))
		for _, m := range r.moves {
			if m.phase == building {
				acts = append(acts, r.abandon(m)...)
			}
		}
	}
	return acts
}

// involves reports whether node has a part in a move not over.
func (r *Run) involves(node string) bool {
	for _, m := range r.moves {
		if m.phase == finished || m.phase == abandoned {
			continue
		}
		if slices.Contains(m.From, node) || slices.Contains(m.To, node) {
			return true
		}
	}
	return false
}

// fail stops the run for reason (the first reason is kept).
func (r *Run) fail(reason string) {
	if r.state == Running || (r.state == Stopping && r.reason == "") {
		r.state, r.reason = Stopping, reason
	}
}

// abandon rolls move m back: the old active takes writes again, the
// pending copies go.
func (r *Run) abandon(m *move) []Action { return r.abandonWithout(m, "") }

// abandonWithout is abandon, sending nothing to node down.
func (r *Run) abandonWithout(m *move, down string) []Action {
	var acts []Action
	if m.frozen && m.From[0] != down {
		acts = append(acts, Action{Kind: Thaw, VBucket: m.VBucket, Node: m.From[0]})
	}
	for _, n := range m.Build {
		if n != down {
			acts = append(acts, Action{Kind: Cancel, VBucket: m.VBucket, Node: n})
		}
	}
	m.phase = abandoned
	m.frozen = false
	return acts
}

// timeouts abandons builds without progress and takeovers that did not
// drain in time.
func (r *Run) timeouts() []Action {
	var acts []Action
	for _, m := range r.moves {
		switch {
		case m.phase == building && r.now-m.since > r.cfg.BuildTimeout:
			r.fail(fmt.Sprintf("the copy of vbucket %d made no progress for %d ms", m.VBucket, r.now-m.since))
			acts = append(acts, r.abandon(m)...)
		case (m.phase == freezing || m.phase == draining) && r.now-m.since > r.cfg.DrainTimeout:
			r.fail(fmt.Sprintf("the takeover of vbucket %d did not drain within %d ms", m.VBucket, r.cfg.DrainTimeout))
			acts = append(acts, r.abandon(m)...)
		}
	}
	return acts
}

// advance moves the builds that caught up on to their takeover or
// commit.
func (r *Run) advance() []Action {
	var acts []Action
	for _, m := range r.moves {
		if m.phase != building || !r.caughtUp(m) {
			continue
		}
		if m.Takeover && len(m.From) > 0 {
			m.phase, m.since, m.frozen = freezing, r.now, true
			acts = append(acts, Action{Kind: Freeze, VBucket: m.VBucket, Node: m.From[0]})
			continue
		}
		acts = append(acts, r.commit(m)...)
	}
	return acts
}

func (r *Run) caughtUp(m *move) bool {
	for _, n := range m.Build {
		lag, ok := m.lag[n]
		if !ok || lag > r.cfg.CatchUp {
			return false
		}
	}
	return true
}

func (r *Run) commit(m *move) []Action {
	m.phase = committing
	return []Action{{Kind: Commit, VBucket: m.VBucket, Chain: slices.Clone(m.To)}}
}

// startMoves starts queued moves while fewer than MaxMoves are in flight
// and the byte budget allows.
func (r *Run) startMoves() []Action {
	var acts []Action
	for r.next < len(r.moves) && r.inFlight() < r.cfg.MaxMoves && r.budget() {
		m := r.moves[r.next]
		r.next++
		m.phase, m.since, m.lag = building, r.now, map[string]uint64{}
		if len(m.Build) == 0 {
			// Nothing to copy: a replica promoted, or copies only dropped.
			acts = append(acts, r.advanceOne(m)...)
			continue
		}
		share := int64(0)
		if r.cfg.Rate > 0 {
			share = max(1, r.cfg.Rate/int64(r.cfg.MaxMoves))
		}
		src := ""
		if len(m.From) > 0 {
			src = m.From[0]
		}
		for _, n := range m.Build {
			acts = append(acts, Action{Kind: Build, VBucket: m.VBucket, Node: n, Source: src, Rate: share})
		}
		if src == "" {
			// No copy left to stream from: the new copies start empty.
			for _, n := range m.Build {
				m.lag[n] = 0
			}
		}
	}
	return acts
}

func (r *Run) advanceOne(m *move) []Action {
	if m.Takeover && len(m.From) > 0 {
		m.phase, m.since, m.frozen = freezing, r.now, true
		return []Action{{Kind: Freeze, VBucket: m.VBucket, Node: m.From[0]}}
	}
	return r.commit(m)
}

// budget reports whether the bytes so far are within the rate.
func (r *Run) budget() bool {
	if r.cfg.Rate <= 0 {
		return true
	}
	return r.bytes*1000 <= r.cfg.Rate*(r.now-r.start)+r.cfg.Rate
}

func (r *Run) inFlight() int {
	n := 0
	for _, m := range r.moves {
		if m.phase != queued && m.phase != finished && m.phase != abandoned {
			n++
		}
	}
	return n
}

// settle ends a run whose moves are all over, or that is stopping and
// has none in flight.
func (r *Run) settle() {
	if r.state != Running && r.state != Stopping {
		return
	}
	if r.inFlight() > 0 {
		return
	}
	switch {
	case r.state == Stopping:
		r.state = Stopped
	case r.next == len(r.moves) && r.done == len(r.moves):
		r.state = Done
	case r.next == len(r.moves):
		r.state = Stopped
		if r.reason == "" {
			r.reason = "some moves were abandoned"
		}
	}
}

// Progress returns the run's progress.
func (r *Run) Progress() Progress {
	p := Progress{State: r.state, Reason: r.reason, Total: len(r.moves), Done: r.done, Moving: r.inFlight(), Bytes: r.bytes, ETAMillis: -1}
	for _, m := range r.moves {
		if m.phase == abandoned {
			p.Abandoned++
		}
	}
	p.ElapsedMillis = r.now - r.start
	if p.ElapsedMillis > 0 {
		secs := float64(p.ElapsedMillis) / 1000
		p.Rate = float64(r.bytes) / secs
		p.VBucketsPerSec = float64(r.done) / secs
		if r.done > 0 {
			p.ETAMillis = int64(float64(p.Total-p.Done-p.Abandoned) / p.VBucketsPerSec * 1000)
		}
	}
	if r.state == Done {
		p.ETAMillis = 0
	}
	return p
}

// Phase names where a move under way is (InFlight).
type Phase string

// The phases of a move under way.
const (
	PhaseBuilding   Phase = "building"   // its new copies are streamed
	PhaseFreezing   Phase = "freezing"   // Freeze sent to the old active
	PhaseDraining   Phase = "draining"   // the old active is frozen
	PhaseCommitting Phase = "committing" // its chain was proposed
)

// InFlight is one move under way and its phase.
type InFlight struct {
	Move
	Phase Phase
}

// InFlight returns the moves under way, in the order they started: the
// node observes their copies (ObsProgress, ObsFrozen, ObsDrained).
func (r *Run) InFlight() []InFlight {
	var out []InFlight
	for _, m := range r.moves[:r.next] {
		var ph Phase
		switch m.phase {
		case building:
			ph = PhaseBuilding
		case freezing:
			ph = PhaseFreezing
		case draining:
			ph = PhaseDraining
		case committing:
			ph = PhaseCommitting
		default:
			continue
		}
		out = append(out, InFlight{Move: m.Move, Phase: ph})
	}
	return out
}
