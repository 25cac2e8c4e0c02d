// Package server is a node's data port: the accept loop, the connection
// limit, TLS, the per-connection read and write loop that answers pipelined
// requests in batches, the handshake and authentication, flow-controlled
// streams, and the request handlers that call the engines.
//
// One goroutine reads each connection. Requests are decoded straight out
// of the read buffer and answered into an output buffer; the buffer is
// written when the read buffer is drained, so one read and one write serve
// every request that arrived together. Streams (GetAll, Mirror, ...) run in
// goroutines of their own and share the output buffer, as do log appends
// waiting for their group commit (log.go). locks.go lists the locks, the
// order they are taken in and which are never held across I/O.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shoal/internal/catalog"
	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/queue"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// Config configures a Server.
type Config struct {
	// NodeID and Version are reported by HELLO and Info.
	NodeID  string
	Version string
	// VBuckets is the node's vBucket count.
	VBuckets int
	// MaxValueSize is the largest value a request may carry.
	MaxValueSize int
	// MaxConnections caps open client connections; more are refused with
	// StatusTooManyConnections and closed.
	MaxConnections int
	// TLS, when set, wraps every accepted connection.
	TLS *tls.Config
	// Credentials maps client names to secrets; when non-nil every
	// connection must authenticate before any data request.
	Credentials map[string][]byte
	// WriteTimeout drops a client whose socket accepts nothing for this long
	// (it sends requests but does not read answers). Default 10s.
	WriteTimeout time.Duration
	// FrameTimeout drops a client that starts a frame and does not finish it
	// within this time. Default 60s.
	FrameTimeout time.Duration
	// MaxPendingOut is how many answer bytes may wait for the socket before
	// the connection stops reading requests. Default 4 MiB.
	MaxPendingOut int
	// Info adds fields to the Info answer.
	Info func() map[string]any
	// Dumps makes the dumps of OpDumpNow (admin.go); nil refuses it.
	Dumps Dumper
	// ChannelRemoved, if set, is called by RemoveChannel after the channel
	// left its engine and the catalog, before the answer (the dumps of a kv
	// channel are moved aside there); its error is the answer.
	ChannelRemoved func(name string, kind engine.Kind) error
	// Channels, when set, creates and removes channels cluster-wide
	// (cluster.go); without it the catalog is the node's own.
	Channels ChannelDirectory
	// NoEventLoop keeps every connection on a goroutine of its own. By
	// default an idle plain-TCP connection waits in an event loop (epoll,
	// one per GOMAXPROCS, Linux only) instead, which serves its plain
	// requests without a goroutine wake-up and a failed read per request
	// (loop_linux.go).
	NoEventLoop bool
	// Logger receives connection and request errors.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 60 * time.Second
	}
	if c.MaxPendingOut <= 0 {
		c.MaxPendingOut = 4 << 20
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 5000
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Engines are the storage engines a server serves. A nil engine's requests
// are answered with StatusUnsupported.
type Engines struct {
	Catalog *catalog.Catalog
	KV      *kv.Store
	Queue   *queue.Store
	Log     *logstore.Store
}

// TakeoverFunc receives a connection whose first request asked to leave the
// request protocol (OpStreamOpen). It owns nc from then on.
type TakeoverFunc func(nc net.Conn, h wire.Header, body []byte)

type handlerFunc func(c *conn, h wire.Header, body []byte)

type handler struct {
	fn    handlerFunc
	limit int  // largest body accepted
	open  bool // allowed before authentication
	admin bool // needs the admin credential when auth is on
	peer  bool // needs the admin or the peer ("node") credential when auth is on
	loop  bool // may run in an event loop: answers at once, never waits (loop.go)
	async bool // answers from a goroutine of its own, which calls requestDone
}

// Server serves the data port.
type Server struct {
	cfg      Config
	eng      Engines
	handlers [256]handler
	table    vbmap.Holder // this node's routing table; nil: active for every vBucket
	lease    atomic.Int64 // unix nanoseconds until which the node may serve its active vBuckets; 0: no lease
	maps     mapWatch     // wakes the MapNotify streams at every new map revision
	cluster  Cluster      // the cluster requests (HandleCluster); nil on a standby
	takeover map[wire.Opcode]TakeoverFunc
	loops    loops        // event loops of idle plain-TCP connections (loop_linux.go)
	looped   atomic.Int64 // connections in an event loop
	start    time.Time

	mu      sync.Mutex
	ln      []net.Listener
	conns   map[*conn]struct{}
	closing bool
	connWG  sync.WaitGroup

	nconns   atomic.Int64
	accepted atomic.Uint64
	refused  atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	ops      [256]opStats
	// kvHits and kvMisses count the kv reads (Get, GetReplica) that found
	// their record and those that did not.
	kvHits, kvMisses atomic.Uint64

	acks durableAcks // queue answers waiting for the journal (queue.go)
	dur  durability  // durable writes waiting for their replicas (durability.go)
}

type opStats struct {
	lat       stats.Latency
	active    atomic.Int64
	maxActive atomic.Int64
	// errors counts the answers by status (end); index 0, ok, is not
	// counted, and statuses past the array share its last element.
	errors [maxCountedStatus + 1]atomic.Uint64
}

// maxCountedStatus is the highest status counted on its own by
// opStats.errors; higher ones are counted with it.
const maxCountedStatus = 63

// statusLabel is a status's name as a Prometheus label value: "not
// found" is not_found, "exists (CAS mismatch)" exists_cas_mismatch.
func statusLabel(st wire.Status) string {
	var b []byte
	for _, r := range []byte(strings.ToLower(st.String())) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b = append(b, r)
		case len(b) > 0 && b[len(b)-1] != '_':
			b = append(b, '_')
		}
	}
	return strings.TrimSuffix(string(b), "_")
}

