package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/catalog"
	"shoal/internal/engine"
	"shoal/internal/liveness"
	"shoal/internal/meta"
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
	// peers dials the producers: TCP, TLS when the node has a certificate.
	peers *peers
	// user and secret authenticate the feeds' connections: the peer
	// credential, or a standby's --replica-user.
	user   string
	secret []byte
	// standby: the feeds ask as a whole-node standby (FeatureStandby).
	standby bool
	// applyHook is the test failpoint of the feeds' applies (nil: none).
	applyHook func(*engine.Mutation) error

	// removed are the channels the cluster removed while this node may
	// still hold copies of them in replica vBuckets (removeChannelLocal);
	// when it becomes active for a vBucket, the copies left there go.
	removedMu sync.Mutex
	removed   map[string]engine.Kind

	// handedOverVBs are the vBuckets the map being applied takes from
	// this node as their active by a rebalance's takeover (frozen in the
	// map before): their copies here are complete (handedOver).
	handedOverVBs atomic.Pointer[map[uint16]bool]

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
	acks := repl.NewAcks("kv", "queue", "log")
	rp.producer, err = repl.NewProducer(repl.ProducerConfig{Name: n.cfg.NodeID, Buckets: rp.buckets, Spy: rp.spy,
		Table: n.servedTable, Acks: acks, Logger: log})
	if err != nil {
		return err
	}
	n.setupDurability(acks)
	if rp.peers, err = n.newPeers(); err != nil {
		return err
	}
	rp.user, rp.secret = rp.peers.user, rp.peers.secret
	if rp.applyHook, err = repl.ApplyFailpoint(os.Getenv(repl.FailpointsEnv)); err != nil {
		return err
	}
	if rp.applyHook != nil {
		n.log.Warn("test failpoint armed", "env", repl.FailpointsEnv, "value", os.Getenv(repl.FailpointsEnv))
	}
	rp.newReplicator = n.newFeedReplicator
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

// newFeedReplicator builds the replicator of bucket b from the producer
// at addr over vbs. Its connections are the node's peer connections: TLS
// when the node has a certificate, then HELLO and AUTH as the peer
// credential (a standby: --replica-user when given).
func (n *Node) newFeedReplicator(b repl.Bucket, addr string, vbs []uint16, o repl.Options) (*repl.Replicator, error) {
	rp := n.rep
	eng := b.Engine
	if rp.standby {
		// A standby has no metadata: replicated writes claim their
		// channels, as the data port's writes do. A cluster node's catalog
		// follows the cluster's metadata instead.
		eng = cataloged{b.Engine, n.cat}
	}
	return repl.New(repl.Config{
		Name: n.cfg.NodeID, Addr: addr, Bucket: b.Name, Engine: eng, Logs: b.Logs, VBuckets: vbs, Standby: rp.standby,
		Options: o, Dial: rp.peers.dialConn, Handshake: repl.Handshake(n.cfg.NodeID, rp.user, rp.secret, n.cfg.VBuckets),
		Spy: rp.spy, ApplyHook: rp.applyHook, Complete: rp.handedOver, Logger: n.replLogger(),
	})
}

// cataloged is an engine whose replicated writes claim their channel in
// the node's catalog, as writes on the data port do, so that readers of
// the replica find the replicated channels.
type cataloged struct {
	engine.Engine
	cat *catalog.Catalog
}

// Apply implements engine.Engine. Channel removals and the pop of
// nothing that ends a queue snapshot (Ref 0, on a placeholder channel)
// claim nothing.
func (c cataloged) Apply(m *engine.Mutation) error {
	if m.Op != engine.OpRemoveChannel && (m.Op != engine.OpPop || m.Ref != 0) {
		if _, kind, ok := c.cat.Lookup([]byte(m.Channel)); !ok || kind != c.Kind() {
			if _, err := c.cat.Claim([]byte(m.Channel), c.Kind()); err != nil {
				return fmt.Errorf("cannot apply to channel %q: %w", m.Channel, err)
			}
		}
	}
	return c.Engine.Apply(m)
}

