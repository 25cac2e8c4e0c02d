package discovery

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"shoal/internal/testproc"
)

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Spec
	}{
		{"static:127.0.0.1:7402, 127.0.0.1:7401,127.0.0.1:7401", Spec{Kind: KindStatic, Addrs: []Addr{"127.0.0.1:7401", "127.0.0.1:7402"}}},
		{"static:[::1]:7400,Node-1.Example.com.:7400", Spec{Kind: KindStatic, Addrs: []Addr{"[::1]:7400", "node-1.example.com:7400"}}},
		{"file:/etc/shoal/nodes", Spec{Kind: KindFile, Path: "/etc/shoal/nodes"}},
		{"file:nodes:with:colons", Spec{Kind: KindFile, Path: "nodes:with:colons"}},
		{"dns:shoal.default.svc.cluster.local", Spec{Kind: KindDNS, Name: "shoal.default.svc.cluster.local"}},
		{"dns:shoal.test.:7401", Spec{Kind: KindDNS, Name: "shoal.test.", Port: 7401}},
		{"dns+srv:_shoal._tcp.shoal.test.", Spec{Kind: KindSRV, Name: "_shoal._tcp.shoal.test."}},
	} {
		got, err := ParseSpec(c.in)
		c.want.raw = c.in
		if err != nil || !slices.Equal(got.Addrs, c.want.Addrs) || got.Kind != c.want.Kind || got.Path != c.want.Path || got.Name != c.want.Name || got.Port != c.want.Port || got.String() != c.in {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{
		"", "static", "static:", "static:,", "static:127.0.0.1", "static:127.0.0.1:0", "static:127.0.0.1:70000", "static:a b:1",
		"static:" + strings.Repeat("a", 300) + ":1", "file:", "dns:", "dns:name:0", "dns:name:x", "dns:bad_name!:7400", "dns:a..b",
		"dns+srv:", "dns+srv:shoal.test", "consul:shoal", "DNS:shoal",
	} {
		if s, err := ParseSpec(in); err == nil {
			t.Errorf("ParseSpec(%q) = %+v, want an error", in, s)
		}
	}
	many := make([]string, MaxNodes+1)
	for i := range many {
		many[i] = "127.0.0.1:" + strconv.Itoa(1000+i)
	}
	if _, err := ParseSpec("static:" + strings.Join(many, ",")); err == nil {
		t.Errorf("a static list of %d addresses was taken", len(many))
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]Addr{
		"127.0.0.1:7400": "127.0.0.1:7400", "[::1]:1": "[::1]:1", "[::ffff:127.0.0.1]:7400": "127.0.0.1:7400",
		"Shoal-0.Shoal.NS.svc.:7400": "shoal-0.shoal.ns.svc:7400", "localhost:65535": "localhost:65535",
	} {
		if got, err := ParseAddr(in); err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"127.0.0.1", ":7400", "127.0.0.1:", "127.0.0.1:-1", "host:http", "a/b:1", "[::1:1", "x:1:2", "\x00:1"} {
		if got, err := ParseAddr(in); err == nil {
			t.Errorf("ParseAddr(%q) = %q, want an error", in, got)
		}
	}
}

func TestStatic(t *testing.T) {
	s, err := ParseSpec("static:127.0.0.1:7402,127.0.0.1:7401")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Backend(Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Nodes(context.Background())
	if err != nil || !slices.Equal(got, []Addr{"127.0.0.1:7401", "127.0.0.1:7402"}) {
		t.Fatalf("Nodes = %v, %v", got, err)
	}
	got[0] = "changed"
	if again, _ := b.Nodes(context.Background()); again[0] != "127.0.0.1:7401" {
		t.Fatal("the caller changed the static list")
	}
}

// TestFile: the file is read at every call; a missing or unreadable file,
// garbage and an oversized file are errors (naming the line), an empty
// file lists nothing, duplicates are listed once.
func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nodes")
	b := File(path)
	ctx := context.Background()
	nodes := func() ([]Addr, error) { return b.Nodes(ctx) }

	if got, err := nodes(); !errors.Is(err, fs.ErrNotExist) || got != nil {
		t.Fatalf("missing file: %v, %v; want ErrNotExist", got, err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	if got, err := nodes(); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %v, %v; want no node and no error", got, err)
	}
	write("# comment only\n\n   \n")
	if got, err := nodes(); err != nil || len(got) != 0 {
		t.Fatalf("comments only: %v, %v", got, err)
	}
	write("127.0.0.1:7402 127.0.0.1:7401\r\n\t127.0.0.1:7403 # the third\n127.0.0.1:7401\n[::1]:7400\n")
	want := []Addr{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403", "[::1]:7400"}
	if got, err := nodes(); err != nil || !slices.Equal(got, want) {
		t.Fatalf("nodes %v, %v; want %v", got, err, want)
	}
	write("127.0.0.1:7401\n127.0.0.1:7402\n127.0.0.\n")
	if got, err := nodes(); err == nil || !strings.Contains(err.Error(), "line 3") || got != nil {
		t.Fatalf("a half-written line: %v, %v; want an error naming line 3", got, err)
	}
	write("127.0.0.1:7401\n\x00\xff garbage!\n")
	if got, err := nodes(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("garbage: %v, %v; want an error naming line 2", got, err)
	}
	write(strings.Repeat("#", MaxFileSize+1))
	if _, err := nodes(); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("an oversized file: %v", err)
	}
	var many strings.Builder
	for i := range MaxNodes + 1 {
		many.WriteString("127.0.0.1:" + strconv.Itoa(1000+i) + "\n")
	}
	write(many.String())
	if _, err := nodes(); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("too many addresses: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes(); err == nil {
		t.Fatal("a directory was read as a file of addresses")
	}
}

// TestDNS resolves names against a real DNS server on 127.0.0.1.
func TestDNS(t *testing.T) {
	srv := testproc.StartDNS(t)
	srv.SetA("shoal.test", "127.0.0.1", "::1", "127.0.0.1")
	srv.SetA("n1.shoal.test", "127.0.0.1")
	srv.SetA("n2.shoal.test", "::1")
	srv.SetSRV("_shoal._tcp.shoal.test", testproc.SRV{Target: "n1.shoal.test", Port: 7401}, testproc.SRV{Target: "n2.shoal.test", Port: 7402},
		testproc.SRV{Target: "gone.shoal.test", Port: 7403})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := Options{DefaultPort: 7400, DNSServer: srv.Addr}
	for _, c := range []struct {
		spec string
		want []Addr
	}{
		{"dns:shoal.test.", []Addr{"127.0.0.1:7400", "[::1]:7400"}},
		{"dns:shoal.test.:7499", []Addr{"127.0.0.1:7499", "[::1]:7499"}},
		{"dns:SHOAL.test.", []Addr{"127.0.0.1:7400", "[::1]:7400"}},
		{"dns+srv:_shoal._tcp.shoal.test.", []Addr{"127.0.0.1:7401", "[::1]:7402", "gone.shoal.test:7403"}},
	} {
		s, err := ParseSpec(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Backend(opts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.Nodes(ctx)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, %v; want %v", c.spec, got, err, c.want)
		}
	}
	for _, spec := range []string{"dns:nowhere.shoal.test.", "dns+srv:_shoal._tcp.nowhere.shoal.test."} {
		s, _ := ParseSpec(spec)
		b, _ := s.Backend(opts)
		got, err := b.Nodes(ctx)
		if err == nil || !strings.Contains(err.Error(), "no such host") {
			t.Errorf("%s (NXDOMAIN): %v, %v; want no such host", spec, got, err)
		}
	}
	if n := srv.Queries(); n == 0 {
		t.Fatal("the DNS server was never asked")
	}
	// The name changes: the next call sees it (nothing is cached).
	srv.SetA("shoal.test", "127.0.0.1")
	b, _ := (&Spec{Kind: KindDNS, Name: "shoal.test."}).Backend(opts)
	if got, err := b.Nodes(ctx); err != nil || !slices.Equal(got, []Addr{"127.0.0.1:7400"}) {
		t.Errorf("after a change: %v, %v", got, err)
	}
	if _, err := (&Spec{Kind: KindDNS, Name: "shoal.test."}).Backend(Options{}); err == nil {
		t.Error("a dns backend without a port was made")
	}
}

// TestDNSTimeout: a DNS server that never answers makes the call fail
// once its context is done, not hang.
func TestDNSTimeout(t *testing.T) {
	b, err := (&Spec{Kind: KindDNS, Name: "shoal.test.", Port: 7400}).Backend(Options{DNSServer: testproc.SilentDNS(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	got, err := b.Nodes(ctx)
	if err == nil || got != nil {
		t.Fatalf("a silent DNS server: %v, %v; want an error", got, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the call took %v past its 300ms context", d)
	}
}
