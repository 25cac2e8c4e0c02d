package failover

import (
	"fmt"
	"slices"
	"strings"

	"shoal/internal/vbmap"
)

// Defaults of AutoConfig.
const (
	DefaultGraceTicks = 2
	DefaultStaleTicks = 2
)

// AutoConfig configures the automatic failover decision.
type AutoConfig struct {
	// Enabled: when false, a due failover is refused by the rule
	// "disabled" (and reported as such).
	Enabled bool
	// GraceTicks is how many ticks the down set must stay the same after
	// it was first seen before its nodes are failed over (Couchbase's
	// half_down → nearly_down → failover). Default DefaultGraceTicks.
	GraceTicks int
	// StaleTicks: a report that arrived more than this many ticks ago is
	// stale, and its reporter is not counted. Default DefaultStaleTicks.
	StaleTicks int
	// MaxCount is how many nodes may be failed over automatically before
	// an operator resets the count (Input.Count counts them).
	MaxCount int
}

// View is what one node reports at a tick: the nodes it hears nothing
// from, and its own health.
type View struct {
	// Inactive are the members it has heard nothing from (on replication
	// streams or heartbeats) for the inactivity window.
	Inactive []string
	// NotReady says its own readiness check failed (an engine not loaded,
	// the disk probe failing or stalled, shutting down); Why says which.
	NotReady bool
	Why      string
}

// Report is a View and the tick at which the deciding node received it.
type Report struct {
	View
	At uint64
}

// Input is what the deciding node (the metadata leader) knows at a tick.
type Input struct {
	Tick uint64
	// Self is the deciding node: its own view is always fresh.
	Self string
	// Members are the cluster's active members (failed ones excluded);
	// Voters those of them that vote in the metadata group.
	Members, Voters []string
	// Reports are the last report received from each member (Self's
	// included, at Tick).
	Reports map[string]Report
	// Count is the number of automatic failovers since the last reset.
	Count int
	// Rebalancing: a rebalance is running.
	Rebalancing bool
	// Map is the current vBucket map.
	Map *vbmap.Map
}

// Phase is where the down set stands.
type Phase string

// Phases of a down set, as Couchbase names them.
const (
	PhaseUp         Phase = "up"          // no node is down
	PhaseHalfDown   Phase = "half_down"   // first seen this tick
	PhaseNearlyDown Phase = "nearly_down" // seen, within the grace
	PhaseFailover   Phase = "failover"    // due: failed over, or refused
)

// Rules that refuse a due failover.
const (
	RuleDisabled  = "disabled"
	RuleNoQuorum  = "no_quorum"
	RuleLastNode  = "last_node"
	RuleRebalance = "rebalance"
	RuleMaxCount  = "max_count"
	RuleLastCopy  = "last_copy"
)

// Refusal says which rule stopped a due failover.
type Refusal struct {
	Rule   string
	Nodes  []string
	Detail string
}

// Down is one node of the down set and why it is down.
type Down struct {
	Node   string
	Reason string
}

// Decision is the outcome of a tick.
type Decision struct {
	// Down is the down set, sorted by node.
	Down []Down
	// Phase of the down set; Ticks how many ticks it has been the same.
	Phase Phase
	Ticks uint64
	// Failover are the nodes to fail over now, as one action; set once
	// per down set (see Auto.Retry).
	Failover []string
	// Refused is set while a due failover is refused; NewRefusal when
	// the refusal (its rule or detail) is new at this tick.
	Refused    *Refusal
	NewRefusal bool
	// Suspected are nodes some fresh reporters see inactive and others
	// active: a possible partition, which triggers nothing.
	Suspected map[string][]string // node -> the reporters that see it inactive
	// Stale are members whose last report is stale (not counted).
	Stale []string
	// Events are lines for the log: what changed at this tick.
	Events []string
}

// Auto decides automatic failovers from the members' reports, tick by
// tick. It holds the down set's counters; it is not safe for concurrent
// use. A new metadata leader starts a new Auto: its counters start again.
type Auto struct {
	cfg       AutoConfig
	down      []string // the down set of the last tick
	since     uint64   // the tick it was first seen
	issued    bool     // Failover was returned for this down set
	refused   string   // the last refusal's text, to log changes only
	suspected string   // the last suspicion's text, to log changes only
	stale     string
}

// NewAuto returns a decider with cfg (defaults filled in).
func NewAuto(cfg AutoConfig) *Auto {
	a := &Auto{}
	a.SetConfig(cfg)
	return a
}

// SetConfig changes the configuration (defaults filled in); the counters
// stay.
func (a *Auto) SetConfig(cfg AutoConfig) {
	if cfg.GraceTicks <= 0 {
		cfg.GraceTicks = DefaultGraceTicks
	}
	if cfg.StaleTicks <= 0 {
		cfg.StaleTicks = DefaultStaleTicks
	}
	a.cfg = cfg
}

// Retry lets the next due tick return Failover again for the same down
// set: the caller's failover of it failed.
func (a *Auto) Retry() { a.issued = false }

