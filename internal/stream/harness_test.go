package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"shoal/internal/engine"
	"shoal/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quiet discards library logs in tests.
var quiet = slog.New(slog.DiscardHandler)

// server is a producer node for tests: a loopback listener whose accept
// loop reads the OpStreamOpen frame and hands the connection to Serve, as
// the node's server does.
type server struct {
	t      *testing.T
	eng    *memEngine
	prod   *Producer
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error // what each Serve returned
	mu     sync.Mutex
	conns  []net.Conn
}

func newServer(t *testing.T, cfg ProducerConfig) *server {
	t.Helper()
	s := &server{t: t, eng: newMemEngine(), errs: make(chan error, 128)}
	if cfg.Name == "" {
		cfg.Name = "node-a"
	}
	if cfg.Engines == nil {
		cfg.Engines = func(bucket string) engine.Engine {
			if bucket == "kv" {
				return s.eng
			}
			return nil
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	prod, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.prod = prod
	s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.accept(ctx)
	t.Cleanup(s.stop)
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) accept(ctx context.Context) {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, conn)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			h, body, err := readFrame(conn)
			if err != nil {
				conn.Close()
				s.errs <- err
				return
			}
			s.errs <- s.prod.Serve(ctx, conn, h, body)
		}()
	}
}

// readFrame reads one wire frame, as the node's server does.
func readFrame(conn net.Conn) (wire.Header, []byte, error) {
	var hb [wire.HeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return wire.Header{}, nil, err
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil {
		return h, nil, err
	}
	if h.BodyLen > 4096 {
		return h, nil, errors.New("open frame too big")
	}
	body := make([]byte, h.BodyLen)
	_, err = io.ReadFull(conn, body)
	return h, body, err
}

// shutdown cancels every Serve and waits for them.
func (s *server) stop() {
	s.cancel()
	s.ln.Close()
	s.wg.Wait()
}

// dropAll closes the server side of every connection abruptly.
func (s *server) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

// serveErr waits for the next Serve result.
func (s *server) serveErr() error {
	s.t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(10 * time.Second):
		s.t.Fatal("no Serve returned")
		return nil
	}
}

// recorder is a Handler that keeps copies of everything delivered.
type recorder struct {
	mu       sync.Mutex
	muts     map[uint16][]engine.Mutation
	snaps    map[uint16][][2]uint64
	logs     map[uint16][]FailoverEntry
	failAt   map[uint16]uint64 // Mutation fails at this seqno
	ends     chan End
	lost     chan *ConnError
	progress chan struct{}
}

func newRecorder() *recorder {
	return &recorder{
		muts: make(map[uint16][]engine.Mutation), snaps: make(map[uint16][][2]uint64),
		logs: make(map[uint16][]FailoverEntry), failAt: make(map[uint16]uint64),
		ends: make(chan End, 4096), lost: make(chan *ConnError, MaxConnections),
		progress: make(chan struct{}, 1),
	}
}

func (r *recorder) Started(vb uint16, log []FailoverEntry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs[vb] = append([]FailoverEntry{}, log...)
	return nil
}

func (r *recorder) Snapshot(vb uint16, start, end uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps[vb] = append(r.snaps[vb], [2]uint64{start, end})
	return nil
}

var errApply = errors.New("apply failed")

func (r *recorder) Mutation(m *engine.Mutation) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if at := r.failAt[m.VBucket]; at != 0 && m.Seqno == at {
		return errApply
	}
	c := *m
	c.Key, c.Value = bytes.Clone(m.Key), bytes.Clone(m.Value)
	r.muts[m.VBucket] = append(r.muts[m.VBucket], c)
	select {
	case r.progress <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) Ended(e End)         { r.ends <- e }
func (r *recorder) Lost(err *ConnError) { r.lost <- err }

func (r *recorder) got(vb uint16) []engine.Mutation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]engine.Mutation(nil), r.muts[vb]...)
}

func (r *recorder) last(vb uint16) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ms := r.muts[vb]; len(ms) > 0 {
		return ms[len(ms)-1].Seqno
	}
	return 0
}

// diffMutations compares two mutation lists cheaply and, if they differ,
// returns a readable diff.
func diffMutations(want, got []engine.Mutation) string {
	same := len(want) == len(got)
	for i := 0; same && i < len(want); i++ {
		w, g := want[i], got[i]
		same = w.VBucket == g.VBucket && w.Seqno == g.Seqno && w.Op == g.Op && w.Channel == g.Channel &&
			bytes.Equal(w.Key, g.Key) && bytes.Equal(w.Value, g.Value) &&
			w.Expiry == g.Expiry && w.Timestamp == g.Timestamp && w.Ref == g.Ref
	}
	if same {
		return ""
	}
	return cmp.Diff(want, got, cmpopts.EquateEmpty())
}

// waitFor waits until cond holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// end waits for the next Ended.
func (r *recorder) end(t *testing.T) End {
	t.Helper()
	select {
	case e := <-r.ends:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no Ended")
		return End{}
	}
}

// lostErr waits for the next Lost.
func (r *recorder) lostErr(t *testing.T) *ConnError {
	t.Helper()
	select {
	case e := <-r.lost:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no Lost")
		return nil
	}
}

// dial opens a consumer session with test defaults filled in.
func dial(t *testing.T, addr string, cfg ConsumerConfig) *Consumer {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "node-b"
	}
	if cfg.Bucket == "" {
		cfg.Bucket = "kv"
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	cfg.Addr = addr
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		c.Wait()
	})
	return c
}
