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

// mergedBy returns a stream that yields the items of parts, each of which
// yields its items in the order of less, in that order: a k-way merge,
// which holds one item per part (and what each part's goroutine has
// decoded of its current batch). Equal items come in the order of the
// parts. A part that is slow holds up the merge, as it must: the next
// item may be its.
func mergedBy[T any](ctx context.Context, parts []*Stream[T], less func(a, b T) bool) *Stream[T] {
	return &Stream[T]{ctx: ctx, parts: parts, less: less}
}

// mergeOrdered is merge for a stream made by mergedBy.
func (s *Stream[T]) mergeOrdered(yield func(T, error) bool) {
	type item struct {
		v   T
		err error
	}
	ctx, cancel := context.WithCancel(s.ctx)
	feeds := make([]chan item, len(s.parts))
	var wg sync.WaitGroup
	for i, p := range s.parts {
		p.ctx = ctx
		feeds[i] = make(chan item, 64)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(feeds[i])
			for v, err := range p.All() {
				select {
				case feeds[i] <- item{v, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	defer func() {
		cancel() // parts waiting for frames end; each stops its node's stream
		wg.Wait()
	}()
	heads := make([]item, len(feeds))
	live := make([]bool, len(feeds))
	// pull takes the next item of part i into heads[i]; false ends the merge.
	pull := func(i int) bool {
		select {
		case it, ok := <-feeds[i]:
			live[i] = ok
			heads[i] = it
			if ok && it.err != nil {
				var zero T
				yield(zero, it.err)
				return false
			}
			return true
		case <-s.ctx.Done():
			var zero T
			yield(zero, s.ctx.Err())
			return false
		}
	}
	for i := range feeds {
		if !pull(i) {
			return
		}
	}
	for {
		best := -1
		for i := range heads {
			if live[i] && (best < 0 || s.less(heads[i].v, heads[best].v)) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		if !yield(heads[best].v, nil) || !pull(best) {
			return
		}
	}
}

// merge ranges over every part in a goroutine of its own and yields their
// items. A part's error ends the merged stream (the other parts are then
// stopped), as does the end of every part.
func (s *Stream[T]) merge(yield func(T, error) bool) {
	if s.less != nil {
		s.mergeOrdered(yield)
		return
	}
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