// countAnswer counts an answer of op with status st. A stream's end with
// stopped (the client stopped it) is no error.
func (s *Server) countAnswer(op wire.Opcode, st wire.Status) {
	if st != wire.StatusOK && st != wire.StatusStopped {
		s.ops[op].errors[min(int(st), maxCountedStatus)].Add(1)
	}
}

// Requests returns how many requests the server has answered since it
// started, every kind together (what `shoal bench` divides per node).
func (s *Server) Requests() uint64 {
	var n uint64
	for op := range s.ops {
		n += s.ops[op].lat.Count()
	}
	return n
}

// New returns a server for eng.
func New(cfg Config, eng Engines) *Server {
	cfg.setDefaults()
	if eng.Catalog == nil {
		eng.Catalog = catalog.New()
	}
	s := &Server{cfg: cfg, eng: eng, conns: map[*conn]struct{}{}, takeover: map[wire.Opcode]TakeoverFunc{}, start: time.Now()}
	s.registerGeneric()
	s.registerAdmin()
	if eng.KV != nil {
		s.registerKV()
	}
	if eng.Queue != nil {
		s.registerQueue()
	}
	if eng.Log != nil {
		s.registerLog()
	}
	return s
}

// SetTable makes t the node's routing table: every request asks it for
// its vBucket's Route. Until the first call (or after SetTable(nil)) the
// server is active for every vBucket, as a lone server is. When t's map
// revision differs from the previous table's, every MapNotify stream
// sends it (the node calls SetTable for every map it applies).
func (s *Server) SetTable(t *vbmap.Table) {
	s.table.Store(t)
	var rev uint64
	if t != nil {
		rev = t.Map().Revision
	}
	s.maps.set(rev)
}

// mapWatch is the revision of the node's routing table, with a channel
// closed (and replaced) whenever it changes: the MapNotify streams wait
// on it.
type mapWatch struct {
	mu  sync.Mutex
	rev uint64
	ch  chan struct{}
}

func (w *mapWatch) set(rev uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rev == w.rev {
		return
	}
	w.rev = rev
	if w.ch != nil {
		close(w.ch)
	}
	w.ch = make(chan struct{})
}

// get returns the current revision and a channel closed at the next
// change.
func (w *mapWatch) get() (uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.rev, w.ch
}

// serves reports whether the node serves vb's scans and sizes: it is
// vb's active, or, with replicas, holds a replica copy (GetAll and
// LogRange "replica copies too").
func (s *Server) serves(vb uint16, replicas bool) bool {
	t := s.table.Load()
	if t == nil {
		return true
	}
	st := t.State(vb)
	return st == vbmap.Active || (replicas && st == vbmap.Replica)
}

// activeFilter returns a function reporting whether the node is active
// for a vBucket, by the current table; nil (every vBucket) without one.
func (s *Server) activeFilter() func(vb uint16) bool {
	t := s.table.Load()
	if t == nil {
		return nil
	}
	return func(vb uint16) bool { return t.State(vb) == vbmap.Active }
}

// SetLease bounds when the node may serve its active vBuckets: requests
// that start after until are answered `not my vbucket` whatever the table
// says (a node stopped and resumed must not serve one request before its
// lease is checked again). The zero time means no lease (a lone node).
func (s *Server) SetLease(until time.Time) {
	if until.IsZero() {
		s.lease.Store(0)
		return
	}
	s.lease.Store(until.UnixNano())
}

// leased reports whether a request that started at now may be served as
// active.
func (s *Server) leased(now time.Time) bool {
	l := s.lease.Load()
	return l == 0 || now.UnixNano() <= l
}

// route is this node's Route for vb.
func (s *Server) route(vb uint16) vbmap.Route {
	t := s.table.Load()
	if t == nil {
		return vbmap.Route{State: vbmap.Active}
	}
	return t.Route(vb)
}

// state is the node's state for vb, without the route's address look-up
// (the check every request makes).
func (s *Server) state(vb uint16) vbmap.State {
	t := s.table.Load()
	if t == nil {
		return vbmap.Active
	}
	return t.State(vb)
}