// replicaFeeds returns, per producer node, the vBuckets t makes this node
// a replica or a pending copy of, sorted, with the producer's address. A vBucket whose
// active is unknown or has no address is fed by nobody.
func replicaFeeds(t *vbmap.Table) map[string]*feed {
	out := map[string]*feed{}
	m := t.Map()
	for vb := range m.Len() {
		if s := t.State(uint16(vb)); s != vbmap.Replica && s != vbmap.Pending {
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

// reconcile makes the feeds match t. A feed of a producer t no longer
// names, or names at another address, is stopped. A feed whose vBuckets
// changed keeps its sessions: without start only the vBuckets t does not
// give it are taken out (closed and waited for, so that the node may
// become their active), with start its replicators get t's whole set
// (SetVBuckets: the new ones are requested on the open sessions, the
// other streams go on). With start the missing feeds are created (and
// started once Run has started them all, unless an operator stopped
// replication). A node without newReplicator only stops feeds. rp.mu is
// not held.
func (rp *replication) reconcile(t *vbmap.Table, start bool) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	want := map[string]*feed{}
	if t != nil && rp.newReplicator != nil {
		want = replicaFeeds(t)
	}
	for id, f := range rp.feeds {
		w := want[id]
		set := f.vbs
		switch {
		case w == nil || w.addr != f.addr:
			set = nil
		case start:
			set = w.vbs
		default:
			set = slices.DeleteFunc(slices.Clone(f.vbs), func(vb uint16) bool {
				_, found := slices.BinarySearch(w.vbs, vb)
				return !found
			})
		}
		if len(set) == 0 {
			for _, r := range f.reps {
				r.Stop()
			}
			delete(rp.feeds, id)
			continue
		}
		if slices.Equal(set, f.vbs) {
			continue
		}
		for _, r := range f.reps {
			if err := r.SetVBuckets(set); err != nil {
				return fmt.Errorf("cannot change the vbuckets replicated from %s: %w", f.addr, err)
			}
		}
		f.vbs = set
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

// handedOver reports whether this node just handed vb over to a new
// active by a takeover (repl.Config.Complete).
func (rp *replication) handedOver(vb uint16) bool {
	p := rp.handedOverVBs.Load()
	return p != nil && (*p)[vb]
}

// dropsCopies reports whether the node drops the copies of the vBuckets
// its map gives it no part in: only a cluster member in state active or
// leaving (`shoal remove`: the rebalance moved everything off it, and its
// drop, two seconds after the last map, mostly runs once the member is
// leaving — it used to keep every copy). A failed-over node keeps them
// for its recovery (delta, from its failover logs), a standby or a lone
// server holds no map of its own.
func (n *Node) dropsCopies() bool {
	if n.cluster == nil || n.cluster.meta == nil || !n.inCluster() { // a restart's first map: the group is not open yet
		return false
	}
	self, ok := n.cluster.known().Node(n.cfg.NodeID)
	return ok && (self.State == meta.Active || self.State == meta.Leaving)
}

// dropDelay is how long after applying a map a node waits before it
// drops the copies that map no longer gives it: the other nodes apply
// the map in their own time, and a node that has not yet may still
// stream from this copy — the new active of a takeover that has not
// applied the commit would roll back with it.
const dropDelay = 2 * time.Second

// scheduleDrops has the copies m (just applied) gives this node no part
// in dropped dropDelay from now, if the map then still gives it none
// (dropLeft). routing.mu is held.
func (n *Node) scheduleDrops(m *vbmap.Map) {
	n.routing.drops = append(n.routing.drops, appliedMap{m: m, at: time.Now()})
	if len(n.routing.drops) == 1 {
		time.AfterFunc(dropDelay, n.dropLeft)
	}
}

// dropLeft drops, in every engine, the records of the vBuckets that the
// newest map applied at least dropDelay ago and the map of the moment
// both give this node no part in (a rebalance moved them away, the
// replica count fell), and resets their failover logs: a vBucket built
// here again later starts from nothing. A vBucket without any copy in the
// map is left alone (what this node holds of it may be all there is), as
// are the vBuckets it holds nothing of (the usual case: nothing is done
// for them). Each vBucket is dropped under routing.mu, and the lock is
// released between them: a log engine rewrites every file that holds the
// vBucket, and a map change waiting for all of them kept a node from
// applying the metadata log for seconds — its lease ran out and the
// automatic failover took it for down (TestRebalanceSourceKilledInTakeover
// under -race). The maps applied since wait for their own turn.
func (n *Node) dropLeft() {
	n.routing.mu.Lock()
	now := time.Now()
	var due *vbmap.Map
	for len(n.routing.drops) > 0 && now.Sub(n.routing.drops[0].at) >= dropDelay {
		due = n.routing.drops[0].m
		n.routing.drops = n.routing.drops[1:]
	}
	if len(n.routing.drops) > 0 {
		time.AfterFunc(n.routing.drops[0].at.Add(dropDelay).Sub(now), n.dropLeft)
	}
	n.routing.mu.Unlock()
	if due == nil {
		return
	}
	var dropped []uint16
	streamed := 0
	for vb := range uint16(due.Len()) {
		if due.StateOf(n.cfg.NodeID, vb) != vbmap.Dead {
			continue
		}
		n.routing.mu.Lock()
		if n.rep.ctx.Err() != nil || n.routing.table == nil || !n.dropsCopies() {
			n.routing.mu.Unlock()
			break
		}
		switch dropped1, kept := n.dropOne(n.routing.table.Map(), vb); {
		case dropped1:
			dropped = append(dropped, vb)
		case kept:
			streamed++
		}
		n.routing.mu.Unlock()
	}
	if streamed > 0 {
		// Still streamed from: tried again dropDelay from now.
		n.routing.mu.Lock()
		if n.routing.table != nil {
			n.scheduleDrops(n.routing.table.Map())
		}
		n.routing.mu.Unlock()
		n.log.Debug("copies the map no longer gives this node are still streamed from: kept for now", "vbuckets", streamed)
	}
	if len(dropped) == 0 {
		return
	}
	n.routing.mu.Lock()
	for _, b := range n.rep.buckets {
		if err := b.Logs.Save(); err != nil {
			n.log.Error("cannot save the failover logs after dropping vbuckets", "bucket", b.Name, "err", err)
		}
	}
	n.routing.mu.Unlock()
	n.log.Info("dropped the copies of vbuckets the map no longer gives this node", "revision", due.Revision, "vbuckets", len(dropped))
}

// dropOne drops vb's records and failover logs in every engine if map m
// gives this node no part in it while another node holds it, and reports
// whether it did; kept reports a copy left because a consumer still
// streams it (one that has not applied the map yet: the new active of a
// takeover, a replica). routing.mu is held.
func (n *Node) dropOne(m *vbmap.Map, vb uint16) (dropped, kept bool) {
	if len(m.VBuckets[vb].Chain) == 0 || m.StateOf(n.cfg.NodeID, vb) != vbmap.Dead {
		return false, false
	}
	held := false
	for _, b := range n.rep.buckets {
		held = held || b.Engine.HighSeqno(vb) > 0
	}
	if !held {
		return false, false
	}
	if n.rep.producer.Streaming(vb) {
		return false, true
	}
	for _, b := range n.rep.buckets {
		if err := b.Engine.DropVBucket(vb); err != nil {
			n.log.Error("cannot drop a vbucket this node no longer holds", "vbucket", vb, "bucket", b.Name, "err", err)
			continue
		}
		b.Logs.Reset(vb)
	}
	return true, false
}

// rememberRemoved records that the cluster removed channel name.
func (rp *replication) rememberRemoved(name string, kind engine.Kind) {
	rp.removedMu.Lock()
	defer rp.removedMu.Unlock()
	if rp.removed == nil {
		rp.removed = map[string]engine.Kind{}
	}
	if len(rp.removed) >= maxRemembered {
		for k := range rp.removed { // forget one: its copies, if any, stay
			delete(rp.removed, k)
			break
		}
	}
	rp.removed[name] = kind
}

// maxRemembered bounds the removed channels remembered for removeLeftovers.
const maxRemembered = 4096

// removeLeftovers removes, now that the node became active for more
// vBuckets, what it still holds of the channels the cluster removed (the
// copies their old actives' removals did not reach), unless a channel of
// the name exists again. The removals take seqnos and stream to the
// replicas.
func (n *Node) removeLeftovers() {
	rp := n.rep
	rp.removedMu.Lock()
	defer rp.removedMu.Unlock()
	for name, kind := range rp.removed {
		if _, k, ok := n.cat.Lookup([]byte(name)); ok && k == kind {
			delete(rp.removed, name) // made again
			continue
		}
		var err error
		switch kind {
		case engine.KindKV:
			n.kv.RemoveChannel(name)
		case engine.KindQueue:
			_, err = n.queue.RemoveChannel(name)
		case engine.KindLog:
			err = n.logStore.RemoveChannel(name)
		}
		if err != nil {
			n.log.Error("cannot remove what is left of a removed channel", "channel", name, "kind", kind.String(), "err", err)
		} else if !n.holdsChannel(name, kind) {
			delete(rp.removed, name)
		}
	}
}

// holdsChannel reports whether the engine of kind holds records of name.
func (n *Node) holdsChannel(name string, kind engine.Kind) bool {
	switch kind {
	case engine.KindKV:
		return n.kv.ChannelSize(name).Records > 0
	case engine.KindQueue:
		for _, cs := range n.queue.Channels() {
			if cs.Name == name && cs.Records > 0 {
				return true
			}
		}
	case engine.KindLog:
		_, ok := n.logStore.ChannelSize(name)
		return ok
	}
	return false
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

// Promote runs `shoal promote [--force]`: refused while the active
// streams to the standby, and while the standby is behind unless forced
// (see promote).
func (a replAdmin) Promote(force bool) error { return a.n.promote(force) }

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
	// Engines are the node's replicators, one per engine and producer:
	// its replica side.
	Engines []repl.Status `json:"engines,omitempty"`
	// Serving is its producer side: one entry per stream connection of a
	// consumer (a replica of this node's active vBuckets), with per
	// vBucket what was sent and acknowledged with status --vbuckets.
	Serving []repl.ConsumerStatus `json:"serving,omitempty"`
	// Lag sums the replica side's lag (every engine and producer), as far
	// as this node knows it: what a promotion would lack.
	Lag *ReplicaLag `json:"lag,omitempty"`
	// HighSeqnos are every vBucket's high seqno per engine (status
	// --vbuckets only).
	HighSeqnos map[string][]uint64 `json:"high_seqnos,omitempty"`
	// States are every vBucket's state on this node ("active",
	// "replica", "pending", "dead"; status --vbuckets only).
	States []string `json:"states,omitempty"`
}

// ReplicaLag is how far a node's replica vBuckets are behind their
// actives, summed over every engine.
type ReplicaLag struct {
	// VBuckets counts the (vBucket, engine) pairs not known to hold
	// everything their producer announced; Unknown those of them never
	// streamed since the node started.
	VBuckets int `json:"vbuckets"`
	Unknown  int `json:"unknown"`
	// Seqnos and Bytes are the lag summed.
	Seqnos uint64 `json:"seqnos"`
	Bytes  uint64 `json:"bytes"`
	// PerEngine names the engines that lag, with their figures.
	PerEngine map[string]repl.Lag `json:"per_engine,omitempty"`
}

// replicaLag sums the feeds' lag; nil when the node has no feeds.
func (rp *replication) replicaLag() *ReplicaLag {
	reps := rp.replicators()
	if len(reps) == 0 {
		return nil
	}
	l := &ReplicaLag{}
	for _, r := range reps {
		b := r.Behind()
		if b.VBuckets == 0 {
			continue
		}
		bucket := r.Status(false).Bucket
		if l.PerEngine == nil {
			l.PerEngine = map[string]repl.Lag{}
		}
		e := l.PerEngine[bucket]
		e.VBuckets += b.VBuckets
		e.Seqnos += b.Seqnos
		e.Bytes += b.Bytes
		e.Unknown += b.Unknown
		l.PerEngine[bucket] = e
		l.VBuckets += b.VBuckets
		l.Unknown += b.Unknown
		l.Seqnos += b.Seqnos
		l.Bytes += b.Bytes
	}
	return l
}

// replStatus fills the liveness and replication parts of st.
func (n *Node) replStatus(st *Status, vbuckets bool) {
	rp := n.rep
	st.Liveness = rp.live.view()
	st.Replication = n.standbyStatus()
	for _, r := range rp.replicators() {
		st.Replication.Engines = append(st.Replication.Engines, r.Status(vbuckets))
	}
	st.Replication.Serving = rp.producer.Status(vbuckets)
	st.Replication.Lag = rp.replicaLag()
	if vbuckets {
		if t := n.servedTable(); t != nil {
			st.Replication.States = make([]string, n.cfg.VBuckets)
			for vb := range st.Replication.States {
				st.Replication.States[vb] = t.State(uint16(vb)).String()
			}
		}
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
