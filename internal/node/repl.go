package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/auth"
	"shoal/internal/catalog"
	"shoal/internal/engine"
	"shoal/internal/liveness"
	"shoal/internal/repl"
	"shoal/internal/server"
	"shoal/internal/stats"
	"shoal/internal/wire"
)

// Replication roles, as /status reports them.
const (
	roleActive  = "active"
	roleReplica = "replica"
)

// Files under DATA/repl besides the failover logs.
const (
	// promotedFile marks a node promoted from standby to active: it then
	// refuses to start as a standby (its data has moved on from the old
	// active's).
	promotedFile = "promoted"
	// probeFile is written and fsynced by the disk readiness probe.
	probeFile = "disk-probe"
)

// replication is the node's replication and liveness: the failover logs
// of its engines, the producer serving replicas, a standby's replicators,
// the traffic spy and the liveness monitor.
type replication struct {
	dir      string // DATA/repl
	buckets  []repl.Bucket
	producer *repl.Producer
	ctx      context.Context // of the producer's streams; ends at shutdown
	stop     context.CancelFunc
	serving  atomic.Int64  // stream connections being served
	drained  chan struct{} // closed once the served streams have ended
	spy      *liveness.Spy
	monMu    sync.Mutex        // serialises the monitor: ticks and status views
	monitor  *liveness.Monitor // under monMu
	checks   []liveness.Check  // the last tick's readiness checks, under monMu
	probe    diskProbe

	mu           sync.Mutex
	role         string
	replicaOf    string
	promotedFrom string
	reps         []*repl.Replicator // a standby's, one per bucket
}

// setupRepl opens the failover logs, serves replication streams and the
// replication requests, and prepares a standby's replicators (started by
// Run).
func (n *Node) setupRepl() error {
	dir := filepath.Join(n.cfg.Data, "repl")
	rp := &replication{dir: dir, spy: liveness.NewSpy(), role: roleActive, probe: diskProbe{path: filepath.Join(dir, probeFile)}}
	log := n.log.With("part", "repl")
	for _, b := range []struct {
		name string
		e    engine.Engine
	}{{"kv", n.kv}, {"queue", n.queue}, {"log", n.logStore}} {
		logs, err := repl.OpenLogs(repl.LogsConfig{Path: filepath.Join(dir, "failover-"+b.name), VBuckets: n.cfg.VBuckets, Logger: log.With("bucket", b.name)}, b.e.HighSeqno)
		if err != nil {
			return err
		}
		rp.buckets = append(rp.buckets, repl.Bucket{Name: b.name, Engine: b.e, Logs: logs})
	}
	var err error
	rp.producer, err = repl.NewProducer(repl.ProducerConfig{Name: n.cfg.NodeID, Buckets: rp.buckets, Spy: rp.spy, Logger: log})
	if err != nil {
		return err
	}
	rp.ctx, rp.stop = context.WithCancel(context.Background())
	n.srv.HandleTakeover(wire.OpStreamOpen, func(nc net.Conn, h wire.Header, body []byte) {
		rp.serving.Add(1)
		defer rp.serving.Add(-1)
		rp.producer.Serve(rp.ctx, nc, h, body)
	})
	n.srv.HandleReplication(replAdmin{n})
	rp.monitor = liveness.NewMonitor(liveness.Config{Self: n.cfg.NodeID, Tick: time.Duration(n.cfg.LivenessTick)}, rp.spy)
	n.stats.Add(stats.SourceFunc(n.reportRepl))
	n.OnShutdown(n.saveFailoverLogs)
	n.rep = rp
	if n.cfg.ReplicaOf != "" {
		return n.setupStandby(log)
	}
	return nil
}

