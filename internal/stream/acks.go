package stream

import (
	"context"
	"fmt"
)

// Seqno acknowledgements (FeatureAcks).
//
// A consumer that was granted FeatureAcks sends, after each packet it has
// handled, one applied message for every vBucket whose acknowledged seqno
// that packet moved: never one per mutation, and batched further by the
// sender, which writes whatever is pending in one packet. A vBucket's
// applied seqno is the end of the last snapshot the handler completed:
// a snapshot is complete once its last seqno was applied (a live mutation
// is a snapshot of its own, so every live mutation completes one) or the
// next marker arrived. The persisted seqno comes from the handler when it
// implements PersistHandler, else 0 (not said).

// PersistHandler is implemented by a Handler that can tell how much of a
// vBucket is on disk: Persisted returns the highest seqno of vb whose
// mutations, and every one before, are durable on the consumer (0 when it
// cannot tell). It is called on the connection's reader goroutine after a
// packet, for the vBuckets that packet moved.
type PersistHandler interface {
	Persisted(vb uint16) uint64
}

// ackState is a consumer stream's acknowledgement bookkeeping.
type ackState struct {
	applied uint64 // the end of the last complete snapshot
	told    uint64 // the applied seqno last sent
	dirty   bool   // listed in cconn.moved
}

// noteApplied records that st's snapshots are complete up to seqno and
// lists vb to be acknowledged after the packet.
func (cc *cconn) noteApplied(vb uint16, st *cstream, seqno uint64) {
	if seqno <= st.ack.applied {
		return
	}
	st.ack.applied = seqno
	if !st.ack.dirty {
		st.ack.dirty = true
		cc.moved = append(cc.moved, vb)
	}
}

// sendApplied appends an applied message for every vBucket the packet
// moved. It is called by the reader after each packet.
func (cc *cconn) sendApplied() error {
	if len(cc.moved) == 0 {
		return nil
	}
	acks := cc.ackBuf[:0]
	cc.mu.Lock()
	for _, vb := range cc.moved {
		st := cc.streams[vb]
		if st == nil {
			continue
		}
		st.ack.dirty = false
		if st.ack.applied > st.ack.told {
			st.ack.told = st.ack.applied
			acks = append(acks, vbAck{vb: vb, applied: st.ack.applied})
		}
	}
	cc.mu.Unlock()
	cc.moved = cc.moved[:0]
	if len(acks) == 0 {
		return nil
	}
	ph, _ := cc.c.cfg.Handler.(PersistHandler)
	for i := range acks {
		if ph != nil {
			acks[i].persisted = min(ph.Persisted(acks[i].vb), acks[i].applied)
		}
	}
	if err := cc.send.lock(context.Background()); err != nil {
		return err
	}
	for _, a := range acks {
		cc.send.pending = appendApplied(cc.send.pending, a.vb, a.applied, a.persisted)
	}
	cc.send.unlock()
	cc.ackBuf = acks[:0]
	return nil
}

// vbAck is one applied message to send.
type vbAck struct {
	vb                 uint16
	applied, persisted uint64
}

// applied handles a consumer's applied message on a producer connection.
func (pc *pconn) applied(vb uint16, applied, persisted uint64) error {
	if pc.open.features&FeatureAcks == 0 {
		return fmt.Errorf("%w: applied message without the acks feature", ErrProtocol)
	}
	send := pc.send
	send.mu.Lock()
	p := send.track.streams[vb]
	if p == nil || p.ended {
		send.mu.Unlock()
		return nil // the stream just ended (or was never asked): nothing to track
	}
	if applied < p.applied {
		send.mu.Unlock()
		return fmt.Errorf("%w: vbucket %d applied %d after %d", ErrProtocol, vb, applied, p.applied)
	}
	p.applied, p.persisted = applied, max(p.persisted, persisted)
	send.mu.Unlock()
	if fn := pc.p.cfg.OnApplied; fn != nil {
		fn(ConsumerInfo{Name: pc.open.consumer, Bucket: pc.open.bucket, Conn: int(pc.open.conn), Features: pc.open.features}, vb, applied, persisted)
	}
	return nil
}
