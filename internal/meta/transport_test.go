package meta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestStreamLayerAddr(t *testing.T) {
	s := NewStreamLayer("10.1.2.3:11210", nil)
	defer s.Close()
	if a := s.Addr(); a.String() != "10.1.2.3:11210" || a.Network() != "tcp" {
		t.Fatalf("Addr = %s/%s", a.Network(), a)
	}
}

func TestStreamLayerDeliverAccept(t *testing.T) {
	s := NewStreamLayer("127.0.0.1:1", nil)
	ours, theirs := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- s.Deliver(ours) }()
	c, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	go func() { _, _ = theirs.Write([]byte("ping")) }()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read through the accepted conn: %q, %v", buf, err)
	}

	// Close closes the accepted connection: the peer sees EOF.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.Read(buf); err != io.EOF {
		t.Fatalf("peer read after Close: %v, want EOF", err)
	}
	_ = c.Close() // raft closes it too: harmless
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStreamLayerClosed(t *testing.T) {
	s := NewStreamLayer("127.0.0.1:1", func(ctx context.Context, addr string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})

	// A blocked Accept and a blocked Deliver both return at Close.
	acceptErr := make(chan error, 1)
	go func() {
		c, err := s.Accept()
		if c != nil {
			c.Close()
		}
		acceptErr <- err
	}()
	dialErr := make(chan error, 1)
	go func() {
		_, err := s.Dial("127.0.0.1:2", time.Minute)
		dialErr <- err
	}()
	// Most likely both are blocked by now; if not, they meet a closed
	// layer: the same errors either way.
	time.Sleep(10 * time.Millisecond)
	s.Close()
	for name, ch := range map[string]chan error{"Accept": acceptErr, "Dial": dialErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, ErrStreamClosed) || !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrStreamClosed", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not return after Close", name)
		}
	}

	ours, theirs := net.Pipe()
	defer theirs.Close()
	if err := s.Deliver(ours); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Deliver after Close: %v", err)
	}
	if _, err := theirs.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a conn delivered after Close is not closed: %v", err)
	}
	if _, err := s.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if err := s.Deliver(nil); err == nil {
		t.Fatal("Deliver(nil) succeeded")
	}
}

func TestStreamLayerDeliverBlockedClose(t *testing.T) {
	s := NewStreamLayer("127.0.0.1:1", nil)
	ours, theirs := net.Pipe()
	defer theirs.Close()
	errc := make(chan error, 1)
	go func() { errc <- s.Deliver(ours) }()
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrStreamClosed) {
			t.Fatalf("blocked Deliver at Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked Deliver did not return at Close")
	}
	if _, err := theirs.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the undelivered conn is not closed: %v", err)
	}
}

func TestStreamLayerDial(t *testing.T) {
	var gotAddr string
	var gotDeadline time.Time
	var peers []net.Conn
	s := NewStreamLayer("127.0.0.1:1", func(ctx context.Context, addr string) (net.Conn, error) {
		gotAddr = addr
		gotDeadline, _ = ctx.Deadline()
		switch addr {
		case "fail":
			return nil, errors.New("refused")
		case "nil":
			return nil, nil
		case "slow":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		a, b := net.Pipe()
		peers = append(peers, b)
		return a, nil
	})
	start := time.Now()
	c, err := s.Dial("127.0.0.1:7", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if gotAddr != "127.0.0.1:7" {
		t.Errorf("dialer got %q", gotAddr)
	}
	if d := gotDeadline.Sub(start); d < 2*time.Second || d > 4*time.Second {
		t.Errorf("dial context deadline %v after the call, want about 3s", d)
	}
	if _, err := s.Dial("127.0.0.1:7", 0); err != nil {
		t.Fatal(err)
	}
	if d := gotDeadline.Sub(start); d < DefaultDialTimeout-time.Second || d > DefaultDialTimeout+time.Second {
		t.Errorf("timeout 0: deadline %v, want about %v", d, DefaultDialTimeout)
	}
	if _, err := s.Dial("fail", time.Second); err == nil || !bytes.Contains([]byte(err.Error()), []byte("refused")) {
		t.Errorf("failing dial: %v", err)
	}
	if _, err := s.Dial("nil", time.Second); err == nil {
		t.Error("a dialer returning (nil, nil) gave no error")
	}
	if _, err := s.Dial("slow", 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow dial: %v, want DeadlineExceeded", err)
	}
	// Dialed connections are closed with the layer.
	s.Close()
	for i, p := range peers {
		if _, err := p.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("peer %d of a dialed conn after Close: %v", i, err)
		}
	}
	_ = c.Close()
}

// raftPrefix stands in for the node's handshake and RaftOpen frame.
const raftPrefix = "RAFTOPEN"

// netNode is one raft on a real 127.0.0.1 listener.
type netNode struct {
	id    raft.ServerID
	ln    net.Listener
	layer *StreamLayer
	trans *raft.NetworkTransport
	fsm   *countFSM
	raft  *raft.Raft
	wg    sync.WaitGroup // the accept loop and its handshakes
	down  bool
}

// serve is the test's stand-in for the node's server: read the prefix,
// hand the rest of the connection to raft.
func (n *netNode) serve() {
	defer n.wg.Done()
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, len(raftPrefix))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != raftPrefix {
				c.Close()
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			_ = n.layer.Deliver(c) // closes c on failure
		}()
	}
}

