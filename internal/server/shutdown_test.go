package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"shoal/internal/wire"
)

// TestShutdownDuringTLSHandshakes shuts a TLS server down while
// connections are serving (their handshake just done), stuck in the
// handshake, and being dialed, with a context that is already done (every
// connection is closed at once) and with one that lets them finish. The
// reader of a connection replaces its net.Conn with the TLS one after the
// handshake while Shutdown sets deadlines and closes from another
// goroutine: under -race this fails unless Shutdown only touches what the
// reader never replaces. Every connection must be closed afterwards.
func TestShutdownDuringTLSHandshakes(t *testing.T) {
	cert, pool := selfSigned(t)
	clientCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	for _, forced := range []bool{true, false, true, false} {
		ts := startTLSServer(t, cert)
		var conns []net.Conn
		// Serving: the answer proves the server is past the handshake.
		for range 2 {
			nc, err := tls.Dial("tcp", ts.addr, clientCfg)
			if err != nil {
				t.Fatal(err)
			}
			r := &raw{t: t, nc: nc, br: newReader(nc)}
			if h, _ := r.call(wire.OpNoop, 0, nil); h.Status != wire.StatusOK {
				t.Fatalf("NOOP over TLS: %v", h.Status)
			}
			conns = append(conns, nc)
		}
		// Just past the handshake, idle. These carry the test under -race,
		// so they come after the requests: the race detector takes
		// crypto/tls's buffer pools for synchronisation, and a request and
		// its answer after them could order the reader's replacement of
		// their connection before Shutdown.
		for range 4 {
			nc, err := tls.Dial("tcp", ts.addr, clientCfg)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
		}
		// In the handshake: connected, no ClientHello sent.
		for range 4 {
			nc, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
		}
		// Dialing while the server shuts down.
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 4 {
			wg.Go(func() {
				d := &tls.Dialer{Config: clientCfg}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if nc, err := d.DialContext(ctx, "tcp", ts.addr); err == nil {
					mu.Lock()
					conns = append(conns, nc)
					mu.Unlock()
				}
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if forced {
			cancel()
		}
		err := ts.s.Shutdown(ctx)
		cancel()
		wg.Wait()
		if !forced && err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if n := ts.s.NumConnections(); n != 0 {
			t.Fatalf("%d connections open after Shutdown", n)
		}
		for i, nc := range conns {
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			var b [1]byte
			if _, err := nc.Read(b[:]); err == nil || isTimeout(err) {
				t.Fatalf("connection %d not closed by Shutdown (forced %v): %v", i, forced, err)
			}
			nc.Close()
		}
	}
}

// tlsServer is a Server without engines serving TLS on a local port.
type tlsServer struct {
	s    *Server
	addr string
}

// startTLSServer starts a tlsServer. Unlike startServer it does not count
// reads and writes on shared counters, which the race detector would take
// for synchronisation between the connections' goroutines.
func startTLSServer(t *testing.T, cert tls.Certificate) *tlsServer {
	t.Helper()
	s := New(Config{VBuckets: testVBuckets, NodeID: "test-node", Logger: quietLogger(),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, Engines{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return &tlsServer{s: s, addr: ln.Addr().String()}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
