package node

import (
	"fmt"
	"math"
	"path/filepath"
	"time"

	"shoal/internal/engine"
	"shoal/internal/queue"
	"shoal/internal/stats"
)

// openQueue opens the queue engine on DATA/queue and records its channels
// in the catalog.
func (n *Node) openQueue() error {
	durability, err := queue.ParseDurability(n.cfg.QueueDurability)
	if err != nil {
		return err
	}
	var byPrefix map[string]int64
	if len(n.cfg.QueueRingSizeByPrefix) > 0 {
		byPrefix = make(map[string]int64, len(n.cfg.QueueRingSizeByPrefix))
		for p, size := range n.cfg.QueueRingSizeByPrefix {
			byPrefix[p] = int64(size)
		}
	}
	n.queue, err = queue.Open(queue.Config{
		Dir:              filepath.Join(n.cfg.Data, "queue"),
		VBuckets:         n.cfg.VBuckets,
		RingSize:         int64(n.cfg.QueueRingSize),
		RingSizeByPrefix: byPrefix,
		Durability:       durability,
		FsyncInterval:    time.Duration(n.cfg.QueueFsyncInterval),
		MaxValueSize:     int(n.cfg.MaxValueSize),
		Logger:           n.log,
	})
	if err != nil {
		return fmt.Errorf("cannot start the queue engine: %w", err)
	}
	for _, q := range n.queue.Channels() {
		if _, err := n.cat.Claim([]byte(q.Name), engine.KindQueue); err != nil {
			_, kind, _ := n.cat.Lookup([]byte(q.Name))
			n.log.Warn("a queue channel has the name of a channel of another kind; its queue requests are refused until one is removed",
				"channel", q.Name, "kind", kind.String())
		}
	}
	return nil
}

// queueKey is the stats.log key prefix of a queue, as swarm's storage
// names: channel/NAME for a channel without subscribers, channel/SUB@NAME
// for a subscriber's queue.
func queueKey(q queue.ChannelStats) string {
	if q.Subscribed {
		return "channel/" + q.Subscriber + "@" + q.Name
	}
	return "channel/" + q.Name
}

// reportQueue reports the queue engine: totals, per channel, per queue
// (memory and overflow split, fullness, consumers) and the pushed and
// popped actions.
func (n *Node) reportQueue(f *stats.Fields) {
	list := n.queue.Channels()
	var recs, bytes int64
	for i, q := range list {
		recs += q.Records
		bytes += q.Bytes
		if i == 0 || list[i-1].Name != q.Name {
			var chRecs, chBytes int64
			for _, o := range list[i:] {
				if o.Name != q.Name {
					break
				}
				chRecs, chBytes = chRecs+o.Records, chBytes+o.Bytes
			}
			f.Gauge("channel/"+q.Name+"/records", "channel_records", "Records in a channel.", float64(chRecs), "channel", q.Name, "kind", "queue")
			f.Gauge("channel/"+q.Name+"/bytes", "channel_bytes", "Key and value bytes in a channel.", float64(chBytes), "channel", q.Name, "kind", "queue")
		}
		key, labels := queueKey(q), []string{"channel", q.Name, "subscriber", q.Subscriber}
		f.Gauge(key+"/records_memory", "queue_memory_records", "Records of a queue in its memory ring.", float64(q.MemoryRecords), labels...)
		f.Gauge(key+"/bytes_memory", "queue_memory_bytes", "Value bytes of a queue in its memory ring.", float64(q.MemoryBytes), labels...)
		f.Gauge(key+"/records_overflow", "queue_overflow_records", "Records of a queue in its disk overflow.", float64(q.OverflowRecords), labels...)
		f.Gauge(key+"/bytes_overflow", "queue_overflow_bytes", "Value bytes of a queue in its disk overflow.", float64(q.OverflowBytes), labels...)
		f.LogGauge(key+"/percent_memory", math.Round(q.Fullness*10)/10)
		f.Gauge("", "queue_fullness_ratio", "Share (0..1) of a queue's memory ring in use, record headers included.", q.Fullness/100, labels...)
		f.Gauge(key+"/consumers", "queue_consumers", "Consume streams attached to a queue.", float64(q.Consumers), labels...)
	}
	f.Gauge("queue_total_records", "stored_records", "Records stored in all channels of an engine (kind), replica copies included.", float64(recs), "kind", "queue")
	f.Gauge("queue_total_bytes", "stored_bytes", "Key and value bytes stored in all channels of an engine (kind), replica copies included; not its memory (shoal_kv_memory_bytes).", float64(bytes), "kind", "queue")
	c := n.queue.Counters()
	for _, a := range []struct {
		name           string
		records, bytes uint64
	}{
		{"pushed", c.PushedRecords, c.PushedBytes},
		{"popped", c.PoppedRecords, c.PoppedBytes},
	} {
		f.Counter("action/"+a.name+"/records", "action_records_total", "Records handled by action.", float64(a.records), "action", a.name)
		f.Counter("action/"+a.name+"/bytes", "action_bytes_total", "Bytes handled by action.", float64(a.bytes), "action", a.name)
	}
}

