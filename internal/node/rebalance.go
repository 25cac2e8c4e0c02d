package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"shoal/internal/meta"
	"shoal/internal/rebalance"
	"shoal/internal/repl"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// A rebalance runs on the metadata leader (docs/design.md §18): the pure
// rebalance.Run decides, this file carries its actions out and feeds it
// what the nodes report. Every step of a move is a change of the
// committed map (OpMoves): a pending copy is a map entry, which the
// receiving node follows by streaming from the active; a freeze is a map
// flag, which the active follows by answering `not my vbucket` for the
// vBucket; the takeover is the map naming the new active. So the map is
// the whole truth of a rebalance: a leader that dies mid-move leaves a
// map that says what is under way, and the next leader clears it.

// RebalanceRequest is the body of OpRebalance.
type RebalanceRequest struct {
	// Action is "start", "stop" or "status".
	Action string `json:"action"`
	// Start: the nodes everything moves off (shoal remove), the moves at
	// once (0: the node's --rebalance-moves) and the byte rate (0: the
	// node's --rebalance-rate; -1: unlimited).
	Without []string `json:"without,omitempty"`
	Moves   int      `json:"moves,omitempty"`
	Rate    int64    `json:"rate,omitempty"`
}

// RebalanceStatus is the answer of OpRebalance and the "rebalance"
// section of /status: the leader's run, the last one once it ended.
type RebalanceStatus struct {
	// Leader is the node that answers for the rebalance (the metadata
	// leader).
	Leader string `json:"leader"`
	// Running: a run changes the map (running or stopping).
	Running bool `json:"running"`
	// Progress is the run's (the zero value before the first run).
	rebalance.Progress
	// MaxMoves and RateLimit (bytes/s, 0: unlimited) bound the run.
	MaxMoves  int   `json:"max_moves,omitempty"`
	RateLimit int64 `json:"rate_limit,omitempty"`
	// Without are the nodes the run moves everything off.
	Without []string `json:"without,omitempty"`
	// Started and Ended are when the run began and ended.
	Started time.Time  `json:"started,omitzero"`
	Ended   *time.Time `json:"ended,omitempty"`
	// Moves in flight.
	InFlight []MoveStatus `json:"in_flight,omitempty"`
	// MapMoving counts the vBuckets the committed map shows moving
	// (pending copies, freezes): 0 once a run has ended cleanly.
	MapMoving int `json:"map_moving"`
	// Revision is the committed map's revision as the leader answered.
	Revision uint64 `json:"revision"`
}

// MoveStatus is one move under way.
type MoveStatus struct {
	VBucket uint16          `json:"vbucket"`
	Phase   rebalance.Phase `json:"phase"`
	From    []string        `json:"from"`
	To      []string        `json:"to"`
}

// rebalancer is the node's rebalance: a run while this node leads one.
type rebalancer struct {
	mu      sync.Mutex
	run     *rebalance.Run
	status  RebalanceStatus // of the current or last run
	stopReq string          // a stop asked for, not yet given to the run
	again   string          // --auto-rebalance: why another run is due when this one ends
	// looping is set from a run's start until its loop has ended and
	// cleared what the map still showed moving: no other run starts,
	// nothing else clears the map meanwhile.
	looping bool
	// leftRev and leftSince: the revision of a map with moves that no run
	// of this node made, and since when this node has seen it
	// (clearLeftMoves).
	leftRev   uint64
	leftSince time.Time
}

// rebalancing reports whether a run of this node changes the map
// (automatic failover waits for it to stop).
func (n *Node) rebalancing() bool {
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	return n.rb.looping
}

