package resp

import (
	"errors"
	"math"
	"strconv"
	"time"

	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/server"
	"shoal/internal/vbucket"
)

// The string commands, on the kv engine. A read-modify-write (INCR,
// APPEND, SET with NX/XX/GET/KEEPTTL, EXPIRE, ...) is a compare-and-swap
// loop: read the value and CAS, write with Update(cas) (or Add when there
// was none), again when another write came in between.

// maxCASRounds bounds a compare-and-swap loop under contention.
const maxCASRounds = 1000

const errContended = "TRYAGAIN the key changed too often during a read-modify-write"

// kvError answers an engine error with Redis's message for it.
func (x *exec) kvError(err error) {
	switch {
	case errors.Is(err, kv.ErrValueTooBig):
		x.err(errTooBig)
	case errors.Is(err, kv.ErrOutOfMemory):
		x.err(errOOM)
	case errors.Is(err, kv.ErrKeyTooBig):
		x.errorf("ERR key of over %d bytes", engine.MaxKeyLen)
	case errors.Is(err, kv.ErrBadKey):
		x.err("ERR empty keys are not supported")
	case errors.Is(err, kv.ErrClosed):
		x.err("ERR the node is shutting down")
	default:
		x.err("ERR " + err.Error())
	}
}

// channelError answers a failed channel claim.
func (x *exec) channelError(err error) {
	if errors.Is(err, server.ErrWrongKind) {
		x.err(errWrongType)
		return
	}
	x.err("CLUSTERDOWN " + err.Error())
}

// checkKey refuses keys the kv engine does not take.
func (x *exec) checkKey(key []byte) bool {
	switch {
	case len(key) == 0:
		x.err("ERR empty keys are not supported")
		return false
	case len(key) > engine.MaxKeyLen:
		x.errorf("ERR key of %d bytes; the limit is %d", len(key), engine.MaxKeyLen)
		return false
	}
	return true
}

