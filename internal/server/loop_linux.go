//go:build linux

package server

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxLoopEvents is how many readiness events one epoll_wait returns.
const maxLoopEvents = 256

// eventLoop serves idle plain-TCP connections from one goroutine, as
// Redis's event loop does: one epoll_wait for every connection that has
// requests, then for each one read, its complete requests answered, one
// write. A connection whose goroutine would otherwise park in the Go
// poller (and pay a read that fails with EAGAIN, then a wake-up, for every
// request at pipeline 1) comes here at that point, and goes back to a
// goroutine of its own for anything that may block or wait: a partial
// frame, a request that is not a plain one (streams, appends, durable
// writes, ...), answers the socket does not take at once, shutdown.
//
// The level-triggered registration carries the connection's loop id, not
// its file descriptor: a descriptor closed behind the loop's back and
// reused by a new connection cannot be mistaken for the old one.
type eventLoop struct {
	s    *Server
	epfd int
	file *os.File // epfd in Go's poller (see waiter); nil if it is not
	wake int      // eventfd: Shutdown and kicks wake the loop with it

	mu      sync.Mutex
	conns   map[int32]*conn // by loop id
	kicked  []*conn         // to hand back to a goroutine of their own
	nextID  int32
	closing bool
}

// loops are a server's event loops, started with the first connection that
// goes idle: one per GOMAXPROCS.
type loops struct {
	once sync.Once
	all  atomic.Pointer[[]*eventLoop] // set once the loops run
	next atomic.Uint32
}

// loopConn is a connection's loop state.
type loopConn struct {
	loop *eventLoop // the loop serving it; nil outside one
	id   int32
	rc   syscall.RawConn
	// The system calls rawRead and rawWrite make through rc, with their
	// arguments and results, made once with rc: a closure handed to an
	// interface method escapes, and a new one per call (with what it
	// captured) cost the node six heap allocations per request.
	read, write rawIO
}

// rawIO is one direction's system call through a RawConn.
type rawIO struct {
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// startLoops starts the server's loops once, unless Shutdown came first,
// and returns them (none when they could not start).
func (s *Server) startLoops() []*eventLoop {
	s.loops.once.Do(func() {
		var all []*eventLoop
		for range runtime.GOMAXPROCS(0) {
			l, err := newEventLoop(s)
			if err != nil {
				s.cfg.Logger.Warn("event loop unavailable: connections stay on goroutines", "err", err)
				break
			}
			all = append(all, l)
		}
		for _, l := range all {
			go l.run()
		}
		s.loops.all.Store(&all)
	})
	if p := s.loops.all.Load(); p != nil {
		return *p
	}
	return nil
}

// runningLoops returns the loops started so far.
func (s *Server) runningLoops() []*eventLoop {
	if p := s.loops.all.Load(); p != nil {
		return *p
	}
	return nil
}

func newEventLoop(s *Server) (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	return &eventLoop{s: s, epfd: epfd, wake: wake, conns: map[int32]*conn{}}, nil
}

// toLoop hands the idle connection c to an event loop; it reports whether
// it did, and then c belongs to the loop: the caller must not touch it
// again. c's read buffer is empty and its answers written.
func (c *conn) toLoop() bool {
	s := c.s
	if s.cfg.NoEventLoop || s.cfg.TLS != nil || c.tookOver || c.isShuttingDown() {
		return false
	}
	// Streams and appends in flight write their frames from goroutines of
	// their own through flush, as they do beside a reading goroutine.
	if c.appends.open != nil {
		return false
	}
	if c.lc.rc == nil {
		sc, ok := c.nc.(syscall.Conn)
		if !ok {
			return false
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		c.lc.rc = rc
		r, w := &c.lc.read, &c.lc.write
		r.fn = func(fd uintptr) bool {
			for {
				r.n, r.err = syscall.Read(int(fd), r.p)
				if r.err != syscall.EINTR {
					return true
				}
			}
		}
		w.fn = func(fd uintptr) bool {
			for {
				w.n, w.err = syscall.Write(int(fd), w.p)
				if w.err != syscall.EINTR {
					return true
				}
			}
		}
	}
	all := s.startLoops()
	if len(all) == 0 {
		return false
	}
	return all[int(s.loops.next.Add(1)%uint32(len(all)))].add(c)
}

// add registers c with the loop.
func (l *eventLoop) add(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing || c.isShuttingDown() {
		return false
	}
	l.nextID++
	if l.nextID < 0 {
		l.nextID = 0
	}
	id := l.nextID
	c.lc.loop, c.lc.id = l, id
	var err error
	cerr := c.lc.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: id}
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		c.lc.loop = nil
		return false
	}
	l.conns[id] = c
	l.s.looped.Add(1)
	return true
}

// kick asks the loop serving c, if any, to hand it back to a goroutine
// (shutdown, a failed write of another goroutine). Safe from any goroutine.
func (c *conn) kickLoop() {
	for _, l := range c.s.runningLoops() {
		l.kick(c)
	}
}

func (l *eventLoop) kick(c *conn) {
	l.mu.Lock()
	in := l.conns[c.lc.id] == c
	if in {
		l.kicked = append(l.kicked, c)
	}
	l.mu.Unlock()
	if in {
		l.poke()
	}
}

