package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/catalog"
	"shoal/internal/engine"
	"shoal/internal/liveness"
	"shoal/internal/repl"
	"shoal/internal/server"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
	"shoal/internal/wire"
)

// replication is the node's replication and liveness: the failover logs
// of its engines, the producer serving replicas, the feeds that fill its
// replica vBuckets, the traffic spy and the liveness monitor.
type replication struct {
	dir      string // DATA/repl
	buckets  []repl.Bucket
	producer *repl.Producer
	ctx      context.Context // of the producer's streams; ends at shutdown
	stop     context.CancelFunc
	serving  atomic.Int64 // stream connections being served
	spy      *liveness.Spy
	live     livenessState

	// newReplicator builds the replicator of one bucket of a feed; nil
	// when the node does not fill its replicas (see reconcile).
	newReplicator func(b repl.Bucket, producerAddr string, vbs []uint16, o repl.Options) (*repl.Replicator, error)

	mu      sync.Mutex
	feeds   map[string]*feed // by producer node id
	opts    repl.Options     // of every feed; `shoal replica set` changes them
	running bool             // Run started the feeds
	paused  bool             // `shoal replica stop`
}

// feed is what the node replicates from one producer node: the replica
// vBuckets whose active it is, one Replicator per engine.
type feed struct {
	addr string
	vbs  []uint16
	reps []*repl.Replicator
}

// WithReplFS makes the failover logs use fsys (tests inject faults).
func WithReplFS(fsys vfs.FS) Option { return func(n *Node) { n.replFS = fsys } }

// setupRepl opens the failover logs and serves replication streams and
// the replication requests.
func (n *Node) setupRepl() error {
	dir := filepath.Join(n.cfg.Data, "repl")
	rp := &replication{dir: dir, spy: liveness.NewSpy(), feeds: map[string]*feed{}}
	rp.live.probe = diskProbe{path: filepath.Join(dir, probeFile)}
	rp.opts = repl.Options{
		Connections:  n.cfg.ReplicaConnections,
		NoopInterval: time.Duration(n.cfg.ReplicaNoopInterval),
		IdleTimeout:  time.Duration(n.cfg.ReplicaIdleTimeout),
	}
	log := n.log.With("part", "repl")
	for _, b := range []struct {
		name string
		e    engine.Engine
	}{{"kv", n.kv}, {"queue", n.queue}, {"log", n.logStore}} {
		logs, err := repl.OpenLogs(repl.LogsConfig{Path: filepath.Join(dir, "failover-"+b.name), VBuckets: n.cfg.VBuckets, FS: n.replFS, Logger: log.With("bucket", b.name)}, b.e.HighSeqno)
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
	rp.live.monitor = liveness.NewMonitor(liveness.Config{Self: n.cfg.NodeID, Tick: time.Duration(n.cfg.LivenessTick)}, rp.spy)
	n.stats.Add(stats.SourceFunc(n.reportRepl))
	n.rep = rp
	return nil
}

// cataloged is an engine whose replicated writes claim their channel in
// the node's catalog, as writes on the data port do, so that readers of
// the replica find the replicated channels.
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

// replicaFeeds returns, per producer node, the vBuckets t makes this node
// a replica of, sorted, with the producer's address. A vBucket whose
// active is unknown or has no address is fed by nobody.
func replicaFeeds(t *vbmap.Table) map[string]*feed {
	out := map[string]*feed{}
	m := t.Map()
	for vb := range m.Len() {
		if t.State(uint16(vb)) != vbmap.Replica {
			continue
		}
		active := m.Active(uint16(vb))
		addr := t.Addr(active)
		if active == "" || addr == "" {
			continue
		}
		f := out[active]
		if f == nil {
			f = &feed{addr: addr}
			out[active] = f
		}
		f.vbs = append(f.vbs, uint16(vb))
	}
	return out
}

// reconcile makes the feeds match t: a feed whose producer address or
// vBuckets changed is stopped (and replaced when start is set), a feed
// of a producer t no longer names is stopped, and, when start is set, the
// missing feeds are created (and started once Run has started them all,
// unless an operator stopped replication). A node without newReplicator
// only stops feeds. rp.mu is not held.
func (rp *replication) reconcile(t *vbmap.Table, start bool) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	want := map[string]*feed{}
	if t != nil && rp.newReplicator != nil {
		want = replicaFeeds(t)
	}
	for id, f := range rp.feeds {
		if w := want[id]; w == nil || w.addr != f.addr || !slices.Equal(w.vbs, f.vbs) {
			for _, r := range f.reps {
				r.Stop()
			}
			delete(rp.feeds, id)
		}
	}
	if !start {
		return nil
	}
	for id, w := range want {
		if rp.feeds[id] != nil {
			continue
		}
		for _, b := range rp.buckets {
			r, err := rp.newReplicator(b, w.addr, w.vbs, rp.opts)
			if err != nil {
				for _, r := range w.reps {
					r.Stop()
				}
				return fmt.Errorf("cannot replicate %s from %s: %w", b.Name, w.addr, err)
			}
			w.reps = append(w.reps, r)
		}
		if rp.running && !rp.paused {
			for _, r := range w.reps {
				r.Start()
			}
		}
		rp.feeds[id] = w
	}
	return nil
}