// parseInt parses a decimal int64 as Redis does (no sign but -, no spaces).
func parseInt(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 20 || b[0] == '+' || b[0] == ' ' {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// readName returns the session's kv channel for a read; ok false when
// the answer is given (WRONGTYPE), name "" when nothing is there.
func (x *exec) readName() (string, bool) {
	name, wrong := x.kvName()
	if wrong {
		x.err(errWrongType)
		return "", false
	}
	return name, true
}

func cmdGet(x *exec, args [][]byte) {
	name, ok := x.readName()
	if !ok || !x.checkKey(args[1]) {
		return
	}
	if name == "" {
		x.null()
		return
	}
	var err error
	x.buf, _, err = x.s.eng.KV.Get(name, args[1], x.buf[:0])
	switch {
	case errors.Is(err, kv.ErrNotFound):
		x.null()
	case err != nil:
		x.kvError(err)
	default:
		x.bulk(x.buf)
	}
}

func cmdStrlen(x *exec, args [][]byte) {
	name, ok := x.readName()
	if !ok || !x.checkKey(args[1]) {
		return
	}
	if name == "" {
		x.int(0)
		return
	}
	var err error
	x.buf, _, err = x.s.eng.KV.Get(name, args[1], x.buf[:0])
	switch {
	case errors.Is(err, kv.ErrNotFound):
		x.int(0)
	case err != nil:
		x.kvError(err)
	default:
		x.int(int64(len(x.buf)))
	}
}

// expiryOpt parses an expiry option at args[i] (EX, PX, EXAT, PXAT with
// their value at i+1) into a ttl for the engine; used reports whether it
// was one.
func expiryOpt(args [][]byte, i int, cmd string) (ttl time.Duration, used bool, msg string) {
	opt := upper(args[i])
	switch opt {
	case "EX", "PX", "EXAT", "PXAT":
	default:
		return 0, false, ""
	}
	if i+1 >= len(args) {
		return 0, true, errSyntax
	}
	v, err := parseInt(args[i+1])
	if err != nil {
		return 0, true, errNotInt
	}
	bad := "ERR invalid expire time in '" + cmd + "' command"
	if v <= 0 {
		return 0, true, bad
	}
	switch opt {
	case "EX":
		if v > math.MaxInt64/int64(time.Second) {
			return 0, true, bad
		}
		return time.Duration(v) * time.Second, true, ""
	case "PX":
		if v > math.MaxInt64/int64(time.Millisecond) {
			return 0, true, bad
		}
		return time.Duration(v) * time.Millisecond, true, ""
	case "EXAT":
		if v > math.MaxInt64/int64(time.Second) {
			return 0, true, bad
		}
		return untilUnix(time.Unix(v, 0)), true, ""
	default:
		return untilUnix(time.UnixMilli(v)), true, ""
	}
}

// untilUnix is the ttl of an absolute expiry; one in the past expires at
// the next whole second.
func untilUnix(at time.Time) time.Duration {
	return max(time.Until(at), time.Nanosecond)
}

func upper(b []byte) string {
	if len(b) > 16 {
		return ""
	}
	var u [16]byte
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		u[i] = c
	}
	return string(u[:len(b)])
}

func cmdSet(x *exec, args [][]byte) {
	key, val := args[1], args[2]
	var nx, xx, get, keep, hasTTL bool
	var ttl time.Duration
	for i := 3; i < len(args); i++ {
		if d, used, msg := expiryOpt(args, i, "set"); used {
			if msg != "" {
				x.err(msg)
				return
			}
			if hasTTL || keep {
				x.err(errSyntax)
				return
			}
			ttl, hasTTL = d, true
			i++
			continue
		}
		switch upper(args[i]) {
		case "NX":
			nx = true
		case "XX":
			xx = true
		case "GET":
			get = true
		case "KEEPTTL":
			keep = true
		default:
			x.err(errSyntax)
			return
		}
	}
	if (nx && xx) || (keep && hasTTL) {
		x.err(errSyntax)
		return
	}
	if !x.checkKey(key) {
		return
	}
	name, ok := x.kvWriteName()
	if !ok {
		return
	}
	st := x.s.eng.KV
	if !nx && !xx && !get && !keep {
		if _, err := st.Put(name, key, val, ttl); err != nil {
			x.kvError(err)
			return
		}
		x.ok()
		return
	}
	if nx && !get {
		_, err := st.Add(name, key, val, ttl)
		switch {
		case errors.Is(err, kv.ErrExists):
			x.null()
		case err != nil:
			x.kvError(err)
		default:
			x.ok()
		}
		return
	}
	var old []byte
	var found, stopped bool
	_, done := x.casLoop(name, key, true, func(cur []byte, f bool, _ int64) ([]byte, time.Duration, bool, bool, string) {
		old, found = cur, f
		if nx && found || xx && !found {
			stopped = true
			return nil, 0, false, true, ""
		}
		// KEEPTTL keeps the record's expiry; SET without an expiry clears it.
		return val, ttl, !(keep && found), false, ""
	})
	switch {
	case !done:
	case stopped && !get:
		x.null()
	case !get:
		x.ok()
	case found:
		x.bulk(old)
	default:
		x.null()
	}
}

func cmdSetNX(x *exec, args [][]byte) {
	if !x.checkKey(args[1]) {
		return
	}
	name, ok := x.kvWriteName()
	if !ok {
		return
	}
	_, err := x.s.eng.KV.Add(name, args[1], args[2], 0)
	switch {
	case errors.Is(err, kv.ErrExists):
		x.int(0)
	case err != nil:
		x.kvError(err)
	default:
		x.int(1)
	}
}

func cmdGetDel(x *exec, args [][]byte) {
	name, ok := x.readName()
	if !ok || !x.checkKey(args[1]) {
		return
	}
	if name == "" {
		x.null()
		return
	}
	var err error
	x.buf, _, err = x.s.eng.KV.Get(name, args[1], x.buf[:0])
	if errors.Is(err, kv.ErrNotFound) {
		x.null()
		return
	}
	if err != nil {
		x.kvError(err)
		return
	}
	if _, err := x.s.eng.KV.Remove(name, args[1]); err != nil {
		x.kvError(err)
		return
	}
	x.bulk(x.buf)
}

// rewrite is the CAS loop of a read-modify-write that keeps the record's
// expiry unless fn returns a new one: fn gets the current value (found
// false: none) and returns the new value, its ttl (when setTTL) and an
// error message to answer instead. done is false when the loop gave up or
// failed (the answer is given).
func (x *exec) rewrite(key []byte, create bool, fn casFunc) (val []byte, done bool) {
	name, ok := x.kvWriteName()
	if !ok {
		return nil, false
	}
	return x.casLoop(name, key, create, fn)
}

// casFunc is a read-modify-write's step: it gets the current value (found
// false: none) and its expiry, and returns the new value, its ttl (when
// setTTL; <= 0 clears the expiry), stop to write nothing, or an error
// message to answer instead.
type casFunc func(old []byte, found bool, exp int64) (val []byte, ttl time.Duration, setTTL bool, stop bool, msg string)

// casLoop is rewrite on channel name: get, fn, then Update with the CAS
// read (Add when there was no record and create is set), again while
// another write comes in between, at most maxCASRounds times.
func (x *exec) casLoop(name string, key []byte, create bool, fn casFunc) (val []byte, done bool) {
	st := x.s.eng.KV
	for range maxCASRounds {
		old, cas, exp, err := st.GetWithExpiry(name, key, x.buf[:0])
		x.buf = old
		found := err == nil
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			x.kvError(err)
			return nil, false
		}
		val, ttl, setTTL, stop, msg := fn(old, found, exp)
		if msg != "" {
			x.err(msg)
			return nil, false
		}
		if stop {
			return nil, true
		}
		switch {
		case !setTTL:
			ttl = 0 // Update keeps the record's expiry
		case ttl <= 0:
			ttl = -1 // cleared
		}
		if found {
			_, err = st.Update(name, key, val, cas, ttl)
		} else if create {
			_, err = st.Add(name, key, val, ttl)
		} else {
			return nil, true
		}
		if errors.Is(err, kv.ErrExists) || errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			x.kvError(err)
			return nil, false
		}
		return val, true
	}
	x.err(errContended)
	return nil, false
}

