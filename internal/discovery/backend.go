// Package discovery finds the other nodes of a cluster through a pluggable
// backend (a static list, a file, DNS A/AAAA or SRV records) and follows
// them, after CETS's cets_discovery: a pure state machine (Machine) decides
// when to ask the backend and which addresses to probe and to hand to the
// join, and a Runner drives it with workers and timeouts so that a backend
// that hangs or an address that blackholes never delays the node.
package discovery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Addr is a node's data address, host:port, in the canonical form of
// ParseAddr.
type Addr string

// Backend lists the data addresses of the nodes that should form the
// cluster.
type Backend interface {
	// Nodes returns the addresses the backend lists now, sorted and
	// without duplicates. It must return soon after ctx is done. An error
	// means the backend could not answer (it is retried, and the nodes it
	// listed before stay); an empty list without an error means it lists
	// no node.
	Nodes(ctx context.Context) ([]Addr, error)
}

// Limits on what a backend may return: a backend is input from outside.
const (
	// MaxNodes is the most addresses one backend answer may hold.
	MaxNodes = 1024
	// MaxFileSize is the largest file the file backend reads.
	MaxFileSize = 1 << 20
	maxAddrLen  = 255
)

// Spec kinds, the part of --discovery before the first colon.
const (
	KindStatic = "static"
	KindFile   = "file"
	KindDNS    = "dns"
	KindSRV    = "dns+srv"
)

// Spec is a parsed --discovery value.
type Spec struct {
	// Kind is KindStatic, KindFile, KindDNS or KindSRV.
	Kind string
	// Addrs are a static backend's addresses.
	Addrs []Addr
	// Path is a file backend's file.
	Path string
	// Name is the DNS name of a dns or dns+srv backend.
	Name string
	// Port is a dns backend's port; 0: Options.DefaultPort.
	Port int
	raw  string
}

// String returns the value the Spec was parsed from.
func (s Spec) String() string { return s.raw }

// ParseSpec parses a --discovery value: static:HOST:PORT,..., file:PATH,
// dns:NAME[:PORT] or dns+srv:_service._tcp.NAME.
func ParseSpec(v string) (Spec, error) {
	kind, rest, ok := strings.Cut(v, ":")
	s := Spec{Kind: kind, raw: v}
	if !ok || rest == "" {
		return s, fmt.Errorf("discovery %q: want static:HOST:PORT,..., file:PATH, dns:NAME[:PORT] or dns+srv:_service._tcp.NAME", v)
	}
	switch kind {
	case KindStatic:
		for _, a := range strings.Split(rest, ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			addr, err := ParseAddr(a)
			if err != nil {
				return s, fmt.Errorf("discovery %q: %w", v, err)
			}
			s.Addrs = append(s.Addrs, addr)
		}
		if len(s.Addrs) > MaxNodes {
			return s, fmt.Errorf("discovery %q: %d addresses, at most %d", v, len(s.Addrs), MaxNodes)
		}
		s.Addrs = sortUnique(s.Addrs)
		if len(s.Addrs) == 0 {
			return s, fmt.Errorf("discovery %q: no address", v)
		}
	case KindFile:
		s.Path = rest
	case KindDNS:
		s.Name = rest
		if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			p, err := strconv.Atoi(rest[i+1:])
			if err != nil || p < 1 || p > 65535 {
				return s, fmt.Errorf("discovery %q: port %q: want 1..65535", v, rest[i+1:])
			}
			s.Name, s.Port = rest[:i], p
		}
		if !validName(s.Name) {
			return s, fmt.Errorf("discovery %q: %q is not a DNS name", v, s.Name)
		}
	case KindSRV:
		s.Name = rest
		if !validName(s.Name) || !strings.HasPrefix(s.Name, "_") {
			return s, fmt.Errorf("discovery %q: want an SRV name such as _shoal._tcp.shoal.example.com", v)
		}
	default:
		return s, fmt.Errorf("discovery %q: unknown backend %q: want static, file, dns or dns+srv", v, kind)
	}
	return s, nil
}

// Options are what a Backend needs beyond its Spec.
type Options struct {
	// DefaultPort is the port of a dns backend without one (the node's
	// own data port: every node of a headless Service listens on it).
	DefaultPort int
	// DNSServer, host:port, is the DNS server the dns backends ask instead
	// of the system's (tests, private resolvers).
	DNSServer string
}

// Backend returns the backend the Spec names.
func (s Spec) Backend(o Options) (Backend, error) {
	switch s.Kind {
	case KindStatic:
		return Static(s.Addrs), nil
	case KindFile:
		return File(s.Path), nil
	case KindDNS, KindSRV:
		d := &DNS{Name: s.Name, Port: s.Port, SRV: s.Kind == KindSRV, Resolver: NewResolver(o.DNSServer)}
		if d.Port == 0 {
			d.Port = o.DefaultPort
		}
		if !d.SRV && (d.Port < 1 || d.Port > 65535) {
			return nil, fmt.Errorf("discovery %s: no port, and no default port", s)
		}
		return d, nil
	}
	return nil, fmt.Errorf("discovery %s: unknown backend %q", s, s.Kind)
}

