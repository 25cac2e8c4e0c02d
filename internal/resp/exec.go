package resp

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"shoal/internal/engine"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// session is the state of one client connection (or of a forwarded
// command: the channel and RESP version of the connection it came from).
type session struct {
	id        int64
	proto     int // 2 or 3
	channel   string
	chBytes   []byte // channel, for catalog look-ups without allocating
	authed    bool
	admin     bool
	user      string
	name      string // CLIENT SETNAME
	tls       bool
	since     time.Time
	remote    string
	forwarded bool // a command another node forwarded: run here or refuse
	lastCmd   string
}

func (s *session) setChannel(name string) {
	s.channel = name
	s.chBytes = []byte(name)
}

// cmdFlags say how a command is dispatched.
type cmdFlags uint16

const (
	flagOpen     cmdFlags = 1 << iota // allowed before AUTH
	flagKeyed                         // args[1] is the one key: run where its vBucket is active
	flagForward                       // may come forwarded from another node
	flagWrite                         // writes (COMMAND's flags)
	flagAdmin                         // needs the admin credential when auth is on
	flagBlocking                      // may block (COMMAND's flags)
)

// command is one RESP command.
type command struct {
	name              string // upper case
	arity             int    // Redis's: n exactly, -n at least n (the name counts)
	flags             cmdFlags
	first, last, step int    // key positions, for COMMAND
	group, summary    string // for COMMAND DOCS
	fn                func(x *exec, args [][]byte)
	idx               int // in commandList and Server.cstats
}

// cmdStat counts one command's requests on one server.
type cmdStat struct {
	lat    stats.Latency
	errors atomic.Uint64
}

// exec runs one command: the answer goes to out.
type exec struct {
	s       *Server
	sess    *session
	c       *conn // nil for a forwarded command
	cmd     *command
	out     []byte
	notMine bool // a forwarded command found a key whose vBucket is not active here
	failed  bool
	buf     []byte    // scratch (values read for a read-modify-write)
	now     time.Time // when the command started: the lease is checked at it
}

// errorf appends an error answer.
func (x *exec) errorf(format string, args ...any) {
	x.failed = true
	x.out = AppendError(x.out, fmt.Sprintf(format, args...))
}

func (x *exec) err(msg string) {
	x.failed = true
	x.out = AppendError(x.out, msg)
}

func (x *exec) ok() { x.out = append(x.out, "+OK\r\n"...) }

func (x *exec) null() { x.out = AppendNull(x.out, x.sess.proto) }

func (x *exec) int(v int64) { x.out = AppendInt(x.out, v) }

func (x *exec) bulk(v []byte) { x.out = AppendBulk(x.out, v) }

// Redis's error messages.
const (
	errSyntax    = "ERR syntax error"
	errNotInt    = "ERR value is not an integer or out of range"
	errOverflow  = "ERR increment or decrement would overflow"
	errWrongType = "WRONGTYPE Operation against a key holding the wrong kind of value"
	errNoAuth    = "NOAUTH Authentication required."
	errWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
	errOOM       = "OOM command not allowed when used memory > 'maxmemory'."
	errTooBig    = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
)

// lookup finds the command named name, in any case, without allocating.
func lookup(name []byte) *command {
	if len(name) > 32 {
		return nil
	}
	var up [32]byte
	for i, c := range name {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		up[i] = c
	}
	return commands[string(up[:len(name)])]
}

func arityOK(cmd *command, n int) bool {
	if cmd.arity >= 0 {
		return n == cmd.arity
	}
	return n >= -cmd.arity
}

// unknownCommand is Redis's answer to a command it does not know.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ERR unknown command '%s', with args beginning with: ", clip(args[0]))
	for i, a := range args[1:] {
		if i == 8 {
			break
		}
		fmt.Fprintf(&b, "'%s' ", clip(a))
	}
	return b.String()
}

func clip(b []byte) []byte {
	if len(b) > 128 {
		return b[:128]
	}
	return b
}

// run parses nothing: it dispatches one command of a client connection.
func (c *conn) run(args [][]byte) {
	s := c.s
	cmd := lookup(args[0])
	if cmd == nil {
		c.out = AppendError(c.out, unknownCommand(args))
		return
	}
	// One clock read per command: a command starts when the previous one
	// of the same pipeline ended.
	start := c.clock
	if start.IsZero() {
		start = time.Now()
	}
	x := &c.x
	*x = exec{s: s, sess: &c.sess, c: c, cmd: cmd, out: c.out, buf: c.scratch, now: start}
	switch {
	case !arityOK(cmd, len(args)):
		x.errorf("ERR wrong number of arguments for '%s' command", strings.ToLower(cmd.name))
	case !c.sess.authed && cmd.flags&flagOpen == 0:
		x.err(errNoAuth)
	case s.cfg.RequireTLS && !c.sess.tls && s.cfg.Credentials != nil && cmd.flags&flagOpen == 0:
		x.err("NOAUTH this node serves RESP clients only over TLS (--resp-require-tls)")
	case cmd.flags&flagAdmin != 0 && s.cfg.Credentials != nil && !c.sess.admin:
		x.errorf("NOPERM this command needs the %q credential", "admin")
	case cmd.flags&flagKeyed != 0:
		vb := vbucket.Of(args[1], s.cfg.VBuckets)
		if r, ok := s.eng.Data.ActiveRoute(vb, start); !ok {
			c.out = x.out
			c.clock = start
			c.forwardAsync(cmd, args, vb, r) // counted when answered (resolve)
			c.clock = time.Now()
			return
		}
		cmd.fn(x, args)
	default:
		cmd.fn(x, args)
	}
	c.out = x.out
	if cap(x.buf) <= keepBuf {
		c.scratch = x.buf[:0]
	}
	c.sess.lastCmd = cmd.name
	c.clock = s.observe(cmd, start, x.failed)
	if cmd.flags&flagBlocking != 0 {
		c.clock = time.Time{} // a blocking command's end is not the next one's start
	}
}

