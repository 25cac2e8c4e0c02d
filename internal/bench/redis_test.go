package bench

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewRedis(t *testing.T) {
	for _, c := range []struct{ in, addr, err string }{
		{"redis://127.0.0.1:6380", "127.0.0.1:6380", ""},
		{"redis://localhost", "localhost:6379", ""},
		{"redis://127.0.0.1:6380/", "127.0.0.1:6380", ""},
		{"redis://127.0.0.1:6380/0", "127.0.0.1:6380", ""},
		{"redis://[::1]:7000", "[::1]:7000", ""},
		{"http://127.0.0.1:6380", "", "want redis://"},
		{"redis://:secret@127.0.0.1:6380", "", "passwords"},
		{"redis://127.0.0.1:6380/3", "", "database 0"},
		{"redis://127.0.0.1:6380?x=1", "", "query"},
		{"redis://:6380", "", "no host"},
		{"redis://127.0.0.1:99999", "", "bad port"},
		{"redis://127.0.0.1:0", "", "bad port"},
		{"redis://%zz", "", "bad Redis URL"},
	} {
		r, err := NewRedis(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("NewRedis(%q) = %v, %v; want error with %q", c.in, r, err, c.err)
			}
			continue
		}
		if err != nil || r.addr != c.addr || r.String() != "redis://"+c.addr {
			t.Errorf("NewRedis(%q) = %v, %v; want %s", c.in, r, err, c.addr)
		}
	}
}

func TestAppendRequest(t *testing.T) {
	key, val := []byte("key:000000000042"), []byte("vv")
	for _, c := range []struct {
		q    Request
		want string
	}{
		{Request{Op: OpGet, Key: key}, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n"},
		{Request{Op: OpSet, Key: key, Value: val}, "*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$2\r\nvv\r\n"},
		{Request{Op: OpPush, Channel: "q", Value: val}, "*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$2\r\nvv\r\n"},
		{Request{Op: OpPop, Channel: "q"}, "*2\r\n$4\r\nRPOP\r\n$1\r\nq\r\n"},
		{Request{Op: OpAppend, Channel: "l", Value: val}, "*5\r\n$4\r\nXADD\r\n$1\r\nl\r\n$1\r\n*\r\n$1\r\nv\r\n$2\r\nvv\r\n"},
		{Request{Op: OpAppend, Channel: "l", Value: val, Time: 17}, "*5\r\n$4\r\nXADD\r\n$1\r\nl\r\n$4\r\n17-0\r\n$1\r\nv\r\n$2\r\nvv\r\n"},
		{Request{Op: OpRange, Channel: "l", Time: 5, Count: 10}, "*6\r\n$6\r\nXRANGE\r\n$1\r\nl\r\n$1\r\n5\r\n$2\r\n14\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n"},
		{Request{Op: OpDrop, Channel: "l"}, "*2\r\n$3\r\nDEL\r\n$1\r\nl\r\n"},
	} {
		got, err := appendRequest(nil, &c.q)
		if err != nil || string(got) != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.q.Op, got, err, c.want)
		}
	}
	if _, err := appendRequest(nil, &Request{Op: 99}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown op: %v", err)
	}
}

func TestReadReply(t *testing.T) {
	ok := []struct {
		in   string
		want reply
	}{
		{"+OK\r\n", reply{kind: '+'}},
		{"-ERR wrong\r\n", reply{kind: '-', msg: "ERR wrong"}},
		{":-42\r\n", reply{kind: ':', n: -42}},
		{"$5\r\nhello\r\n", reply{kind: '$', n: 5}},
		{"$0\r\n\r\n", reply{kind: '$', n: 0}},
		{"$-1\r\n", reply{kind: '$', n: -1}},
		{"*-1\r\n", reply{kind: '*', n: -1}},
		{"*0\r\n", reply{kind: '*', n: 0}},
		{"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nv\r\n$1\r\nx\r\n:1\r\n", reply{kind: '*', n: 2}},
	}
	for _, c := range ok {
		br := bufio.NewReaderSize(strings.NewReader(c.in+"+NEXT\r\n"), 16)
		got, err := readReply(br, 0)
		if err != nil || got != c.want {
			t.Errorf("%q: got %+v, %v; want %+v", c.in, got, err, c.want)
			continue
		}
		// The reply was consumed exactly.
		if next, err := readReply(br, 0); err != nil || next.kind != '+' {
			t.Errorf("%q: the next reply: %+v, %v", c.in, next, err)
		}
	}
	bad := []string{
		"", "\r\n", "+OK\n", "?x\r\n", ":\r\n", ":12a\r\n", ":1234567890123456789\r\n",
		"$-2\r\n", "$3\r\nab", "$3\r\nabcd\r\n", "$999999999999\r\n", "*-2\r\n",
		"*99999999\r\n", "*1\r\n", "*1\r\n$1\r\nx", "+" + strings.Repeat("a", respReadBuf) + "\r\n",
		strings.Repeat("*1\r\n", respMaxDepth+1) + ":1\r\n",
	}
	for _, in := range bad {
		if got, err := readReply(bufio.NewReaderSize(strings.NewReader(in), respReadBuf), 0); err == nil {
			t.Errorf("%.40q: got %+v, want an error", in, got)
		}
	}
	// Nesting up to the limit is fine.
	deep := strings.Repeat("*1\r\n", respMaxDepth) + ":1\r\n"
	if _, err := readReply(bufio.NewReader(strings.NewReader(deep)), 0); err != nil {
		t.Errorf("nesting %d: %v", respMaxDepth, err)
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "-ERR x\r\n", ":1\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*2\r\n:1\r\n*1\r\n$0\r\n\r\n", "*-1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(b)), 64)
		for range 64 {
			r, err := readReply(br, 0)
			if err != nil {
				return
			}
			if r.kind == '$' && (r.n < -1 || r.n > respMaxBulk) || r.kind == '*' && (r.n < -1 || r.n > respMaxArray) {
				t.Fatalf("accepted out-of-bounds reply %+v", r)
			}
		}
	})
}

