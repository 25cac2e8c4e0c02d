package stream

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"
)

// senderConfig tunes a sender.
type senderConfig struct {
	batch   int           // appends wait while this many message bytes are pending; 0: never wait
	delay   time.Duration // after the first message of a batch, wait this long for more
	noop    time.Duration // send a NOOP after this long with nothing sent
	timeout time.Duration // write deadline
	window  int64         // credit window in bytes; 0: no credit gate (a consumer)
	stall   time.Duration // with a window: ErrStalled after waiting this long for credit
	ackAt   uint64        // a consumer: send an ack once this many bytes are due
	s2      bool          // compress message packets when it saves bytes
}

func (c senderConfig) newBuffer() []byte { return make([]byte, HeaderLen, HeaderLen+c.batch+4096) }

// maxKeptBuffer bounds the buffers a sender keeps for reuse, so that one
// huge mutation does not pin its memory for the life of the connection.
const maxKeptBuffer = 4 << 20

// minCompress is the smallest payload worth compressing.
const minCompress = 512

// sender is the writing half of a stream connection. Any goroutine appends
// messages to the pending batch (lock, append to pending, unlock); the
// sender's own goroutine (run) cuts batches into packets, waits for credit,
// compresses and writes them, and sends a NOOP whenever nothing was sent for
// a NOOP interval.
type sender struct {
	conn net.Conn
	cfg  senderConfig

	mu      sync.Mutex
	pending []byte        // a packet header's room, then messages
	spare   []byte        // the previous batch's buffer, for reuse
	armed   bool          // pending holds messages and the writer knows
	first   time.Time     // when pending got its first message
	room    chan struct{} // closed when the writer takes pending
	err     error         // once set, appends fail with it
	drain   bool          // on stop: write what is pending first
	ack     uint64        // a consumer: bytes to acknowledge
	out     int64         // a producer: bytes sent and not yet acknowledged

	track *tracker // a producer: what each stream's bytes are (nil for a consumer)

	data   chan struct{} // pending got its first message, or an ack is due
	full   chan struct{} // pending reached the batch size
	credit chan struct{} // an ack arrived
	stop   chan struct{} // closed by close
	done   chan struct{} // closed by the goroutine running run

	cbuf []byte // compression output
}

