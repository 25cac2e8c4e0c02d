package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"shoal/internal/discovery"
	"shoal/internal/liveness"
	"shoal/internal/stats"
	"shoal/internal/wire"
)

// histograms are the node's duration histograms of /metrics (the
// request and metadata commit ones live in the server and the cluster).
type histograms struct {
	fsync    stats.Histogram // log segment fsyncs
	dump     stats.Histogram // whole kv dumps
	failover stats.Histogram // failovers decided on this node (the leader)
	// detection: automatic failovers, from the down set's first sighting
	// to the decision.
	detection stats.Histogram
}

// maxEvents is how many recent events the console shows, and
// maxEventMessage the bytes kept of an event's message.
const (
	maxEvents       = 20
	maxEventMessage = 500
)

// Event is a failover, a recovery or a refusal this node saw (a
// failover or join request it answered with an error).
type Event struct {
	Time time.Time `json:"time"`
	// Kind is "failover", "failover refused", "recover", "recover
	// refused" or "join refused".
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message"`
}

// eventLog keeps the last maxEvents events. The zero value is ready.
type eventLog struct {
	mu     sync.Mutex
	events []Event // oldest first
}

func (l *eventLog) add(kind, node, msg string) {
	if len(msg) > maxEventMessage {
		cut := maxEventMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == maxEvents {
		l.events = append(l.events[:0], l.events[1:]...)
	}
	l.events = append(l.events, Event{Time: time.Now().UTC(), Kind: kind, Node: node, Message: msg})
}

// list returns the events, newest first.
func (l *eventLog) list() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, len(l.events))
	for i, e := range l.events {
		out[len(out)-1-i] = e
	}
	return out
}

// MapStatus is the vBucket map in /status?map=1.
type MapStatus struct {
	Revision uint64       `json:"revision"`
	Replicas int          `json:"replicas"`
	VBuckets []MapVBucket `json:"vbuckets"`
}

// MapVBucket is one vBucket of MapStatus: its chain [active, replica1,
// …] of node ids and its epoch.
type MapVBucket struct {
	Chain []string `json:"chain"`
	Epoch uint64   `json:"epoch"`
}

// mapStatus is the map this node applied; nil before it has one.
func (n *Node) mapStatus() *MapStatus {
	t := n.table()
	if t == nil || t.Map() == nil {
		return nil
	}
	m := t.Map()
	ms := &MapStatus{Revision: m.Revision, Replicas: m.Replicas, VBuckets: make([]MapVBucket, len(m.VBuckets))}
	for i, v := range m.VBuckets {
		ms.VBuckets[i] = MapVBucket{Chain: append([]string{}, v.Chain...), Epoch: v.Epoch}
	}
	return ms
}

// copiesTimeout bounds the question a console refresh asks each member.
const copiesTimeout = time.Second

// fillCopies asks every member, in parallel, for its copies' high
// seqnos (this node answers from its own engines).
func (n *Node) fillCopies(ctx context.Context, st *Status) {
	self := n.statusDoc(true)
	st.Copies = map[string]map[string][]uint64{n.cfg.NodeID: self.Replication.HighSeqnos}
	if n.cluster == nil {
		return
	}
	leader, _ := n.cluster.meta.Leader()
	if leader == n.cfg.NodeID {
		st.LeaderLiveness = self.Liveness
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range n.cluster.known().Nodes {
		if m.ID == n.cfg.NodeID || m.Addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, copiesTimeout)
			defer cancel()
			var doc struct {
				Liveness    *liveness.Report `json:"liveness"`
				Replication struct {
					HighSeqnos map[string][]uint64 `json:"high_seqnos"`
				} `json:"replication"`
			}
			b, err := n.cluster.peers.call(cctx, m.Addr, wire.OpStatus, []byte{1})
			if err == nil {
				err = json.Unmarshal(b, &doc)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if st.CopiesErrors == nil {
					st.CopiesErrors = map[string]string{}
				}
				st.CopiesErrors[m.ID] = err.Error()
				return
			}
			st.Copies[m.ID] = doc.Replication.HighSeqnos
			if m.ID == leader {
				st.LeaderLiveness = doc.Liveness
			}
		}()
	}
	wg.Wait()
}

