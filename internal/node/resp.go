package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"

	"shoal/internal/auth"
	"shoal/internal/resp"
)

// setupRESP prepares the RESP port (--resp): the server on the node's
// engines, dialing the other nodes as a peer to forward commands, and the
// data port's handler of the commands other nodes forward here. Called by
// New once the data port's server and the cluster are set up.
func (n *Node) setupRESP() error {
	cfg := resp.Config{
		NodeID:         n.cfg.NodeID,
		Version:        n.version,
		VBuckets:       n.cfg.VBuckets,
		MaxValueSize:   int(n.cfg.MaxValueSize),
		MaxConnections: n.cfg.MaxConnections,
		Channel:        n.cfg.RespChannel,
		RequireTLS:     n.cfg.RespRequireTLS,
		Logger:         n.log.With("part", "resp"),
		Settings: map[string]string{
			"maxmemory":       strconv.FormatInt(int64(n.cfg.MemoryLimit), 10),
			"shoal-vbuckets":  strconv.Itoa(n.cfg.VBuckets),
			"shoal-data-port": n.cfg.Listen,
		},
	}
	if n.cluster != nil && n.cluster.peers != nil {
		cfg.Dial = n.cluster.peers.dial
	}
	if n.cfg.Credentials != "" {
		creds, err := auth.LoadCredentials(n.cfg.Credentials)
		if err != nil {
			return err
		}
		cfg.Credentials = creds
	}
	if n.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(n.cfg.TLSCert, n.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("cannot load TLS certificate: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	n.resp = resp.New(cfg, resp.Engines{Catalog: n.cat, KV: n.kv, Queue: n.queue, Data: n.srv})
	n.resp.HandleForwarded()
	n.stats.Add(n.resp)
	if !n.cfg.RESPEnabled() {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.Resp)
	if err != nil {
		return fmt.Errorf("cannot listen on the RESP port: %w", err)
	}
	n.respLn = ln
	return nil
}

// RESPAddr is the RESP port's address, nil when disabled.
func (n *Node) RESPAddr() net.Addr {
	if n.respLn == nil {
		return nil
	}
	return n.respLn.Addr()
}

// serveRESP serves the RESP port until shutdown.
func (n *Node) serveRESP(serveErr chan<- error) {
	if n.respLn == nil {
		return
	}
	if err := n.resp.Serve(n.respLn); err != nil && !errors.Is(err, resp.ErrClosed) {
		serveErr <- fmt.Errorf("RESP port: %w", err)
	}
}

// stopRESP closes the RESP port and its connections.
func (n *Node) stopRESP(ctx context.Context) {
	if n.resp == nil {
		return
	}
	if err := n.resp.Shutdown(ctx); err != nil {
		n.log.Warn("RESP connections did not finish in time; closed them", "err", err)
	}
}