// rebalanceRequest answers OpRebalance: on the leader it starts, stops
// or describes the run; another node forwards the request to the leader.
func (n *Node) rebalanceRequest(body []byte) ([]byte, error) {
	var req RebalanceRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: a rebalance request: %w", meta.ErrBadCommand, err)
	}
	if !n.inCluster() {
		return nil, fmt.Errorf("%w: this node is in no cluster", meta.ErrBadCommand)
	}
	// Another node forwards to the leader; while none is known (an
	// election) or the leader cannot be reached, it tries again for a few
	// seconds.
	deadline := time.Now().Add(5 * time.Second)
	for !n.cluster.meta.IsLeader() {
		var err error
		if _, addr := n.cluster.meta.Leader(); addr == "" {
			err = fmt.Errorf("%w: no metadata leader to run the rebalance", meta.ErrNoQuorum)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ans, ferr := n.cluster.peers.call(ctx, addr, wire.OpRebalance, body)
			cancel()
			if ferr == nil {
				return ans, nil
			}
			if !isStatus(ferr, wire.StatusNoQuorum) && !retryable(ferr) {
				return nil, peerToMeta(ferr)
			}
			err = peerToMeta(ferr)
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	var err error
	switch req.Action {
	case "start":
		err = n.startRebalance(req)
	case "stop":
		n.stopRebalance("stopped by an operator")
	case "status":
	default:
		return nil, fmt.Errorf("%w: unknown rebalance action %q (start, stop, status)", meta.ErrBadCommand, req.Action)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(n.rebalanceStatus())
}

// rebalanceStatus is the status of the current or last run.
func (n *Node) rebalanceStatus() RebalanceStatus {
	n.rb.mu.Lock()
	st := n.rb.status
	if r := n.rb.run; r != nil {
		st.Progress, st.Running = r.Progress(), n.rb.looping
		st.InFlight = nil
		for _, m := range r.InFlight() {
			st.InFlight = append(st.InFlight, MoveStatus{VBucket: m.VBucket, Phase: m.Phase, From: m.From, To: m.To})
		}
	}
	n.rb.mu.Unlock()
	st.Leader, _ = n.cluster.meta.Leader()
	if known := n.cluster.known(); known.Initialized() {
		st.MapMoving, st.Revision = known.Map.Moving(), known.Map.Revision
	}
	return st
}

// ErrRebalanceRunning refuses a start while a run is under way.
var errRebalanceRunning = errors.New("a rebalance is running: `shoal rebalance --status` shows it, `--stop` stops it")

// startRebalance plans a rebalance from the committed map and starts its
// run.
func (n *Node) startRebalance(req RebalanceRequest) error {
	st := n.cluster.meta.State()
	if !st.Initialized() {
		return fmt.Errorf("%w: the cluster is not initialized yet", meta.ErrNotInitialized)
	}
	if n.rebalancing() {
		return fmt.Errorf("%w: %w", meta.ErrRefused, errRebalanceRunning)
	}
	if m := st.Map.Moving(); m > 0 {
		return fmt.Errorf("%w: the map still shows %d vbuckets moving from an earlier run; they are being cleared, try again in a moment", meta.ErrRefused, m)
	}
	var nodes []vbmap.Node
	for _, id := range req.Without {
		if _, ok := st.Node(id); !ok {
			return fmt.Errorf("%w: %q", meta.ErrUnknownNode, id)
		}
	}
	for _, m := range st.Nodes {
		if m.State == meta.Active && !slices.Contains(req.Without, m.ID) {
			nodes = append(nodes, vbmap.Node{ID: m.ID, Zone: m.Zone})
		}
	}
	if len(nodes) == 0 {
		return fmt.Errorf("%w: no active member is left to hold the vbuckets", meta.ErrRefused)
	}
	plan, err := rebalance.Plan(st.Map, nodes, st.Replicas)
	if err != nil {
		return fmt.Errorf("%w: %w", meta.ErrRefused, err)
	}
	cfg := rebalance.Config{MaxMoves: req.Moves, Rate: req.Rate}
	if cfg.MaxMoves <= 0 {
		cfg.MaxMoves = n.cfg.RebalanceMoves
	}
	switch {
	case cfg.Rate == 0:
		cfg.Rate = int64(n.cfg.RebalanceRate)
	case cfg.Rate < 0:
		cfg.Rate = 0
	}
	run := rebalance.NewRun(plan, cfg)
	rb := &n.rb
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.looping {
		return fmt.Errorf("%w: %w", meta.ErrRefused, errRebalanceRunning)
	}
	rb.run, rb.stopReq, rb.looping = run, "", true
	rb.status = RebalanceStatus{MaxMoves: max(cfg.MaxMoves, 0), RateLimit: cfg.Rate, Without: req.Without, Started: time.Now()}
	n.log.Info("rebalance started", "revision", st.Map.Revision, "moves", len(plan.Moves), "copies", plan.Built,
		"takeovers", plan.Takeovers, "max_moves", cfg.MaxMoves, "rate", cfg.Rate, "without", req.Without)
	n.events.add("rebalance started", "", fmt.Sprintf("%d vbuckets to move (%d copies, %d takeovers)", len(plan.Moves), plan.Built, plan.Takeovers))
	go n.rebalanceLoop(run, st.Map.Revision)
	return nil
}

// autoRebalance starts a rebalance for --auto-rebalance (a node joined);
// while one runs, another is started when it ends.
func (n *Node) autoRebalance(why string) {
	err := n.startRebalance(RebalanceRequest{})
	switch {
	case errors.Is(err, errRebalanceRunning):
		n.rb.mu.Lock()
		n.rb.again = why
		n.rb.mu.Unlock()
		n.log.Info("automatic rebalance: one is running; another follows it", "why", why)
	case err != nil:
		n.log.Warn("automatic rebalance not started", "why", why, "err", err)
	default:
		n.log.Info("automatic rebalance started", "why", why)
	}
}

// stopRebalance asks the run to stop: no move starts any more, builds
// roll back, takeovers under way finish.
func (n *Node) stopRebalance(why string) {
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	if n.rb.run != nil && n.rb.run.Rebalancing() && n.rb.stopReq == "" {
		n.rb.stopReq = why
	}
}

// The rebalance loop's pace: a step every rebalanceTick, the moves'
// sources asked at each; a frozen active is reported frozen once
// freezeGrace passed since it applied the freeze (a request that passed
// the routing check just before is done by then).
const (
	rebalanceTick = 10 * time.Millisecond
	freezeGrace   = 10 * time.Millisecond
	pollTimeout   = time.Second
)

// rebalanceLoop carries run out until it ends: each step feeds it what
// the sources report and the nodes down, and commits its actions as one
// OpMoves. rev is the map revision the run was planned from.
func (n *Node) rebalanceLoop(run *rebalance.Run, rev uint64) {
	ctx, cancel := context.WithCancel(n.rep.ctx)
	defer cancel()
	start := time.Now()
	poller := &movePoller{n: n, conns: map[string]net.Conn{}, bytes: map[uint16]map[string]int64{}}
	defer poller.close()
	var obs []rebalance.Observation
	for {
		now := time.Since(start).Milliseconds()
		st := n.cluster.meta.State()
		var acts []rebalance.Action
		end := ""
		switch {
		case ctx.Err() != nil:
			end = "the node is shutting down"
		case !n.cluster.meta.IsLeader():
			end = "this node is no longer the metadata leader"
		case st.Map.Revision != rev:
			end = fmt.Sprintf("the map changed outside the rebalance (revision %d, the rebalance's %d): a failover or an operator", st.Map.Revision, rev)
		}
		silent := n.silentSet(st) // before rb.mu: the automatic failover holds its lock when it asks rebalancing()
		n.rb.mu.Lock()
		if end != "" {
			run.Abort(end) // its actions cannot be committed any more: the map is cleared instead
		} else {
			if why := n.rb.stopReq; why != "" {
				n.rb.stopReq = ""
				acts = append(acts, run.Stop(why)...)
			}
			obs = append(obs, downObservations(st, run, silent)...)
			acts = append(acts, run.Step(now, obs)...)
		}
		n.rb.mu.Unlock()
		obs = nil
		if edits, commits := movesEdits(st.Map, acts); len(edits) > 0 {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			idx, err := n.propose(pctx, &meta.Command{Op: meta.OpMoves, Time: time.Now().UnixMilli(), ExpectRevision: rev, Edits: edits})
			pcancel()
			if err != nil {
				n.rb.mu.Lock()
				run.Abort(fmt.Sprintf("the map could not be changed: %v", err))
				n.rb.mu.Unlock()
			} else {
				rev = idx
				for _, vb := range commits {
					obs = append(obs, rebalance.Observation{Kind: rebalance.ObsCommitted, VBucket: vb})
				}
			}
		}
		n.rb.mu.Lock()
		over := !run.Rebalancing()
		var flying []rebalance.InFlight
		if !over {
			flying = run.InFlight()
		}
		n.rb.mu.Unlock()
		if over {
			n.endRebalance(run)
			return
		}
		if len(obs) > 0 {
			continue // the commits' news first
		}
		obs = poller.poll(ctx, n.cluster.meta.State(), flying)
		select {
		case <-ctx.Done():
		case <-time.After(rebalanceTick):
		}
	}
}

// endRebalance records the end of run, clears what the map still shows
// moving and, after a run that completed, resets the count of automatic
// failovers (the cluster is whole again).
func (n *Node) endRebalance(run *rebalance.Run) {
	n.settleRun(run)
	n.rb.mu.Lock()
	n.rb.looping = false
	again := n.rb.again
	n.rb.again = ""
	n.rb.mu.Unlock()
	if again != "" {
		go n.autoRebalance(again)
	}
}

// settleRun is endRebalance's work before another run may start.
func (n *Node) settleRun(run *rebalance.Run) {
	n.rb.mu.Lock()
	p := run.Progress()
	now := time.Now()
	n.rb.status.Ended = &now
	n.rb.mu.Unlock()
	ctx, cancel := context.WithTimeout(n.rep.ctx, 10*time.Second)
	defer cancel()
	n.clearMoves(ctx)
	if p.State == rebalance.Done {
		n.log.Info("rebalance done", "vbuckets", p.Done, "bytes", p.Bytes, "elapsed", time.Duration(p.ElapsedMillis)*time.Millisecond)
		n.events.add("rebalance done", "", fmt.Sprintf("%d vbuckets moved, %d bytes, %v", p.Done, p.Bytes, time.Duration(p.ElapsedMillis)*time.Millisecond))
		if st := n.cluster.meta.State(); st.Failovers > 0 && n.cluster.meta.IsLeader() {
			if _, err := n.propose(ctx, &meta.Command{Op: meta.OpFailoverReset, Time: time.Now().UnixMilli()}); err != nil {
				n.log.Warn("cannot reset the count of automatic failovers after the rebalance", "err", err)
			}
		}
		return
	}
	n.log.Warn("rebalance stopped", "reason", p.Reason, "done", p.Done, "total", p.Total, "abandoned", p.Abandoned)
	n.events.add("rebalance stopped", "", fmt.Sprintf("%s (%d of %d vbuckets moved)", p.Reason, p.Done, p.Total))
}

// clearMoves commits, on the leader, a map without the pending copies
// and freezes the committed one shows (a run that ended, a leader that
// died mid-run): each frozen active takes writes again, each pending
// copy is dropped by its node.
func (n *Node) clearMoves(ctx context.Context) {
	for ctx.Err() == nil && n.cluster.meta.IsLeader() {
		st := n.cluster.meta.State()
		var edits []vbmap.Edit
		for vb, v := range st.Map.VBuckets {
			if v.Moving() {
				edits = append(edits, vbmap.Edit{VBucket: uint16(vb)})
			}
		}
		if len(edits) == 0 {
			return
		}
		_, err := n.propose(ctx, &meta.Command{Op: meta.OpMoves, Time: time.Now().UnixMilli(), ExpectRevision: st.Map.Revision, Edits: edits})
		if err == nil {
			n.log.Info("cleared the moves the map still showed", "vbuckets", len(edits))
			return
		}
		if !errors.Is(err, meta.ErrStaleMap) {
			n.log.Warn("cannot clear the moves the map still shows; the next leader tick tries again", "vbuckets", len(edits), "err", err)
			return
		}
	}
}

// clearLeftMoves is the leader's tick: a map that has shown moves for
// leftMovesAfter while no run of this node is under way (the leader that
// ran it is gone, or the run could not clear them) is cleared. The wait
// lets a leader that lost the leadership for a moment — it notices within
// a step and stops its run, clearing the map itself if it leads again —
// finish first: a run changes the map every few milliseconds, what a
// dead run left does not change.
func (n *Node) clearLeftMoves(ctx context.Context) {
	st := n.cluster.meta.State()
	if !n.cluster.meta.IsLeader() || !st.Initialized() || st.Map.Moving() == 0 {
		return
	}
	n.rb.mu.Lock()
	if n.rb.looping {
		n.rb.mu.Unlock()
		return
	}
	if n.rb.leftRev != st.Map.Revision {
		n.rb.leftRev, n.rb.leftSince = st.Map.Revision, time.Now()
	}
	if time.Since(n.rb.leftSince) < leftMovesAfter {
		n.rb.mu.Unlock()
		return
	}
	n.rb.looping = true // no run starts while the map is cleared
	n.rb.mu.Unlock()
	n.clearMoves(ctx)
	n.rb.mu.Lock()
	n.rb.looping = false
	n.rb.mu.Unlock()
}

// leftMovesAfter is how long a map's moves must stay unchanged, with no
// run of the leader's own, before the leader clears them.
const leftMovesAfter = 2 * time.Second

// silentSet returns the active members not heard within half the
// failover timeout. It takes the automatic failover's lock, whose tick
// takes rb.mu (rebalancing): it must not be called under rb.mu.
func (n *Node) silentSet(st *meta.State) map[string]bool {
	var members []string
	for _, m := range st.Nodes {
		if m.State == meta.Active {
			members = append(members, m.ID)
		}
	}
	now := time.Now()
	silent := map[string]bool{}
	for _, id := range n.silentMembers(now, n.heardTimes(now, members), n.failoverTimeout()/2) {
		silent[id] = true
	}
	return silent
}

// downObservations are the nodes of the run's moves that are down: not
// an active member any more, or silent (silentSet: not heard within half
// the failover timeout; the automatic failover waits for the run to
// stop).
func downObservations(st *meta.State, run *rebalance.Run, silent map[string]bool) []rebalance.Observation {
	var obs []rebalance.Observation
	seen := map[string]bool{}
	for _, m := range run.InFlight() {
		for _, id := range slices.Concat(m.From, m.To) {
			if seen[id] {
				continue
			}
			seen[id] = true
			mem, ok := st.Node(id)
			if !ok || mem.State != meta.Active || silent[id] {
				obs = append(obs, rebalance.Observation{Kind: rebalance.ObsNodeDown, Node: id})
			}
		}
	}
	return obs
}

// movesEdits turns a step's actions into edits of map m (one per
// vBucket, in vBucket order) and returns the vBuckets whose commit they
// hold. Drops are not edits: a node drops its copy once it applies a map
// that no longer names it.
func movesEdits(m *vbmap.Map, acts []rebalance.Action) ([]vbmap.Edit, []uint16) {
	byVB := map[uint16]*vbmap.Edit{}
	var commits []uint16
	for _, a := range acts {
		if int(a.VBucket) >= m.Len() || a.Kind == rebalance.Drop {
			continue
		}
		e := byVB[a.VBucket]
		if e == nil {
			v := m.VBuckets[a.VBucket]
			e = &vbmap.Edit{VBucket: a.VBucket, Pending: slices.Clone(v.Pending), Frozen: v.Frozen}
			byVB[a.VBucket] = e
		}
		switch a.Kind {
		case rebalance.Build:
			if !slices.Contains(e.Pending, a.Node) {
				e.Pending = append(e.Pending, a.Node)
			}
		case rebalance.Cancel:
			e.Pending = slices.DeleteFunc(e.Pending, func(id string) bool { return id == a.Node })
		case rebalance.Freeze:
			e.Frozen = true
		case rebalance.Thaw:
			e.Frozen = false
		case rebalance.Commit:
			e.Chain = slices.Clone(a.Chain)
			e.Pending = slices.DeleteFunc(e.Pending, func(id string) bool { return slices.Contains(a.Chain, id) })
			e.Frozen = false
			commits = append(commits, a.VBucket)
		}
	}
	out := make([]vbmap.Edit, 0, len(byVB))
	for _, e := range byVB {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b vbmap.Edit) int { return int(a.VBucket) - int(b.VBucket) })
	return out, commits
}

// movePoller asks the sources of the moves in flight what their copies
// hold (OpMoveStatus), on one connection per source kept between steps.
type movePoller struct {
	n     *Node
	conns map[string]net.Conn         // by address
	bytes map[uint16]map[string]int64 // the bytes last reported per move and copy
}

func (p *movePoller) close() {
	for _, c := range p.conns {
		c.Close()
	}
}

// poll returns the observations of the moves in flight: progress of
// their builds, the freeze and the drain of their takeovers.
func (p *movePoller) poll(ctx context.Context, st *meta.State, flying []rebalance.InFlight) []rebalance.Observation {
	bySource := map[string]map[uint16][]string{}
	moves := map[uint16]rebalance.InFlight{}
	for _, m := range flying {
		if m.Phase == rebalance.PhaseCommitting || len(m.From) == 0 {
			continue
		}
		want := slices.Clone(m.Build)
		if m.Takeover && !slices.Contains(want, m.To[0]) {
			want = append(want, m.To[0])
		}
		src := m.From[0]
		if bySource[src] == nil {
			bySource[src] = map[uint16][]string{}
		}
		bySource[src][m.VBucket] = want
		moves[m.VBucket] = m
	}
	var obs []rebalance.Observation
	for src, want := range bySource {
		mem, ok := st.Node(src)
		if !ok {
			continue
		}
		ans, err := p.ask(ctx, mem.Addr, want)
		if err != nil {
			p.n.log.Debug("rebalance: a source did not answer", "node", src, "err", err)
			continue
		}
		for vb, v := range ans.VBuckets {
			m, ok := moves[vb]
			if !ok {
				continue
			}
			obs = append(obs, p.observe(m, v)...)
		}
	}
	return obs
}

// observe turns a source's answer about move m into observations.
func (p *movePoller) observe(m rebalance.InFlight, v moveVBucket) []rebalance.Observation {
	var obs []rebalance.Observation
	if p.bytes[m.VBucket] == nil {
		p.bytes[m.VBucket] = map[string]int64{}
	}
	lagOf := func(c *repl.Copy) (uint64, bool) {
		if c == nil || len(c.Applied) != len(v.High) {
			return 0, false
		}
		var lag uint64
		for i, h := range v.High {
			if h > c.Applied[i] {
				lag = max(lag, h-c.Applied[i])
			}
		}
		return lag, c.Streaming || lag == 0
	}
	if m.Phase == rebalance.PhaseBuilding {
		for _, id := range m.Build {
			c := v.Copies[id]
			lag, ok := lagOf(c)
			if !ok {
				continue
			}
			last := p.bytes[m.VBucket][id]
			delta := c.Bytes - last
			if delta < 0 { // a new stream: its bytes count from 0
				delta = c.Bytes
			}
			p.bytes[m.VBucket][id] = c.Bytes
			obs = append(obs, rebalance.Observation{Kind: rebalance.ObsProgress, VBucket: m.VBucket, Node: id, Lag: lag, Bytes: delta})
		}
		return obs
	}
	if !v.Frozen {
		return nil
	}
	obs = append(obs, rebalance.Observation{Kind: rebalance.ObsFrozen, VBucket: m.VBucket, Node: m.From[0]})
	if lag, ok := lagOf(v.Copies[m.To[0]]); ok && lag == 0 {
		obs = append(obs, rebalance.Observation{Kind: rebalance.ObsDrained, VBucket: m.VBucket, Node: m.To[0]})
	}
	return obs
}

// ask sends one OpMoveStatus to the node at addr.
func (p *movePoller) ask(ctx context.Context, addr string, want map[uint16][]string) (*moveStatusAnswer, error) {
	body, err := json.Marshal(moveStatusRequest{VBuckets: want})
	if err != nil {
		return nil, err
	}
	conn := p.conns[addr]
	if conn == nil {
		dctx, cancel := context.WithTimeout(ctx, pollTimeout)
		conn, err = p.n.cluster.peers.dial(dctx, addr)
		cancel()
		if err != nil {
			return nil, err
		}
		p.conns[addr] = conn
	}
	conn.SetDeadline(time.Now().Add(pollTimeout))
	b, err := wire.RoundTrip(conn, wire.OpMoveStatus, 5, body, maxPeerAnswer)
	if err != nil {
		conn.Close()
		delete(p.conns, addr)
		return nil, err
	}
	var ans moveStatusAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return nil, fmt.Errorf("a move status from %s: %w", addr, err)
	}
	return &ans, nil
}