// QueueStatus is the queue engine in /status.
type QueueStatus struct {
	Durability    string      `json:"durability"`
	FsyncInterval string      `json:"fsync_interval"`
	Records       int64       `json:"records"`
	Bytes         int64       `json:"bytes"`
	PushedRecords uint64      `json:"pushed_records"`
	PoppedRecords uint64      `json:"popped_records"`
	Queues        []QueueInfo `json:"queues"`
	// IdleSubscribers are the subscribers without a consumer for
	// --queue-subscriber-idle or longer: each keeps every push and blocks
	// pop (shoal queue unsubscribe removes one).
	IdleSubscribers []IdleSubscriber `json:"idle_subscribers"`
}

// IdleSubscriber is a subscriber no consumer has used for a while.
type IdleSubscriber struct {
	Channel     string `json:"channel"`
	Subscriber  string `json:"subscriber"`
	IdleSeconds int64  `json:"idle_seconds"`
	Records     int64  `json:"records"`
}

// QueueInfo is one queue in /status: a channel without subscribers, or a
// subscriber's queue.
type QueueInfo struct {
	Channel         string  `json:"channel"`
	Subscriber      *string `json:"subscriber,omitempty"` // only for a channel with subscribers
	Records         int64   `json:"records"`
	Bytes           int64   `json:"bytes"`
	MemoryRecords   int64   `json:"memory_records"`
	MemoryBytes     int64   `json:"memory_bytes"`
	OverflowRecords int64   `json:"overflow_records"`
	OverflowBytes   int64   `json:"overflow_bytes"`
	RingSize        int64   `json:"ring_size"`
	FullnessPercent float64 `json:"fullness_percent"`
	Consumers       int     `json:"consumers"`
}

// queueStatus fills the queue parts of st.
func (n *Node) queueStatus(st *Status) {
	c := n.queue.Counters()
	st.Queue = QueueStatus{
		Durability: n.cfg.QueueDurability, FsyncInterval: n.cfg.QueueFsyncInterval.String(),
		PushedRecords: c.PushedRecords, PoppedRecords: c.PoppedRecords, Queues: []QueueInfo{},
		IdleSubscribers: []IdleSubscriber{},
	}
	list := n.queue.Channels()
	now, limit := time.Now(), time.Duration(n.cfg.QueueSubscriberIdle)
	for _, q := range list {
		if idle := now.Sub(q.IdleSince); q.Subscribed && !q.IdleSince.IsZero() && limit > 0 && idle >= limit {
			st.Queue.IdleSubscribers = append(st.Queue.IdleSubscribers, IdleSubscriber{
				Channel: q.Name, Subscriber: q.Subscriber, IdleSeconds: int64(idle / time.Second), Records: q.Records})
		}
		qi := QueueInfo{
			Channel: q.Name, Records: q.Records, Bytes: q.Bytes, MemoryRecords: q.MemoryRecords, MemoryBytes: q.MemoryBytes,
			OverflowRecords: q.OverflowRecords, OverflowBytes: q.OverflowBytes, RingSize: q.RingSize,
			FullnessPercent: math.Round(q.Fullness*10) / 10, Consumers: q.Consumers,
		}
		if q.Subscribed {
			qi.Subscriber = &q.Subscriber
		}
		st.Queue.Queues = append(st.Queue.Queues, qi)
		st.Queue.Records += q.Records
		st.Queue.Bytes += q.Bytes
	}
	for i, q := range list {
		if i > 0 && list[i-1].Name == q.Name {
			last := &st.Channels[len(st.Channels)-1]
			last.Records, last.Bytes = last.Records+q.Records, last.Bytes+q.Bytes
			continue
		}
		st.Channels = append(st.Channels, ChannelStatus{Name: q.Name, Kind: "queue", Records: q.Records, Bytes: q.Bytes})
	}
}