// observe counts a command that started at start and returns its end.
func (s *Server) observe(cmd *command, start time.Time, failed bool) time.Time {
	end := time.Now()
	st := &s.cstats[cmd.idx]
	st.lat.Observe(end.Sub(start))
	if failed {
		st.errors.Add(1)
	}
	return end
}

// local reports whether key's vBucket is served here. For a forwarded
// command a key that is not marks the command refused (notMine); the
// caller stops.
func (x *exec) local(key []byte) bool {
	_, ok := x.s.eng.Data.ActiveRoute(vbucket.Of(key, x.s.cfg.VBuckets), x.now)
	if !ok && x.sess.forwarded {
		x.notMine = true
	}
	return ok
}

// execForwarded runs a command another node forwarded (OpRESPForward): u8
// RESP version, str8 channel, the command as a RESP array. It appends the
// RESP answer to dst; `not my vbucket` (nothing appended) when a key's
// vBucket is not active here.
func (s *Server) execForwarded(dst, body []byte) ([]byte, wire.Status) {
	d := wire.NewDecoder(body)
	proto, ch := d.U8(), d.Bytes8()
	rest := d.Rest()
	if d.Err() != nil || (proto != 2 && proto != 3) || !wire.ValidChannel(ch) {
		return append(dst, "malformed RESPForward"...), wire.StatusBadRequest
	}
	args, n, _, err := s.parser.Parse(bytes.Clone(rest), nil)
	if err != nil || n != len(rest) || len(args) == 0 {
		return append(dst, "malformed RESPForward command"...), wire.StatusBadRequest
	}
	cmd := lookup(args[0])
	if cmd == nil || cmd.flags&flagForward == 0 || !arityOK(cmd, len(args)) {
		return append(dst, "RESPForward of a command that is not forwarded"...), wire.StatusBadRequest
	}
	sess := session{proto: int(proto), authed: true, forwarded: true}
	sess.setChannel(string(ch))
	start := time.Now()
	if cmd.flags&flagKeyed != 0 {
		if _, ok := s.eng.Data.ActiveRoute(vbucket.Of(args[1], s.cfg.VBuckets), start); !ok {
			return dst, wire.StatusNotMyVBucket
		}
	}
	x := exec{s: s, sess: &sess, cmd: cmd, out: dst, now: start}
	cmd.fn(&x, args)
	if x.notMine {
		return dst, wire.StatusNotMyVBucket
	}
	// Counted by the node the client sent it to, and here as the data
	// port's RESPForward request: not twice as a RESP command.
	return x.out, wire.StatusOK
}

// HandleForwarded registers OpRESPForward on the data port, which runs the
// commands other nodes forward to this one. Call before the data port
// serves.
func (s *Server) HandleForwarded() {
	s.eng.Data.HandlePeer(wire.OpRESPForward, s.parser.MaxCommand+512, s.execForwarded)
}

// kvName returns the shared name of the session's kv channel for a read:
// "" when the channel does not exist (nothing to read) or is not a kv
// channel (wrong is set: answer WRONGTYPE).
func (x *exec) kvName() (name string, wrong bool) {
	name, k, ok := x.s.eng.Catalog.Lookup(x.sess.chBytes)
	if !ok {
		return "", false
	}
	if k != engine.KindKV {
		return "", true
	}
	return name, false
}

// kvWriteName returns the name of the session's kv channel for a write,
// claiming it when it is new; it answers the error itself when ok is
// false.
func (x *exec) kvWriteName() (string, bool) {
	if name, k, ok := x.s.eng.Catalog.Lookup(x.sess.chBytes); ok && k == engine.KindKV {
		return name, true
	}
	name, err := x.s.eng.Data.ClaimChannel(x.sess.chBytes, engine.KindKV)
	if err != nil {
		x.channelError(err)
		return "", false
	}
	return name, true
}

// activeFilter reports the vBuckets the node is active for (nil: all).
func (s *Server) activeFilter() func(vb uint16) bool {
	t := s.eng.Data.Table()
	if t == nil {
		return nil
	}
	return func(vb uint16) bool { return t.State(vb) == vbmap.Active }
}