// reportKV reports the kv engine: totals, per channel and per action.
func (n *Node) reportKV(f *stats.Fields) {
	var recs, bytes int64
	for _, cs := range n.kv.Channels() {
		recs += cs.Records
		bytes += cs.Bytes
		f.Gauge("channel/"+cs.Name+"/records", "channel_records", "Records in a channel.", float64(cs.Records), "channel", cs.Name, "kind", "kv")
		f.Gauge("channel/"+cs.Name+"/bytes", "channel_bytes", "Key and value bytes in a channel.", float64(cs.Bytes), "channel", cs.Name, "kind", "kv")
	}
	f.Gauge("total_records", "stored_records", "Records stored in all channels of an engine (kind), replica copies included.", float64(recs), "kind", "kv")
	f.Gauge("total_bytes", "stored_bytes", "Key and value bytes stored in all channels of an engine (kind), replica copies included; not its memory (shoal_kv_memory_bytes).", float64(bytes), "kind", "kv")
	f.Gauge("kv_memory", "kv_memory_bytes", "Memory of the kv engine (what --memory-limit caps).", float64(n.kv.MemoryUsage()))
	c := n.kv.Counters()
	for _, a := range []struct {
		name    string
		records int64
		bytes   int64
	}{
		{"written", c.Written, c.WrittenBytes},
		{"read", c.Read, c.ReadBytes},
		{"deleted", c.Deleted, 0},
		{"expired", c.Expired, 0},
		{"iterated", c.Iterated, 0},
	} {
		f.Counter("action/"+a.name+"/records", "action_records_total", "Records handled by action.", float64(a.records), "action", a.name)
		if a.bytes > 0 {
			f.Counter("action/"+a.name+"/bytes", "action_bytes_total", "Bytes handled by action.", float64(a.bytes), "action", a.name)
		}
	}
}

// statsLoop appends a line to stats.log every interval.
func (n *Node) statsLoop(ctx context.Context) {
	t := time.NewTicker(time.Duration(n.cfg.StatsInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.writeStats()
		}
	}
}

func (n *Node) writeStats() {
	path := filepath.Join(n.cfg.LogDir, "stats.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		n.log.Warn("cannot open stats.log", "err", err)
		return
	}
	defer f.Close()
	n.statsW.SetOutput(f)
	if err := n.statsW.Write(time.Now(), n.stats.Collect()); err != nil {
		n.log.Warn("cannot write stats.log", "err", err)
	}
}

// consoleLoop redraws one status line on a terminal every second.
func (n *Node) consoleLoop(ctx context.Context, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prevReqs float64
	prevAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprint(w, "\r\033[K")
			return
		case now := <-t.C:
			var reqs float64
			for _, f := range n.stats.Collect() {
				if f.Metric == "request_duration_seconds" && f.Hist != nil {
					reqs += float64(f.Hist.Count)
				}
			}
			rate := (reqs - prevReqs) / now.Sub(prevAt).Seconds()
			prevReqs, prevAt = reqs, now
			recs, bytes := n.kv.Size()
			var qrecs int64
			for _, q := range n.queue.Channels() {
				qrecs += q.Records
			}
			fmt.Fprintf(w, "\r\033[K%s  %s  conns %d  req/s %.0f  kv %d records %s  mem %s  queue %d records  up %s",
				n.cfg.NodeID, n.ln.Addr(), n.srv.NumConnections(), rate, recs, human(bytes),
				human(n.kv.MemoryUsage()), qrecs, time.Since(n.started).Round(time.Second))
		}
	}
}

func human(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%dB", b)
}

// info adds node fields to the Info answer.
func (n *Node) info() map[string]any {
	recs, bytes := n.kv.Size()
	return map[string]any{
		"listen":       n.ln.Addr().String(),
		"http":         addrString(n.HTTPAddr()),
		"data":         n.cfg.Data,
		"kv_records":   recs,
		"kv_bytes":     bytes,
		"kv_memory":    n.kv.MemoryUsage(),
		"memory_limit": int64(n.cfg.MemoryLimit),

		"queue_durability": n.cfg.QueueDurability,
		"cpu_seconds":      processCPUSeconds(),
	}
}

