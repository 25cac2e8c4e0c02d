package resp

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"shoal/internal/engine"
	"shoal/internal/queue"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// Lists are queue channels: the key is the channel's name, and its
// records go to the key's vBucket (the key is the routing key), so that a
// list lives on one node, its vBucket's active, in push order. RPUSH and
// LPUSH both append at the tail; LPOP and RPOP both take the oldest
// record: RPUSH+LPOP and LPUSH+RPOP are FIFO as in Redis, LPUSH+LPOP is
// FIFO too (LIFO in Redis).

func (x *exec) queueError(err error) {
	switch {
	case errors.Is(err, queue.ErrSubscribed):
		x.err("ERR the list is a queue channel with subscribers: only shoal's Consume reads it")
	case errors.Is(err, queue.ErrValueTooBig):
		x.err(errTooBig)
	case errors.Is(err, queue.ErrNoSpace):
		x.err("ERR no space left on the node's disk")
	case errors.Is(err, queue.ErrClosed):
		x.err("ERR the node is shutting down")
	default:
		x.err("ERR " + err.Error())
	}
}

// listName checks a list key and returns the queue channel's name: ok
// false when the answer is given; name "" for a read of an unknown list.
func (x *exec) listName(key []byte, write bool) (string, bool) {
	if x.s.eng.Queue == nil {
		x.err("ERR this node has no queue engine")
		return "", false
	}
	if name, k, ok := x.s.eng.Catalog.Lookup(key); ok {
		if k != engine.KindQueue {
			x.err(errWrongType)
			return "", false
		}
		return name, true
	}
	if !wire.ValidChannel(key) {
		x.err("ERR a list key is a queue channel name: 1-255 of A-Z a-z 0-9 _ -")
		return "", false
	}
	if !write {
		return "", true
	}
	name, err := x.s.eng.Data.ClaimChannel(key, engine.KindQueue)
	if err != nil {
		x.channelError(err)
		return "", false
	}
	return name, true
}

func cmdPush(x *exec, args [][]byte) {
	name, ok := x.listName(args[1], true)
	if !ok {
		return
	}
	ch := []string{name}
	for _, v := range args[2:] {
		// In journal mode Push waits for the fsync covering it (it ends
		// when the store closes).
		if err := x.s.eng.Queue.Push(context.Background(), ch, v, args[1]); err != nil {
			x.queueError(err)
			return
		}
	}
	n, _ := x.s.eng.Queue.Len(name)
	x.int(n)
}

func cmdLLen(x *exec, args [][]byte) {
	name, ok := x.listName(args[1], false)
	if !ok {
		return
	}
	if name == "" {
		x.int(0)
		return
	}
	n, _ := x.s.eng.Queue.Len(name)
	x.int(n)
}

// cmdPop is LPOP and RPOP: key [count].
func cmdPop(x *exec, args [][]byte) {
	if len(args) > 3 {
		x.err(errSyntax)
		return
	}
	count, withCount := int64(1), len(args) == 3
	if withCount {
		v, err := parseInt(args[2])
		if err != nil || v < 0 {
			x.err("ERR value is out of range, must be positive")
			return
		}
		count = v
	}
	name, ok := x.listName(args[1], false)
	if !ok {
		return
	}
	if name == "" {
		if withCount {
			x.out = AppendNullArray(x.out, x.sess.proto)
		} else {
			x.null()
		}
		return
	}
	if !withCount {
		v, err := x.s.eng.Queue.Pop(name, x.buf[:0])
		x.buf = v
		switch {
		case errors.Is(err, queue.ErrEmpty):
			x.null()
		case err != nil:
			x.queueError(err)
		default:
			x.bulk(v)
		}
		return
	}
	var vals [][]byte
	for int64(len(vals)) < count {
		v, err := x.s.eng.Queue.Pop(name, nil)
		if errors.Is(err, queue.ErrEmpty) {
			break
		}
		if err != nil {
			x.queueError(err)
			return
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		x.out = AppendNullArray(x.out, x.sess.proto)
		return
	}
	x.out = AppendArray(x.out, len(vals))
	for _, v := range vals {
		x.bulk(v)
	}
}

// cmdBLPop is BLPOP and BRPOP: key [key ...] timeout. It pops from the
// first list that has a record, polling the lists (here or on their
// actives) until the timeout (0: for ever, until the node shuts down).
func cmdBLPop(x *exec, args [][]byte) {
	t, err := strconv.ParseFloat(string(args[len(args)-1]), 64)
	if err != nil || math.IsNaN(t) || math.IsInf(t, 0) {
		x.err("ERR timeout is not a float or out of range")
		return
	}
	if t < 0 {
		x.err("ERR timeout is negative")
		return
	}
	var deadline time.Time
	if t > 0 {
		deadline = time.Now().Add(time.Duration(t * float64(time.Second)))
	}
	keys := args[1 : len(args)-1]
	for _, k := range keys {
		if _, ok := x.listName(k, false); !ok {
			return
		}
	}
	pause := time.Millisecond
	for {
		x.now = time.Now() // the lease is checked at each round
		for _, k := range keys {
			v, found, msg := x.popOne(k)
			if msg != "" {
				x.err(msg)
				return
			}
			if found {
				x.out = AppendArray(x.out, 2)
				x.bulk(k)
				x.bulk(v)
				return
			}
		}
		if !deadline.IsZero() && time.Now().Add(pause).After(deadline) {
			if d := time.Until(deadline); d > 0 {
				time.Sleep(d)
				continue // one last round at the deadline
			}
			x.out = AppendNullArray(x.out, x.sess.proto)
			return
		}
		select {
		case <-x.s.done:
			x.out = AppendNullArray(x.out, x.sess.proto)
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// popOne pops one record of list key, here or on its active.
func (x *exec) popOne(key []byte) (val []byte, found bool, msg string) {
	vb := vbucket.Of(key, x.s.cfg.VBuckets)
	if r, ok := x.s.eng.Data.ActiveRoute(vb, x.now); !ok {
		if r.ActiveAddr == "" || x.s.fwd == nil {
			return nil, false, "CLUSTERDOWN vBucket " + strconv.Itoa(int(vb)) + " has no reachable active node"
		}
		ans, err := x.call(r.ActiveAddr, [][]byte{[]byte("LPOP"), key})
		if err != nil {
			return nil, false, err.Error()
		}
		v, err := bulkAnswer(ans)
		if err != nil {
			return nil, false, err.Error()
		}
		return v, v != nil, ""
	}
	name, _, ok := x.s.eng.Catalog.Lookup(key)
	if !ok {
		return nil, false, ""
	}
	v, err := x.s.eng.Queue.Pop(name, nil)
	switch {
	case errors.Is(err, queue.ErrEmpty):
		return nil, false, ""
	case errors.Is(err, queue.ErrSubscribed):
		return nil, false, "ERR the list is a queue channel with subscribers: only shoal's Consume reads it"
	case err != nil:
		return nil, false, "ERR " + err.Error()
	}
	if v == nil {
		v = []byte{}
	}
	return v, true, ""
}
