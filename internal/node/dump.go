package node

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"shoal/internal/dump"
	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/stats"
	"shoal/internal/vfs"
)

// Option changes how New builds a node (for tests).
type Option func(*Node)

// WithDumpFS makes the kv dumps go through fsys instead of the real file
// system (a vfs.Faulty that fills the disk, in tests).
func WithDumpFS(fsys vfs.FS) Option { return func(n *Node) { n.dumps.fs = fsys } }

// dumper is the node's side of the kv dumps: loaded by New, written by a
// dump.Manager that Run starts and the shutdown hook stops with a final
// dump.
type dumper struct {
	fs     vfs.FS
	dir    string
	mgr    *dump.Manager
	loaded []dump.LoadResult
	stop   context.CancelFunc
	done   chan error // the final dump's error
}

// kvSource is the kv engine as the dump Manager reads it: kv.Store's
// snapshot, and its channel listing as names. The kv engine is the dump's
// Sink as it is.
type kvSource struct{ kv *kv.Store }

var (
	_ dump.Source = kvSource{}
	_ dump.Sink   = (*kv.Store)(nil)
)

func (s kvSource) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error {
	return s.kv.SnapshotChannel(ch, fn)
}

func (s kvSource) ChannelNames() []string {
	var names []string
	for _, cs := range s.kv.Channels() {
		names = append(names, cs.Name)
	}
	return names
}

