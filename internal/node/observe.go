package node

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"time"

	"shoal/internal/discovery"
	"shoal/internal/liveness"
	"shoal/internal/stats"
)

// histograms are the node's duration histograms of /metrics (the
// request and metadata commit ones live in the server and the cluster).
type histograms struct {
	fsync    stats.Histogram // log segment fsyncs
	dump     stats.Histogram // whole kv dumps
	failover stats.Histogram // failovers decided on this node (the leader)
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
	f.Gauge("total_records", "records", "Records in all channels.", float64(recs), "kind", "kv")
	f.Gauge("total_bytes", "bytes", "Key and value bytes in all channels.", float64(bytes), "kind", "kv")
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

// age renders how long ago t was, to the second ("-" for the zero time).
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return max(time.Since(t), 0).Truncate(time.Second).String()
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
	}
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
	return st
}

var consolePage = template.Must(template.New("console").Funcs(template.FuncMap{"human": human, "age": age}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>shoal {{.NodeID}}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}th{background:#f4f4f4}.n{text-align:right}</style>
</head><body>
<h1>shoal node {{.NodeID}}</h1>
<p>version {{.Version}} · data port {{.Listen}} · up {{.UptimeSeconds}} s · {{.Connections}} connections · {{.VBuckets}} vBuckets</p>
<h2>Cluster</h2>
{{with .Cluster}}<p>cluster {{or .ClusterID "not created yet"}} · map revision {{.Revision}} · {{.Replicas}} replicas · leader {{with .Leader}}{{.}} at {{$.Cluster.LeaderAddr}}{{else}}none known{{end}} · this node {{or .RaftState "-"}}, {{len .Voters}} of {{.WantVoters}} voters · {{.LeaderChanges}} leader changes{{if ne .Join.Phase "member"}} · <b>{{.Join.Phase}}{{with .Join.Waiting}}: {{.}}{{end}}</b>{{end}}</p>
<table><tr><th>node</th><th>address</th><th>state</th><th>voter</th><th>leader</th><th class="n">active</th><th class="n">replica</th><th>zone</th><th>since</th></tr>
{{range .Nodes}}<tr><td>{{if .HTTP}}<a href="http://{{.HTTP}}/">{{.ID}}</a>{{else}}{{.ID}}{{end}}{{if eq .ID $.NodeID}} (this node){{end}}</td><td>{{.Addr}}</td><td>{{.State}}</td><td>{{if .Voter}}yes{{else}}no{{end}}</td><td>{{if .Leader}}yes{{else}}no{{end}}</td><td class="n">{{.Active}}</td><td class="n">{{.Replica}}</td><td>{{or .Zone "-"}}</td><td>{{age .Since}}</td></tr>
{{else}}<tr><td colspan="9">no members yet</td></tr>{{end}}
</table>
{{else}}<p>{{with .Replication.ReplicaOf}}standby of {{.}}: in no cluster{{else}}in no cluster{{with .Replication.PromotedFrom}} (a promoted standby of {{.}}){{end}}{{end}}</p>
{{end}}{{with .Discovery}}<h2>Discovery</h2>
<p>{{.Backend}} · {{.Phase}} phase · {{.BackendCalls}} backend calls{{with .LastResult}}, the last {{if .OK}}listed {{len .Nodes}} nodes{{else}}<b>failed: {{.Error}}</b>{{end}}, next {{.RetryType}}{{end}}{{if .BackendRunning}} · a call is running{{end}} · {{len .Discovered}} discovered, {{len .Joined}} joined, {{len .Unavailable}} unavailable{{if not .InitialDone}} · <b>initial discovery not done</b>{{end}}</p>
{{end}}{{if not .Readiness.Ready}}<p><b>not ready</b>:{{range .Readiness.Missing}} {{.}};{{end}}</p>
{{end}}<h2>kv</h2>
<p>{{.KV.Records}} records, {{human .KV.Bytes}} of keys and values, {{human .KV.Memory}} of memory{{if .KV.MemoryLimit}} of a {{human .KV.MemoryLimit}} limit{{end}}</p>
<h2>queue</h2>
<p>{{.Queue.Durability}} durability{{if eq .Queue.Durability "journal"}}, fsync {{.Queue.FsyncInterval}}{{end}} · {{.Queue.Records}} records, {{human .Queue.Bytes}} · {{.Queue.PushedRecords}} pushed, {{.Queue.PoppedRecords}} popped since start</p>
<table><tr><th>channel</th><th>subscriber</th><th class="n">records</th><th class="n">in memory</th><th class="n">on disk</th><th class="n">ring</th><th class="n">full</th><th class="n">consumers</th></tr>
{{range .Queue.Queues}}<tr><td>{{.Channel}}</td><td>{{with .Subscriber}}"{{.}}"{{else}}-{{end}}</td><td class="n">{{.Records}}</td><td class="n">{{.MemoryRecords}} · {{human .MemoryBytes}}</td><td class="n">{{.OverflowRecords}} · {{human .OverflowBytes}}</td><td class="n">{{human .RingSize}}</td><td class="n">{{.FullnessPercent}} %</td><td class="n">{{.Consumers}}</td></tr>
{{else}}<tr><td colspan="8">no queues yet</td></tr>{{end}}
</table>
<h2>Channels</h2>
<table><tr><th>channel</th><th>kind</th><th class="n">records</th><th class="n">bytes</th></tr>
{{range .Channels}}<tr><td>{{.Name}}</td><td>{{.Kind}}</td><td class="n">{{.Records}}</td><td class="n">{{human .Bytes}}</td></tr>
{{else}}<tr><td colspan="4">no channels yet</td></tr>{{end}}
</table>
<h2>Dumps</h2>
<p>{{with .Dumps}}every {{.IntervalSeconds}} s to {{.Dir}} ({{.Codec}}) · {{.Dumps}} dumps, {{.Failures}} failed channel dumps{{if .Running}} · dumping now{{end}}{{if .LastEnd}} · last ended {{.LastEnd}} after {{printf "%.1f" .LastDurationSeconds}} s{{end}}{{if .LastError}} · <b>last error ({{.LastErrorAt}}): {{.LastError}}</b>{{end}}{{end}}</p>
<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a></p>
</body></html>
`))