func dialRaft(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	if _, err := io.WriteString(c, raftPrefix); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// countFSM applies commands to a list.
type countFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return nil
}

func (f *countFSM) state() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds)
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, errors.New("no snapshots in this test")
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	rc.Close()
	return errors.New("no snapshots in this test")
}

func (n *netNode) stop(t *testing.T) {
	if n.down {
		return
	}
	n.down = true
	if err := n.raft.Shutdown().Error(); err != nil { // also closes the transport
		t.Errorf("shutdown %s: %v", n.id, err)
	}
	n.trans.Close() // idempotent; raft did it already
	n.ln.Close()
	n.wg.Wait()
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTransportCluster(t *testing.T) {
	logs := &capture{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var nodes []*netNode
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop(t)
		}
		if t.Failed() {
			logs.mu.Lock()
			t.Logf("raft logs:\n%s", logs.buf.String())
			logs.mu.Unlock()
		}
	})

	var servers []raft.Server
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n := &netNode{id: raft.ServerID("n" + strconv.Itoa(i)), ln: ln, fsm: &countFSM{}}
		hl := NewHCLogger(logger.With("node", string(n.id)), "raft", slog.LevelDebug)
		n.layer = NewStreamLayer(ln.Addr().String(), dialRaft)
		n.trans = NewTransport(n.layer, hl.Named("net"))
		cfg := raft.DefaultConfig()
		cfg.LocalID = n.id
		cfg.Logger = hl
		cfg.HeartbeatTimeout = 100 * time.Millisecond
		cfg.ElectionTimeout = 100 * time.Millisecond
		cfg.LeaderLeaseTimeout = 50 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		store := raft.NewInmemStore()
		n.raft, err = raft.NewRaft(cfg, n.fsm, store, store, raft.NewInmemSnapshotStore(), n.trans)
		if err != nil {
			ln.Close()
			t.Fatal(err)
		}
		n.wg.Add(1)
		go n.serve()
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: raft.ServerAddress(ln.Addr().String())})
	}
	if got := nodes[0].trans.LocalAddr(); string(got) != nodes[0].ln.Addr().String() {
		t.Fatalf("transport LocalAddr %q, want the advertised %q", got, nodes[0].ln.Addr())
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}

	leaderOf := func(among []*netNode) *netNode {
		var l *netNode
		waitUntil(t, "a leader", 30*time.Second, func() bool {
			for _, n := range among {
				if n.raft.State() == raft.Leader {
					l = n
					return true
				}
			}
			return false
		})
		return l
	}
	apply := func(among []*netNode, from, to int) {
		for i := from; i <= to; i++ {
			cmd := []byte(fmt.Sprintf("cmd-%d", i))
			var err error
			for range 5 { // leadership may move on a loaded machine
				if err = leaderOf(among).raft.Apply(cmd, 5*time.Second).Error(); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("apply %s: %v", cmd, err)
			}
		}
	}
	want := func(n int) []string {
		var s []string
		for i := 1; i <= n; i++ {
			s = append(s, fmt.Sprintf("cmd-%d", i))
		}
		return s
	}
	waitApplied := func(among []*netNode, n int) {
		for _, nd := range among {
			waitUntil(t, fmt.Sprintf("%s to apply %d commands", nd.id, n), 30*time.Second, func() bool {
				return slices.Equal(nd.fsm.state(), want(n))
			})
		}
	}

	apply(nodes, 1, 5)
	waitApplied(nodes, 5)

	// Kill the leader; the other two elect one of themselves.
	old := leaderOf(nodes)
	old.stop(t)
	var rest []*netNode
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	if _, err := dialRaft(context.Background(), old.ln.Addr().String()); err == nil {
		t.Fatal("the old leader's port still accepts")
	}
	newLeader := leaderOf(rest)
	if newLeader == old {
		t.Fatal("the stopped node is leader")
	}
	apply(rest, 6, 8)
	waitApplied(rest, 8)
}