// setupStandby makes the node a standby replica of cfg.ReplicaOf: one
// Replicator per engine over every vBucket, writes refused.
func (n *Node) setupStandby(log *slog.Logger) error {
	rp := n.rep
	if _, err := os.Stat(filepath.Join(rp.dir, promotedFile)); err == nil {
		return fmt.Errorf("this node was promoted from standby to active (%s exists): start it without --replica-of, or delete that file to make it a replica again (its data is then replaced by the active's)",
			filepath.Join(rp.dir, promotedFile))
	}
	var secret []byte
	if n.cfg.ReplicaUser != "" {
		var err error
		if secret, err = auth.LoadSecret(n.cfg.ReplicaSecretFile); err != nil {
			return fmt.Errorf("replica-secret-file: %w", err)
		}
	}
	hook, err := repl.ApplyFailpoint(os.Getenv(repl.FailpointsEnv))
	if err != nil {
		return err
	}
	if hook != nil {
		log.Warn("test failpoint armed", "env", repl.FailpointsEnv, "value", os.Getenv(repl.FailpointsEnv))
	}
	vbs := make([]uint16, n.cfg.VBuckets)
	for i := range vbs {
		vbs[i] = uint16(i)
	}
	for _, b := range rp.buckets {
		r, err := repl.New(repl.Config{
			Name: n.cfg.NodeID, Addr: n.cfg.ReplicaOf, Bucket: b.Name, Engine: cataloged{b.Engine, n.cat}, Logs: b.Logs, VBuckets: vbs,
			Options: repl.Options{
				Connections:  n.cfg.ReplicaConnections,
				NoopInterval: time.Duration(n.cfg.ReplicaNoopInterval),
				IdleTimeout:  time.Duration(n.cfg.ReplicaIdleTimeout),
			},
			Handshake: repl.Handshake(n.cfg.NodeID, n.cfg.ReplicaUser, secret, n.cfg.VBuckets),
			Spy:       rp.spy,
			ApplyHook: hook,
			Logger:    n.log.With("part", "repl"),
		})
		if err != nil {
			return err
		}
		rp.reps = append(rp.reps, r)
	}
	rp.role, rp.replicaOf = roleReplica, n.cfg.ReplicaOf
	n.srv.SetOwnership(standbyOf(n.cfg.ReplicaOf))
	return nil
}

// cataloged is an engine whose replicated writes claim their channel in
// the node's catalog, as writes on the data port do, so that the
// standby's readers find the replicated channels.
type cataloged struct {
	engine.Engine
	cat *catalog.Catalog
}

// Apply implements engine.Engine.
func (c cataloged) Apply(m *engine.Mutation) error {
	if m.Op != engine.OpRemoveChannel {
		if _, kind, ok := c.cat.Lookup([]byte(m.Channel)); !ok || kind != c.Kind() {
			if _, err := c.cat.Claim([]byte(m.Channel), c.Kind()); err != nil {
				return fmt.Errorf("cannot apply to channel %q: %w", m.Channel, err)
			}
		}
	}
	return c.Engine.Apply(m)
}

// standbyOf is the ownership of a standby: active for no vBucket, the
// node at its address is.
type standbyOf string

// Active implements server.Ownership.
func (a standbyOf) Active(uint16) (bool, string) { return false, string(a) }

// startRepl starts a standby's replicators, the liveness monitor and the
// disk probe; they stop with ctx (and stopRepl).
func (n *Node) startRepl(ctx context.Context, wg *sync.WaitGroup) {
	rp := n.rep
	rp.mu.Lock()
	for _, r := range rp.reps {
		r.Start()
	}
	rp.mu.Unlock()
	rp.probe.run()
	wg.Add(2)
	go func() { defer wg.Done(); n.livenessLoop(ctx) }()
	go func() { defer wg.Done(); n.probeLoop(ctx) }()
}

// Bounds of the drain of the served streams at shutdown.
const (
	clientsGoneTimeout = 10 * time.Second
	drainTimeout       = 2 * time.Second
)

// stopRepl stops the replicators, then, in the background while the data
// port shuts down, ends the replication streams it serves: once every
// client connection is gone (every acknowledged write is in the engines)
// and the streams have been handed the engines' latest mutations, so that
// replicas hold everything and resume after the restart.
func (n *Node) stopRepl() {
	rp := n.rep
	rp.mu.Lock()
	for _, r := range rp.reps {
		r.Stop()
	}
	rp.mu.Unlock()
	rp.drained = make(chan struct{})
	go func() {
		defer close(rp.drained)
		defer rp.stop()
		deadline := time.Now().Add(clientsGoneTimeout)
		for n.srv.NumConnections() > rp.serving.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		if err := rp.producer.Drain(ctx); err != nil {
			n.log.Warn("replication streams not drained before shutdown: their replicas catch up (or roll back) after the restart", "err", err)
		}
	}()
}

// saveFailoverLogs records a clean shutdown in the failover logs, once
// nothing writes to the engines any more.
func (n *Node) saveFailoverLogs(context.Context) {
	<-n.rep.drained
	for _, b := range n.rep.buckets {
		if err := b.Logs.SaveClean(b.Engine.HighSeqno); err != nil {
			n.log.Error("cannot save the failover logs: consumers will roll back after the restart", "bucket", b.Name, "err", err)
		}
	}
}