func TestJudge(t *testing.T) {
	for _, c := range []struct {
		op   Op
		rep  reply
		miss bool
		err  bool
	}{
		{OpGet, reply{kind: '$', n: 100}, false, false},
		{OpGet, reply{kind: '$', n: -1}, true, false},
		{OpPop, reply{kind: '$', n: -1}, true, false},
		{OpSet, reply{kind: '+'}, false, false},
		{OpSet, reply{kind: ':'}, false, true},
		{OpRange, reply{kind: '*', n: 0}, true, false},
		{OpRange, reply{kind: '*', n: 3}, false, false},
		{OpPush, reply{kind: '-', msg: "WRONGTYPE"}, false, true},
	} {
		miss, err := judge(c.op, c.rep)
		if miss != c.miss || (err != nil) != c.err {
			t.Errorf("%s %+v: miss %v err %v", c.op, c.rep, miss, err)
		}
	}
}

func TestRedisPipelines(t *testing.T) {
	f := startFakeRedis(t)
	r, err := NewRedis(f.url())
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Open(t.Context(), 8)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reqs := make([]Request, 8)
	for i := range reqs {
		reqs[i] = Request{Op: OpSet, Key: []byte("key:00000000000" + strconv.Itoa(i)), Value: []byte("v")}
	}
	reqs[7] = Request{Op: OpGet, Key: []byte("key:000000000003")}
	out := make([]Outcome, 8)
	if err := c.Do(t.Context(), reqs, out); err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Err != nil || o.Miss || o.Latency <= 0 {
			t.Errorf("outcome %d: %+v", i, o)
		}
	}
	// The 8 commands went out in one write and were read before any reply.
	if got := f.maxBatch.Load(); got != 8 {
		t.Errorf("the server read at most %d commands at once; want 8", got)
	}
	if f.keys() != 7 {
		t.Errorf("the server holds %d keys; want 7", f.keys())
	}
}

func TestRedisOpenFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.ReadFull(c, make([]byte, 14)) // *1\r\n$4\r\nPING\r\n
			if i == 0 {
				c.Write([]byte("-NOAUTH Authentication required.\r\n"))
			} else {
				c.Write([]byte("HTTP/1.1 400 Bad Request\r\n"))
			}
			c.Close()
		}
	}()
	r, _ := NewRedis("redis://" + addr)
	if _, err := r.Open(t.Context(), 1); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("NOAUTH: %v", err)
	}
	if _, err := r.Open(t.Context(), 1); !errors.Is(err, ErrBadReply) {
		t.Errorf("not redis: %v", err)
	}
	ln.Close()
	<-done
	if _, err := r.Open(t.Context(), 1); err == nil || !strings.Contains(err.Error(), "cannot connect") {
		t.Errorf("nothing listening: %v", err)
	}
}

// TestRealRedis runs every workload against redis-server when it is
// installed.
func TestRealRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--logfile", "")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r, err := NewRedis("redis://127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		c, err := r.Open(t.Context(), 1)
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("redis-server did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	o := DefaultOptions()
	o.Conns, o.Pipeline, o.Keys, o.Requests, o.Warmup = 4, 8, 500, 2000, 0
	for _, w := range []Workload{Load, Get, Set, Mix, Push, Pop, Append, Range} {
		o.Workload = w
		res, err := Run(t.Context(), r, o)
		if err != nil || res.Errors != 0 {
			t.Fatalf("%s: %+v, %v", w, res, err)
		}
		want := o.Requests
		if w == Load {
			want = o.Keys
		}
		if res.Requests != want {
			t.Errorf("%s: %d requests, want %d", w, res.Requests, want)
		}
		if (w == Get || w == Range) && res.Misses != 0 {
			t.Errorf("%s: %d misses after the load", w, res.Misses)
		}
	}
	// 2000 pushes then 2000 pops: the queue is empty again, and no pop missed.
	c, err := r.Open(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := make([]Outcome, 1)
	if err := c.Do(t.Context(), []Request{{Op: OpPop, Channel: o.Channel + "-queue"}}, out); err != nil || !out[0].Miss {
		t.Errorf("the queue is not empty: %+v, %v", out[0], err)
	}
}
