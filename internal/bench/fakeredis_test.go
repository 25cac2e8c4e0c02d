package bench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeRedis is a tiny RESP2 server for the tests: strings, lists and
// streams in memory, with a record of how many commands arrived together
// and switches to inject faults.
type fakeRedis struct {
	ln net.Listener
	wg sync.WaitGroup

	errOn     string       // reply -ERR injected to this command
	mute      atomic.Bool  // answer nothing but PING
	dropAfter atomic.Int64 // close the connection at this command count (once), 0: never

	mu      sync.Mutex
	strs    map[string]string
	lists   map[string][]string
	streams map[string][]int64
	conns   map[net.Conn]bool

	commands   atomic.Int64
	maxBatch   atomic.Int64 // most commands read before the replies were written
	connsSeen  atomic.Int64
	dropped    atomic.Bool
	lastValues atomic.Int64 // length of the last value SET
}

func startFakeRedis(t *testing.T) *fakeRedis {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln, strs: map[string]string{}, lists: map[string][]string{}, streams: map[string][]int64{}, conns: map[net.Conn]bool{}}
	f.wg.Go(f.accept)
	t.Cleanup(f.close)
	return f
}

func (f *fakeRedis) url() string { return "redis://" + f.ln.Addr().String() }

func (f *fakeRedis) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakeRedis) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.connsSeen.Add(1)
		f.mu.Lock()
		f.conns[c] = true
		f.mu.Unlock()
		f.wg.Go(func() {
			f.serve(c)
			f.mu.Lock()
			delete(f.conns, c)
			f.mu.Unlock()
			c.Close()
		})
	}
}

func (f *fakeRedis) serve(c net.Conn) {
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	for {
		var batch int64
		for {
			args, err := readCommand(br)
			if err != nil {
				return
			}
			batch++
			n := f.commands.Add(1)
			if d := f.dropAfter.Load(); d > 0 && n >= d && !f.dropped.Swap(true) {
				return
			}
			if f.mute.Load() && args[0] != "PING" {
				continue
			}
			f.exec(bw, args)
			if br.Buffered() == 0 {
				break
			}
		}
		for m := f.maxBatch.Load(); batch > m && !f.maxBatch.CompareAndSwap(m, batch); m = f.maxBatch.Load() {
		}
		if bw.Flush() != nil {
			return
		}
	}
}

// readCommand reads one array of bulk strings.
func readCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 || n > 16 {
		return nil, fmt.Errorf("bad array header %q", line)
	}
	args := make([]string, n)
	for i := range args {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if err != nil || l < 0 || l > 1<<20 {
			return nil, fmt.Errorf("bad bulk header %q", line)
		}
		b := make([]byte, l+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, err
		}
		args[i] = string(b[:l])
	}
	return args, nil
}

func (f *fakeRedis) exec(w *bufio.Writer, a []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a[0] == f.errOn {
		w.WriteString("-ERR injected\r\n")
		return
	}
	bulk := func(s string) { fmt.Fprintf(w, "$%d\r\n%s\r\n", len(s), s) }
	switch a[0] {
	case "PING":
		w.WriteString("+PONG\r\n")
	case "SET":
		f.strs[a[1]] = a[2]
		f.lastValues.Store(int64(len(a[2])))
		w.WriteString("+OK\r\n")
	case "GET":
		v, ok := f.strs[a[1]]
		if !ok {
			w.WriteString("$-1\r\n")
			return
		}
		bulk(v)
	case "LPUSH":
		f.lists[a[1]] = append([]string{a[2]}, f.lists[a[1]]...)
		fmt.Fprintf(w, ":%d\r\n", len(f.lists[a[1]]))
	case "RPOP":
		l := f.lists[a[1]]
		if len(l) == 0 {
			w.WriteString("$-1\r\n")
			return
		}
		f.lists[a[1]] = l[:len(l)-1]
		bulk(l[len(l)-1])
	case "XADD":
		ts := int64(len(f.streams[a[1]]) + 1)
		if a[2] != "*" {
			ts, _ = strconv.ParseInt(strings.TrimSuffix(a[2], "-0"), 10, 64)
		}
		f.streams[a[1]] = append(f.streams[a[1]], ts)
		bulk(fmt.Sprintf("%d-0", ts))
	case "XRANGE":
		from, _ := strconv.ParseInt(a[2], 10, 64)
		to, _ := strconv.ParseInt(a[3], 10, 64)
		var hits []int64
		for _, ts := range f.streams[a[1]] {
			if ts >= from && ts <= to {
				hits = append(hits, ts)
			}
		}
		fmt.Fprintf(w, "*%d\r\n", len(hits))
		for _, ts := range hits {
			w.WriteString("*2\r\n")
			bulk(fmt.Sprintf("%d-0", ts))
			w.WriteString("*2\r\n")
			bulk("v")
			bulk("value")
		}
	case "DEL":
		_, ok := f.streams[a[1]]
		delete(f.streams, a[1])
		delete(f.lists, a[1])
		fmt.Fprintf(w, ":%d\r\n", map[bool]int{true: 1}[ok])
	default:
		fmt.Fprintf(w, "-ERR unknown command '%s'\r\n", a[0])
	}
}

func (f *fakeRedis) keys() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.strs)
}

func (f *fakeRedis) list(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lists[name])
}

func (f *fakeRedis) stream(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams[name])
}