// replicators returns every feed's replicators, sorted by producer.
func (rp *replication) replicators() []*repl.Replicator {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	ids := make([]string, 0, len(rp.feeds))
	for id := range rp.feeds {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []*repl.Replicator
	for _, id := range ids {
		out = append(out, rp.feeds[id].reps...)
	}
	return out
}

// startRepl starts the feeds, the liveness monitor and the disk probe;
// they stop with ctx (and stopRepl).
func (n *Node) startRepl(ctx context.Context, wg *sync.WaitGroup) {
	rp := n.rep
	rp.mu.Lock()
	rp.running = true
	for _, f := range rp.feeds {
		for _, r := range f.reps {
			r.Start()
		}
	}
	rp.mu.Unlock()
	rp.live.probe.run()
	wg.Add(2)
	go func() { defer wg.Done(); n.livenessLoop(ctx) }()
	go func() { defer wg.Done(); n.probeLoop(ctx) }()
}

// Bounds of the drain of the served streams at shutdown.
const (
	clientsGoneTimeout = 10 * time.Second
	drainTimeout       = 2 * time.Second
)

// stopRepl stops the feeds, then, in the background while the data port
// shuts down, ends the replication streams it serves: once every client
// connection is gone (every acknowledged write is in the engines) and the
// streams have been handed the engines' latest mutations, so that replicas
// hold everything and resume after the restart. The channel is closed
// when the served streams have ended.
func (n *Node) stopRepl() <-chan struct{} {
	rp := n.rep
	rp.mu.Lock()
	rp.running = false
	for _, f := range rp.feeds {
		for _, r := range f.reps {
			r.Stop()
		}
	}
	rp.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
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
	return drained
}

// saveFailoverLogs records a clean shutdown in the failover logs; nothing
// may write to the engines any more.
func (n *Node) saveFailoverLogs() {
	for _, b := range n.rep.buckets {
		if err := b.Logs.SaveClean(b.Engine.HighSeqno); err != nil {
			n.log.Error("cannot save the failover logs: consumers will roll back after the restart", "bucket", b.Name, "err", err)
		}
	}
}

// branch starts a new history of vbs in every engine's failover logs (the
// node became their active), all or nothing.
func (rp *replication) branch(vbs []uint16) error {
	if len(vbs) == 0 {
		return nil
	}
	var undos []func() error
	for _, b := range rp.buckets {
		undo, err := b.Logs.BranchVBuckets(vbs, b.Engine.HighSeqno)
		if err != nil {
			for _, u := range undos {
				u() // best effort: a history left branched only costs its replicas a full copy
			}
			return fmt.Errorf("cannot start new histories of the %s engine: %w", b.Name, err)
		}
		undos = append(undos, undo)
	}
	return nil
}

// replica runs `shoal replica stop|start|set` on every feed.
func (n *Node) replica(action uint8, s server.ReplicaSettings) error {
	rp := n.rep
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.feeds) == 0 {
		return server.ErrNotStandby
	}
	switch action {
	case server.ReplicaStop:
		rp.paused = true
	case server.ReplicaStart:
		rp.paused = false
	case server.ReplicaSet:
		o := rp.opts
		if s.Connections > 0 {
			o.Connections = s.Connections
		}
		if s.NoopInterval > 0 {
			o.NoopInterval = s.NoopInterval
		}
		if s.IdleTimeout > 0 {
			o.IdleTimeout = s.IdleTimeout
		}
		for _, f := range rp.feeds {
			for _, r := range f.reps {
				if err := r.Set(o); err != nil {
					return fmt.Errorf("%w: %w", server.ErrBadSettings, err)
				}
			}
		}
		rp.opts = o
		return nil
	}
	for _, f := range rp.feeds {
		for _, r := range f.reps {
			if rp.paused {
				r.Stop()
			} else if rp.running {
				r.Start()
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
	// Role is "replica" for a standby (--replica-of), else "active".
	Role string `json:"role"`
	// ReplicaOf is a standby's active; PromotedFrom the active a promoted
	// standby followed until its promotion.
	ReplicaOf    string `json:"replica_of,omitempty"`
	PromotedFrom string `json:"promoted_from,omitempty"`
	// Engines are the node's replicators, one per engine and producer.
	Engines []repl.Status `json:"engines,omitempty"`
	// HighSeqnos are every vBucket's high seqno per engine (status
	// --vbuckets only).
	HighSeqnos map[string][]uint64 `json:"high_seqnos,omitempty"`
}

// replStatus fills the liveness and replication parts of st.
func (n *Node) replStatus(st *Status, vbuckets bool) {
	rp := n.rep
	st.Liveness = rp.live.view()
	st.Replication = n.standbyStatus()
	for _, r := range rp.replicators() {
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

// reportRepl reports replication for stats.log and /metrics, summed over
// the producers of each engine.
func (n *Node) reportRepl(f *stats.Fields) {
	type sum struct{ lagging, applied, reconnects, rollbacks float64 }
	sums := map[string]*sum{}
	var order []string
	for _, r := range n.rep.replicators() {
		st := r.Status(false)
		s := sums[st.Bucket]
		if s == nil {
			s = &sum{}
			sums[st.Bucket] = s
			order = append(order, st.Bucket)
		}
		s.lagging += float64(st.Lagging)
		s.applied += float64(st.Applied)
		s.reconnects += float64(st.Reconnects)
		s.rollbacks += float64(st.Rollbacks)
	}
	for _, b := range order {
		s := sums[b]
		f.Gauge("replication/"+b+"/lagging_vbuckets", "replication_lagging_vbuckets", "Replica vBuckets not caught up with the active.", s.lagging, "bucket", b)
		f.Counter("replication/"+b+"/applied", "replication_applied_total", "Mutations applied from the active.", s.applied, "bucket", b)
		f.Counter("replication/"+b+"/reconnects", "replication_reconnects_total", "Replication sessions lost and reopened.", s.reconnects, "bucket", b)
		f.Counter("replication/"+b+"/rollbacks", "replication_rollbacks_total", "Replica vBuckets dropped and copied again.", s.rollbacks, "bucket", b)
	}
}

// replLogger is the logger of the replication parts.
func (n *Node) replLogger() *slog.Logger { return n.log.With("part", "repl") }
