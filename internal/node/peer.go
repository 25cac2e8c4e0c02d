package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"shoal/internal/auth"
	"shoal/internal/repl"
	"shoal/internal/wire"
)

// peers dials the data ports of other nodes: raft connections, joins and
// forwarded metadata commands. It authenticates as the peer credential and
// uses TLS when the node has a certificate.
type peers struct {
	self      string
	vbuckets  int
	user      string
	secret    []byte
	tls       *tls.Config // nil: clear text
	handshake func(ctx context.Context, conn net.Conn) error
}

// newPeers prepares the peer dialer from the node's settings.
func (n *Node) newPeers() (*peers, error) {
	p := &peers{self: n.cfg.NodeID, vbuckets: n.cfg.VBuckets}
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
	p.handshake = repl.Handshake(p.self, p.user, p.secret, p.vbuckets)
	return p, nil
}

// maxPeerAnswer bounds the body of an answer to a peer request.
const maxPeerAnswer = 16 << 20

// dial connects to a peer's data port and runs HELLO and AUTH.
func (p *peers) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if p.tls != nil {
		cfg := p.tls.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS with %s: %w", addr, err)
		}
		nc = tc
	}
	if err := p.handshake(ctx, nc); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
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
	if _, err := roundTrip(nc, wire.OpRaftOpen, 3, nil); err != nil {
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
	return roundTrip(nc, op, 3, body)
}

// PeerError is a peer's answer with a status other than ok.
type PeerError struct {
	Status  wire.Status
	Message string
}

func (e *PeerError) Error() string { return e.Status.String() + ": " + e.Message }

// roundTrip sends one request and reads its answer; a status other than
// ok is a *PeerError.
func roundTrip(conn net.Conn, op wire.Opcode, id uint32, body []byte) ([]byte, error) {
	frame := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, ID: id, BodyLen: uint32(len(body))})
	if _, err := conn.Write(append(frame, body...)); err != nil {
		return nil, fmt.Errorf("cannot send %s: %w", op, err)
	}
	var hb [wire.HeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil, fmt.Errorf("cannot read the %s answer: %w", op, err)
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil {
		return nil, fmt.Errorf("%s answer: %w", op, err)
	}
	if h.Magic != wire.MagicResponse || h.Opcode != op || h.ID != id || h.BodyLen > maxPeerAnswer {
		return nil, fmt.Errorf("%w: unexpected %s answer %v", wire.ErrMalformed, op, h)
	}
	reply := make([]byte, h.BodyLen)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return nil, fmt.Errorf("cannot read the %s answer: %w", op, err)
	}
	if h.Status != wire.StatusOK {
		return nil, &PeerError{Status: h.Status, Message: string(reply)}
	}
	return reply, nil
}

// isStatus reports whether err is a peer's answer with status st.
func isStatus(err error, st wire.Status) bool {
	var pe *PeerError
	return errors.As(err, &pe) && pe.Status == st
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
		cfg := p.tls.Clone()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return "", err
		}
		conn = tc
	}
	b := wire.AppendStr8(nil, p.self)
	b = wire.AppendU16(b, wire.Version)
	b = wire.AppendU32(b, 0)
	reply, err := roundTrip(conn, wire.OpHello, 1, b)
	if err != nil {
		return "", err
	}
	d2 := wire.NewDecoder(reply)
	id := d2.Bytes8()
	if d2.Err() != nil {
		return "", fmt.Errorf("%w: malformed HELLO answer from %s", wire.ErrMalformed, addr)
	}
	return string(id), nil
}
