package logstore

import (
	"sync"
	"sync/atomic"

	"shoal/internal/engine"
)

var _ engine.Persister = (*Store)(nil)

// marks are the store's engine.Persister positions: committed batches,
// and the batches an fsync covered.
type marks struct {
	written atomic.Uint64 // batches committed (written, fsynced in Fsync-always mode)
	synced  atomic.Uint64 // interval mode: batches every byte of which an fsync covered
	// failed is set by a failed fsync, or a segment closed unsynced: what
	// was written may be lost, so synced moves no more.
	failed atomic.Bool

	mu    sync.Mutex
	moved chan struct{} // closed when synced grows by Sync; nil until asked for
}

// committed counts a committed batch (in Fsync-always mode, fsynced).
func (s *Store) committed() { s.marks.written.Add(1) }

// syncedTo records that an fsync (Sync, writeMu held) covered every batch
// up to n, and wakes the watchers.
func (s *Store) syncedTo(n uint64) {
	if n <= s.marks.synced.Load() || s.marks.failed.Load() {
		return
	}
	s.marks.synced.Store(n)
	s.marks.mu.Lock()
	if s.marks.moved != nil {
		close(s.marks.moved)
		s.marks.moved = nil
	}
	s.marks.mu.Unlock()
}

// Marks implements engine.Persister: the batches committed so far (an
// Append or Apply that returned is in one of them) and those on disk. In
// Fsync-always mode both are the same; in interval mode the second moves
// at every Sync.
func (s *Store) Marks() (written, synced uint64, ok bool) {
	w := s.marks.written.Load()
	if s.cfg.Fsync == 0 && !s.marks.failed.Load() {
		return w, w, true // every batch is counted once fsynced
	}
	return w, s.marks.synced.Load(), true
}

// SyncedMoved implements engine.Persister: a channel closed by the next
// Sync that moves SyncedMark.
func (s *Store) SyncedMoved() <-chan struct{} {
	s.marks.mu.Lock()
	defer s.marks.mu.Unlock()
	if s.marks.moved == nil {
		s.marks.moved = make(chan struct{})
	}
	return s.marks.moved
}
