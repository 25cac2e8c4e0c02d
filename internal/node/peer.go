package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"shoal/internal/auth"
	"shoal/internal/wire"
)

// peers dials the data ports of other nodes: raft connections, joins,
// forwarded metadata commands and replication streams. It authenticates
// as the peer credential and uses TLS when the node has a certificate.
type peers struct {
	self   string
	user   string
	secret []byte
	tls    *tls.Config // nil: clear text
	// fault, when set (tests), fails the dials it returns an error for,
	// and the next read or write of a connection already dialed to such an
	// address: a node cut off from its peers, established connections
	// included.
	fault atomic.Pointer[func(addr string) error]
}

// faultErr is the error the tests' fault returns for addr, nil when none.
func (p *peers) faultErr(addr string) error {
	if f := p.fault.Load(); f != nil {
		return (*f)(addr)
	}
	return nil
}

// faultableConn is a dialed peer connection that fails once the tests'
// fault covers its address (a partition cuts what was open too).
type faultableConn struct {
	net.Conn
	p    *peers
	addr string
}

func (c *faultableConn) Read(b []byte) (int, error) {
	if err := c.p.faultErr(c.addr); err != nil {
		c.Conn.Close()
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *faultableConn) Write(b []byte) (int, error) {
	if err := c.p.faultErr(c.addr); err != nil {
		c.Conn.Close()
		return 0, err
	}
	return c.Conn.Write(b)
}

// newPeers prepares the peer dialer from the node's settings.
func (n *Node) newPeers() (*peers, error) {
	p := &peers{self: n.cfg.NodeID}
	if n.cfg.PeerSecretFile != "" {
		secret, err := auth.LoadSecret(n.cfg.PeerSecretFile)
		if err != nil {
			return nil, fmt.Errorf("peer-secret-file: %w", err)
		}
		p.user, p.secret = n.cfg.PeerUser, secret
	}
	if n.cfg.TLSCert != "" {
		pool := x509.NewCertPool()
		ca := n.cfg.TLSCA
		if ca == "" {
			ca = n.cfg.TLSCert
		}
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("cannot read the CA of the peers' certificates: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", ca)
		}
		p.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return p, nil
}

// tlsFor is the TLS configuration of a connection to addr.
func (p *peers) tlsFor(addr string) *tls.Config {
	cfg := p.tls.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		cfg.ServerName = host
	}
	return cfg
}

// maxPeerAnswer bounds the body of an answer to a peer request.
const maxPeerAnswer = 16 << 20

// dialConn connects to a peer's data port, with TLS when the node has a
// certificate, and runs no request: replication's streams run their own
// HELLO and AUTH (repl.Handshake) on it.
func (p *peers) dialConn(ctx context.Context, addr string) (net.Conn, error) {
	if err := p.faultErr(addr); err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc := net.Conn(&faultableConn{Conn: raw, p: p, addr: addr})
	if p.tls == nil {
		return nc, nil
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	tc := tls.Client(nc, p.tlsFor(addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS with %s: %w", addr, err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// dial connects to a peer's data port and runs HELLO and AUTH.
func (p *peers) dial(ctx context.Context, addr string) (net.Conn, error) {
	nc, err := p.dialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if err := p.authenticate(nc, addr); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

// authenticate runs HELLO and, when the peer has credentials, AUTH as the
// peer credential. The vBucket counts are not compared here: a Join
// refuses another count with a message of its own.
func (p *peers) authenticate(conn net.Conn, addr string) error {
	h, err := p.sayHello(conn, addr)
	if err != nil {
		return err
	}
	if !h.authRequired {
		return nil
	}
	if p.user == "" || p.secret == nil {
		return fmt.Errorf("the node at %s requires authentication: give this node --peer-secret-file with the secret of the %q credential (a %s:hex-secret line in the nodes' credentials file)", addr, auth.Peer, auth.Peer)
	}
	b := wire.AppendStr8(nil, p.user)
	b = append(b, auth.Proof(p.secret, h.nonce, p.user)...)
	if _, err := wire.RoundTrip(conn, wire.OpAuth, 2, b, maxPeerAnswer); err != nil {
		return fmt.Errorf("the node at %s refused this node's credential %q (--peer-user, --peer-secret-file): %w", addr, p.user, err)
	}
	return nil
}

// helloAnswer is what a peer's HELLO answer says.
type helloAnswer struct {
	nodeID       string
	authRequired bool
	nonce        []byte
}

// sayHello sends HELLO and decodes the answer.
func (p *peers) sayHello(conn net.Conn, addr string) (helloAnswer, error) {
	b := wire.AppendStr8(nil, p.self)
	b = wire.AppendU16(b, wire.Version)
	b = wire.AppendU32(b, 0)
	reply, err := wire.RoundTrip(conn, wire.OpHello, 1, b, maxPeerAnswer)
	if err != nil {
		return helloAnswer{}, err
	}
	d := wire.NewDecoder(reply)
	var h helloAnswer
	h.nodeID = string(d.Bytes8())
	d.Bytes8() // version
	d.U16()    // vbuckets
	d.U32()    // features
	h.authRequired = d.U8() == 1
	h.nonce = d.Rest()
	if d.Err() != nil || len(h.nonce) != wire.NonceLen {
		return helloAnswer{}, fmt.Errorf("%w: malformed HELLO answer from %s", wire.ErrMalformed, addr)
	}
	return h, nil
}

// dialRaft opens a raft connection to a peer: after HELLO and AUTH, a
// RaftOpen request; once it is answered ok the connection carries raft's
// bytes.
func (p *peers) dialRaft(ctx context.Context, addr string) (net.Conn, error) {
	nc, err := p.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if _, err := wire.RoundTrip(nc, wire.OpRaftOpen, 3, nil, maxPeerAnswer); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

// call makes one request of a peer on a connection of its own.
func (p *peers) call(ctx context.Context, addr string, op wire.Opcode, body []byte) ([]byte, error) {
	nc, err := p.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	return wire.RoundTrip(nc, op, 3, body, maxPeerAnswer)
}

// isStatus reports whether err is a peer's answer with status st.
func isStatus(err error, st wire.Status) bool {
	var se *wire.StatusError
	return errors.As(err, &se) && se.Status == st
}

// hello asks the node at addr for its id (a HELLO, no authentication).
func (p *peers) hello(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	conn := nc
	if p.tls != nil {
		tc := tls.Client(nc, p.tlsFor(addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			return "", err
		}
		conn = tc
	}
	h, err := p.sayHello(conn, addr)
	return h.nodeID, err
}
