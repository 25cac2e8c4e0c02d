package server

import "shoal/internal/wire"

// RebalanceFunc answers a Rebalance request (JSON in, JSON out).
type RebalanceFunc func(body []byte) ([]byte, error)

// maxRebalanceBody bounds a Rebalance request (a few node ids and
// numbers).
const maxRebalanceBody = 16 << 10

// HandleRebalance serves OpRebalance with fn: start, stop or ask about a
// rebalance (the admin credential, or a peer forwarding to the leader;
// docs/protocol.md). Errors are answered as the cluster requests' are.
// Call before Serve.
func (s *Server) HandleRebalance(fn RebalanceFunc) {
	s.handle(wire.OpRebalance, handler{peer: true, limit: maxRebalanceBody, fn: func(c *conn, h wire.Header, body []byte) {
		b, err := fn(body)
		c.clusterAnswer(h, b, err)
	}})
}