// serving reports whether the node is active for some vBucket: requests
// that place records round-robin (queue Pop/Consume/Produce, keyless
// pushes and appends, RemoveChannel) need one.
func (s *Server) serving() bool {
	t := s.table.Load()
	return t == nil || t.Actives() > 0
}

// HandleTakeover routes connections whose first data request is op to fn.
// Call before Serve.
func (s *Server) HandleTakeover(op wire.Opcode, fn TakeoverFunc) { s.takeover[op] = fn }

func (s *Server) handle(op wire.Opcode, h handler) {
	if h.limit == 0 {
		h.limit = 64 << 10
	}
	s.handlers[op] = h
}

// singleLimit is the largest body of a request carrying one value.
func (s *Server) singleLimit() int { return s.cfg.MaxValueSize + 2*256 + 64 }

// batchLimit is the largest body of a request carrying many values.
func (s *Server) batchLimit() int { return max(s.singleLimit(), 16<<20) }

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("server: closed")

// Serve accepts connections on ln until Shutdown. It returns ErrClosed after
// Shutdown, or the error that stopped the accept loop.
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
				s.cfg.Logger.Warn("accept failed; retrying", "err", err, "retry_in", delay)
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
	// Counted under s.mu, after the closing check: a connection accepted
	// while Shutdown runs is either closed here uncounted or registered
	// for Shutdown to wait for, never counted after Shutdown returned.
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
		go refuse(nc, s.cfg.MaxConnections)
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go c.serve() // c.retire (connDone) forgets it
}

// refuse answers an over-limit connection with StatusTooManyConnections and
// closes it. The answer goes out before any TLS handshake, in clear: it is
// only a status.
func refuse(nc net.Conn, limit int) {
	msg := fmt.Sprintf("the node serves at most %d connections", limit)
	b, off := wire.BeginFrame(nil, wire.Header{Magic: wire.MagicResponse, Version: wire.Version, Status: wire.StatusTooManyConnections})
	b = append(b, msg...)
	b = wire.EndFrame(b, off)
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	nc.Write(b)
	nc.Close()
}

// Shutdown stops accepting, lets every connection finish the requests it
// has already received, ends streams with StatusShuttingDown and closes
// the connections. It waits until they are closed or ctx is done, then
// closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, ln := range s.ln {
		ln.Close()
	}
	for c := range s.conns {
		c.beginShutdown()
	}
	s.mu.Unlock()
	s.shutdownLoops() // their connections go back to goroutines, which end
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// NumConnections returns the number of open client connections.
func (s *Server) NumConnections() int64 { return s.nconns.Load() }

// Report implements stats.Source: bytes, connections and per-request counts,
// latencies and errors; kv hits and misses.
func (s *Server) Report(f *stats.Fields) {
	f.Counter("bytes_sent", "bytes_sent_total", "Bytes written to client connections.", float64(s.bytesOut.Load()))
	f.Counter("bytes_received", "bytes_received_total", "Bytes read from client connections.", float64(s.bytesIn.Load()))
	n := s.nconns.Load()
	f.Gauge("handling_connections", "connections", "Open client connections.", float64(n))
	f.Gauge("handling_connections_pcnt", "connections_ratio", "Open connections as a share (0..1) of --max-connections.", float64(n)/float64(s.cfg.MaxConnections))
	f.Gauge("event_loop_connections", "event_loop_connections", "Open client connections served by an event loop (the others have a goroutine each: TLS, streams being set up, requests that wait).", float64(s.looped.Load()))
	f.Counter("connections_accepted", "connections_accepted_total", "Connections accepted.", float64(s.accepted.Load()))
	f.Counter("connections_refused", "connections_refused_total", "Connections refused over --max-connections.", float64(s.refused.Load()))
	f.Counter("kv/hits", "kv_hits_total", "kv reads (Get, GetReplica) that found their record.", float64(s.kvHits.Load()))
	f.Counter("kv/misses", "kv_misses_total", "kv reads (Get, GetReplica) that found no record.", float64(s.kvMisses.Load()))
	for op := range s.ops {
		st := &s.ops[op]
		if st.lat.Count() == 0 {
			continue
		}
		name := wire.Opcode(op).String()
		prefix := "request/" + name
		st.lat.Report(f, prefix, "request", name)
		f.Gauge(prefix+"/max_active", "requests_max_active", "Most requests of this kind in progress at once.", float64(st.maxActive.Load()), "request", name)
		var errs uint64
		for code := range st.errors {
			c := st.errors[code].Load()
			if c == 0 {
				continue
			}
			errs += c
			status := statusLabel(wire.Status(code))
			if code == maxCountedStatus {
				status = "other"
			}
			f.Counter("", "request_errors_total", "Answers with a status other than ok, by request and status (not_found and empty included).", float64(c), "request", name, "status", status)
		}
		f.LogCounter(prefix+"/errors", float64(errs))
	}
}
