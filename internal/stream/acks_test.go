package stream

import (
	"fmt"
	"sync"
	"sync/atomic"
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

func (p persister) Persisted(uint16, uint64) uint64 { return p.upTo }

// movingPersister is a recorder whose disk holds every vBucket up to a
// seqno the test moves.
type movingPersister struct {
	*recorder
	upTo atomic.Uint64
}

func (p *movingPersister) Persisted(_ uint16, applied uint64) uint64 {
	return min(p.upTo.Load(), applied)
}

// TestNotePersisted: what reaches the disk after its packet (an interval
// fsync) is told by NotePersisted, with the applied seqno last sent; the
// persisted seqnos only grow and never pass the applied ones.
func TestNotePersisted(t *testing.T) {
	const vbs, n = 4, 30
	log := &ackLog{applied: map[uint16]uint64{}}
	srv := newServer(t, ProducerConfig{OnApplied: log.note})
	srv.eng.fill(vbs, n, 10)
	h := &movingPersister{recorder: newRecorder()}
	c := dial(t, srv.addr(), ConsumerConfig{Handler: h, Acks: true})
	for vb := range uint16(vbs) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	status := func(vb uint16) StreamStatus {
		for _, cs := range srv.prod.Status() {
			for _, s := range cs.Streams {
				if s.VBucket == vb {
					return s
				}
			}
		}
		return StreamStatus{}
	}
	for vb := range uint16(vbs) {
		waitFor(t, "the backfill's ack", func() bool { return status(vb).Applied == n })
		if p := status(vb).Persisted; p != 0 {
			t.Fatalf("vbucket %d persisted %d before anything was on disk", vb, p)
		}
	}
	for _, upTo := range []uint64{10, 10, n, n + 100} {
		h.upTo.Store(upTo)
		c.NotePersisted()
		for vb := range uint16(vbs) {
			waitFor(t, "the persisted seqno", func() bool { return status(vb).Persisted == min(upTo, n) })
			if s := status(vb); s.Applied != n {
				t.Fatalf("vbucket %d: applied %d after NotePersisted", vb, s.Applied)
			}
		}
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if log.back {
		t.Fatal("an acknowledgement went backwards or persisted above applied")
	}
	// 1 backfill ack + 2 persisted moves per vBucket (10, then n; the
	// repeated 10 and n+100 send nothing).
	if log.calls != vbs*3 {
		t.Fatalf("%d applied messages, want %d", log.calls, vbs*3)
	}
}

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