// loadDumps loads every kv dump into the kv engine (all channels in
// parallel, progress in root.log; the kv engine raises each vBucket's
// seqno to the dump's) and prepares the Manager that keeps them current.
func (n *Node) loadDumps() error {
	d := &n.dumps
	if d.fs == nil {
		d.fs = vfs.Default
	}
	d.dir = n.cfg.DumpDir
	if d.dir == "" {
		d.dir = filepath.Join(n.cfg.Data, "dump")
	}
	log := n.log.With("part", "dump")
	res, err := dump.Load(context.Background(), dump.LoadConfig{
		FS: d.fs, Dir: d.dir, VBuckets: n.cfg.VBuckets, Sink: n.kv, OnCorrupt: n.cfg.OnCorruptDump, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("cannot load the kv dumps (--on-corrupt-dump=%s): %w", n.cfg.OnCorruptDump, err)
	}
	d.loaded = res
	var channels []string
	for _, r := range res {
		if r.File != "" {
			channels = append(channels, r.Channel)
		}
	}
	d.mgr, err = dump.NewManager(dump.Config{
		FS: d.fs, Dir: d.dir, VBuckets: n.cfg.VBuckets, Source: kvSource{n.kv},
		Interval: time.Duration(n.cfg.DumpInterval), Codec: n.cfg.DumpCodec, Logger: log, Channels: channels,
		Done: n.hist.dump.Observe,
	})
	if err != nil {
		return err
	}
	n.OnShutdown(n.stopDumps)
	return nil
}

// startDumps starts the periodic dumps (none with --dump-interval 0); the
// shutdown hook ends them with a final dump.
func (n *Node) startDumps() {
	d := &n.dumps
	ctx, cancel := context.WithCancel(context.Background())
	d.stop, d.done = cancel, make(chan error, 1)
	if n.cfg.DumpInterval == 0 {
		go func() {
			<-ctx.Done()
			_, err := d.mgr.DumpNow(context.Background())
			d.done <- err
		}()
		return
	}
	go func() { d.done <- d.mgr.Run(ctx) }()
}

// stopDumps makes the final dump (after the data port is closed, so it
// holds every acknowledged write) and says loudly when a channel failed:
// that channel keeps its previous dump and loses the writes since.
func (n *Node) stopDumps(context.Context) {
	d := &n.dumps
	if d.stop == nil {
		return
	}
	d.stop()
	if err := <-d.done; err != nil {
		n.log.Error("FINAL DUMP FAILED: the channels named below keep their previous dump, "+
			"and the writes made since it are lost when the node starts again", "dir", d.dir, "err", err)
	}
}

// channelRemoved moves the dumps of a removed kv channel to DUMP/deleted/.
func (n *Node) channelRemoved(name string, kind engine.Kind) error {
	if kind != engine.KindKV {
		return nil
	}
	if err := n.dumps.mgr.RemoveChannel(name); err != nil {
		return fmt.Errorf("its dumps are still in %s and bring it back at the next start: %w", n.dumps.dir, err)
	}
	return nil
}

// reportDumps reports the dumps: totals since start, the last dump, and
// per channel what its last dump wrote.
func (n *Node) reportDumps(f *stats.Fields) {
	st := n.dumps.mgr.Stats()
	f.Counter("dump/dumps", "dumps_total", "Dumps of the kv channels (periodic, on demand, at shutdown).", float64(st.Dumps))
	f.Counter("dump/failures", "dump_failures_total", "Channel dumps that failed; each kept its previous dump.", float64(st.Failures))
	f.Counter("dump/records_written", "dump_records_written_total", "Records written by channel dumps.", float64(st.Records))
	f.Counter("dump/bytes_written", "dump_bytes_written_total", "File bytes written by channel dumps.", float64(st.FileBytes))
	running := 0.0
	if st.Running {
		running = 1
	}
	f.Gauge("dump/running", "dump_running", "1 while a dump is being written.", running)
	f.Histogram("dump_duration_seconds", "Time to dump all the kv channels (periodic, on demand, at shutdown).", &n.hist.dump)
	if st.Dumps == 0 {
		return
	}
	f.Gauge("dump/last_duration_seconds", "dump_last_duration_seconds", "Duration of the last dump.", st.LastDuration.Seconds())
	f.Gauge("dump/last_end_time", "dump_last_end_timestamp_seconds", "When the last dump ended (unix time).",
		float64(st.LastStart.Add(st.LastDuration).UnixMilli())/1e3)
	for _, r := range st.Last {
		if r.Channel == "" || r.Err != nil {
			continue
		}
		p := "dump/channel/" + r.Channel + "/"
		f.Gauge(p+"records", "dump_channel_records", "Records in the channel's last dump.", float64(r.Records), "channel", r.Channel)
		f.Gauge(p+"bytes", "dump_channel_bytes", "Key and value bytes in the channel's last dump.", float64(r.Bytes), "channel", r.Channel)
		f.Gauge(p+"file_bytes", "dump_channel_file_bytes", "Size of the channel's last dump file.", float64(r.FileBytes), "channel", r.Channel)
		f.Gauge(p+"duration_seconds", "dump_channel_duration_seconds", "Duration of the channel's last dump.", r.Duration.Seconds(), "channel", r.Channel)
	}
}

// DumpsStatus is the kv dumps in /status.
type DumpsStatus struct {
	Dir             string  `json:"dir"`
	Codec           string  `json:"codec"`
	IntervalSeconds float64 `json:"interval_seconds"` // 0: only on shutdown and on demand
	Running         bool    `json:"running"`
	Dumps           int64   `json:"dumps"`    // since start
	Failures        int64   `json:"failures"` // channel dumps since start
	// LastStart and LastEnd are the last finished dump's (RFC 3339).
	LastStart           string              `json:"last_start,omitempty"`
	LastEnd             string              `json:"last_end,omitempty"`
	LastDurationSeconds float64             `json:"last_duration_seconds"`
	Next                string              `json:"next,omitempty"`
	LastError           string              `json:"last_error,omitempty"`
	LastErrorAt         string              `json:"last_error_at,omitempty"`
	Channels            []DumpChannelStatus `json:"channels"` // of the last dump
	Loaded              []DumpLoadStatus    `json:"loaded"`   // at start
}

// DumpChannelStatus is one channel of the last dump.
type DumpChannelStatus struct {
	Channel         string  `json:"channel"`
	Records         int64   `json:"records"`
	Bytes           int64   `json:"bytes"`
	FileBytes       int64   `json:"file_bytes"`
	DurationSeconds float64 `json:"duration_seconds"`
	Error           string  `json:"error,omitempty"`
}

// DumpLoadStatus is one channel loaded (or skipped) at start.
type DumpLoadStatus struct {
	Channel    string `json:"channel"`
	File       string `json:"file,omitempty"` // "" when skipped
	FromBackup bool   `json:"from_backup,omitempty"`
	Records    int64  `json:"records"`
	Problem    string `json:"problem,omitempty"`
}

// dumpsStatus describes the dumps for /status.
func (n *Node) dumpsStatus() DumpsStatus {
	d := &n.dumps
	st := d.mgr.Stats()
	ds := DumpsStatus{
		Dir: d.dir, Codec: n.cfg.DumpCodec.String(), IntervalSeconds: time.Duration(n.cfg.DumpInterval).Seconds(),
		Running: st.Running, Dumps: st.Dumps, Failures: st.Failures, LastDurationSeconds: st.LastDuration.Seconds(),
		Next: stamp(st.Next), LastErrorAt: stamp(st.LastErrorAt),
		Channels: []DumpChannelStatus{}, Loaded: []DumpLoadStatus{},
	}
	if st.Dumps > 0 {
		ds.LastStart, ds.LastEnd = stamp(st.LastStart), stamp(st.LastStart.Add(st.LastDuration))
	}
	if st.LastError != nil {
		ds.LastError = st.LastError.Error()
	}
	for _, r := range st.Last {
		c := DumpChannelStatus{Channel: r.Channel, Records: r.Records, Bytes: r.Bytes, FileBytes: r.FileBytes, DurationSeconds: r.Duration.Seconds()}
		if r.Err != nil {
			c.Error = r.Err.Error()
		}
		ds.Channels = append(ds.Channels, c)
	}
	for _, r := range d.loaded {
		l := DumpLoadStatus{Channel: r.Channel, File: r.File, FromBackup: r.FromBackup, Records: r.Records}
		if r.Problem != nil {
			l.Problem = r.Problem.Error()
		}
		ds.Loaded = append(ds.Loaded, l)
	}
	return ds
}

// stamp formats t as RFC 3339, "" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}