func incrBy(x *exec, key []byte, by int64) {
	if !x.checkKey(key) {
		return
	}
	var n int64
	var num [20]byte
	_, done := x.rewrite(key, true, func(old []byte, found bool, _ int64) ([]byte, time.Duration, bool, bool, string) {
		var cur int64
		if found {
			v, err := parseInt(old)
			if err != nil {
				return nil, 0, false, false, errNotInt
			}
			cur = v
		}
		if by > 0 && cur > math.MaxInt64-by || by < 0 && cur < math.MinInt64-by {
			return nil, 0, false, false, errOverflow
		}
		n = cur + by
		return strconv.AppendInt(num[:0], n, 10), 0, false, false, ""
	})
	if done {
		x.int(n)
	}
}

func cmdIncr(x *exec, args [][]byte) { incrBy(x, args[1], 1) }
func cmdDecr(x *exec, args [][]byte) { incrBy(x, args[1], -1) }

func cmdIncrBy(x *exec, args [][]byte) {
	by, err := parseInt(args[2])
	if err != nil {
		x.err(errNotInt)
		return
	}
	incrBy(x, args[1], by)
}

func cmdDecrBy(x *exec, args [][]byte) {
	by, err := parseInt(args[2])
	if err != nil || by == math.MinInt64 {
		x.err(errNotInt)
		return
	}
	incrBy(x, args[1], -by)
}

func cmdAppend(x *exec, args [][]byte) {
	if !x.checkKey(args[1]) {
		return
	}
	var buf []byte
	val, done := x.rewrite(args[1], true, func(old []byte, _ bool, _ int64) ([]byte, time.Duration, bool, bool, string) {
		if len(old)+len(args[2]) > x.s.cfg.MaxValueSize {
			return nil, 0, false, false, errTooBig
		}
		buf = append(append(buf[:0], old...), args[2]...)
		return buf, 0, false, false, ""
	})
	if done {
		x.int(int64(len(val)))
	}
}