// moveStatusRequest is the body of OpMoveStatus: per vBucket, the nodes
// whose copies the leader asks about.
type moveStatusRequest struct {
	VBuckets map[uint16][]string `json:"vbuckets"`
}

// moveStatusAnswer is its answer.
type moveStatusAnswer struct {
	// Revision is the map the node serves by.
	Revision uint64                 `json:"revision"`
	Buckets  []string               `json:"buckets"`
	VBuckets map[uint16]moveVBucket `json:"vbuckets"`
}

// moveVBucket is what the active of a moving vBucket reports.
type moveVBucket struct {
	// Frozen: the node serves a map that froze the vBucket, and applied
	// it at least freezeGrace ago; its engines take no writes of it.
	Frozen bool `json:"frozen"`
	// High are its engines' high seqnos (the buckets' order).
	High []uint64 `json:"high"`
	// Copies are what the node's streams know of the copies asked about.
	Copies map[string]*repl.Copy `json:"copies"`
}

// maxMoveStatusBody bounds an OpMoveStatus request.
const maxMoveStatusBody = 64 << 10

// moveStatus answers OpMoveStatus (a peer request: the leader asks).
func (n *Node) moveStatus(dst, body []byte) ([]byte, wire.Status) {
	var req moveStatusRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return append(dst, "malformed MoveStatus: "+err.Error()...), wire.StatusBadRequest
	}
	t := n.servedTable()
	ans := moveStatusAnswer{Buckets: n.rep.producer.Buckets(), VBuckets: map[uint16]moveVBucket{}}
	if t == nil {
		return append(dst, "no vbucket map yet"...), wire.StatusNotMyVBucket
	}
	m := t.Map()
	ans.Revision = m.Revision
	graceOver := time.Since(time.Unix(0, n.routing.appliedAt.Load())) >= freezeGrace
	want := map[uint16][]string{}
	for vb, nodes := range req.VBuckets {
		if int(vb) < m.Len() {
			want[vb] = nodes
		}
	}
	copies := n.rep.producer.Copies(want)
	for vb := range want {
		v := moveVBucket{Copies: copies[vb], High: make([]uint64, len(n.rep.buckets))}
		v.Frozen = m.VBuckets[vb].Frozen && m.Active(vb) == n.cfg.NodeID && graceOver
		for i, b := range n.rep.buckets {
			v.High[i] = b.Engine.HighSeqno(vb)
		}
		ans.VBuckets[vb] = v
	}
	b, err := json.Marshal(ans)
	if err != nil {
		return append(dst, err.Error()...), wire.StatusInternal
	}
	return append(dst, b...), wire.StatusOK
}

