package stream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/klauspost/compress/s2"
)

// Spy is told about the traffic of stream connections, for liveness.
// internal/liveness.Spy implements it. Its methods are called from the
// connections' goroutines, concurrently.
type Spy interface {
	// Heard records that a frame arrived at now on connection conn (an id
	// unique in the process) from node peer for bucket. The library calls it
	// at most once per SpyInterval per connection.
	Heard(conn uint64, peer, bucket string, now time.Time)
	// Forget drops connection conn: it has closed.
	Forget(conn uint64)
}

// SpyInterval is the least time between two Spy.Heard calls of one connection.
const SpyInterval = 100 * time.Millisecond

// readBuffer is the size of a connection's read buffer.
const readBuffer = 64 << 10

// receiver is the reading half of a stream connection: it reads packets,
// bounds and checks their headers, decompresses them, tells the spy, and
// turns a peer that stays silent past the timeout into the expired error.
type receiver struct {
	conn    net.Conn
	br      *bufio.Reader
	timeout time.Duration // longest wait for the next bytes
	expired error         // returned when timeout passes with nothing received
	s2      bool          // compressed packets were negotiated
	hdr     [HeaderLen]byte
	buf     []byte // the packet payload as read
	dec     []byte // the decompressed payload

	spy          Spy
	id           uint64
	peer, bucket string
	lastSpy      time.Time
}

func newReceiver(conn net.Conn, timeout time.Duration, expired error) *receiver {
	r := &receiver{conn: conn, timeout: timeout, expired: expired}
	r.br = bufio.NewReaderSize(connReader{r}, readBuffer)
	return r
}

// connReader reads the connection for the receiver's buffer, giving every
// wait for bytes the receiver's timeout.
type connReader struct{ r *receiver }

func (c connReader) Read(p []byte) (int, error) {
	if err := c.r.conn.SetReadDeadline(time.Now().Add(c.r.timeout)); err != nil {
		return 0, err
	}
	return c.r.conn.Read(p)
}

// heard tells the spy, at most once per SpyInterval.
func (r *receiver) heard() {
	if r.spy == nil {
		return
	}
	now := time.Now()
	if !r.lastSpy.IsZero() && now.Sub(r.lastSpy) < SpyInterval {
		return
	}
	r.lastSpy = now
	r.spy.Heard(r.id, r.peer, r.bucket, now)
}

// next reads one packet and returns its decoded payload, or nil for a NOOP.
// The payload is valid until the next call.
func (r *receiver) next() ([]byte, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return nil, r.readErr(err, true)
	}
	r.heard()
	h := r.hdr
	n := binary.LittleEndian.Uint32(h[4:])
	if h[0] != packetMagic || h[3] != 0 {
		return nil, fmt.Errorf("%w: bad packet header % x", ErrProtocol, h)
	}
	switch h[1] {
	case kindNoop:
		if h[2] != 0 || n != 0 {
			return nil, fmt.Errorf("%w: bad noop header % x", ErrProtocol, h)
		}
		return nil, nil
	case kindMessages:
	default:
		return nil, fmt.Errorf("%w: unknown packet kind %d", ErrProtocol, h[1])
	}
	compressed := h[2] == flagS2
	limit := uint32(MaxPacket)
	switch {
	case compressed && !r.s2:
		return nil, fmt.Errorf("%w: compressed packet without the s2 feature", ErrProtocol)
	case compressed:
		limit = uint32(s2.MaxEncodedLen(MaxPacket))
	case h[2] != 0:
		return nil, fmt.Errorf("%w: packet flags %#x", ErrProtocol, h[2])
	}
	if n == 0 || n > limit {
		return nil, fmt.Errorf("%w: packet of %d bytes", ErrProtocol, n)
	}
	p, err := r.readPayload(int(n))
	if err != nil {
		return nil, err
	}
	if !compressed {
		return p, nil
	}
	size, err := s2.DecodedLen(p)
	if err != nil || size == 0 || size > MaxPacket {
		return nil, fmt.Errorf("%w: compressed packet decoding to %d bytes (%v)", ErrProtocol, size, err)
	}
	if cap(r.dec) < size {
		r.dec = make([]byte, size)
	}
	out, err := s2.Decode(r.dec[:size], p)
	if err != nil {
		return nil, fmt.Errorf("%w: compressed packet: %w", ErrProtocol, err)
	}
	if cap(r.dec) > maxKeptBuffer {
		r.dec = nil
	}
	return out, nil
}

// readPayload reads n bytes. Its buffer grows with the bytes that actually
// arrive, never straight to a length the peer claimed.
func (r *receiver) readPayload(n int) ([]byte, error) {
	buf := r.buf[:0]
	if cap(buf) >= n {
		buf = buf[:n]
		if _, err := io.ReadFull(r.br, buf); err != nil {
			return nil, r.readErr(err, false)
		}
		return buf, nil
	}
	for len(buf) < n {
		chunk := min(n-len(buf), max(len(buf), readBuffer))
		if cap(buf)-len(buf) < chunk {
			grown := make([]byte, len(buf), len(buf)+chunk)
			copy(grown, buf)
			buf = grown
		}
		got, err := io.ReadFull(r.br, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, r.readErr(err, false)
		}
	}
	if cap(buf) <= maxKeptBuffer {
		r.buf = buf
	}
	return buf, nil
}

// readErr turns a read error into the package's errors.
func (r *receiver) readErr(err error, boundary bool) error {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF) && boundary:
		return ErrPeerClosed
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w in the middle of a packet", ErrPeerClosed)
	case errors.As(err, &ne) && ne.Timeout():
		return r.expired
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w (reset)", ErrPeerClosed)
	}
	return fmt.Errorf("cannot read from %s: %w", r.conn.RemoteAddr(), err)
}
