package resp

import (
	"strconv"

	"github.com/cespare/xxhash/v2"

	"shoal/internal/kv"
	"shoal/internal/vbmap"
)

// SCAN's cursor is a vBucket and a position in it: the top 16 bits are
// the vBucket, the low 48 the first 48 bits of the key hash to resume at
// (the kv engine scans a vBucket in key hash order). Cursor 0 is the
// start (and the end). Keys present during the whole iteration are
// returned at least once: a batch never ends between two keys with the
// same 48-bit prefix. The cursor means the same on every node, so a
// client may continue it on any one.

const (
	posBits = 48
	posMask = 1<<posBits - 1
	// maxScanCount bounds the keys one SCAN call examines.
	maxScanCount = 100000
	// maxKeys bounds the answer of KEYS.
	maxKeys = 100000
)

func cursorOf(vb int, pos uint64) uint64 { return uint64(vb)<<posBits | pos }

// scanOpts are SCAN's options.
type scanOpts struct {
	match []byte // nil: every key
	count int
}

func parseScanOpts(args [][]byte) (scanOpts, string) {
	o := scanOpts{count: 10}
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return o, errSyntax
		}
		switch upper(args[i]) {
		case "MATCH":
			o.match = args[i+1]
			if string(o.match) == "*" {
				o.match = nil
			}
		case "COUNT":
			n, err := parseInt(args[i+1])
			if err != nil {
				return o, errNotInt
			}
			if n < 1 {
				return o, errSyntax
			}
			o.count = int(min(n, maxScanCount))
		case "TYPE":
			if upper(args[i+1]) != "STRING" {
				o.match = []byte{} // only strings are scanned: nothing matches
				o.count = maxScanCount
			}
		default:
			return o, errSyntax
		}
	}
	return o, ""
}

// scanHere scans the vBuckets this node is active for from cursor on,
// examining about o.count keys; it stops at the first vBucket that is not
// active here (forwarded: the caller goes on elsewhere). It returns the
// next cursor (0 at the end) and appends the matching keys.
func (x *exec) scanHere(cursor uint64, o scanOpts, keys [][]byte) (uint64, [][]byte) {
	nvb := x.s.cfg.VBuckets
	vb, pos := int(cursor>>posBits), cursor&posMask
	name, _ := x.kvName()
	examined := 0
	for vb < nvb {
		if _, ok := x.s.eng.Data.ActiveRoute(uint16(vb), x.now); !ok {
			return cursorOf(vb, pos), keys
		}
		if name == "" {
			vb, pos = vb+1, 0
			continue
		}
		var last uint64
		stopped := false
		x.s.eng.KV.Scan(name, uint16(vb), nil, func(r kv.Record) bool {
			p := xxhash.Sum64(r.Key) >> (64 - posBits)
			if p < pos {
				return true
			}
			if examined >= o.count && p != last {
				stopped, pos = true, p
				return false
			}
			examined++
			last = p
			if o.match == nil || globMatch(o.match, r.Key) {
				keys = append(keys, append([]byte(nil), r.Key...))
			}
			return true
		})
		if stopped {
			return cursorOf(vb, pos), keys
		}
		vb, pos = vb+1, 0
		if examined >= o.count {
			break
		}
	}
	if vb >= nvb {
		return 0, keys
	}
	return cursorOf(vb, pos), keys
}

// scan runs SCAN over the cluster: here, and on the actives of the other
// vBuckets in turn, until count keys are found, the end, or 16 parts.
func (x *exec) scan(cursor uint64, o scanOpts) (uint64, [][]byte, string) {
	if int(cursor>>posBits) >= x.s.cfg.VBuckets {
		return 0, nil, "ERR invalid cursor"
	}
	var keys [][]byte
	for range 16 {
		vb := int(cursor >> posBits)
		var next uint64
		if r, ok := x.s.eng.Data.ActiveRoute(uint16(vb), x.now); ok {
			next, keys = x.scanHere(cursor, o, keys)
		} else {
			if r.ActiveAddr == "" || x.s.fwd == nil {
				return 0, nil, "CLUSTERDOWN vBucket " + strconv.Itoa(vb) + " has no reachable active node"
			}
			args := [][]byte{[]byte("SCAN"), strconv.AppendUint(nil, cursor, 10), []byte("COUNT"), strconv.AppendInt(nil, int64(o.count), 10)}
			if o.match != nil {
				args = append(args, []byte("MATCH"), o.match)
			}
			ans, err := x.call(r.ActiveAddr, args)
			if err != nil {
				return 0, nil, err.Error()
			}
			var got [][]byte
			next, got, err = parseScanAnswer(ans)
			if err != nil {
				return 0, nil, err.Error()
			}
			keys = append(keys, got...)
		}
		if next == 0 {
			return 0, keys, ""
		}
		if next == cursor {
			return 0, nil, errTryAgain
		}
		cursor = next
		if len(keys) >= o.count {
			break
		}
	}
	return cursor, keys, ""
}

func parseScanAnswer(b []byte) (uint64, [][]byte, error) {
	es, err := arrayElems(b)
	if err != nil || len(es) != 2 {
		return 0, nil, errBadAnswer
	}
	c, err := bulkAnswer(es[0])
	if err != nil {
		return 0, nil, err
	}
	next, err := strconv.ParseUint(string(c), 10, 64)
	if err != nil {
		return 0, nil, errBadAnswer
	}
	ks, err := arrayElems(es[1])
	if err != nil {
		return 0, nil, err
	}
	keys := make([][]byte, len(ks))
	for i, k := range ks {
		if keys[i], err = bulkAnswer(k); err != nil {
			return 0, nil, err
		}
	}
	return next, keys, nil
}