// reportRebalance reports the rebalance for /metrics and stats.log.
func (n *Node) reportRebalance(f *stats.Fields) {
	st := n.rebalanceStatus()
	running := 0.0
	if st.Running {
		running = 1
	}
	f.Gauge("rebalance/running", "rebalance_running", "1 while a rebalance this node runs (as the metadata leader) changes the map.", running)
	f.Gauge("rebalance/vbuckets_to_move", "rebalance_vbuckets_to_move", "vBuckets the running or last rebalance of this node moves.", float64(st.Total))
	f.Gauge("rebalance/vbuckets_done", "rebalance_vbuckets_done", "vBuckets the running or last rebalance of this node moved.", float64(st.Done))
	f.Gauge("rebalance/vbuckets_moving", "rebalance_vbuckets_moving", "vBuckets being moved now.", float64(st.Moving))
	f.Gauge("rebalance/bytes", "rebalance_bytes", "Bytes streamed to the new copies by the running or last rebalance.", float64(st.Bytes))
	f.Gauge("rebalance/eta_seconds", "rebalance_eta_seconds", "Time the running rebalance still needs at its pace so far (-1: unknown).", float64(st.ETAMillis)/1000)
	f.Gauge("rebalance/map_moving", "rebalance_map_vbuckets_moving", "vBuckets the committed map shows moving (pending copies, freezes).", float64(st.MapMoving))
}
