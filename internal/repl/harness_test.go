package repl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/queue"
	"shoal/internal/server"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quiet discards logs in tests.
var quiet = slog.New(slog.DiscardHandler)

// testVBuckets keeps tests small.
const testVBuckets = 16

func allVBuckets(n int) []uint16 {
	vbs := make([]uint16, n)
	for i := range vbs {
		vbs[i] = uint16(i)
	}
	return vbs
}

// side is one node of a test: engines, their failover logs and, for a
// producer, a real data port (internal/server) whose StreamOpen takeover
// goes to a Producer.
type side struct {
	t     testing.TB
	name  string
	dir   string
	kv    *kv.Store
	queue *queue.Store
	log   *logstore.Store
	logs  map[string]*Logs

	srv    *server.Server
	prod   *Producer
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newSide opens the engines of a node in dir (reused by a restart).
func newSide(t testing.TB, name, dir string, withQueue, withLog bool) *side {
	t.Helper()
	s := &side{t: t, name: name, dir: dir, logs: map[string]*Logs{}}
	var err error
	s.kv, err = kv.New(kv.Config{VBuckets: testVBuckets, Logger: quiet, StreamBacklog: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kv.Close)
	s.openLogs("kv", s.kv)
	if withQueue {
		s.queue, err = queue.Open(queue.Config{Dir: filepath.Join(dir, "queue"), VBuckets: testVBuckets, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.queue.Close() })
		s.openLogs("queue", s.queue)
	}
	if withLog {
		s.log, err = logstore.Open(logstore.Config{Dir: filepath.Join(dir, "log"), VBuckets: testVBuckets, Fsync: time.Millisecond, MaintainEvery: -1, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.log.Close() })
		s.openLogs("log", s.log)
	}
	return s
}

func (s *side) openLogs(bucket string, e engine.Engine) {
	l, err := OpenLogs(LogsConfig{Path: filepath.Join(s.dir, "repl", "failover-"+bucket), VBuckets: testVBuckets, Logger: quiet}, e.HighSeqno)
	if err != nil {
		s.t.Fatal(err)
	}
	s.logs[bucket] = l
}

func (s *side) buckets() []Bucket {
	bs := []Bucket{{Name: "kv", Engine: s.kv, Logs: s.logs["kv"]}}
	if s.queue != nil {
		bs = append(bs, Bucket{Name: "queue", Engine: s.queue, Logs: s.logs["queue"]})
	}
	if s.log != nil {
		bs = append(bs, Bucket{Name: "log", Engine: s.log, Logs: s.logs["log"]})
	}
	return bs
}

// serve starts the data port on a new address; credentials may be nil.
func (s *side) serve(creds map[string][]byte) string {
	s.t.Helper()
	return s.serveOn("127.0.0.1:0", creds)
}

// serveAt starts the data port on addr (a restart on the same address).
func (s *side) serveAt(addr string) {
	s.t.Helper()
	s.serveOn(addr, nil)
}

func (s *side) serveOn(addr string, creds map[string][]byte) string {
	s.t.Helper()
	prod, err := NewProducer(ProducerConfig{Name: s.name, Buckets: s.buckets(), Logger: quiet})
	if err != nil {
		s.t.Fatal(err)
	}
	return s.listen(addr, creds, prod)
}

// serveCfg starts the data port with a producer of cfg (its name, buckets
// and logger filled in).
func (s *side) serveCfg(cfg ProducerConfig) string {
	s.t.Helper()
	cfg.Name, cfg.Buckets, cfg.Logger = s.name, s.buckets(), quiet
	prod, err := NewProducer(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.listen("127.0.0.1:0", nil, prod)
}

// serveWith starts the data port with producer prod.
func (s *side) serveWith(prod *Producer) string {
	s.t.Helper()
	return s.listen("127.0.0.1:0", nil, prod)
}

func (s *side) listen(addr string, creds map[string][]byte, prod *Producer) string {
	s.t.Helper()
	var err error
	s.prod = prod
	s.srv = server.New(server.Config{NodeID: s.name, VBuckets: testVBuckets, Credentials: creds, Logger: quiet},
		server.Engines{KV: s.kv, Queue: s.queue})
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.srv.HandleTakeover(wire.OpStreamOpen, func(nc net.Conn, h wire.Header, body []byte) {
		prod.Serve(ctx, nc, h, body)
	})
	s.ln, err = net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.srv.Serve(s.ln) }()
	s.t.Cleanup(s.stop)
	return s.ln.Addr().String()
}

// stop shuts the data port down (streams end with ReasonShutdown).
func (s *side) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	s.wg.Wait()
	s.cancel = nil
}

// replicate starts a Replicator of bucket from addr into s.
func (s *side) replicate(addr, bucket string, e engine.Engine, mod func(*Config)) *Replicator {
	s.t.Helper()
	cfg := Config{
		Name: s.name, Addr: addr, Bucket: bucket, Engine: e, Logs: s.logs[bucket],
		VBuckets: allVBuckets(testVBuckets), Handshake: Handshake(s.name, "", nil, testVBuckets),
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		// A second of NOOPs: tests that count reconnects do not see one
		// from a loaded machine's stall; those about silence set their own.
		Options: Options{NoopInterval: time.Second}, Logger: quiet,
	}
	if mod != nil {
		mod(&cfg)
	}
	for _, vb := range cfg.VBuckets { // the map makes this node their replica
		if err := e.SetState(vb, vbmap.Replica); err != nil {
			s.t.Fatal(err)
		}
	}
	r, err := New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	r.Start()
	s.t.Cleanup(r.Stop)
	return r
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reached within %v: %s", what, d, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kvContents renders every live record of every channel with its seqno,
// and every vBucket's high seqno.
func kvContents(s *kv.Store) string {
	var b strings.Builder
	for vb := range testVBuckets {
		fmt.Fprintf(&b, "vb %d high %d\n", vb, s.HighSeqno(uint16(vb)))
	}
	for _, cs := range s.Channels() {
		for vb := range testVBuckets {
			s.Scan(cs.Name, uint16(vb), nil, func(r kv.Record) bool {
				fmt.Fprintf(&b, "%s %d %s=%s @%d exp %d\n", cs.Name, vb, r.Key, r.Value, r.Seqno, r.Expiry)
				return true
			})
		}
	}
	return b.String()
}

// sameKV waits until the replica's kv equals the producer's and the
// replicator reports every vBucket caught up.
func sameKV(t testing.TB, a, b *kv.Store, r *Replicator) {
	t.Helper()
	eventually(t, 20*time.Second, "replica equal to the producer", func() (bool, string) {
		want, got := kvContents(a), kvContents(b)
		st := r.Status(false)
		if want == got && st.CaughtUp == st.VBuckets {
			return true, ""
		}
		return false, fmt.Sprintf("status %+v\nproducer:\n%s\nreplica:\n%s", st, head(want), head(got))
	})
}

func head(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "..."
	}
	return s
}

// queueContents pops every record of every channel and returns them
// sorted per channel (a replica's order mixes vBuckets differently). A
// replica's vBuckets are made active first: pops take only records of
// active vBuckets.
func queueContents(t *testing.T, q *queue.Store) map[string][]string {
	t.Helper()
	for vb := range uint16(testVBuckets) {
		if err := q.SetState(vb, vbmap.Active); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string][]string{}
	for _, cs := range q.Channels() {
		for {
			v, err := q.Pop(cs.Name, nil)
			if err != nil {
				break
			}
			out[cs.Name] = append(out[cs.Name], string(v))
		}
		slices.Sort(out[cs.Name])
	}
	return out
}
