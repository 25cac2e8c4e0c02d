package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// ErrBadReply is returned (wrapped) when a Redis server's answer is not
// well-formed RESP2 or is over the reader's limits.
var ErrBadReply = errors.New("bad RESP reply")

// RedisError is an error reply of a Redis server ("-ERR ...").
type RedisError string

// Error implements error.
func (e RedisError) Error() string { return "redis: " + string(e) }

// Limits of the RESP reader. Values are skipped, never held, so the limits
// only keep a hostile server from keeping the reader busy forever.
const (
	respReadBuf  = 64 << 10 // also the longest simple string or error line
	respMaxBulk  = 512 << 20
	respMaxArray = 1 << 24
	respMaxDepth = 8
	respDialWait = 5 * time.Second
)

// Redis is a Redis server spoken to over RESP2 by a small built-in client.
type Redis struct {
	addr string
}

// NewRedis returns the Redis target of a URL redis://HOST[:PORT] (port
// 6379 by default). Passwords and database numbers are not supported.
func NewRedis(rawURL string) (*Redis, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bad Redis URL: %w", err)
	}
	switch {
	case u.Scheme != "redis":
		return nil, fmt.Errorf("bad Redis URL %q: want redis://HOST:PORT", rawURL)
	case u.User != nil:
		return nil, fmt.Errorf("bad Redis URL %q: passwords are not supported", rawURL)
	case u.Path != "" && u.Path != "/" && u.Path != "/0":
		return nil, fmt.Errorf("bad Redis URL %q: only database 0 is supported", rawURL)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("bad Redis URL %q: no query or fragment is supported", rawURL)
	case u.Hostname() == "":
		return nil, fmt.Errorf("bad Redis URL %q: no host", rawURL)
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("bad Redis URL %q: bad port", rawURL)
	}
	return &Redis{addr: net.JoinHostPort(u.Hostname(), port)}, nil
}

// String implements Target.
func (r *Redis) String() string { return "redis://" + r.addr }

// Open implements Target: it connects and checks the server answers PING.
func (r *Redis) Open(ctx context.Context, pipeline int) (Conn, error) {
	d := net.Dialer{Timeout: respDialWait}
	nc, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %w", r, err)
	}
	c := &respConn{nc: nc, br: bufio.NewReaderSize(nc, respReadBuf)}
	nc.SetDeadline(time.Now().Add(respDialWait))
	rep, err := c.roundTrip(appendCmd(nil, "PING"))
	switch {
	case err != nil:
		nc.Close()
		return nil, fmt.Errorf("%s does not answer PING: %w", r, err)
	case rep.kind == '-':
		nc.Close()
		return nil, fmt.Errorf("%s refuses PING: %w", r, RedisError(rep.msg))
	case rep.kind != '+':
		nc.Close()
		return nil, fmt.Errorf("%w: %s answered PING with a %q reply", ErrBadReply, r, rep.kind)
	}
	nc.SetDeadline(time.Time{})
	// An ended context unblocks a Do in progress.
	c.stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	c.out = make([]byte, 0, pipeline*64)
	return c, nil
}

// respConn is one connection to a Redis server.
type respConn struct {
	nc   net.Conn
	br   *bufio.Reader
	out  []byte
	stop func() bool
}

// roundTrip sends one command and reads its reply.
func (c *respConn) roundTrip(cmd []byte) (reply, error) {
	if _, err := c.nc.Write(cmd); err != nil {
		return reply{}, err
	}
	return readReply(c.br, 0)
}

// Do implements Conn: it writes every command of the batch in one write,
// then reads the replies in order.
func (c *respConn) Do(ctx context.Context, reqs []Request, out []Outcome) error {
	b := c.out[:0]
	for i := range reqs {
		var err error
		if b, err = appendRequest(b, &reqs[i]); err != nil {
			return err
		}
	}
	c.out = b
	start := time.Now()
	if _, err := c.nc.Write(b); err != nil {
		return c.broken(ctx, err, out)
	}
	for i := range reqs {
		rep, err := readReply(c.br, 0)
		if err != nil {
			return c.broken(ctx, err, out[i:])
		}
		out[i] = Outcome{Latency: time.Since(start)}
		out[i].Miss, out[i].Err = judge(reqs[i].Op, rep)
	}
	return nil
}

// broken fails the unanswered requests with the error that ended the
// connection, and returns it.
func (c *respConn) broken(ctx context.Context, err error, unanswered []Outcome) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	} else {
		err = fmt.Errorf("connection to redis %s failed: %w", c.nc.RemoteAddr(), err)
	}
	for i := range unanswered {
		unanswered[i] = Outcome{Err: err}
	}
	return err
}

// Close implements Conn.
func (c *respConn) Close() error {
	if c.stop != nil {
		c.stop()
	}
	return c.nc.Close()
}

// judge checks a reply against the command it answers.
func judge(op Op, rep reply) (miss bool, err error) {
	if rep.kind == '-' {
		return false, RedisError(rep.msg)
	}
	var want byte
	switch op {
	case OpGet, OpPop:
		want, miss = '$', rep.n < 0
	case OpSet:
		want = '+'
	case OpPush, OpDrop:
		want = ':'
	case OpAppend:
		want = '$'
	case OpRange:
		want, miss = '*', rep.n <= 0
	}
	if rep.kind != want {
		return false, fmt.Errorf("%w: a %q reply to %s", ErrBadReply, rep.kind, op)
	}
	return miss, nil
}