// expire sets key's expiry to ttl from now (<= 0: remove the key), with
// Redis's NX, XX, GT, LT conditions.
func expire(x *exec, args [][]byte, unit time.Duration) {
	key := args[1]
	v, err := parseInt(args[2])
	if err != nil {
		x.err(errNotInt)
		return
	}
	var nx, xx, gt, lt bool
	for _, a := range args[3:] {
		switch upper(a) {
		case "NX":
			nx = true
		case "XX":
			xx = true
		case "GT":
			gt = true
		case "LT":
			lt = true
		default:
			x.errorf("ERR Unsupported option %s", clip(a))
			return
		}
	}
	if nx && (xx || gt || lt) || gt && lt {
		x.err("ERR NX and XX, GT or LT options at the same time are not compatible")
		return
	}
	if !x.checkKey(key) {
		return
	}
	if v > math.MaxInt64/int64(unit) {
		x.errorf("ERR invalid expire time in '%s' command", lowerName(x.cmd))
		return
	}
	ttl := time.Duration(v) * unit
	newExp := time.Now().Add(ttl).Unix()
	set := false
	_, done := x.rewrite(key, false, func(old []byte, found bool, exp int64) ([]byte, time.Duration, bool, bool, string) {
		if !found {
			return nil, 0, false, true, ""
		}
		switch {
		case nx && exp != 0, xx && exp == 0,
			gt && (exp == 0 || newExp <= exp), lt && exp != 0 && newExp >= exp:
			return nil, 0, false, true, ""
		}
		set = true
		return old, ttl, true, ttl <= 0, ""
	})
	if !done {
		return
	}
	if set && ttl <= 0 {
		name, _ := x.kvName()
		if removed, err := x.s.eng.KV.Remove(name, key); err != nil {
			x.kvError(err)
			return
		} else if !removed {
			set = false
		}
	}
	if set {
		x.int(1)
	} else {
		x.int(0)
	}
}

func cmdExpire(x *exec, args [][]byte)  { expire(x, args, time.Second) }
func cmdPExpire(x *exec, args [][]byte) { expire(x, args, time.Millisecond) }

func ttlOf(x *exec, key []byte, ms bool) {
	name, ok := x.readName()
	if !ok || !x.checkKey(key) {
		return
	}
	if name == "" {
		x.int(-2)
		return
	}
	var err error
	var exp int64
	x.buf, _, exp, err = x.s.eng.KV.GetWithExpiry(name, key, x.buf[:0])
	switch {
	case errors.Is(err, kv.ErrNotFound):
		x.int(-2)
	case err != nil:
		x.kvError(err)
	case exp == 0:
		x.int(-1)
	default:
		left := max(exp*1000-time.Now().UnixMilli(), 0)
		if ms {
			x.int(left)
		} else {
			// Expiries are whole seconds, rounded up when set: SET EX 100
			// leaves up to 101 s, which TTL says is 100 as Redis would.
			x.int(left / 1000)
		}
	}
}

func cmdTTL(x *exec, args [][]byte)  { ttlOf(x, args[1], false) }
func cmdPTTL(x *exec, args [][]byte) { ttlOf(x, args[1], true) }

func cmdPersist(x *exec, args [][]byte) {
	if !x.checkKey(args[1]) {
		return
	}
	changed := false
	_, done := x.rewrite(args[1], false, func(old []byte, found bool, exp int64) ([]byte, time.Duration, bool, bool, string) {
		if !found || exp == 0 {
			return nil, 0, false, true, ""
		}
		changed = true
		return old, 0, true, false, ""
	})
	if !done {
		return
	}
	if changed {
		x.int(1)
	} else {
		x.int(0)
	}
}

