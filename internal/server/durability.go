package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"shoal/internal/wire"
)

// Durable writes (docs/design.md, "Durability"; docs/protocol.md §4.10).
//
// A write with wire.FlagDurable carries a level and a timeout before its
// body. dispatch strips them into the connection's reader state; the
// write's handler applies it as usual and, instead of answering, hands its
// answer to holdAnswer, which registers a wait with the node's
// DurableWait (the replicas' acknowledgements, repl.Acks) and goes on
// reading: the answer is sent when a majority of the vBucket's chain holds
// the write's seqno, or `ambiguous` when the timeout, the connection's end
// or the node's shutdown comes first. No goroutine waits per write: the
// acknowledgement (or the timer) that ends the wait appends the answer and
// starts a short flush.
//
// While a durable write waits, its key is *in flight*: every kv request on
// that key (reads included, so that nobody sees a value a failover could
// take back) is answered `sync write in progress` at once, and the client
// tries again. Nothing else changes for other keys.

// DurableWait waits until a majority of chain (the vBucket's chain, the
// active first) holds vb of bucket ("kv", "queue", "log") up to seqno —
// with persist, on disk: the server has fsynced the active's copy
// already —, then calls done(nil); done(err) after timeout or cancel.
// done runs at most once and must not block. repl.Acks implements it in
// the node.
type DurableWait func(bucket string, vb uint16, seqno uint64, persist bool, chain []string, timeout time.Duration, done func(error)) (cancel func())

// SetDurableWait sets how durable writes wait for their replicas. Without
// it (a lone server, tests) a majority write is answered at once, as its
// chain is the server alone.
func (s *Server) SetDurableWait(w DurableWait) { s.dur.wait.Store(&w) }

// SetDefaultDurability sets the level of the kv writes that do not say
// (no FlagDurable): the cluster's setting. persist-majority is not a
// valid default for kv (none is used instead).
func (s *Server) SetDefaultDurability(d wire.Durability) {
	if d == wire.DurabilityPersistMajority {
		d = wire.DurabilityNone
	}
	s.dur.def.Store(uint32(d))
}

// durability is the server's state of durable writes.
type durability struct {
	wait     atomic.Pointer[DurableWait]
	def      atomic.Uint32 // the default level of kv writes without FlagDurable (the cluster's settings)
	inflight atomic.Int64  // writes waiting: 0 lets kv requests skip the key check

	mu   sync.Mutex
	keys map[string]int // channel "\x00" key → durable writes waiting on it
}

// connDurable is the durability of the request being handled (the
// reader's alone; zero for a request without FlagDurable).
type connDurable struct {
	level   wire.Durability
	timeout time.Duration
	// valueOnAmbiguous: the ambiguous answer's body is the ok answer's (a
	// pop's value: the record was taken on the active), not a message.
	valueOnAmbiguous bool
}

// durableOps are the requests that may carry FlagDurable.
var durableOps = map[wire.Opcode]bool{
	wire.OpPut: true, wire.OpUpdate: true, wire.OpRemove: true, wire.OpExpire: true,
	wire.OpPush: true, wire.OpPop: true, wire.OpLogPut: true, wire.OpLogPutBatch: true,
}

// kvOps are the durable requests of the kv engine.
var kvOps = map[wire.Opcode]bool{wire.OpPut: true, wire.OpUpdate: true, wire.OpRemove: true, wire.OpExpire: true}

// needsVBucket refuses a durable queue push or log append without a
// routing key or FlagVBucket: the node would pick the vBucket, and the
// wait needs to know it before the write. It answers when it refuses.
func (c *conn) needsVBucket(h wire.Header, key []byte) bool {
	if c.dur.level == wire.DurabilityNone || len(key) > 0 || h.Flags&wire.FlagVBucket != 0 {
		return true
	}
	c.replyf(h, wire.StatusBadRequest, "a durable %s needs a routing key or the VBUCKET flag", h.Opcode)
	c.dur = connDurable{}
	return false
}

// keyCheckedOps are the kv requests refused while their key has a durable
// write in flight.
var keyCheckedOps = map[wire.Opcode]bool{
	wire.OpPut: true, wire.OpUpdate: true, wire.OpRemove: true, wire.OpExpire: true,
	wire.OpGet: true, wire.OpExists: true, wire.OpTTL: true,
}

func inflightKey(channel, key []byte) string {
	b := make([]byte, 0, len(channel)+1+len(key))
	return string(append(append(append(b, channel...), 0), key...))
}

// removeKey is a Remove's in-flight key: none when its channel does not
// exist (nothing was written).
func removeKey(name string, key []byte) string {
	if name == "" {
		return ""
	}
	return inflightKey([]byte(name), key)
}

