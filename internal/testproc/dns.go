package testproc

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSServer is a DNS server on 127.0.0.1 (UDP, and TCP on the same port
// when it is free) answering from records the test sets: A, AAAA and SRV;
// any other name is NXDOMAIN. It stops at the end of the test.
type DNSServer struct {
	// Addr is the server's host:port.
	Addr string

	mu      sync.Mutex
	recs    map[string][]dns.RR // by lower-case FQDN
	queries int
}

// StartDNS starts a DNSServer.
func StartDNS(t testing.TB) *DNSServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &DNSServer{Addr: pc.LocalAddr().String(), recs: map[string][]dns.RR{}}
	servers := []*dns.Server{{PacketConn: pc, Handler: s}}
	if ln, err := net.Listen("tcp", s.Addr); err == nil {
		servers = append(servers, &dns.Server{Listener: ln, Handler: s})
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
		wg.Wait()
	})
	return s
}

// SetA sets the A and AAAA records of name (IP addresses, v4 or v6);
// none removes the name.
func (s *DNSServer) SetA(name string, ips ...string) {
	name = dns.Fqdn(strings.ToLower(name))
	var rrs []dns.RR
	for _, ip := range ips {
		p := net.ParseIP(ip)
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: 0}
		if v4 := p.To4(); v4 != nil {
			hdr.Rrtype = dns.TypeA
			rrs = append(rrs, &dns.A{Hdr: hdr, A: v4})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			rrs = append(rrs, &dns.AAAA{Hdr: hdr, AAAA: p})
		}
	}
	s.set(name, rrs)
}

// SRV is one SRV record's target and port.
type SRV struct {
	Target string
	Port   uint16
}

// SetSRV sets the SRV records of name; none removes the name.
func (s *DNSServer) SetSRV(name string, targets ...SRV) {
	name = dns.Fqdn(strings.ToLower(name))
	var rrs []dns.RR
	for _, t := range targets {
		rrs = append(rrs, &dns.SRV{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET}, Priority: 10, Weight: 10, Port: t.Port, Target: dns.Fqdn(t.Target)})
	}
	s.set(name, rrs)
}

func (s *DNSServer) set(name string, rrs []dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(rrs) == 0 {
		delete(s.recs, name)
		return
	}
	s.recs[name] = rrs
}

// Queries returns how many questions the server was asked.
func (s *DNSServer) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// ServeDNS implements dns.Handler.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative, m.RecursionAvailable = true, true
	s.mu.Lock()
	s.queries++
	for _, q := range req.Question {
		rrs, ok := s.recs[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
			continue
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	s.mu.Unlock()
	w.WriteMsg(m)
}

// SilentDNS returns the address of a UDP socket on 127.0.0.1 that reads
// DNS questions and never answers them (a DNS server that times out).
func SilentDNS(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}