func cmdGetEx(x *exec, args [][]byte) {
	key := args[1]
	var ttl time.Duration
	has, persist := false, false
	for i := 2; i < len(args); i++ {
		if d, used, msg := expiryOpt(args, i, "getex"); used {
			if msg != "" {
				x.err(msg)
				return
			}
			if has || persist {
				x.err(errSyntax)
				return
			}
			ttl, has = d, true
			i++
			continue
		}
		if upper(args[i]) == "PERSIST" && !has && !persist {
			persist = true
			continue
		}
		x.err(errSyntax)
		return
	}
	if !has && !persist {
		cmdGet(x, args[:2])
		return
	}
	if !x.checkKey(key) {
		return
	}
	var val []byte
	found := false
	_, done := x.rewrite(key, false, func(old []byte, f bool, _ int64) ([]byte, time.Duration, bool, bool, string) {
		found = f
		val = append(val[:0], old...)
		return old, ttl, true, false, ""
	})
	if !done {
		return
	}
	if found {
		x.bulk(val)
	} else {
		x.null()
	}
}

func cmdType(x *exec, args [][]byte) {
	key := args[1]
	if name, _ := x.kvName(); name != "" && len(key) > 0 && len(key) <= engine.MaxKeyLen && x.s.eng.KV.Exists(name, key) {
		x.out = AppendSimple(x.out, "string")
		return
	}
	if _, k, ok := x.s.eng.Catalog.Lookup(key); ok && k == engine.KindQueue {
		x.out = AppendSimple(x.out, "list")
		return
	}
	x.out = AppendSimple(x.out, "none")
}

// Multi-key commands: the keys are grouped by the node that serves them,
// the local ones run here, each other node gets one command with its
// keys, and the answers are merged in the keys' order. They are not
// atomic across nodes.

// group is the key positions served by one other node.
type group struct {
	addr string
	pos  []int
}

// split sorts the key positions into those served here and groups by
// active. For a forwarded command a key not served here refuses it
// (notMine).
func (x *exec) split(args [][]byte, pos []int) (local []int, remote []group, msg string) {
	for _, p := range pos {
		vb := vbucket.Of(args[p], x.s.cfg.VBuckets)
		r, ok := x.s.eng.Data.ActiveRoute(vb, x.now)
		if ok {
			local = append(local, p)
			continue
		}
		if x.sess.forwarded {
			x.notMine = true
			return nil, nil, ""
		}
		if r.ActiveAddr == "" || x.s.fwd == nil {
			return nil, nil, "CLUSTERDOWN vBucket " + strconv.Itoa(int(vb)) + " has no reachable active node"
		}
		i := 0
		for i < len(remote) && remote[i].addr != r.ActiveAddr {
			i++
		}
		if i == len(remote) {
			remote = append(remote, group{addr: r.ActiveAddr})
		}
		remote[i].pos = append(remote[i].pos, p)
	}
	return local, remote, ""
}

// partArgs is the command name followed by the arguments at pos (and,
// with pairs, each one's next).
func partArgs(name string, args [][]byte, pos []int, pairs bool) [][]byte {
	out := make([][]byte, 0, 1+2*len(pos))
	out = append(out, []byte(name))
	for _, p := range pos {
		out = append(out, args[p])
		if pairs {
			out = append(out, args[p+1])
		}
	}
	return out
}

func keyPositions(from, n, step int) []int {
	pos := make([]int, 0, (n-from+step-1)/step)
	for i := from; i < n; i += step {
		pos = append(pos, i)
	}
	return pos
}

// remoteParts sends the groups' commands at once and returns their
// answers.
func (x *exec) remoteParts(name string, args [][]byte, remote []group, pairs bool) ([][]byte, error) {
	answers := make([][]byte, len(remote))
	errs := make([]error, len(remote))
	if len(remote) == 1 {
		answers[0], errs[0] = x.call(remote[0].addr, partArgs(name, args, remote[0].pos, pairs))
	} else {
		done := make(chan struct{}, len(remote))
		for i, g := range remote {
			go func() {
				answers[i], errs[i] = x.call(g.addr, partArgs(name, args, g.pos, pairs))
				done <- struct{}{}
			}()
		}
		for range remote {
			<-done
		}
	}
	return answers, errors.Join(errs...)
}