// prepareDurable runs in dispatch before the handler: it strips the
// durability prefix of a durable request and refuses what cannot be done.
// It returns the body to hand to the handler, or false when it answered.
func (c *conn) prepareDurable(h wire.Header, body []byte) ([]byte, bool) {
	c.dur = connDurable{}
	if h.Flags&wire.FlagDurable != 0 {
		if !durableOps[h.Opcode] {
			c.replyf(h, wire.StatusBadRequest, "%s cannot be durable", h.Opcode)
			return nil, false
		}
		level, timeout, rest, err := wire.ParseDurablePrefix(body)
		if err != nil {
			c.replyf(h, wire.StatusBadRequest, "%v", err)
			return nil, false
		}
		if level == wire.DurabilityPersistMajority {
			switch {
			case kvOps[h.Opcode]:
				c.replyf(h, wire.StatusUnsupported, "persist-majority cannot be honoured for kv: its records live in memory and reach disk only in periodic dumps, so no fsync can cover a write; use majority")
				return nil, false
			case (h.Opcode == wire.OpPush || h.Opcode == wire.OpPop) && (c.s.eng.Queue == nil || !c.s.eng.Queue.Journaled()):
				c.replyf(h, wire.StatusUnsupported, "persist-majority cannot be honoured for this node's queues: they have no journal (memory mode: records reach disk only at shutdown); use majority, or run the nodes with --queue-durability journal")
				return nil, false
			}
		}
		c.dur = connDurable{level: level, timeout: timeout}
		body = rest
	} else if def := wire.Durability(c.s.dur.def.Load()); def != wire.DurabilityNone && kvOps[h.Opcode] {
		c.dur = connDurable{level: def, timeout: wire.DefaultDurableTimeout}
	}
	if keyCheckedOps[h.Opcode] && c.s.dur.inflight.Load() > 0 {
		d := wire.NewDecoder(body)
		ch, key := d.Bytes8(), d.Bytes8()
		if d.Err() == nil {
			k := inflightKey(ch, key)
			c.s.dur.mu.Lock()
			busy := c.s.dur.keys[k] > 0
			c.s.dur.mu.Unlock()
			if busy {
				c.replyf(h, wire.StatusSyncWriteInProgress, "key %q has a durable write waiting for its replicas", key)
				return nil, false
			}
		}
	}
	return body, true
}

// holdAnswer answers a durable write once a majority of vb's chain holds
// seqno of bucket: answer is the body of its ok answer. It returns false
// when the request is not durable (the caller answers as usual). key is
// the write's in-flight key ("" for none).
func (c *conn) holdAnswer(h wire.Header, bucket string, seqno uint64, key string, answer []byte) bool {
	if c.dur.level == wire.DurabilityNone {
		return false
	}
	d := c.dur
	c.dur = connDurable{}
	c.waitDurable(h, h.VBucket, bucket, seqno, d, key, answer)
	return true
}

// waitDurable answers h with answer once a majority of vb's chain holds
// seqno of bucket (on disk, for persist-majority: the caller fsynced the
// active's copy), `ambiguous` after d's timeout or at the connection's end.
// Any goroutine of the connection may call it; the answer may be
// appended before it returns (a chain of one), and the caller flushes
// as it would have after its own answer.
func (c *conn) waitDurable(h wire.Header, vb uint16, bucket string, seqno uint64, d connDurable, key string, answer []byte) {
	timeout := d.timeout
	wp := c.s.dur.wait.Load()
	chain := c.s.chain(vb)
	if wp == nil || len(chain) <= 1 {
		c.reply(h, wire.StatusOK, answer)
		return
	}
	ans := append([]byte(nil), answer...)
	sd := &c.s.dur
	if key != "" {
		sd.mu.Lock()
		if sd.keys == nil {
			sd.keys = make(map[string]int)
		}
		sd.keys[key]++
		sd.mu.Unlock()
		sd.inflight.Add(1)
	}
	c.swg.Add(1)
	hw := &heldWrite{}
	var once sync.Once
	done := func(err error) {
		once.Do(func() {
			if key != "" {
				sd.mu.Lock()
				if sd.keys[key]--; sd.keys[key] <= 0 {
					delete(sd.keys, key)
				}
				sd.mu.Unlock()
				sd.inflight.Add(-1)
			}
			switch {
			case err != nil && d.valueOnAmbiguous:
				c.reply(h, wire.StatusAmbiguous, ans)
			case err != nil:
				c.replyf(h, wire.StatusAmbiguous, "applied by the active, not acknowledged by a majority of the chain %v within %v: it may or may not survive a failover (%v)", chain, timeout, err)
			default:
				c.reply(h, wire.StatusOK, ans)
			}
			go func() {
				hw.mu.Lock()
				hw.over = true
				stop := hw.stop
				hw.mu.Unlock()
				if stop != nil {
					stop()
				}
				c.flush()
				c.swg.Done()
			}()
		})
	}
	cancel := (*wp)(bucket, vb, seqno, d.level == wire.DurabilityPersistMajority, chain, timeout, done)
	hw.mu.Lock()
	if !hw.over {
		hw.cancel = cancel
		// The connection's end answers the write `ambiguous` at once.
		hw.stop = context.AfterFunc(c.ctx, func() {
			hw.mu.Lock()
			cw := hw.cancel
			hw.mu.Unlock()
			cw()
		})
	}
	hw.mu.Unlock()
}

// heldWrite links a held answer's wait and the connection's end.
type heldWrite struct {
	mu     sync.Mutex
	cancel func()      // ends the wait
	stop   func() bool // unregisters the connection's end hook
	over   bool        // answered
}

// chain returns vb's chain by the node's table (the server alone without
// one).
func (s *Server) chain(vb uint16) []string {
	t := s.table.Load()
	if t == nil {
		return []string{s.cfg.NodeID}
	}
	m := t.Map()
	if int(vb) >= m.Len() {
		return []string{s.cfg.NodeID}
	}
	return m.VBuckets[vb].Chain
}
