package resp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shoal/internal/catalog"
	"shoal/internal/kv"
	"shoal/internal/queue"
	"shoal/internal/server"
	"shoal/internal/stats"
)

// Config configures a Server.
type Config struct {
	// NodeID and Version are reported by HELLO and INFO.
	NodeID  string
	Version string
	// VBuckets is the node's vBucket count.
	VBuckets int
	// MaxValueSize is the largest value (and bulk string) accepted.
	MaxValueSize int
	// MaxConnections caps open RESP connections.
	MaxConnections int
	// Channel is the kv channel of a new connection (SELECT changes it);
	// default "default".
	Channel string
	// Credentials maps names to secrets; when non-nil every connection
	// must AUTH name hex-secret before any data command.
	Credentials map[string][]byte
	// TLS, when set, serves TLS to clients that start a handshake (the
	// port serves both: the first byte tells).
	TLS *tls.Config
	// RequireTLS refuses AUTH, and with Credentials every data command,
	// on a connection without TLS.
	RequireTLS bool
	// WriteTimeout drops a client that reads nothing for this long.
	// Default 10s.
	WriteTimeout time.Duration
	// FrameTimeout drops a client that starts a command and does not
	// finish it within this time. Default 60s.
	FrameTimeout time.Duration
	// MaxPendingOut is how many answer bytes a connection collects before
	// it writes them without waiting for the end of a pipeline. Default
	// 1 MiB.
	MaxPendingOut int
	// Dial connects to another node's data port as a peer (HELLO and AUTH
	// done) to forward commands; nil: no forwarding (a key of a vBucket
	// the node is not active for is answered with an error).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// ForwardTimeout bounds a forwarded command, retries after a map
	// change included. Default 5s.
	ForwardTimeout time.Duration
	// Settings are the values of CONFIG GET (read-only).
	Settings map[string]string
	// Logger receives connection errors.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Channel == "" {
		c.Channel = "default"
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 60 * time.Second
	}
	if c.MaxPendingOut <= 0 {
		c.MaxPendingOut = 1 << 20
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 5000
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = 1 << 20
	}
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Engines are what the commands run on. Data is the node's data port
// server: its routing table and lease say which keys are served here, and
// channels are claimed and removed through it.
type Engines struct {
	Catalog *catalog.Catalog
	KV      *kv.Store
	Queue   *queue.Store // nil: the list commands answer an error
	Data    *server.Server
}

// Server serves RESP.
type Server struct {
	cfg    Config
	eng    Engines
	parser Parser
	fwd    *forwarder
	start  time.Time

	mu      sync.Mutex
	ln      []net.Listener
	conns   map[*conn]struct{}
	closing bool
	connWG  sync.WaitGroup
	done    chan struct{} // closed by Shutdown: blocking commands end

	nconns   atomic.Int64
	nextID   atomic.Int64
	accepted atomic.Uint64
	refused  atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64

	forwarded atomic.Uint64 // commands (or parts) sent to another node
	cstats    []cmdStat     // by command.idx
}

// New returns a server of eng.
func New(cfg Config, eng Engines) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, eng: eng, conns: map[*conn]struct{}{}, start: time.Now(), done: make(chan struct{}), cstats: make([]cmdStat, len(commandList))}
	s.parser = Parser{MaxBulk: cfg.MaxValueSize, MaxCommand: max(16<<20, 4*cfg.MaxValueSize)}
	if cfg.Dial != nil {
		s.fwd = newForwarder(cfg.Dial, cfg.Logger)
	}
	return s
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("resp: closed")

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.ln = append(s.ln, ln)
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.cfg.Logger.Warn("RESP accept failed; retrying", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		delay = 0
		s.accepted.Add(1)
		s.startConn(nc)
	}
}

func (s *Server) startConn(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	// Counted under s.mu, after the closing check (as the data port does):
	// a connection accepted while Shutdown runs is closed uncounted or
	// registered for Shutdown to wait for.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if s.nconns.Add(1) > int64(s.cfg.MaxConnections) {
		s.nconns.Add(-1)
		s.mu.Unlock()
		s.refused.Add(1)
		go func() {
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write(AppendError(nil, "ERR max number of clients reached"))
			nc.Close()
		}()
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.connWG.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.nconns.Add(-1)
	}()
}

// Shutdown stops accepting, lets every connection finish the commands it
// has received and closes it; blocking commands (BLPOP) end at once. It
// waits until the connections are closed or ctx is done, then closes what
// is left, and the forwarding connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for _, ln := range s.ln {
		ln.Close()
	}
	for c := range s.conns {
		c.raw.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close()
		}
		s.mu.Unlock()
		<-done
		err = ctx.Err()
	}
	if s.fwd != nil {
		s.fwd.close()
	}
	return err
}

// NumConnections returns the number of open RESP connections.
func (s *Server) NumConnections() int64 { return s.nconns.Load() }

// Report implements stats.Source: connections, bytes and, for every
// command, the same request counters and latencies as the data port's
// requests, named RESP.NAME (request label "RESP.GET").
func (s *Server) Report(f *stats.Fields) {
	f.Counter("resp/bytes_sent", "resp_bytes_sent_total", "Bytes written to RESP connections.", float64(s.bytesOut.Load()))
	f.Counter("resp/bytes_received", "resp_bytes_received_total", "Bytes read from RESP connections.", float64(s.bytesIn.Load()))
	f.Gauge("resp/connections", "resp_connections", "Open RESP connections.", float64(s.nconns.Load()))
	f.Counter("resp/connections_accepted", "resp_connections_accepted_total", "RESP connections accepted.", float64(s.accepted.Load()))
	f.Counter("resp/connections_refused", "resp_connections_refused_total", "RESP connections refused over --max-connections.", float64(s.refused.Load()))
	f.Counter("resp/forwarded", "resp_forwarded_total", "RESP commands (or parts of multi-key ones) forwarded to the active of their keys.", float64(s.forwarded.Load()))
	for _, cmd := range commandList {
		st := &s.cstats[cmd.idx]
		if st.lat.Count() == 0 {
			continue
		}
		name := "RESP." + cmd.name
		prefix := "request/" + name
		st.lat.Report(f, prefix, "request", name)
		f.Counter(prefix+"/errors", "request_errors_total", "Answers with a status other than ok, by request and status (not_found and empty included).", float64(st.errors.Load()), "request", name, "status", "resp_error")
	}
}

// countingReader counts the bytes read from a connection.
type countingReader struct {
	r io.Reader
	s *Server
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.s.bytesIn.Add(uint64(n))
	return n, err
}

// sniffTLS reports whether the client starts a TLS handshake (a record of
// type handshake, 0x16: no RESP command starts so).
func sniffTLS(br *bufio.Reader) bool {
	b, err := br.Peek(1)
	return err == nil && b[0] == 0x16
}

// bufConn is a connection whose reads go through a bufio.Reader that has
// already peeked at its first bytes.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.br.Read(p) }