// ParseAddr checks a host:port address and returns it in canonical form:
// an IP address as netip formats it ("[::1]:7400"), a host name in lower
// case without a final dot.
func ParseAddr(s string) (Addr, error) {
	if len(s) > maxAddrLen {
		return "", fmt.Errorf("address %.40q...: longer than %d bytes", s, maxAddrLen)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("address %q: port %q: want 1..65535", s, port)
	}
	return hostPort(host, p)
}

func hostPort(host string, port int) (Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return Addr(netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()), nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !validName(host) {
		return "", fmt.Errorf("address %q: %q is neither an IP address nor a host name", net.JoinHostPort(host, strconv.Itoa(port)), host)
	}
	return Addr(net.JoinHostPort(host, strconv.Itoa(port))), nil
}

// validName reports whether s is a DNS name: labels of letters, digits,
// '-' and '_' of 1..63 bytes, 253 bytes in all, a final dot allowed.
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func sortUnique(as []Addr) []Addr {
	slices.Sort(as)
	return slices.Compact(as)
}

// Static is a backend of fixed addresses (static:HOST:PORT,...).
type Static []Addr

// Nodes implements Backend.
func (s Static) Nodes(context.Context) ([]Addr, error) { return slices.Clone(s), nil }

// File is a backend that reads a file of addresses at every call
// (file:PATH): addresses separated by spaces, tabs or line ends, '#'
// starts a comment to the end of the line. A file that is missing or
// unreadable, too large, or holds something that is not an address is an
// error, not an empty list (a file caught half-written is retried soon);
// an empty file lists no node.
type File string

// Nodes implements Backend.
func (f File) Nodes(context.Context) ([]Addr, error) {
	fh, err := os.Open(string(f))
	if err != nil {
		return nil, fmt.Errorf("discovery file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("discovery file %s: %w", f, err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("discovery file %s: larger than %d bytes", f, MaxFileSize)
	}
	return parseList(string(f), b)
}

// parseList parses the addresses of a discovery file.
func parseList(name string, b []byte) ([]Addr, error) {
	var out []Addr
	for i, line := range bytes.Split(b, []byte("\n")) {
		if c := bytes.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		for _, w := range strings.Fields(string(line)) {
			a, err := ParseAddr(w)
			if err != nil {
				return nil, fmt.Errorf("discovery file %s line %d: %w", name, i+1, err)
			}
			if len(out) == MaxNodes {
				return nil, fmt.Errorf("discovery file %s: more than %d addresses", name, MaxNodes)
			}
			out = append(out, a)
		}
	}
	return sortUnique(out), nil
}

// DNS is a backend that resolves a name: its A and AAAA records with Port
// (dns:NAME[:PORT], e.g. a Kubernetes headless Service), or its SRV
// records (dns+srv:_service._tcp.NAME), each target resolved to its
// addresses (a target that does not resolve is listed by name, so that
// the probe of it says why).
type DNS struct {
	Name     string
	Port     int
	SRV      bool
	Resolver *net.Resolver
}

// NewResolver returns a resolver that asks server (host:port) over UDP
// and TCP instead of the system's servers; "" is the system's resolver.
// Its connections close when the lookup's context is done, so a server
// that never answers leaves no query waiting for its own timeout.
func NewResolver(server string) *net.Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, server)
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { c.Close() })
		return c, nil
	}}
}

// Nodes implements Backend.
func (d *DNS) Nodes(ctx context.Context) ([]Addr, error) {
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	var out []Addr
	add := func(host string, port int) error {
		a, err := hostPort(host, port)
		if err != nil {
			return fmt.Errorf("discovery dns %s: %w", d.Name, err)
		}
		if len(out) == MaxNodes {
			return fmt.Errorf("discovery dns %s: more than %d addresses", d.Name, MaxNodes)
		}
		out = append(out, a)
		return nil
	}
	if !d.SRV {
		ips, err := r.LookupNetIP(ctx, "ip", d.Name)
		if err != nil {
			return nil, fmt.Errorf("discovery dns: %w", err)
		}
		for _, ip := range ips {
			if err := add(ip.Unmap().String(), d.Port); err != nil {
				return nil, err
			}
		}
		return sortUnique(out), nil
	}
	_, srvs, err := r.LookupSRV(ctx, "", "", d.Name)
	if err != nil {
		return nil, fmt.Errorf("discovery dns+srv: %w", err)
	}
	if len(srvs) > MaxNodes {
		return nil, fmt.Errorf("discovery dns+srv %s: %d records, at most %d", d.Name, len(srvs), MaxNodes)
	}
	for _, s := range srvs {
		if s.Port == 0 || s.Target == "." {
			continue // "no service here" (RFC 2782)
		}
		ips, err := r.LookupNetIP(ctx, "ip", s.Target)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("discovery dns+srv %s: %w", d.Name, ctx.Err())
		}
		if err != nil {
			if err := add(s.Target, int(s.Port)); err != nil {
				return nil, err
			}
			continue
		}
		for _, ip := range ips {
			if err := add(ip.Unmap().String(), int(s.Port)); err != nil {
				return nil, err
			}
		}
	}
	return sortUnique(out), nil
}
