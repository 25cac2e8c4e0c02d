package server

import (
	"net"
	"testing"
	"time"

	"shoal/internal/auth"
	"shoal/internal/wire"
)

// TestRaftOpenNeedsAPeerCredential: on a node with credentials, a RaftOpen
// from a connection that has not authenticated, or authenticated as a
// client, is refused before the raft side sees a byte; the admin and the
// "node" credential get through.
func TestRaftOpenNeedsAPeerCredential(t *testing.T) {
	creds := map[string][]byte{"admin": []byte("0123456789abcdef"), "app": []byte("fedcba9876543210"), auth.Peer: []byte("00112233445566778899")}
	s := New(Config{VBuckets: testVBuckets, Logger: quietLogger(), NodeID: "n", Credentials: creds}, Engines{})
	handed := make(chan string, 4)
	s.HandleTakeover(wire.OpRaftOpen, func(nc net.Conn, _ wire.Header, _ []byte) {
		handed <- "handed"
		nc.Close()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ln) }()
	defer func() {
		s.Shutdown(t.Context())
		<-served
	}()
	addr := ln.Addr().String()

	r := dialRaw(t, addr)
	if h, _ := r.call(wire.OpRaftOpen, 0, nil); h.Status != wire.StatusNotPermitted {
		t.Fatalf("RaftOpen without authentication: %v", h.Status)
	}
	// What a raft peer would send next is not a frame: the connection is
	// closed and nothing reached the raft side.
	r.nc.Write([]byte("\x00\x01raft-rpc-bytes-that-are-not-a-frame"))
	if h, _ := r.read(); h.Status != wire.StatusBadFrame || !r.closed() {
		t.Fatal("the connection stayed open after non-frame bytes")
	}
	r = dialRaw(t, addr)
	if st := r.auth("app", creds["app"]); st != wire.StatusOK {
		t.Fatal(st)
	}
	if h, body := r.call(wire.OpRaftOpen, 0, nil); h.Status != wire.StatusNotPermitted {
		t.Fatalf("RaftOpen as a client credential: %v %s", h.Status, body)
	}
	select {
	case <-handed:
		t.Fatal("a refused RaftOpen reached the raft side")
	case <-time.After(50 * time.Millisecond):
	}
	for _, name := range []string{auth.Peer, "admin"} {
		r = dialRaw(t, addr)
		if st := r.auth(name, creds[name]); st != wire.StatusOK {
			t.Fatal(name, st)
		}
		r.send(wire.OpRaftOpen, 0, nil)
		select {
		case <-handed:
		case <-time.After(5 * time.Second):
			t.Fatalf("RaftOpen as %s not handed over", name)
		}
	}
	// Peer requests: a client credential may not join or propose.
	r = dialRaw(t, addr)
	r.auth("app", creds["app"])
	for _, op := range []wire.Opcode{wire.OpJoin, wire.OpMetaPropose} {
		if h, _ := r.call(op, 0, []byte("{}")); h.Status != wire.StatusNotPermitted && h.Status != wire.StatusUnsupported {
			t.Fatalf("%s as a client: %v", op, h.Status)
		}
	}
}

// TestLeaseBoundsServing: past the lease, a node answers every request for
// its active vBuckets with not my vbucket, whatever its table says.
func TestLeaseBoundsServing(t *testing.T) {
	ts := startServer(t, Config{})
	r := dialRaw(t, ts.addr)
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatal(st)
	}
	ts.s.SetLease(time.Now().Add(-time.Millisecond))
	if st := r.put("c", "k", "v"); st != wire.StatusNotMyVBucket {
		t.Fatalf("put past the lease: %v", st)
	}
	if st, _ := r.get("c", "k"); st != wire.StatusNotMyVBucket {
		t.Fatalf("get past the lease: %v", st)
	}
	ts.s.SetLease(time.Now().Add(time.Hour))
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("put within the lease: %v", st)
	}
	ts.s.SetLease(time.Time{})
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("put without a lease: %v", st)
	}
}