// promote turns a standby into an active node: replication stops, every
// vBucket of every engine starts a new history at its high seqno, the kv
// engine expires records again, and writes are accepted.
func (n *Node) promote() error {
	rp := n.rep
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.role != roleReplica {
		return server.ErrNotStandby
	}
	for _, r := range rp.reps {
		r.Stop()
	}
	for _, b := range rp.buckets {
		if err := b.Logs.BranchAll(b.Engine.HighSeqno); err != nil {
			return err
		}
	}
	for vb := range n.cfg.VBuckets {
		n.kv.SetActive(uint16(vb))
	}
	marker := fmt.Sprintf("promoted at %s; was a replica of %s\n", time.Now().UTC().Format(time.RFC3339), rp.replicaOf)
	if err := os.WriteFile(filepath.Join(rp.dir, promotedFile), []byte(marker), 0o644); err != nil {
		return fmt.Errorf("cannot write %s: %w", promotedFile, err)
	}
	n.srv.SetOwnership(nil)
	rp.role, rp.promotedFrom, rp.replicaOf, rp.reps = roleActive, rp.replicaOf, "", nil
	n.log.Warn("promoted: this node is now active and accepts writes", "was_replica_of", rp.replicaOf)
	return nil
}

// replica runs `shoal replica stop|start|set`.
func (n *Node) replica(action uint8, s server.ReplicaSettings) error {
	rp := n.rep
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.role != roleReplica {
		return server.ErrNotStandby
	}
	for _, r := range rp.reps {
		switch action {
		case server.ReplicaStop:
			r.Stop()
		case server.ReplicaStart:
			r.Start()
		case server.ReplicaSet:
			o := r.Options()
			if s.Connections > 0 {
				o.Connections = s.Connections
			}
			if s.NoopInterval > 0 {
				o.NoopInterval = s.NoopInterval
			}
			if s.IdleTimeout > 0 {
				o.IdleTimeout = s.IdleTimeout
			}
			if err := r.Set(o); err != nil {
				return fmt.Errorf("%w: %w", server.ErrBadSettings, err)
			}
		}
	}
	return nil
}

// replAdmin serves the replication requests of the data port
// (server.Replication).
type replAdmin struct{ n *Node }

// Replica runs `shoal replica stop|start|set`.
func (a replAdmin) Replica(action uint8, s server.ReplicaSettings) error {
	return a.n.replica(action, s)
}

// Promote runs `shoal promote`.
func (a replAdmin) Promote() error { return a.n.promote() }

// Status returns the status document as JSON.
func (a replAdmin) Status(vbuckets bool) ([]byte, error) {
	return json.Marshal(a.n.statusDoc(vbuckets))
}

// ReplicationStatus is the replication part of /status.
type ReplicationStatus struct {
	// Role is "active" or "replica" (a standby).
	Role string `json:"role"`
	// ReplicaOf is a standby's active; PromotedFrom the active a promoted
	// standby followed until its promotion.
	ReplicaOf    string `json:"replica_of,omitempty"`
	PromotedFrom string `json:"promoted_from,omitempty"`
	// Engines are a standby's replicators, one per engine.
	Engines []repl.Status `json:"engines,omitempty"`
	// HighSeqnos are every vBucket's high seqno per engine (status
	// --vbuckets only).
	HighSeqnos map[string][]uint64 `json:"high_seqnos,omitempty"`
}

// replStatus fills the liveness and replication parts of st.
func (n *Node) replStatus(st *Status, vbuckets bool) {
	rp := n.rep
	rp.mu.Lock()
	defer rp.mu.Unlock()
	st.Liveness = rp.view()
	st.Replication = ReplicationStatus{Role: rp.role, ReplicaOf: rp.replicaOf, PromotedFrom: rp.promotedFrom}
	for _, r := range rp.reps {
		st.Replication.Engines = append(st.Replication.Engines, r.Status(vbuckets))
	}
	if vbuckets {
		st.Replication.HighSeqnos = make(map[string][]uint64, len(rp.buckets))
		for _, b := range rp.buckets {
			seqnos := make([]uint64, n.cfg.VBuckets)
			for vb := range seqnos {
				seqnos[vb] = b.Engine.HighSeqno(uint16(vb))
			}
			st.Replication.HighSeqnos[b.Name] = seqnos
		}
	}
}