func cmdScan(x *exec, args [][]byte) {
	cursor, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil {
		x.err("ERR invalid cursor")
		return
	}
	o, msg := parseScanOpts(args[2:])
	if msg != "" {
		x.err(msg)
		return
	}
	var next uint64
	var keys [][]byte
	if x.sess.forwarded {
		if _, ok := x.s.eng.Data.ActiveRoute(uint16(cursor>>posBits), x.now); !ok || int(cursor>>posBits) >= x.s.cfg.VBuckets {
			x.notMine = true
			return
		}
		next, keys = x.scanHere(cursor, o, nil)
	} else {
		next, keys, msg = x.scan(cursor, o)
		if msg != "" {
			x.err(msg)
			return
		}
	}
	x.out = AppendArray(x.out, 2)
	x.out = AppendBulk(x.out, strconv.AppendUint(nil, next, 10))
	x.out = AppendArray(x.out, len(keys))
	for _, k := range keys {
		x.bulk(k)
	}
}

func cmdKeys(x *exec, args [][]byte) {
	o := scanOpts{match: args[1], count: 10000}
	if string(o.match) == "*" {
		o.match = nil
	}
	var all [][]byte
	var cursor uint64
	for {
		next, keys, msg := x.scan(cursor, o)
		if msg != "" {
			x.err(msg)
			return
		}
		all = append(all, keys...)
		if len(all) > maxKeys {
			x.errorf("ERR KEYS matched more than %d keys: use SCAN", maxKeys)
			return
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	x.out = AppendArray(x.out, len(all))
	for _, k := range all {
		x.bulk(k)
	}
}

// dbsizeHere counts the keys of the session's channel in the vBuckets
// this node is active for.
func (x *exec) dbsizeHere() int64 {
	name, _ := x.kvName()
	if name == "" {
		return 0
	}
	return x.s.eng.KV.ChannelSizeIn(name, x.s.activeFilter()).Records
}

func cmdDBSize(x *exec, args [][]byte) {
	n := x.dbsizeHere()
	if !x.sess.forwarded {
		others, msg := x.otherActives()
		if msg != "" {
			x.err(msg)
			return
		}
		for _, addr := range others {
			ans, err := x.call(addr, [][]byte{[]byte("DBSIZE")})
			if err != nil {
				x.err(err.Error())
				return
			}
			v, err := intAnswer(ans)
			if err != nil {
				x.err(err.Error())
				return
			}
			n += v
		}
	}
	x.int(n)
}

// otherActives returns the data addresses of the other nodes that are
// active for some vBucket.
func (x *exec) otherActives() ([]string, string) {
	t := x.s.eng.Data.Table()
	if t == nil {
		return nil, ""
	}
	m := t.Map()
	seen := map[string]bool{t.Self(): true}
	var out []string
	for vb := 0; vb < m.Len(); vb++ {
		if t.State(uint16(vb)) == vbmap.Active {
			continue
		}
		r := t.Route(uint16(vb))
		if r.Active == "" || seen[r.Active] {
			continue
		}
		seen[r.Active] = true
		if r.ActiveAddr == "" || x.s.fwd == nil {
			return nil, "CLUSTERDOWN vBucket " + strconv.Itoa(vb) + " has no reachable active node"
		}
		out = append(out, r.ActiveAddr)
	}
	return out, ""
}

func cmdFlushDB(x *exec, args [][]byte) {
	for _, a := range args[1:] {
		if u := upper(a); u != "SYNC" && u != "ASYNC" {
			x.err(errSyntax)
			return
		}
	}
	if err := x.s.eng.Data.RemoveKVChannel(x.sess.channel); err != nil {
		x.channelError(err)
		return
	}
	x.ok()
}

// globMatch reports whether s matches Redis's glob pattern p: * ? [abc]
// [^a] [a-z] and \ escapes. It backtracks to the last star only, so its
// time is bounded by len(p)*len(s).
func globMatch(p, s []byte) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch p[pi] {
			case '*':
				star, mark = pi, si
				pi++
				continue
			case '?':
				pi++
				si++
				continue
			case '[':
				if end, ok := matchClass(p, pi, s[si]); end > 0 {
					if ok {
						pi, si = end, si+1
						continue
					}
				} else if s[si] == '[' { // no closing ]: a literal [
					pi++
					si++
					continue
				}
			case '\\':
				if pi+1 < len(p) && p[pi+1] == s[si] {
					pi += 2
					si++
					continue
				}
			default:
				if p[pi] == s[si] {
					pi++
					si++
					continue
				}
			}
		}
		if star < 0 {
			return false
		}
		pi, mark = star+1, mark+1
		si = mark
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// matchClass matches c against the class starting at p[i] ('['); it
// returns the index after the closing ']' (0 when there is none) and
// whether c is in the class.
func matchClass(p []byte, i int, c byte) (int, bool) {
	i++
	neg := false
	if i < len(p) && p[i] == '^' {
		neg = true
		i++
	}
	match := false
	for first := true; i < len(p); first = false {
		if p[i] == ']' && !first {
			return i + 1, match != neg
		}
		if p[i] == '\\' && i+1 < len(p) {
			i++
			if p[i] == c {
				match = true
			}
			i++
			continue
		}
		if i+2 < len(p) && p[i+1] == '-' && p[i+2] != ']' {
			lo, hi := p[i], p[i+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			if c >= lo && c <= hi {
				match = true
			}
			i += 3
			continue
		}
		if p[i] == c {
			match = true
		}
		i++
	}
	return 0, false
}
