package repl

import (
	"context"
	"sync"

	"shoal/internal/engine"
	"shoal/internal/stream"
)

// What a replica has on disk (stream.PersistHandler).
//
// The engines do not say per seqno what is fsynced; they give marks in
// their write order (engine.Persister). When the stream acknowledges
// vBucket vb up to applied, every mutation up to applied has been applied,
// so it is on disk once the engine's synced mark reaches the written mark
// read then. A session keeps, per vBucket, the highest applied seqno known
// on disk and at most two waiting for their mark: the oldest, and the
// newest (a newer acknowledgement replaces it, its mark being as late), so
// what the replica fsynced is told at most one fsync late.

// persistState is one vBucket's persisted bookkeeping.
type persistState struct {
	onDisk       uint64 // the highest applied seqno known on disk
	older, newer persistMark
}

// persistMark is an applied seqno waiting for its written mark to be
// synced (applied 0: none).
type persistMark struct {
	applied, mark uint64
}

// sessionPersist is a session's persisted bookkeeping.
type sessionPersist struct {
	p   engine.Persister // nil: the engine cannot tell
	mu  sync.Mutex
	vbs map[uint16]*persistState
}

func newSessionPersist(e engine.Engine) *sessionPersist {
	p, _ := e.(engine.Persister)
	return &sessionPersist{p: p, vbs: make(map[uint16]*persistState)}
}

// Persisted implements stream.PersistHandler: the highest seqno of vb, at
// most applied, that the engine has fsynced with everything before it.
func (s *session) Persisted(vb uint16, applied uint64) uint64 {
	sp := s.persist
	if sp.p == nil {
		return 0
	}
	written, synced, ok := sp.p.Marks()
	if !ok {
		return 0
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	st := sp.vbs[vb]
	if st == nil {
		st = &persistState{}
		sp.vbs[vb] = st
	}
	if applied > max(st.onDisk, st.older.applied, st.newer.applied) {
		m := persistMark{applied, written}
		switch {
		case st.older.applied == 0:
			st.older = m
		default:
			st.newer = m
		}
	}
	for st.older.applied != 0 && st.older.mark <= synced {
		st.onDisk = max(st.onDisk, st.older.applied)
		st.older, st.newer = st.newer, persistMark{}
	}
	return min(st.onDisk, applied)
}

// forget drops vb's bookkeeping: its stream starts again (after a
// rollback the copy is new, and nothing of the old one counts).
func (sp *sessionPersist) forget(vb uint16) {
	sp.mu.Lock()
	delete(sp.vbs, vb)
	sp.mu.Unlock()
}

// watchPersisted tells the producer what the engine fsynced after its
// packets (an interval fsync), until ctx ends or the session does.
func (s *session) watchPersisted(ctx context.Context) {
	p := s.persist.p
	if p == nil {
		return
	}
	if _, _, ok := p.Marks(); !ok {
		return
	}
	moved := p.SyncedMoved()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.c.Done():
			return
		case <-moved:
			moved = p.SyncedMoved() // before the marks are read: no fsync is missed
			s.c.NotePersisted()
		}
	}
}

var _ stream.PersistHandler = (*session)(nil)
