package server

import (
	"errors"
	"fmt"
	"time"

	"shoal/internal/catalog"
	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// What another protocol served by the node (internal/resp) shares with the
// data port: the routing table and lease, the channel claims and removals,
// and peer requests of its own.

// Table returns the node's routing table; nil means active for every
// vBucket (a lone server).
func (s *Server) Table() *vbmap.Table { return s.table.Load() }

// ActiveRoute returns the node's route for vb and whether the node may
// serve vb as its active at now (a request's start): the table says so and
// the lease has not run out (the check every kv request of the data port
// makes).
// When it may, the route holds only the state (no address look-up).
func (s *Server) ActiveRoute(vb uint16, now time.Time) (vbmap.Route, bool) {
	if s.state(vb) == vbmap.Active && s.leased(now) {
		return vbmap.Route{State: vbmap.Active}, true
	}
	r := s.route(vb)
	return r, r.State == vbmap.Active && s.leased(now)
}

// ErrWrongKind is returned by ClaimChannel for a channel of another kind.
var ErrWrongKind = errors.New("channel of another kind")

// ClaimChannel returns the shared name string of channel ch of kind,
// creating the channel (cluster-wide with a ChannelDirectory) when it is
// unknown, as the first write of the data port does. A channel of another
// kind is an error wrapping ErrWrongKind.
func (s *Server) ClaimChannel(ch []byte, kind engine.Kind) (string, error) {
	if name, k, ok := s.eng.Catalog.Lookup(ch); ok {
		if k != kind {
			return "", fmt.Errorf("channel %q is a %s channel: %w", ch, k, ErrWrongKind)
		}
		return name, nil
	}
	if !wire.ValidChannel(ch) {
		return "", fmt.Errorf("bad channel name %q: use 1-255 of A-Z a-z 0-9 _ -", ch)
	}
	if dir := s.cfg.Channels; dir != nil {
		if err := dir.Create(string(ch), kind); err != nil {
			if clusterStatus(err) == wire.StatusWrongKind {
				_, k, _ := s.eng.Catalog.Lookup(ch)
				return "", fmt.Errorf("channel %q is a %s channel: %w", ch, k, ErrWrongKind)
			}
			return "", fmt.Errorf("cannot create channel %q: %w", ch, err)
		}
		if name, k, ok := s.eng.Catalog.Lookup(ch); ok && k == kind {
			return name, nil
		}
		return "", fmt.Errorf("channel %q was created in the cluster but is not in this node's catalog", ch)
	}
	name, err := s.eng.Catalog.Claim(ch, kind)
	if errors.Is(err, catalog.ErrWrongKind) {
		_, k, _ := s.eng.Catalog.Lookup(ch)
		return "", fmt.Errorf("channel %q is a %s channel: %w", ch, k, ErrWrongKind)
	}
	return name, err
}

// RemoveKVChannel removes kv channel name as RemoveChannel does: through
// the ChannelDirectory (everywhere in the cluster) when the server has
// one, else from the engine and the catalog. A channel of another kind is
// an error wrapping ErrWrongKind; an unknown one is not an error.
func (s *Server) RemoveKVChannel(name string) error {
	if n, k, ok := s.eng.Catalog.Lookup([]byte(name)); ok && k != engine.KindKV {
		return fmt.Errorf("channel %q is a %s channel: %w", n, k, ErrWrongKind)
	}
	if dir := s.cfg.Channels; dir != nil {
		if err := dir.Remove(name); err != nil {
			return fmt.Errorf("cannot remove channel %q: %w", name, err)
		}
		return nil
	}
	n, _, ok := s.eng.Catalog.Lookup([]byte(name))
	if !ok {
		return nil
	}
	if s.eng.KV != nil {
		s.eng.KV.RemoveChannel(n)
	}
	s.eng.Catalog.Drop(n)
	if fn := s.cfg.ChannelRemoved; fn != nil {
		return fn(n, engine.KindKV)
	}
	return nil
}

// PeerFunc answers a peer request: it appends the answer body to dst and
// returns it with the answer's status.
type PeerFunc func(dst, body []byte) ([]byte, wire.Status)

// HandlePeer serves op with fn, for peers only (the admin or the "node"
// credential when auth is on), with bodies up to limit bytes. fn runs on
// the connection's reader: the requests of one connection are answered in
// order. Call before Serve.
func (s *Server) HandlePeer(op wire.Opcode, limit int, fn PeerFunc) {
	s.handle(op, handler{peer: true, limit: limit, fn: func(c *conn, h wire.Header, body []byte) {
		b, off := c.begin(h, wire.StatusOK, 0)
		b, st := fn(b, body)
		if st != wire.StatusOK {
			wire.PatchStatus(b, off, st) // end counts it by status
		}
		c.end(b, off)
	}})
}
