package stream

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// memEngine is a small in-memory engine.Engine for tests: it keeps every
// mutation of every vBucket. Stream sends the history after from as one
// snapshot, then each new mutation as a snapshot of one.
type memEngine struct {
	mu      sync.Mutex
	vbs     map[uint16][]engine.Mutation // mutation i has seqno i+1
	changed map[uint16]chan struct{}     // closed and replaced on every change of a vBucket
	failAt  map[uint16]uint64            // Stream fails when it reaches this seqno
}

func newMemEngine() *memEngine {
	return &memEngine{vbs: make(map[uint16][]engine.Mutation), changed: make(map[uint16]chan struct{}), failAt: make(map[uint16]uint64)}
}

func (e *memEngine) Kind() engine.Kind { return engine.KindKV }

// SetState and State: the fake takes every mutation in every state.
func (e *memEngine) SetState(uint16, vbmap.State) error { return nil }
func (e *memEngine) State(uint16) vbmap.State           { return vbmap.Replica }

func (e *memEngine) HighSeqno(vb uint16) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return uint64(len(e.vbs[vb]))
}

func (e *memEngine) Apply(m *engine.Mutation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m.Seqno != uint64(len(e.vbs[m.VBucket]))+1 {
		return fmt.Errorf("memEngine: vbucket %d seqno %d after %d", m.VBucket, m.Seqno, len(e.vbs[m.VBucket]))
	}
	c := *m
	c.Key, c.Value = bytes.Clone(m.Key), bytes.Clone(m.Value)
	e.vbs[m.VBucket] = append(e.vbs[m.VBucket], c)
	if ch := e.changed[m.VBucket]; ch != nil {
		close(ch)
		delete(e.changed, m.VBucket)
	}
	return nil
}

// put applies a set of key to value in vb at the next seqno.
func (e *memEngine) put(vb uint16, key string, value []byte) {
	m := engine.Mutation{VBucket: vb, Seqno: e.HighSeqno(vb) + 1, Op: engine.OpSet, Channel: "ch", Key: []byte(key), Value: value}
	if err := e.Apply(&m); err != nil {
		panic(err)
	}
}

// fill puts n mutations with values of size bytes in each of vbs vBuckets.
func (e *memEngine) fill(vbs, n, size int) {
	for vb := range vbs {
		for i := range n {
			e.put(uint16(vb), fmt.Sprintf("key:%012d", i), bytes.Repeat([]byte{byte(vb + i)}, size))
		}
	}
}

func (e *memEngine) history(vb uint16) []engine.Mutation {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]engine.Mutation(nil), e.vbs[vb]...)
}

// changedLocked returns the channel closed at vb's next change.
func (e *memEngine) changedLocked(vb uint16) chan struct{} {
	ch := e.changed[vb]
	if ch == nil {
		ch = make(chan struct{})
		e.changed[vb] = ch
	}
	return ch
}

func (e *memEngine) DropVBucket(vb uint16) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.vbs, vb)
	return nil
}

func (e *memEngine) Stream(ctx context.Context, vb uint16, from uint64, sink engine.Sink) error {
	e.mu.Lock()
	all, changed, failAt := e.vbs[vb], e.changedLocked(vb), e.failAt[vb]
	e.mu.Unlock()
	high := uint64(len(all))
	if from > high {
		return engine.ErrRollback
	}
	send := func(m *engine.Mutation) error {
		if failAt != 0 && m.Seqno >= failAt {
			return fmt.Errorf("memEngine: injected failure at seqno %d", m.Seqno)
		}
		return sink.Mutation(m)
	}
	if from < high {
		if err := sink.Snapshot(from+1, high); err != nil {
			return err
		}
		for i := from; i < high; i++ {
			if err := send(&all[i]); err != nil {
				return err
			}
		}
	}
	next := high
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
		e.mu.Lock()
		all, changed = e.vbs[vb], e.changedLocked(vb)
		e.mu.Unlock()
		for ; next < uint64(len(all)); next++ {
			m := &all[next]
			if err := sink.Snapshot(m.Seqno, m.Seqno); err != nil {
				return err
			}
			if err := send(m); err != nil {
				return err
			}
		}
	}
}
