package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"time"

	"shoal/internal/wire"
)

// Stream is a flow-controlled stream of items from one node (GetAll,
// Mirror, ...), or merged from a stream per node. Range over All; call
// Suspend, Resume and Stop from any goroutine. If a connection breaks,
// the stream reconnects and resumes where it was on that node (for
// GetAll: after the last key received from it).
type Stream[T any] struct {
	c      *Client
	n      *node
	ctx    context.Context
	op     wire.Opcode
	window uint32

	// request appends the request body for the current resume point, with
	// the given credit.
	request func(b []byte, credit uint32) []byte
	// decode yields the items of one batch and advances the resume point;
	// it returns false when yield did.
	decode func(body []byte, yield func(T, error) bool) (bool, error)
	// reopened is called before the request is sent again after a
	// reconnect (Mirror asks for a refresh then).
	reopened func()
	// resumeOnShutdown makes a stream that the node ended because it is
	// shutting down reconnect (to the node once it is back) like one
	// whose connection broke (Consume).
	resumeOnShutdown bool
	// parts, when set, are the per-node streams this one merges; in the
	// order of less when it is set (mergedBy), else as items arrive.
	parts []*Stream[T]
	less  func(a, b T) bool

	mu        sync.Mutex
	frames    []result
	signal    chan struct{}
	cn        *conn
	id        uint32
	suspended bool
	stopped   bool
	started   bool
}

func newStream[T any](c *Client, ctx context.Context, n *node, op wire.Opcode) *Stream[T] {
	return &Stream[T]{c: c, n: n, ctx: ctx, op: op, window: c.o.window, signal: make(chan struct{}, 1)}
}

// frame implements frameSink.
func (s *Stream[T]) frame(r result) {
	s.mu.Lock()
	s.frames = append(s.frames, r)
	s.mu.Unlock()
	s.wake()
}

func (s *Stream[T]) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// open sends the request on a healthy connection, reconnecting with
// backoff while the node is unreachable.
func (s *Stream[T]) open() error {
	for {
		cn, err := s.n.conn(s.ctx)
		if err == nil {
			b := s.request(nil, s.window)
			s.mu.Lock()
			s.cn = cn
			s.frames = s.frames[:0]
			s.mu.Unlock()
			id, err := cn.send(s.op, 0, 0, b, nil, s, 0)
			if err == nil {
				s.mu.Lock()
				s.id = id
				suspended := s.suspended
				s.mu.Unlock()
				if suspended {
					cn.control(id, wire.StreamSuspend, 0)
				}
				return nil
			}
		}
		if !errors.Is(err, ErrDisconnected) {
			return err
		}
		wait := max(s.n.retryIn(), 10*time.Millisecond)
		select {
		case <-s.ctx.Done():
			return fmt.Errorf("%w (stream gave up reconnecting: %w)", s.ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// next waits for the next frame.
func (s *Stream[T]) next() (result, error) {
	for {
		s.mu.Lock()
		if len(s.frames) > 0 && !s.suspended {
			r := s.frames[0]
			s.frames = s.frames[1:]
			s.mu.Unlock()
			return r, nil
		}
		s.mu.Unlock()
		select {
		case <-s.ctx.Done():
			return result{}, s.ctx.Err()
		case <-s.signal:
		}
	}
}

// All yields the stream's items. A terminal error (the channel was
// removed, the context ended, the node refused the request) is yielded
// once as the last element. Breaking out of the loop stops the stream.
func (s *Stream[T]) All() iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		s.mu.Lock()
		if s.started {
			s.mu.Unlock()
			yield(zero, errors.New("client: a stream can be ranged over once"))
			return
		}
		s.started = true
		s.mu.Unlock()
		if s.parts != nil {
			s.merge(yield)
			return
		}
		if err := s.open(); err != nil {
			yield(zero, err)
			return
		}
		defer s.abandon()
		var consumed uint32
		for {
			r, err := s.next()
			if err != nil {
				yield(zero, err)
				return
			}
			if r.err != nil || (s.resumeOnShutdown && r.status == wire.StatusShuttingDown) {
				// The connection broke or the node is stopping: resume.
				if s.isStopped() {
					return
				}
				if r.err == nil { // the node is stopping: give it time to go
					select {
					case <-s.ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
				if s.reopened != nil {
					s.reopened()
				}
				consumed = 0
				if err := s.open(); err != nil {
					yield(zero, err)
					return
				}
				continue
			}
			if r.flags&wire.FlagMore == 0 {
				switch r.status {
				case wire.StatusOK, wire.StatusStopped:
				default:
					yield(zero, statusError(s.n.addr, r.status, r.body))
				}
				s.markDone()
				return
			}
			cont, err := s.decode(r.body, yield)
			if err != nil {
				yield(zero, err)
				return
			}
			if !cont {
				return
			}
			consumed += uint32(len(r.body))
			if consumed >= s.window/2 {
				s.mu.Lock()
				cn, id := s.cn, s.id
				s.mu.Unlock()
				cn.control(id, wire.StreamCredit, consumed)
				consumed = 0
			}
		}
	}
}

func (s *Stream[T]) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *Stream[T]) markDone() {
	s.mu.Lock()
	s.cn = nil
	s.mu.Unlock()
}

// abandon stops the stream on the node if the loop ended early.
func (s *Stream[T]) abandon() {
	s.mu.Lock()
	cn, id := s.cn, s.id
	s.cn = nil
	s.stopped = true
	s.mu.Unlock()
	if cn != nil {
		cn.control(id, wire.StreamStop, 0)
		cn.forget(id)
	}
}

func (s *Stream[T]) ctl(action uint8) error {
	if s.parts != nil {
		var errs []error
		for _, p := range s.parts {
			errs = append(errs, p.ctl(action))
		}
		return errors.Join(errs...)
	}
	s.mu.Lock()
	switch action {
	case wire.StreamSuspend:
		s.suspended = true
	case wire.StreamResume:
		s.suspended = false
	case wire.StreamStop:
		s.stopped = true
	}
	cn, id := s.cn, s.id
	s.mu.Unlock()
	s.wake()
	if cn == nil {
		return nil
	}
	return cn.control(id, action, 0)
}

// Suspend asks the node to pause the stream; items already received are
// held back until Resume.
func (s *Stream[T]) Suspend() error { return s.ctl(wire.StreamSuspend) }

// Resume continues a suspended stream.
func (s *Stream[T]) Resume() error { return s.ctl(wire.StreamResume) }

// Stop ends the stream: the node stops sending and All returns once the
// node has confirmed.
func (s *Stream[T]) Stop() error { return s.ctl(wire.StreamStop) }