func newSender(conn net.Conn, cfg senderConfig) *sender {
	return &sender{
		conn:    conn,
		cfg:     cfg,
		pending: cfg.newBuffer(),
		room:    make(chan struct{}),
		data:    make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
		credit:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// lock waits until the batch has room and returns with s.mu held, or
// returns an error (the sender is closed, or ctx ended) without it. The
// caller appends to s.pending and calls unlock.
func (s *sender) lock(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		if s.cfg.batch == 0 || len(s.pending) < HeaderLen+s.cfg.batch {
			return nil
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// unlock tells the writer about what was appended and releases s.mu.
func (s *sender) unlock() {
	n := len(s.pending) - HeaderLen
	if n > 0 && !s.armed {
		s.armed = true
		if s.cfg.delay > 0 {
			s.first = time.Now()
		}
		signal(s.data)
	}
	if s.cfg.batch > 0 && n >= s.cfg.batch {
		signal(s.full)
	}
	s.mu.Unlock()
}

// addAck records n more bytes the consumer has processed.
func (s *sender) addAck(n int) {
	s.mu.Lock()
	s.ack += uint64(n)
	due := s.ack >= s.cfg.ackAt
	s.mu.Unlock()
	if due {
		signal(s.data)
	}
}

// acked returns n bytes of credit to a producer.
func (s *sender) acked(n uint32) error {
	s.mu.Lock()
	if int64(n) > s.out {
		out := s.out
		s.mu.Unlock()
		return fmt.Errorf("%w: ack of %d bytes with %d outstanding", ErrProtocol, n, out)
	}
	s.out -= int64(n)
	if s.track != nil {
		s.track.ack(int64(n))
	}
	s.mu.Unlock()
	signal(s.credit)
	return nil
}

// close stops the sender: appends fail with err from now on, and run
// returns (after writing what is pending if drain).
func (s *sender) close(err error, drain bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err, s.drain = err, drain
	close(s.room)
	close(s.stop)
}

// run writes packets until the sender is closed or a write fails, and
// returns why.
func (s *sender) run() error {
	noop := time.NewTimer(s.cfg.noop)
	defer noop.Stop()
	batch := time.NewTimer(time.Hour)
	batch.Stop()
	defer batch.Stop()
	for {
		select {
		case <-s.data:
		case <-noop.C:
			if err := s.idle(); err != nil {
				return err
			}
			noop.Reset(s.cfg.noop)
			continue
		case <-s.stop:
			return s.final()
		}
		if wait := s.batchWait(); wait > 0 {
			batch.Reset(wait)
			select {
			case <-s.full:
			case <-batch.C:
			case <-s.stop:
				return s.final()
			}
			batch.Stop()
		}
		if s.cfg.window > 0 {
			if err := s.waitCredit(noop); err != nil {
				return err
			}
		}
		buf := s.take()
		if buf == nil {
			continue
		}
		if err := s.writeMessages(buf); err != nil {
			return err
		}
		s.give(buf)
		noop.Reset(s.cfg.noop)
	}
}

// idle runs when nothing was sent for a NOOP interval: a consumer sends
// the acknowledgement it owes, however small (so that the producer's view
// of what was applied catches up at rest, when acknowledgements never
// reach a fifth of the window), else a NOOP.
func (s *sender) idle() error {
	if s.cfg.window == 0 {
		s.mu.Lock()
		owed := s.ack > 0
		s.mu.Unlock()
		if owed {
			if buf := s.take(); buf != nil {
				err := s.writeMessages(buf)
				s.give(buf)
				return err
			}
		}
	}
	return s.write(s.noopPacket())
}

// batchWait returns how much longer the writer should wait for the batch
// to fill.
func (s *sender) batchWait() time.Duration {
	if s.cfg.delay == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending)-HeaderLen >= s.cfg.batch {
		return 0
	}
	return time.Until(s.first.Add(s.cfg.delay))
}

// waitCredit waits until fewer than window bytes are outstanding, sending
// NOOPs meanwhile (they need no credit).
func (s *sender) waitCredit(noop *time.Timer) error {
	var stall *time.Timer
	for {
		s.mu.Lock()
		ok := s.out < s.cfg.window
		s.mu.Unlock()
		if ok {
			return nil
		}
		if stall == nil {
			stall = time.NewTimer(s.cfg.stall)
			defer stall.Stop()
		}
		select {
		case <-s.credit:
			stall.Reset(s.cfg.stall)
		case <-noop.C:
			if err := s.write(s.noopPacket()); err != nil {
				return err
			}
			noop.Reset(s.cfg.noop)
		case <-stall.C:
			return fmt.Errorf("%w for %v", ErrStalled, s.cfg.stall)
		case <-s.stop:
			return s.final()
		}
	}
}

// final is run's last step after close: it writes what is pending if the
// sender drains, and returns the close error.
func (s *sender) final() error {
	s.mu.Lock()
	drain, err := s.drain, s.err
	s.mu.Unlock()
	if drain {
		if buf := s.take(); buf != nil {
			if werr := s.writeMessages(buf); werr != nil {
				return werr
			}
		}
	}
	return err
}

// take removes the pending batch (with a due ack appended) and returns it,
// or nil if there is nothing to send.
func (s *sender) take() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ack > 0 {
		n := min(s.ack, math.MaxUint32)
		s.pending = appendAck(s.pending, uint32(n))
		s.ack -= n
	}
	if len(s.pending) == HeaderLen {
		return nil
	}
	buf := s.pending
	s.pending, s.spare = s.spare, nil
	if s.pending == nil {
		s.pending = s.cfg.newBuffer()
	}
	s.armed = false
	if s.err == nil {
		close(s.room)
		s.room = make(chan struct{})
	}
	select {
	case <-s.full:
	default:
	}
	if s.cfg.window > 0 {
		s.out += int64(len(buf))
	}
	if s.track != nil {
		s.track.cut(len(buf))
	}
	return buf
}

// give returns a written batch's buffer for reuse.
func (s *sender) give(buf []byte) {
	if cap(buf) > maxKeptBuffer {
		return
	}
	s.mu.Lock()
	s.spare = buf[:HeaderLen]
	s.mu.Unlock()
}

func (s *sender) noopPacket() []byte {
	var h [HeaderLen]byte
	putHeader(h[:], kindNoop, 0, 0)
	return h[:]
}

// writeMessages writes buf (header room, then messages) as one packet,
// compressed if that was negotiated and saves bytes.
func (s *sender) writeMessages(buf []byte) error {
	payload := buf[HeaderLen:]
	if s.cfg.s2 && len(payload) >= minCompress {
		need := HeaderLen + s2.MaxEncodedLen(len(payload))
		if cap(s.cbuf) < need {
			s.cbuf = make([]byte, need)
		}
		enc := s2.Encode(s.cbuf[HeaderLen:need], payload)
		if len(enc) < len(payload) {
			out := s.cbuf[:HeaderLen+len(enc)]
			putHeader(out, kindMessages, flagS2, len(enc))
			err := s.write(out)
			if cap(s.cbuf) > maxKeptBuffer {
				s.cbuf = nil
			}
			return err
		}
	}
	putHeader(buf, kindMessages, 0, len(payload))
	return s.write(buf)
}

func (s *sender) write(b []byte) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.cfg.timeout)); err != nil {
		return fmt.Errorf("cannot write to %s: %w", s.conn.RemoteAddr(), err)
	}
	if _, err := s.conn.Write(b); err != nil {
		return fmt.Errorf("cannot write to %s: %w", s.conn.RemoteAddr(), err)
	}
	return nil
}

func putHeader(b []byte, kind, flags byte, n int) {
	b[0], b[1], b[2], b[3] = packetMagic, kind, flags, 0
	binary.LittleEndian.PutUint32(b[4:], uint32(n))
}
