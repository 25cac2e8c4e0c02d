// Package faultnet is a TCP proxy for tests that injects network faults
// between a client and a server on 127.0.0.1: cutting every connection,
// freezing them (sockets open, nothing flows: a peer stopped with SIGSTOP,
// or a half-open connection), adding latency, and cutting a connection
// after a number of bytes.
package faultnet

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections accepted on its address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cond    *sync.Cond
	frozen  bool
	oneWay  bool // only what clients send to the target is held (FreezeToTarget)
	latency time.Duration
	cutAt   int64 // cut each connection after this many bytes toward the client; 0 = never
	conns   map[*link]struct{}
	closed  bool
	wg      sync.WaitGroup

	accepted atomic.Int64
}

type link struct {
	client, server net.Conn
	toClient       atomic.Int64
	halves         atomic.Int32 // directions still open
}

// New starts a proxy on 127.0.0.1 forwarding to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*link]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// SetTarget changes where new connections go.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Cut closes every open connection (both sides see a clean close).
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.conns {
		l.client.Close()
		l.server.Close()
	}
}

// Freeze stops forwarding in both directions; sockets stay open, as with a
// peer stopped by SIGSTOP. New connections are accepted and frozen too.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// FreezeToTarget stops forwarding what clients send to the target, and
// only that: the target's answers on open connections still flow, as in a
// one-way partition where the target can send but not receive.
func (p *Proxy) FreezeToTarget() {
	p.mu.Lock()
	p.oneWay = true
	p.mu.Unlock()
}

// Thaw resumes forwarding (after Freeze or FreezeToTarget).
func (p *Proxy) Thaw() {
	p.mu.Lock()
	p.frozen, p.oneWay = false, false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// SetLatency delays every chunk forwarded by d.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// CutAfter closes each connection once n bytes have gone toward the
// client (0 disables).
func (p *Proxy) CutAfter(n int64) {
	p.mu.Lock()
	p.cutAt = n
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.frozen, p.oneWay = false, false
	p.cond.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		s, err := net.DialTimeout("tcp", target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{client: c, server: s}
		l.halves.Store(2)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, s, c, true)
		go p.pipe(l, c, s, false)
	}
}

// pipe copies from src to dst, honouring faults.
func (p *Proxy) pipe(l *link, src, dst net.Conn, toClient bool) {
	defer p.wg.Done()
	closeAll := true
	defer func() {
		if l.halves.Add(-1) > 0 && !closeAll {
			return // the other direction goes on
		}
		l.client.Close()
		l.server.Close()
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for (p.frozen || p.oneWay && !toClient) && !p.closed {
				p.cond.Wait()
			}
			lat, cutAt := p.latency, p.cutAt
			p.mu.Unlock()
			if lat > 0 {
				time.Sleep(lat)
			}
			chunk := buf[:n]
			if toClient && cutAt > 0 {
				sent := l.toClient.Load()
				if sent+int64(n) >= cutAt {
					chunk = chunk[:max(0, cutAt-sent)]
					dst.Write(chunk)
					return
				}
				l.toClient.Add(int64(n))
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite() // pass the half close on
					closeAll = false
				}
			}
			return
		}
	}
}
