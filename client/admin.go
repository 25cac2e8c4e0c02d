package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"shoal/internal/wire"
)

// DumpResult is what a node did with one kv channel in DumpNow.
type DumpResult struct {
	Node      string
	Channel   string // "" for a failure before any channel (the dump directory)
	Records   int64
	Bytes     int64 // key plus value bytes
	FileBytes int64
	Duration  time.Duration
	// Err is nil when the channel's new dump is in place; otherwise the
	// previous dump is kept. errors.Is(Err, ErrNoSpace) for a full disk.
	Err error
}

// DumpNow makes every node dump its kv channels now, one node after the
// other, and calls each (if not nil) with every channel's result as it
// comes. The error joins those of the nodes: a failed channel, a node
// that cannot be reached or that refuses (ErrNotPermitted without the
// admin credential when authentication is on). A dump takes as long as it
// takes: the client's default timeout does not apply, ctx does. A dump
// whose connection breaks is not sent again (the node may still finish it).
func (c *Client) DumpNow(ctx context.Context, each func(DumpResult)) ([]DumpResult, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	var all []DumpResult
	var errs []error
	for _, n := range c.members() {
		res, err := dumpNode(ctx, n, each)
		all = append(all, res...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return all, errors.Join(errs...)
}

// dumpNode runs DumpNow on node n.
func dumpNode(ctx context.Context, n *node, each func(DumpResult)) ([]DumpResult, error) {
	cn, err := n.conn(ctx)
	if err != nil {
		return nil, err
	}
	q := &frameQueue{signal: make(chan struct{}, 1)}
	id, err := cn.send(wire.OpDumpNow, 0, 0, nil, nil, q, 0)
	if err != nil {
		return nil, err
	}
	defer cn.forget(id)
	var out []DumpResult
	for {
		r, err := q.next(ctx)
		if err != nil {
			cn.control(id, wire.StreamStop, 0)
			return out, err
		}
		if r.err != nil {
			return out, fmt.Errorf("dump of %s: %w", n.addr, r.err)
		}
		if r.flags&wire.FlagMore == 0 {
			if r.status != wire.StatusOK {
				return out, statusError(n.addr, r.status, r.body)
			}
			return out, nil
		}
		dr, err := decodeDumpResult(n.addr, r.body)
		if err != nil {
			cn.control(id, wire.StreamStop, 0)
			return out, err
		}
		out = append(out, dr)
		if each != nil {
			each(dr)
		}
		cn.control(id, wire.StreamCredit, uint32(len(r.body)))
	}
}

// decodeDumpResult decodes one channel frame of a DumpNow answer: str8
// channel, u64 records, u64 bytes, u64 file bytes, u64 duration ns, u16
// status, rest message.
func decodeDumpResult(addr string, body []byte) (DumpResult, error) {
	d := wire.NewDecoder(body)
	r := DumpResult{Node: addr, Channel: string(d.Bytes8())}
	r.Records, r.Bytes, r.FileBytes, r.Duration = int64(d.U64()), int64(d.U64()), int64(d.U64()), time.Duration(d.U64())
	st, msg := wire.Status(d.U16()), d.Rest()
	if d.Err() != nil {
		return r, fmt.Errorf("%w: malformed DumpNow answer from %s", ErrProtocol, addr)
	}
	if st != wire.StatusOK {
		r.Err = statusError(addr, st, msg)
	}
	return r, nil
}

// frameQueue collects the frames of one stream answer for a reader that
// must not resume the request elsewhere when the connection breaks.
type frameQueue struct {
	mu     sync.Mutex
	frames []result
	signal chan struct{}
}

// frame implements frameSink.
func (q *frameQueue) frame(r result) {
	q.mu.Lock()
	q.frames = append(q.frames, r)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// next waits for the next frame or for ctx.
func (q *frameQueue) next(ctx context.Context) (result, error) {
	for {
		q.mu.Lock()
		if len(q.frames) > 0 {
			r := q.frames[0]
			q.frames = q.frames[1:]
			q.mu.Unlock()
			return r, nil
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-q.signal:
		}
	}
}
