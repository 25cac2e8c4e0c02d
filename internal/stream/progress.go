package stream

// progress is what a producer connection knows of one vBucket stream: what
// it handed to the connection and what the consumer has acknowledged. A
// new object is made for every stream, so the acknowledgements of an
// earlier stream of the same vBucket (a retry on the same connection)
// never count for the next one. Fields are guarded by the connection's
// sender mutex.
type progress struct {
	vb      uint16
	started bool   // its start message is queued
	ended   bool   // its end message is queued
	sent    uint64 // the highest mutation seqno queued
	acked   uint64 // the highest mutation seqno in a packet the consumer acknowledged
	unacked int64  // bytes of its messages queued or sent and not acknowledged
	bytes   int64  // bytes of every message of the stream queued

	announcedHigh, announcedBehind uint64 // the last seqno message
	announced                      bool

	applied, persisted uint64 // the consumer's last applied message (FeatureAcks)
}

// charge is one stream's share of a batch: its messages' bytes and its
// highest mutation seqno in the batch.
type charge struct {
	p     *progress
	seqno uint64
	bytes int64
}

// batchCharges are the charges of one batch written, and the cumulative
// byte count at its end, in the units the consumer acknowledges.
type batchCharges struct {
	end     int64
	charges []charge
}

// tracker attributes a producer connection's bytes to its streams, so that
// acknowledgements (which count bytes of the connection) tell how far each
// vBucket's consumer got. Its methods are called with the sender's mutex
// held.
type tracker struct {
	streams  map[uint16]*progress // the current stream of each vBucket
	pending  []charge             // of the batch being filled
	inflight []batchCharges       // batches written, oldest first
	sent     int64                // bytes of every batch taken
	acked    int64                // bytes acknowledged
}

func newTracker() *tracker { return &tracker{streams: make(map[uint16]*progress)} }

// begin makes the progress of a new stream of vb from seqno from (which
// the consumer holds: sent and acknowledged as far as the producer cares).
func (t *tracker) begin(vb uint16, from uint64) *progress {
	p := &progress{vb: vb, started: true, sent: from, acked: from, applied: from}
	t.streams[vb] = p
	return p
}

// end marks p ended; it is forgotten once nothing of it is in flight.
func (t *tracker) end(p *progress) {
	p.ended = true
	if t.streams[p.vb] == p && p.unacked == 0 {
		delete(t.streams, p.vb)
	}
}

// note charges n bytes (and a mutation seqno, or 0) to p in the batch
// being filled.
func (t *tracker) note(p *progress, seqno uint64, n int) {
	p.unacked += int64(n)
	p.bytes += int64(n)
	if seqno > p.sent {
		p.sent = seqno
	}
	if k := len(t.pending) - 1; k >= 0 && t.pending[k].p == p {
		t.pending[k].bytes += int64(n)
		t.pending[k].seqno = max(t.pending[k].seqno, seqno)
		return
	}
	t.pending = append(t.pending, charge{p: p, seqno: seqno, bytes: int64(n)})
}

// cut records that the batch being filled was taken with size bytes.
func (t *tracker) cut(size int) {
	t.sent += int64(size)
	if len(t.pending) == 0 {
		return
	}
	t.inflight = append(t.inflight, batchCharges{end: t.sent, charges: t.pending})
	t.pending = nil
}

// ack counts n bytes acknowledged and settles the batches they cover.
func (t *tracker) ack(n int64) {
	t.acked += n
	done := 0
	for _, b := range t.inflight {
		if b.end > t.acked {
			break
		}
		for _, c := range b.charges {
			c.p.unacked -= c.bytes
			c.p.acked = max(c.p.acked, c.seqno)
			if c.p.ended && c.p.unacked == 0 && t.streams[c.p.vb] == c.p {
				delete(t.streams, c.p.vb)
			}
		}
		done++
	}
	if done > 0 {
		t.inflight = append(t.inflight[:0], t.inflight[done:]...)
	}
}

// StreamStatus is a producer's view of one vBucket stream it serves.
type StreamStatus struct {
	VBucket uint16
	// Sent is the highest mutation seqno handed to the connection; Acked
	// the highest the consumer acknowledged (its handler was done with it).
	// Both start at the seqno the consumer asked from.
	Sent, Acked uint64
	// UnackedBytes are the bytes of the stream's messages queued or sent
	// and not acknowledged yet.
	UnackedBytes int64
	// Bytes are the bytes of every message of the stream queued so far
	// (a rebalance's progress).
	Bytes int64
	// Ended: the stream's end is queued; it is listed until its last
	// bytes are acknowledged.
	Ended bool
	// Applied and Persisted are the consumer's last applied message
	// (FeatureAcks): it holds every mutation up to Applied, and those up
	// to Persisted on disk (0: not said). Applied starts at the seqno the
	// consumer asked from.
	Applied, Persisted uint64
}

// ConnStatus is a producer's view of one stream connection.
type ConnStatus struct {
	Consumer string // the consumer's name (its node id)
	Bucket   string
	Conn     int // the connection's index in the consumer's session
	Conns    int
	Remote   string // the consumer's address
	Features uint32 // granted
	// UnackedBytes are the connection's bytes sent and not acknowledged.
	UnackedBytes int64
	Streams      []StreamStatus // by vBucket
}