// processCPUSeconds is the user and system CPU time the process has used.
func processCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// Status is the /status document.
type Status struct {
	NodeID        string          `json:"node_id"`
	Version       string          `json:"version"`
	Listen        string          `json:"listen"`
	HTTP          string          `json:"http"`
	Data          string          `json:"data"`
	UptimeSeconds int64           `json:"uptime_seconds"`
	VBuckets      int             `json:"vbuckets"`
	Connections   int64           `json:"connections"`
	KV            KVStatus        `json:"kv"`
	Queue         QueueStatus     `json:"queue"`
	Log           *LogStatus      `json:"log,omitempty"`
	Dumps         DumpsStatus     `json:"dumps"`
	Channels      []ChannelStatus `json:"channels"`
	// Liveness is the last report of the liveness monitor (repl.go).
	Liveness    *liveness.Report  `json:"liveness"`
	Replication ReplicationStatus `json:"replication"`
	// Cluster is the cluster document (absent on a standby).
	Cluster *ClusterStatus `json:"cluster,omitempty"`
	// Discovery is the state of --discovery (absent without).
	Discovery *discovery.Status `json:"discovery,omitempty"`
	// Readiness is what /readyz and `shoal wait-ready` answer.
	Readiness Readiness `json:"readiness"`
	// Events are the recent failovers and refusals this node saw, newest
	// first.
	Events []Event `json:"events"`
	// Rebalance is the rebalance this node runs or ran as the metadata
	// leader (on another member: no state, the map's moving count only;
	// `shoal rebalance --status` asks the leader).
	Rebalance *RebalanceStatus `json:"rebalance,omitempty"`
	// Map is the vBucket map this node applied (/status?map=1 only).
	Map *MapStatus `json:"map,omitempty"`
	// Copies are the high seqnos of every member's copies, by node id and
	// engine, one per vBucket (/status?copies=1 only: the node asks each
	// member); CopiesErrors says why a member is absent.
	Copies       map[string]map[string][]uint64 `json:"copies,omitempty"`
	CopiesErrors map[string]string              `json:"copies_errors,omitempty"`
	// LeaderLiveness is the liveness report of the metadata leader
	// (/status?copies=1 only).
	LeaderLiveness *liveness.Report `json:"leader_liveness,omitempty"`
}

// KVStatus is the kv engine in /status.
type KVStatus struct {
	Records     int64 `json:"records"`
	Bytes       int64 `json:"bytes"`
	Memory      int64 `json:"memory_bytes"`
	MemoryLimit int64 `json:"memory_limit_bytes"`
}

// ChannelStatus is one channel in /status.
type ChannelStatus struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Records int64  `json:"records"`
	Bytes   int64  `json:"bytes"`
}

// Status returns the node's status.
func (n *Node) Status() Status {
	st := Status{
		NodeID: n.cfg.NodeID, Version: n.version, Listen: n.ln.Addr().String(), HTTP: addrString(n.HTTPAddr()),
		Data: n.cfg.Data, UptimeSeconds: int64(time.Since(n.started).Seconds()), VBuckets: n.cfg.VBuckets,
		Connections: n.srv.NumConnections(), Channels: []ChannelStatus{},
	}
	st.KV.Records, st.KV.Bytes = n.kv.Size()
	st.KV.Memory, st.KV.MemoryLimit = n.kv.MemoryUsage(), int64(n.cfg.MemoryLimit)
	st.Dumps = n.dumpsStatus()
	for _, cs := range n.kv.Channels() {
		st.Channels = append(st.Channels, ChannelStatus{Name: cs.Name, Kind: "kv", Records: cs.Records, Bytes: cs.Bytes})
	}
	n.queueStatus(&st)
	n.logStatus(&st)
	n.replStatus(&st, false)
	st.Cluster = n.clusterStatus()
	st.Discovery = n.discoveryStatus()
	st.Readiness = n.nodeReadiness()
	st.Events = n.events.list()
	if n.cluster != nil && n.inCluster() { // a standby has no cluster
		rb := n.rebalanceStatus()
		st.Rebalance = &rb
	}
	return st
}