// Step decides at in.Tick.
func (a *Auto) Step(in Input) Decision {
	var d Decision
	members := slices.Sorted(slices.Values(in.Members))
	fresh := map[string]bool{}
	for _, m := range members {
		r, ok := in.Reports[m]
		if m == in.Self || ok && r.At+uint64(a.cfg.StaleTicks) >= in.Tick {
			fresh[m] = true
		} else {
			d.Stale = append(d.Stale, m)
		}
	}
	if s := strings.Join(d.Stale, ","); s != a.stale {
		if s != "" {
			d.Events = append(d.Events, fmt.Sprintf("stale reporters (no report for more than %d ticks): %s", a.cfg.StaleTicks, s))
		}
		a.stale = s
	}

	// The down set: a node every other fresh reporter hears nothing from,
	// or that reports itself not ready.
	for _, n := range members {
		if r, ok := in.Reports[n]; ok && fresh[n] && r.NotReady {
			d.Down = append(d.Down, Down{n, "reports itself not ready: " + r.Why})
			continue
		}
		var inactive, active []string
		for _, r := range members {
			if r == n || !fresh[r] {
				continue
			}
			if slices.Contains(in.Reports[r].Inactive, n) {
				inactive = append(inactive, r)
			} else {
				active = append(active, r)
			}
		}
		switch {
		case len(inactive) > 0 && len(active) == 0:
			d.Down = append(d.Down, Down{n, "inactive for every fresh reporter (" + strings.Join(inactive, ",") + ")"})
		case len(inactive) > 0:
			if d.Suspected == nil {
				d.Suspected = map[string][]string{}
			}
			d.Suspected[n] = inactive
		}
	}
	if s := suspicion(d.Suspected); s != a.suspected {
		if s != "" {
			d.Events = append(d.Events, "possible partition, nothing done: "+s)
		}
		a.suspected = s
	}

	nodes := make([]string, len(d.Down))
	for i, dn := range d.Down {
		nodes[i] = dn.Node
	}
	if !slices.Equal(nodes, a.down) {
		switch {
		case len(nodes) == 0:
			d.Events = append(d.Events, "down set empty: every member is up")
		default:
			var why []string
			for _, dn := range d.Down {
				why = append(why, dn.Node+": "+dn.Reason)
			}
			d.Events = append(d.Events, "down set "+strings.Join(nodes, ",")+" (half_down): "+strings.Join(why, "; "))
		}
		a.down, a.since, a.issued, a.refused = nodes, in.Tick, false, ""
	}
	if len(nodes) == 0 {
		d.Phase = PhaseUp
		return d
	}
	d.Ticks = in.Tick - a.since
	switch {
	case d.Ticks == 0:
		d.Phase = PhaseHalfDown
		return d
	case d.Ticks < uint64(a.cfg.GraceTicks):
		d.Phase = PhaseNearlyDown
		if d.Ticks == 1 {
			d.Events = append(d.Events, "down set "+strings.Join(nodes, ",")+" nearly_down")
		}
		return d
	}
	d.Phase = PhaseFailover
	if a.issued {
		return d
	}
	if ref := a.refusal(in, nodes, fresh); ref != nil {
		d.Refused = ref
		if s := ref.Rule + ref.Detail; s != a.refused {
			d.Events = append(d.Events, fmt.Sprintf("automatic failover of %s refused by rule %s: %s", strings.Join(nodes, ","), ref.Rule, ref.Detail))
			a.refused, d.NewRefusal = s, true
		}
		return d
	}
	a.issued, a.refused = true, ""
	d.Failover = nodes
	d.Events = append(d.Events, fmt.Sprintf("failing over %s: down for %d ticks", strings.Join(nodes, ","), d.Ticks))
	return d
}

// refusal applies the safety rules to a due failover of down.
func (a *Auto) refusal(in Input, down []string, fresh map[string]bool) *Refusal {
	ref := func(rule, format string, args ...any) *Refusal {
		return &Refusal{Rule: rule, Nodes: down, Detail: fmt.Sprintf(format, args...)}
	}
	if !a.cfg.Enabled {
		return ref(RuleDisabled, "automatic failover is disabled (shoal failover settings --enable)")
	}
	heard := 0
	for _, v := range in.Voters {
		if fresh[v] {
			heard++
		}
	}
	if need := len(in.Voters)/2 + 1; heard < need {
		return ref(RuleNoQuorum, "%d of %d voters report to this leader, %d needed", heard, len(in.Voters), need)
	}
	if len(in.Members)-len(down) < 1 {
		return ref(RuleLastNode, "no member would be left")
	}
	if in.Rebalancing {
		return ref(RuleRebalance, "a rebalance is running: stop it first")
	}
	if in.Count+len(down) > a.cfg.MaxCount {
		return ref(RuleMaxCount, "%d automatic failovers so far, %d more would pass max-count %d (shoal failover reset-count)", in.Count, len(down), a.cfg.MaxCount)
	}
	if in.Map != nil {
		var lost []uint16
		for vb := range in.Map.Len() {
			chain := in.Map.VBuckets[vb].Chain
			if len(chain) > 0 && !slices.ContainsFunc(chain, func(n string) bool { return !slices.Contains(down, n) }) {
				lost = append(lost, uint16(vb))
			}
		}
		if len(lost) > 0 {
			return ref(RuleLastCopy, "vbuckets %s would have no copy left", ranges(lost))
		}
	}
	return nil
}

// suspicion describes suspected nodes for the log, in a stable order.
func suspicion(s map[string][]string) string {
	var parts []string
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range s {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, n+" inactive for "+strings.Join(s[n], ",")+" only")
	}
	return strings.Join(parts, "; ")
}
