package client

import (
	"context"
	"sync"
)

// merged returns a stream that yields the items of parts (streams of the
// same request on different nodes) as they arrive. Suspend, Resume and
// Stop apply to every part.
func merged[T any](ctx context.Context, parts []*Stream[T]) *Stream[T] {
	return &Stream[T]{ctx: ctx, parts: parts}
}

// merge ranges over every part in a goroutine of its own and yields their
// items. A part's error ends the merged stream (the other parts are then
// stopped), as does the end of every part.
func (s *Stream[T]) merge(yield func(T, error) bool) {
	type item struct {
		v   T
		err error
	}
	ctx, cancel := context.WithCancel(s.ctx)
	items := make(chan item) // unbuffered: nothing waits here but one item per part
	var wg sync.WaitGroup
	for _, p := range s.parts {
		p.ctx = ctx
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v, err := range p.All() {
				select {
				case items <- item{v, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	defer func() {
		cancel() // parts waiting for frames end; each stops its node's stream
		<-ended
	}()
	for {
		select {
		case it := <-items:
			if !yield(it.v, it.err) || it.err != nil {
				return
			}
		case <-ended:
			return
		}
	}
}
