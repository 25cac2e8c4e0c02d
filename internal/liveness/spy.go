// Package liveness learns which peer nodes are alive from the replication
// traffic they send (Couchbase's dcp_traffic_monitor and kv_monitor, seed
// 000), and reports the local node's own readiness.
//
// The Spy records, per stream connection, the peer node and channel it
// carries and when a frame last arrived on it (internal/stream calls it at
// most once per 100 ms per connection, and NOOPs guarantee a floor rate on
// idle connections). An entry disappears when its connection closes, so a
// closed connection does not look alive.
//
// The Monitor is pure and tick-driven, like etcd's raft: no goroutines, no
// clock of its own. The caller ticks it (every Config.Tick, default 1 s)
// with the current monotonic time and the results of the local readiness
// checks; each tick turns last-heard times into states: a channel of a peer
// is active while something was heard on it within InactiveTicks ticks
// (default 2), else inactive; a peer is active while any of its channels
// is. The monitor remembers what it heard after connections close, so a
// peer whose connections died stays listed, inactive, with its time since
// last heard growing. The local node is ready when every check passes.
// The Report marshals to the JSON that /status and `shoal status` show:
//
//	{"tick": 12, "nodes": [
//	  {"node": "n0", "local": true, "state": "ready",
//	   "channels": [{"channel": "kv", "state": "ready"}],
//	   "checks": [{"name": "disk", "ok": true}]},
//	  {"node": "n2", "state": "inactive", "seconds_since_last_heard": 34.211,
//	   "channels": [{"channel": "kv", "state": "inactive", "seconds_since_last_heard": 34.211}]}]}
package liveness

import (
	"sync"
	"time"
)

// Spy records when traffic was last heard on each stream connection. It
// implements internal/stream's Spy and is safe for concurrent use.
type Spy struct {
	mu    sync.Mutex
	conns map[uint64]heard
}

// heard is what the spy knows of one connection.
type heard struct {
	node, channel string
	at            time.Time
}

// NewSpy returns an empty spy.
func NewSpy() *Spy { return &Spy{conns: make(map[uint64]heard)} }

// Heard records that a frame from node for channel arrived at now on
// connection conn.
func (s *Spy) Heard(conn uint64, node, channel string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[conn] = heard{node: node, channel: channel, at: now}
}

// Forget drops connection conn: it has closed.
func (s *Spy) Forget(conn uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, conn)
}

// latest returns, per node and channel, the latest time heard over the
// connections still open.
// LastHeard returns when anything was last heard from node on a
// connection still open (zero when nothing).
func (s *Spy) LastHeard(node string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, h := range s.conns {
		if h.node == node && h.at.After(last) {
			last = h.at
		}
	}
	return last
}

func (s *Spy) latest() map[string]map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]time.Time)
	for _, h := range s.conns {
		chans := out[h.node]
		if chans == nil {
			chans = make(map[string]time.Time)
			out[h.node] = chans
		}
		if h.at.After(chans[h.channel]) {
			chans[h.channel] = h.at
		}
	}
	return out
}
