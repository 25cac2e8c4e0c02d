package server

import (
	"context"
	"sync"

	"shoal/internal/wire"
)

// DefaultCredit is the credit (answer body bytes) a stream starts with when
// its request grants none.
const DefaultCredit = 1 << 20

// batchTarget is the body size at which a stream sends its batch.
const batchTarget = 64 << 10

// stream is a flow-controlled answer of many frames to one request: every
// frame but the last carries wire.FlagMore. The client grants credit in
// body bytes with OpStreamControl; the stream sends while it has credit
// (a frame may overshoot it) and is not suspended.
type stream struct {
	c      *conn
	h      wire.Header
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	cond      *sync.Cond
	credit    int64
	suspended bool
	stopped   bool
}

// startStream registers a stream for request h and runs fn in its own
// goroutine. fn returns the status of the final frame and its message;
// after a Stop the final status is StatusStopped whatever fn returns.
func (c *conn) startStream(h wire.Header, credit uint32, fn func(st *stream) (wire.Status, string)) {
	if credit == 0 {
		credit = DefaultCredit
	}
	st := &stream{c: c, h: h, credit: int64(credit)}
	st.cond = sync.NewCond(&st.mu)
	st.ctx, st.cancel = context.WithCancel(c.ctx)
	c.smu.Lock()
	if c.streams == nil {
		c.streams = map[uint32]*stream{}
	}
	if _, busy := c.streams[h.ID]; busy {
		c.smu.Unlock()
		st.cancel()
		c.replyf(h, wire.StatusBadRequest, "request id %d is already used by a running stream", h.ID)
		return
	}
	c.streams[h.ID] = st
	c.smu.Unlock()
	stop := context.AfterFunc(st.ctx, func() {
		st.mu.Lock()
		st.cond.Broadcast()
		st.mu.Unlock()
	})
	c.swg.Add(1)
	go func() {
		defer c.swg.Done()
		defer stop()
		status, msg := fn(st)
		st.finish(status, msg)
	}()
}

// wait blocks until the stream may send. It returns false when the stream
// must end: stopped by the client, or its connection is closing.
func (st *stream) wait() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if st.stopped || st.ctx.Err() != nil || st.c.isShuttingDown() {
			return false
		}
		if st.credit > 0 && !st.suspended {
			return true
		}
		st.cond.Wait()
	}
}

// send waits for credit, then appends one frame whose body fn appends. It
// returns false when the stream must end.
func (st *stream) send(fn func(b []byte) []byte) bool {
	if !st.wait() || !st.c.waitRoom() {
		return false
	}
	b, off := st.c.begin(st.h, wire.StatusOK, wire.FlagMore)
	b = fn(b)
	n := len(b) - off - wire.HeaderLen
	st.c.end(b, off)
	st.mu.Lock()
	st.credit -= int64(n)
	st.mu.Unlock()
	return st.c.flush()
}

// finish sends the final frame and forgets the stream.
func (st *stream) finish(status wire.Status, msg string) {
	st.c.smu.Lock()
	delete(st.c.streams, st.h.ID)
	st.c.smu.Unlock()
	st.mu.Lock()
	stopped := st.stopped
	st.mu.Unlock()
	st.cancel()
	switch {
	case stopped:
		status, msg = wire.StatusStopped, ""
	case st.c.isShuttingDown():
		status, msg = wire.StatusShuttingDown, "the node is shutting down"
	case st.c.ctx.Err() != nil:
		return // the connection is gone
	}
	b, off := st.c.begin(st.h, status, 0)
	b = append(b, msg...)
	st.c.end(b, off)
	st.c.flush()
}

// done reports whether the stream must end.
func (st *stream) done() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stopped || st.ctx.Err() != nil || st.c.isShuttingDown()
}

// control applies an OpStreamControl frame. Unknown ids are ignored: the
// stream may have just ended.
func (c *conn) control(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	action := d.U8()
	var credit uint32
	if action == wire.StreamCredit {
		credit = d.U32()
	}
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed stream control")
		return
	}
	c.smu.Lock()
	st := c.streams[h.ID]
	c.smu.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	switch action {
	case wire.StreamCredit:
		st.credit += int64(credit)
		st.credit = min(st.credit, 1<<40)
	case wire.StreamSuspend:
		st.suspended = true
	case wire.StreamResume:
		st.suspended = false
	case wire.StreamStop:
		st.stopped = true
	default:
		st.mu.Unlock()
		c.replyf(h, wire.StatusBadRequest, "unknown stream control action %d", action)
		return
	}
	st.cond.Broadcast()
	st.mu.Unlock()
	if action == wire.StreamStop {
		st.cancel() // wakes a stream waiting for data (Mirror, Consume)
	}
}

// endStreams wakes every stream so it ends.
func (c *conn) endStreams() {
	c.smu.Lock()
	defer c.smu.Unlock()
	for _, st := range c.streams {
		st.cancel()
	}
}