// appendRequest appends the RESP command of q:
//
//	get     GET key                  set    SET key value
//	push    LPUSH channel value      pop    RPOP channel
//	append  XADD channel * v value   (with a Time: XADD channel TIME-0 v value)
//	range   XRANGE channel TIME TIME+COUNT-1 COUNT COUNT
//	drop    DEL channel
func appendRequest(b []byte, q *Request) ([]byte, error) {
	switch q.Op {
	case OpGet:
		b = appendArgs(b, 2, "GET")
		return appendBulk(b, q.Key), nil
	case OpSet:
		b = appendArgs(b, 3, "SET")
		b = appendBulk(b, q.Key)
		return appendBulk(b, q.Value), nil
	case OpPush:
		b = appendArgs(b, 3, "LPUSH")
		b = appendBulkString(b, q.Channel)
		return appendBulk(b, q.Value), nil
	case OpPop:
		b = appendArgs(b, 2, "RPOP")
		return appendBulkString(b, q.Channel), nil
	case OpAppend:
		b = appendArgs(b, 5, "XADD")
		b = appendBulkString(b, q.Channel)
		if q.Time > 0 {
			var id [24]byte
			b = appendBulk(b, append(strconv.AppendInt(id[:0], q.Time, 10), "-0"...))
		} else {
			b = appendBulkString(b, "*")
		}
		b = appendBulkString(b, "v")
		return appendBulk(b, q.Value), nil
	case OpRange:
		var n [20]byte
		b = appendArgs(b, 6, "XRANGE")
		b = appendBulkString(b, q.Channel)
		b = appendBulk(b, strconv.AppendInt(n[:0], q.Time, 10))
		b = appendBulk(b, strconv.AppendInt(n[:0], q.Time+int64(q.Count)-1, 10))
		b = appendBulkString(b, "COUNT")
		return appendBulk(b, strconv.AppendInt(n[:0], int64(q.Count), 10)), nil
	case OpDrop:
		b = appendArgs(b, 2, "DEL")
		return appendBulkString(b, q.Channel), nil
	}
	return b, fmt.Errorf("%w: redis has no %s", ErrUnsupported, q.Op)
}

// appendCmd appends a command of string arguments.
func appendCmd(b []byte, args ...string) []byte {
	b = appendHead(b, '*', len(args))
	for _, a := range args {
		b = appendBulkString(b, a)
	}
	return b
}

// appendArgs starts a command of n arguments with its name.
func appendArgs(b []byte, n int, name string) []byte {
	return appendBulkString(appendHead(b, '*', n), name)
}

func appendHead(b []byte, kind byte, n int) []byte {
	b = append(b, kind)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

func appendBulk(b, v []byte) []byte {
	b = appendHead(b, '$', len(v))
	b = append(b, v...)
	return append(b, '\r', '\n')
}

func appendBulkString(b []byte, v string) []byte {
	b = appendHead(b, '$', len(v))
	b = append(b, v...)
	return append(b, '\r', '\n')
}

// reply is what the reader keeps of one RESP2 reply: its type, the number
// of a ':' reply, the length of a '$' or the count of a '*' (-1 for nil),
// and the text of a '-'. Contents are skipped.
type reply struct {
	kind byte
	n    int64
	msg  string
}

// readReply reads one reply, with its nested replies (the forms are in the
// package comment); depth is the nesting level of the reply.
func readReply(br *bufio.Reader, depth int) (reply, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return reply{}, fmt.Errorf("%w: a line over %d bytes", ErrBadReply, respReadBuf)
	}
	if err != nil {
		return reply{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return reply{}, fmt.Errorf("%w: malformed line %q", ErrBadReply, clip(line))
	}
	r := reply{kind: line[0]}
	body := line[1 : len(line)-2]
	switch r.kind {
	case '+':
		return r, nil
	case '-':
		r.msg = string(body)
		return r, nil
	case ':':
		r.n, err = parseInt(body)
		return r, err
	case '$':
		if r.n, err = parseInt(body); err != nil {
			return r, err
		}
		if r.n < -1 || r.n > respMaxBulk {
			return r, fmt.Errorf("%w: bulk length %d", ErrBadReply, r.n)
		}
		if r.n < 0 {
			return r, nil
		}
		if _, err := br.Discard(int(r.n)); err != nil {
			return r, err
		}
		cr, err := br.ReadByte()
		if err != nil {
			return r, err
		}
		lf, err := br.ReadByte()
		if err != nil {
			return r, err
		}
		if cr != '\r' || lf != '\n' {
			return r, fmt.Errorf("%w: bulk string not ended by CRLF", ErrBadReply)
		}
		return r, nil
	case '*':
		if r.n, err = parseInt(body); err != nil {
			return r, err
		}
		if r.n < -1 || r.n > respMaxArray {
			return r, fmt.Errorf("%w: array length %d", ErrBadReply, r.n)
		}
		if r.n > 0 && depth >= respMaxDepth {
			return r, fmt.Errorf("%w: arrays nested over %d deep", ErrBadReply, respMaxDepth)
		}
		for range r.n {
			if _, err := readReply(br, depth+1); err != nil {
				return r, err
			}
		}
		return r, nil
	}
	return r, fmt.Errorf("%w: unknown reply type %q", ErrBadReply, r.kind)
}

// parseInt parses a decimal integer of at most 18 digits.
func parseInt(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, fmt.Errorf("%w: bad integer %q", ErrBadReply, clip(b))
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad integer %q", ErrBadReply, clip(b))
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// clip shortens hostile input quoted in an error.
func clip(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
