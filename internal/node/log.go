package node

import (
	"fmt"
	"path/filepath"
	"time"

	"shoal/internal/engine"
	"shoal/internal/logstore"
	"shoal/internal/stats"
)

// logDataDir is where the log engine keeps its files, under the data
// directory (DATA/log holds root.log and stats.log).
const logDataDir = "log-data"

// openLog opens the log engine and records its channels in the catalog.
func (n *Node) openLog() error {
	cfg := n.cfg
	st, err := logstore.Open(logstore.Config{
		Dir:           filepath.Join(cfg.Data, logDataDir),
		VBuckets:      cfg.VBuckets,
		Fsync:         time.Duration(cfg.LogFsync),
		SegmentSpan:   time.Duration(cfg.LogSegmentSpan),
		CompressAfter: time.Duration(cfg.LogCompressAfter),
		Retention:     time.Duration(cfg.LogRetention),
		MaxValueSize:  int(cfg.MaxValueSize),
		Logger:        n.log.With("engine", "log"),
		OnFsync:       n.hist.fsync.Observe,
	})
	if err != nil {
		return fmt.Errorf("cannot start the log engine: %w", err)
	}
	n.logStore = st
	for _, cs := range st.Channels() {
		if _, err := n.cat.Claim([]byte(cs.Name), engine.KindLog); err != nil {
			n.log.Warn("a log channel has the name of a channel of another kind; its log records are not served",
				"channel", cs.Name, "err", err)
		}
	}
	n.stats.Add(stats.SourceFunc(n.reportLog))
	return nil
}

// reportLog reports the log engine: per channel, totals, appends, fsyncs
// and what recovery and retention did.
func (n *Node) reportLog(f *stats.Fields) {
	var recs, bytes, disk float64
	for _, cs := range n.logStore.Channels() {
		recs += float64(cs.Records)
		bytes += float64(cs.Bytes)
		disk += float64(cs.DiskBytes)
		f.Gauge("channel/"+cs.Name+"/records", "channel_records", "Records in a channel.", float64(cs.Records), "channel", cs.Name, "kind", "log")
		f.Gauge("channel/"+cs.Name+"/bytes", "channel_bytes", "Key and value bytes in a channel.", float64(cs.Bytes), "channel", cs.Name, "kind", "log")
		f.Gauge("channel/"+cs.Name+"/disk_bytes", "channel_disk_bytes", "Bytes of a log channel's files.", float64(cs.DiskBytes), "channel", cs.Name)
	}
	f.Gauge("log/records", "stored_records", "Records stored in all channels of an engine (kind), replica copies included.", recs, "kind", "log")
	f.Gauge("log/bytes", "stored_bytes", "Key and value bytes stored in all channels of an engine (kind), replica copies included; not its memory (shoal_kv_memory_bytes).", bytes, "kind", "log")
	f.Gauge("log/disk_bytes", "log_disk_bytes", "Bytes of the log engine's segment files.", disk)
	st := n.logStore.Stats()
	f.Gauge("log/segments", "log_segments", "Segment files of the log engine.", float64(st.Segments))
	f.Counter("action/appended/records", "action_records_total", "Records handled by action.", float64(st.Appends), "action", "appended")
	f.Counter("action/appended/bytes", "action_bytes_total", "Bytes handled by action.", float64(st.AppendBytes), "action", "appended")
	f.Counter("log/append_errors", "log_append_errors_total", "Appended records refused by an I/O error (a full disk included).", float64(st.AppendErrors))
	f.LogHistogram("log", "fsyncs", "fsync_seconds", "fsync", &n.hist.fsync)
	f.Histogram("log_fsync_duration_seconds", "Fsyncs of log segment files by duration.", &n.hist.fsync)
	f.Gauge("log/fsync_max_seconds", "log_fsync_max_seconds", "The longest fsync of a log segment file since the start.", st.FsyncMax.Seconds())
	f.Counter("log/tails_cut", "log_tails_cut_total", "Torn tails (unfinished writes) cut from segment files at start-up.", float64(st.TailsCut))
	f.Counter("log/bytes_cut", "log_bytes_cut_total", "Bytes of the torn tails cut at start-up.", float64(st.BytesCut))
	f.Counter("log/corrupt_at_open", "log_corrupt_at_open_total", "Damaged stretches found in the middle of segment files at start-up.", float64(st.CorruptAtOpen))
	f.Counter("log/corrupt_read", "log_corrupt_read_total", "Damaged stretches met by reads.", float64(st.CorruptRead))
	f.Counter("log/bad_files", "log_bad_files_total", "Segment files ignored at start-up for a bad header.", float64(st.BadFiles))
	f.Counter("log/compressed", "log_segments_compressed_total", "Segments compressed by retention.", float64(st.Compressed))
	f.Counter("log/deleted", "log_segments_deleted_total", "Segment files deleted by retention.", float64(st.Deleted))
}

// LogStatus is the log engine in /status.
type LogStatus struct {
	Fsync         string `json:"fsync"`
	Records       uint64 `json:"records"`
	Bytes         uint64 `json:"bytes"`
	DiskBytes     int64  `json:"disk_bytes"`
	Segments      int    `json:"segments"`
	TailsCut      uint64 `json:"tails_cut_at_start"`
	CorruptAtOpen uint64 `json:"corrupt_at_start"`
}

// logStatus adds the log engine and its channels to st.
func (n *Node) logStatus(st *Status) {
	ls := &LogStatus{Fsync: n.cfg.LogFsync.String()}
	for _, cs := range n.logStore.Channels() {
		ls.Records += cs.Records
		ls.Bytes += cs.Bytes
		ls.DiskBytes += cs.DiskBytes
		st.Channels = append(st.Channels, ChannelStatus{Name: cs.Name, Kind: "log", Records: int64(cs.Records), Bytes: int64(cs.Bytes)})
	}
	es := n.logStore.Stats()
	ls.Segments, ls.TailsCut, ls.CorruptAtOpen = es.Segments, es.TailsCut, es.CorruptAtOpen
	st.Log = ls
}
