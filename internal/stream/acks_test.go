package stream

import (
	"fmt"
	"sync"
	"testing"
)

// ackLog records the producer's OnApplied calls.
type ackLog struct {
	mu      sync.Mutex
	applied map[uint16]uint64
	calls   int
	back    bool // an acknowledgement went backwards
}

func (a *ackLog) note(c ConsumerInfo, vb uint16, applied, persisted uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if applied < a.applied[vb] || persisted > applied || c.Name != "node-b" {
		a.back = true
	}
	a.applied[vb] = applied
	a.calls++
}

func (a *ackLog) get(vb uint16) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied[vb]
}

// persister is a recorder that says everything up to a fixed seqno is on
// disk.
type persister struct {
	*recorder
	upTo uint64
}

func (p persister) Persisted(uint16) uint64 { return p.upTo }

// TestAppliedAcks: with FeatureAcks the producer learns, per vBucket, the
// end of every snapshot the consumer completed (the backfill's at the next
// marker, each live mutation at once), never one message per mutation of
// a packet; without it (an older consumer) it learns nothing and the
// stream works as before.
func TestAppliedAcks(t *testing.T) {
	for _, acks := range []bool{true, false} {
		t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
			const vbs, before, after = 8, 50, 20
			log := &ackLog{applied: map[uint16]uint64{}}
			srv := newServer(t, ProducerConfig{OnApplied: log.note})
			srv.eng.fill(vbs, before, 10)
			rec := newRecorder()
			c := dial(t, srv.addr(), ConsumerConfig{Handler: persister{rec, 3}, Acks: acks})
			for vb := range uint16(vbs) {
				if err := c.Request(Request{VBucket: vb}); err != nil {
					t.Fatal(err)
				}
			}
			for vb := range uint16(vbs) {
				waitFor(t, "the snapshots", func() bool { return rec.last(vb) == before })
			}
			if acks {
				// The backfill's snapshot [1, before] ends with a mutation at before.
				for vb := range uint16(vbs) {
					waitFor(t, "the backfill's ack", func() bool { return log.get(vb) == before })
				}
			}
			for i := range after {
				for vb := range uint16(vbs) {
					srv.eng.put(vb, fmt.Sprintf("live:%d", i), []byte("v"))
				}
			}
			for vb := range uint16(vbs) {
				waitFor(t, "the live mutations", func() bool { return rec.last(vb) == before+after })
			}
			if !acks {
				if log.calls != 0 {
					t.Fatalf("%d applied messages without the feature", log.calls)
				}
				return
			}
			for vb := range uint16(vbs) {
				waitFor(t, "the live acks", func() bool { return log.get(vb) == before+after })
			}
			log.mu.Lock()
			calls, back := log.calls, log.back
			log.mu.Unlock()
			if back {
				t.Fatal("an acknowledgement went backwards, named another consumer or persisted above applied")
			}
			if calls > vbs*(after+1) {
				t.Fatalf("%d applied messages for %d snapshots", calls, vbs*(after+1))
			}
			for _, cs := range srv.prod.Status() {
				for _, s := range cs.Streams {
					if s.Applied != before+after || s.Persisted != 3 {
						t.Fatalf("vbucket %d status applied %d persisted %d", s.VBucket, s.Applied, s.Persisted)
					}
				}
			}
		})
	}
}