// shutdown hands every connection back to a goroutine (which then ends as
// Shutdown says) and refuses new ones.
func (l *eventLoop) shutdown() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.poke()
}

func (l *eventLoop) poke() {
	var one = [8]byte{1}
	unix.Write(l.wake, one[:])
}

// run is the loop's goroutine. It ends once the server shuts down and
// every connection has gone back to a goroutine.
func (l *eventLoop) run() {
	events := make([]unix.EpollEvent, maxLoopEvents)
	wait := l.waiter()
	for {
		n, err := wait(events)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.s.cfg.Logger.Error("event loop stopped", "err", err)
			l.releaseAll()
			return
		}
		for i := range events[:n] {
			ev := &events[i]
			if ev.Fd < 0 {
				var b [8]byte
				unix.Read(l.wake, b[:])
				continue
			}
			l.mu.Lock()
			c := l.conns[ev.Fd]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			switch c.serveEvent() {
			case eventPromote:
				l.release(c)
				go c.run()
			case eventClose:
				l.release(c)
				go c.retire()
			}
		}
		l.mu.Lock()
		kicked, closing := l.kicked, l.closing
		l.kicked = nil
		l.mu.Unlock()
		for _, c := range kicked {
			if l.release(c) {
				go c.run()
			}
		}
		if closing {
			l.releaseAll()
			return
		}
	}
}

// waiter returns how the loop waits for events. The loop never blocks in
// epoll_wait itself: a goroutine blocked in a system call keeps its P
// until the runtime's monitor (sysmon) takes it away, and a busy loop that
// waits a few microseconds at a time keeps sysmon waking every 20 µs to
// do so (GET 50 x 1 on two shared cores: 12.8 µs of node CPU per request
// with the blocking wait, 11.4 µs without). Instead the loop asks epoll without
// waiting, and when nothing is ready it parks on the epoll descriptor's
// readiness in Go's own poller (an epoll descriptor is readable when it
// has events), which then wakes it like any goroutine waiting for a
// socket. Should the descriptor not go into the poller, it blocks in
// epoll_wait.
func (l *eventLoop) waiter() func([]unix.EpollEvent) (int, error) {
	block := func(ev []unix.EpollEvent) (int, error) { return unix.EpollWait(l.epfd, ev, -1) }
	if err := unix.SetNonblock(l.epfd, true); err != nil {
		return block
	}
	l.file = os.NewFile(uintptr(l.epfd), "epoll")
	rc, err := l.file.SyscallConn()
	if err != nil {
		return block
	}
	// One closure for every wait (see loopConn.read): the loop's goroutine
	// alone calls it.
	var events []unix.EpollEvent
	var n int
	var werr error
	try := func(uintptr) bool {
		n, werr = unix.EpollWait(l.epfd, events, 0)
		return n != 0 || werr != nil
	}
	return func(ev []unix.EpollEvent) (int, error) {
		events = ev
		if cerr := rc.Read(try); cerr != nil {
			return block(ev)
		}
		return n, werr
	}
}

// releaseAll hands every connection back to a goroutine and closes the
// loop's descriptors.
func (l *eventLoop) releaseAll() {
	l.mu.Lock()
	l.closing = true
	var all []*conn
	for _, c := range l.conns {
		all = append(all, c)
	}
	l.mu.Unlock()
	for _, c := range all {
		if l.release(c) {
			go c.run()
		}
	}
	if l.file != nil {
		l.file.Close() // out of the poller, then closed
	} else {
		unix.Close(l.epfd)
	}
	unix.Close(l.wake)
}

// release takes c out of the loop; false when it was not in it.
func (l *eventLoop) release(c *conn) bool {
	l.mu.Lock()
	_, ok := l.conns[c.lc.id]
	if ok && l.conns[c.lc.id] == c {
		delete(l.conns, c.lc.id)
	} else {
		ok = false
	}
	l.mu.Unlock()
	if !ok {
		return false
	}
	c.lc.rc.Control(func(fd uintptr) {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	c.lc.loop = nil
	l.s.looped.Add(-1)
	return true
}

// rawRead reads once from c's socket without waiting: errWouldBlock when
// nothing is there. It calls package syscall, not x/sys/unix: under the
// race detector syscall's reads and writes order the memory of their
// callers, as Go's own network reads do.
func (c *conn) rawRead(p []byte) (int, error) {
	r := &c.lc.read
	r.p = p
	cerr := c.lc.rc.Read(r.fn)
	n, err := r.n, r.err
	r.p, r.err = nil, nil
	switch {
	case cerr != nil:
		return 0, cerr
	case err == syscall.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, errEOF
	}
	return n, nil
}

// rawWrite writes p to c's socket once, without waiting.
func (c *conn) rawWrite(p []byte) (int, error) {
	w := &c.lc.write
	w.p = p
	cerr := c.lc.rc.Write(w.fn)
	n, err := w.n, w.err
	w.p, w.err = nil, nil
	if cerr != nil {
		return 0, cerr
	}
	if n < 0 {
		n = 0
	}
	if err == syscall.EAGAIN {
		err = nil
	}
	return n, err
}

// shutdownLoops hands every looped connection back for Shutdown and stops
// the loops; none starts after it.
func (s *Server) shutdownLoops() {
	s.loops.once.Do(func() {}) // waits for loops starting meanwhile
	for _, l := range s.runningLoops() {
		l.shutdown()
	}
}
