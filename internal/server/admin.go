package server

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"shoal/internal/dump"
	"shoal/internal/wire"
)

// Dumper makes the dumps OpDumpNow asks for (the node's dump.Manager).
type Dumper interface {
	// DumpEach dumps every kv channel now and calls fn with each
	// channel's result as soon as it is done; the error joins those of
	// the failed channels. A cancelled ctx abandons the dump.
	DumpEach(ctx context.Context, fn func(dump.Result)) ([]dump.Result, error)
}

// maxDumpMessage bounds the error text of a DumpNow answer frame.
const maxDumpMessage = 4 << 10

func (s *Server) registerAdmin() {
	s.handle(wire.OpDumpNow, handler{fn: (*conn).dumpNow, admin: true})
}

// dumpNow: empty -> stream of one frame per channel (str8 channel, u64
// records, u64 bytes, u64 file bytes, u64 duration ns, u16 status, rest
// message), then a final frame whose status is ok when every channel was
// dumped, or the status of the first failure with the errors as message.
// The dump runs in the stream's goroutine and goes on if the client goes
// away; a node that shuts down abandons it (its shutdown dump follows).
func (c *conn) dumpNow(h wire.Header, body []byte) {
	if len(body) != 0 {
		c.replyf(h, wire.StatusBadRequest, "malformed DumpNow: the body must be empty")
		return
	}
	if c.s.cfg.Dumps == nil {
		c.replyf(h, wire.StatusUnsupported, "this node makes no dumps")
		return
	}
	c.startStream(h, 0, func(st *stream) (wire.Status, string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-c.shutting:
				cancel()
			case <-ctx.Done():
			}
		}()
		var first wire.Status
		res, err := c.s.cfg.Dumps.DumpEach(ctx, func(r dump.Result) {
			stc, msg := dumpStatus(r.Err)
			if first == wire.StatusOK {
				first = stc
			}
			st.send(func(b []byte) []byte {
				b = wire.AppendStr8(b, r.Channel)
				b = wire.AppendU64(b, uint64(r.Records))
				b = wire.AppendU64(b, uint64(r.Bytes))
				b = wire.AppendU64(b, uint64(r.FileBytes))
				b = wire.AppendU64(b, uint64(r.Duration))
				b = wire.AppendU16(b, uint16(stc))
				return append(b, msg...)
			})
		})
		if err == nil {
			return wire.StatusOK, ""
		}
		failed := 0
		for _, r := range res {
			if r.Err != nil {
				failed++
			}
		}
		if first == wire.StatusOK { // the dump did not start
			first, _ = dumpStatus(err)
		}
		_, msg := dumpStatus(fmt.Errorf("%d of %d channels not dumped: %w", failed, len(res), err))
		return first, msg
	})
}

// dumpStatus returns the status and message for a dump error; a nil error
// is StatusOK with no message.
func dumpStatus(err error) (wire.Status, string) {
	if err == nil {
		return wire.StatusOK, ""
	}
	msg := err.Error()
	if len(msg) > maxDumpMessage {
		msg = msg[:maxDumpMessage] + "..."
	}
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return wire.StatusNoSpace, msg
	case errors.Is(err, context.Canceled):
		return wire.StatusShuttingDown, msg
	}
	return wire.StatusInternal, msg
}
