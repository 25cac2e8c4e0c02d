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
// implements PersistHandler, else 0 (not said); when what is on disk grows
// without a packet (an interval fsync), the handler's owner calls
// Consumer.NotePersisted, which sends the new persisted seqnos with the
// applied ones last sent. Both only grow on a stream: the messages of a
// connection are composed and queued under its lock.

// PersistHandler is implemented by a Handler that can tell how much of a
// vBucket is on disk: Persisted returns the highest seqno of vb, at most
// applied (the seqno being acknowledged), whose mutations and every one
// before are durable on the consumer (0 when it cannot tell). It is
// called after a packet for the vBuckets that packet moved, and by
// NotePersisted, with the connection's lock held: it must not block.
type PersistHandler interface {
	Persisted(vb uint16, applied uint64) uint64
}

// ackState is a consumer stream's acknowledgement bookkeeping.
type ackState struct {
	applied   uint64 // the end of the last complete snapshot (the reader's)
	told      uint64 // the applied seqno last sent (cconn.mu)
	persisted uint64 // the persisted seqno last sent (cconn.mu)
	dirty     bool   // listed in cconn.moved (the reader's)
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
	ph, _ := cc.c.cfg.Handler.(PersistHandler)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := cc.send.lock(context.Background()); err != nil {
		return err
	}
	for _, vb := range cc.moved {
		st := cc.streams[vb]
		if st == nil {
			continue
		}
		st.ack.dirty = false
		if st.ack.applied <= st.ack.told {
			continue
		}
		st.ack.told = st.ack.applied
		if ph != nil {
			st.ack.persisted = max(st.ack.persisted, min(ph.Persisted(vb, st.ack.told), st.ack.told))
		}
		cc.send.pending = appendApplied(cc.send.pending, vb, st.ack.told, st.ack.persisted)
	}
	cc.send.unlock()
	cc.moved = cc.moved[:0]
	return nil
}

// NotePersisted tells the producer what the handler (a PersistHandler)
// now has on disk of every stream whose persisted seqno lags its applied
// one. Any goroutine may call it, at any time; it does nothing without
// FeatureAcks or a PersistHandler.
func (c *Consumer) NotePersisted() {
	ph, ok := c.cfg.Handler.(PersistHandler)
	if !ok {
		return
	}
	for _, cc := range c.conns {
		if cc.acks {
			cc.sendPersisted(ph)
		}
	}
}

// sendPersisted appends an applied message, with the applied seqno last
// sent, for every stream of cc whose persisted seqno grew.
func (cc *cconn) sendPersisted(ph PersistHandler) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	locked := false
	for vb, st := range cc.streams {
		if st.ack.persisted >= st.ack.told {
			continue
		}
		p := min(ph.Persisted(vb, st.ack.told), st.ack.told)
		if p <= st.ack.persisted {
			continue
		}
		if !locked {
			if cc.send.lock(context.Background()) != nil {
				return // the connection is ending
			}
			locked = true
		}
		st.ack.persisted = p
		cc.send.pending = appendApplied(cc.send.pending, vb, st.ack.told, p)
	}
	if locked {
		cc.send.unlock()
	}
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
