package node

import (
	"os"
	"strings"
	"time"

	"shoal/internal/repl"
	"shoal/internal/stats"
	"shoal/internal/wire"
)

// durabilityFailpoint is the SHOAL_FAILPOINTS name of the planted bug of
// the durability tests: durable writes are answered without waiting for
// the replicas (internal/chaos expects its checker to catch the loss).
const durabilityFailpoint = "durability-skip-wait"

// setupDurability makes the node's durable writes wait on the replicas'
// acknowledgements (acks, which the producer fills).
func (n *Node) setupDurability(acks *repl.Acks) {
	for _, kv := range strings.Split(os.Getenv(repl.FailpointsEnv), ",") {
		if strings.TrimSpace(kv) == durabilityFailpoint {
			n.log.Warn("test failpoint armed: durable writes do not wait for their replicas", "env", repl.FailpointsEnv)
			acks.SetSkipWait(true)
		}
	}
	n.srv.SetDurableWait(func(bucket string, vb uint16, seqno uint64, persist bool, chain []string, timeout time.Duration, done func(error)) func() {
		return acks.Wait(bucket, vb, seqno, persist, chain, timeout, done).Cancel
	})
	n.stats.Add(stats.SourceFunc(func(f *stats.Fields) {
		for _, b := range []string{"kv", "queue", "log"} {
			if h := acks.Lag(b); h != nil {
				f.Histogram("replication_lag_seconds", "Time from a live mutation handed to a replica's stream on this active to that replica's acknowledgement of it (sampled: at most one mutation per vBucket and stream every 10 ms).", h, "bucket", b)
			}
		}
		f.Gauge("durability/waiting", "durable_writes_waiting", "Durable writes waiting for a majority of their chain.", float64(acks.Waiting()))
	}))
}

// noteDurabilitySetting applies the cluster's default durability (its
// settings in the metadata group) to the server; called every tick of the
// automatic failover.
func (n *Node) noteDurabilitySetting(level string) {
	d, err := wire.ParseDurability(level)
	if err != nil {
		d = wire.DurabilityNone
	}
	n.srv.SetDefaultDurability(d)
}