// statusDoc is Status, with every vBucket's seqnos when vbuckets is set.
func (n *Node) statusDoc(vbuckets bool) Status {
	st := n.Status()
	if vbuckets {
		n.replStatus(&st, true)
	}
	return st
}

// reportRepl reports replication for stats.log and /metrics.
func (n *Node) reportRepl(f *stats.Fields) {
	rp := n.rep
	rp.mu.Lock()
	reps := rp.reps
	rp.mu.Unlock()
	for _, r := range reps {
		st := r.Status(false)
		b := st.Bucket
		f.Gauge("replication/"+b+"/lagging_vbuckets", "replication_lagging_vbuckets", "Replica vBuckets not caught up with the active.", float64(st.Lagging), "bucket", b)
		f.Counter("replication/"+b+"/applied", "replication_applied_total", "Mutations applied from the active.", float64(st.Applied), "bucket", b)
		f.Counter("replication/"+b+"/reconnects", "replication_reconnects_total", "Replication sessions lost and reopened.", float64(st.Reconnects), "bucket", b)
		f.Counter("replication/"+b+"/rollbacks", "replication_rollbacks_total", "Replica vBuckets dropped and copied again.", float64(st.Rollbacks), "bucket", b)
	}
}

// view is the liveness report at this instant (with the last tick's
// readiness checks), nil before the first tick. Computed at request time, a
// silent peer shows inactive within InactiveTicks ticks of its last frame,
// not up to a tick later.
func (rp *replication) view() *liveness.Report {
	rp.monMu.Lock()
	defer rp.monMu.Unlock()
	if rp.checks == nil {
		return nil
	}
	r := rp.monitor.View(time.Now(), rp.checks)
	return &r
}

// livenessLoop ticks the liveness monitor every --liveness-tick with the
// local readiness checks, logs the state changes and saves the failover
// logs the consumers changed.
func (n *Node) livenessLoop(ctx context.Context) {
	rp := n.rep
	tick := time.Duration(n.cfg.LivenessTick)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			checks := n.readiness(now)
			rp.monMu.Lock()
			rep := rp.monitor.Tick(now, checks)
			rp.checks = checks
			rp.monMu.Unlock()
			for _, c := range rep.Changes {
				n.log.Info("liveness changed", "node", c.Node, "channel", c.Channel, "from", string(c.From), "to", string(c.To))
			}
			for _, b := range rp.buckets {
				if err := b.Logs.Save(); err != nil {
					n.log.Warn("cannot save a failover log", "bucket", b.Name, "err", err)
				}
			}
		}
	}
}

// readiness runs the local checks: the engines are loaded (New opened
// them, so they are while the node runs) and the disk takes writes.
func (n *Node) readiness(now time.Time) []liveness.Check {
	checks := make([]liveness.Check, 0, len(n.rep.buckets)+1)
	for _, b := range n.rep.buckets {
		checks = append(checks, liveness.Check{Name: "loaded", Channel: b.Name, OK: b.Engine != nil})
	}
	return append(checks, n.rep.probe.check(now, probeInterval(time.Duration(n.cfg.LivenessTick))))
}

// probeInterval is how often the disk is probed: every tick, at most once
// a second.
func probeInterval(tick time.Duration) time.Duration { return max(time.Second, tick) }

// probeLoop probes the disk every probeInterval.
func (n *Node) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval(time.Duration(n.cfg.LivenessTick)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.rep.probe.run()
		}
	}
}

// diskProbe writes and fsyncs a small file in DATA/repl; a disk that
// fails or stalls makes the node not ready.
type diskProbe struct {
	path string

	mu      sync.Mutex
	lastOK  time.Time // when the last successful probe finished
	lastErr error
}

func (p *diskProbe) run() {
	err := func() error {
		f, err := os.Create(p.path)
		if err != nil {
			return err
		}
		_, err = f.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	if err == nil {
		p.lastOK = time.Now()
	}
}

// check turns the last probes into a readiness check: the last probe
// must have succeeded, within 5 probe intervals (a stalled disk).
func (p *diskProbe) check(now time.Time, every time.Duration) liveness.Check {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := liveness.Check{Name: "disk", OK: true}
	switch since := now.Sub(p.lastOK); {
	case p.lastErr != nil:
		c.OK, c.Detail = false, p.lastErr.Error()
	case p.lastOK.IsZero() || since > 5*every:
		c.OK, c.Detail = false, fmt.Sprintf("no write+fsync of %s completed for %v", p.path, since.Round(time.Millisecond))
	}
	return c
}