func cmdMGet(x *exec, args [][]byte) {
	pos := keyPositions(1, len(args), 1)
	local, remote, msg := x.split(args, pos)
	if x.notMine {
		return
	}
	if msg != "" {
		x.err(msg)
		return
	}
	elems := make([][]byte, len(args))
	if len(remote) > 0 {
		answers, err := x.remoteParts("MGET", args, remote, false)
		if err != nil {
			x.err(err.Error())
			return
		}
		for i, g := range remote {
			es, err := arrayElems(answers[i])
			if err != nil || len(es) != len(g.pos) {
				x.err(errBadAnswer.Error())
				return
			}
			for j, p := range g.pos {
				elems[p] = es[j]
			}
		}
	}
	name, wrong := x.kvName()
	x.out = AppendArray(x.out, len(args)-1)
	li := 0
	for p := 1; p < len(args); p++ {
		if li < len(local) && local[li] == p {
			li++
			if name == "" || wrong || len(args[p]) == 0 || len(args[p]) > engine.MaxKeyLen {
				x.null()
				continue
			}
			var err error
			x.buf, _, err = x.s.eng.KV.Get(name, args[p], x.buf[:0])
			if err != nil {
				x.null()
			} else {
				x.bulk(x.buf)
			}
			continue
		}
		x.out = append(x.out, elems[p]...)
	}
}

func cmdMSet(x *exec, args [][]byte) {
	if len(args)%2 != 1 {
		x.errorf("ERR wrong number of arguments for '%s' command", lowerName(x.cmd))
		return
	}
	pos := keyPositions(1, len(args), 2)
	for _, p := range pos {
		if !x.checkKey(args[p]) {
			return
		}
	}
	local, remote, msg := x.split(args, pos)
	if x.notMine {
		return
	}
	if msg != "" {
		x.err(msg)
		return
	}
	if len(local) > 0 {
		name, ok := x.kvWriteName()
		if !ok {
			return
		}
		for _, p := range local {
			if _, err := x.s.eng.KV.Put(name, args[p], args[p+1], 0); err != nil {
				x.kvError(err)
				return
			}
		}
	}
	if len(remote) > 0 {
		answers, err := x.remoteParts("MSET", args, remote, true)
		if err != nil {
			x.err(err.Error())
			return
		}
		for _, a := range answers {
			if string(a) != "+OK\r\n" {
				x.err(answerError(a).Error())
				return
			}
		}
	}
	x.ok()
}

// countKeys runs DEL, UNLINK or EXISTS: each key's count, summed.
func countKeys(x *exec, args [][]byte, each func(name string, key []byte) (bool, error)) {
	pos := keyPositions(1, len(args), 1)
	local, remote, msg := x.split(args, pos)
	if x.notMine {
		return
	}
	if msg != "" {
		x.err(msg)
		return
	}
	var n int64
	if name, wrong := x.kvName(); name != "" && !wrong {
		for _, p := range local {
			if len(args[p]) == 0 || len(args[p]) > engine.MaxKeyLen {
				continue
			}
			ok, err := each(name, args[p])
			if err != nil {
				x.kvError(err)
				return
			}
			if ok {
				n++
			}
		}
	}
	if len(remote) > 0 {
		answers, err := x.remoteParts(x.cmd.name, args, remote, false)
		if err != nil {
			x.err(err.Error())
			return
		}
		for _, a := range answers {
			v, err := intAnswer(a)
			if err != nil {
				x.err(err.Error())
				return
			}
			n += v
		}
	}
	x.int(n)
}

func cmdDel(x *exec, args [][]byte) {
	countKeys(x, args, func(name string, key []byte) (bool, error) { return x.s.eng.KV.Remove(name, key) })
}

func cmdExists(x *exec, args [][]byte) {
	countKeys(x, args, func(name string, key []byte) (bool, error) { return x.s.eng.KV.Exists(name, key), nil })
}
