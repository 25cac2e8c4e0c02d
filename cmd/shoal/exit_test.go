package main

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"shoal/internal/config"
)

// closedAddr is a 127.0.0.1 address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestExitStatuses runs the shoal command as a process and checks the
// exit status scripts rely on (0 success, 1 negative answer, 2 usage,
// 3 cluster unreachable or refusing, 4 other errors) and the one error
// format on stderr.
func TestExitStatuses(t *testing.T) {
	addr := startNode(t)
	down := closedAddr(t)
	if _, stderr, code := runShoal(t, "--addr", addr, "put", "users", "alice", "31"); code != 0 {
		t.Fatalf("put: %d %s", code, stderr)
	}
	for _, c := range []struct {
		args   []string
		code   int
		stdout string
		stderr string // a regexp the whole of stderr must match
	}{
		{[]string{"--addr", addr, "get", "users", "alice"}, 0, "31", ``},
		{[]string{"--addr", addr, "exists", "users", "alice"}, 0, "true\n", ``},
		// Negative answers.
		{[]string{"--addr", addr, "get", "users", "bob"}, 1, "", `^shoal: not found: no key "bob" in channel "users"\n$`},
		{[]string{"--addr", addr, "exists", "users", "bob"}, 1, "false\n", `^$`},
		{[]string{"--addr", addr, "rm", "users", "bob"}, 1, "", `^shoal: not found: no key "bob" in channel "users"\n$`},
		{[]string{"--addr", addr, "rmchannel", "nosuch"}, 1, "", `^shoal: no channel "nosuch"\n$`},
		{[]string{"--addr", addr, "pop", "jobs"}, 1, "", `^shoal: empty: queue "jobs" has no record\n$`},
		{[]string{"--addr", addr, "update", "users", "alice", "32", "--cas", "999999"}, 1, "", `^shoal: ` + regexp.QuoteMeta(addr) + `: exists \(CAS mismatch\)\n$`},
		// Usage errors.
		{[]string{"--addr", addr, "get", "users"}, 2, "", `^shoal: accepts 2 arg\(s\), received 1\n$`},
		{[]string{"--addr", addr, "get", "--bogus", "users", "alice"}, 2, "", `^shoal: unknown flag: --bogus\n$`},
		{[]string{"--addr", addr, "frobnicate"}, 2, "", `^shoal: unknown command "frobnicate"`},
		{[]string{"--addr", addr, "log", "frobnicate"}, 2, "", `^shoal: unknown command "frobnicate" for "shoal log"\n$`},
		{[]string{"--addr", addr, "queue", "unsubscribe", "jobs"}, 2, "", `^shoal: accepts 2 arg\(s\), received 1\n$`},
		{[]string{"--addr", addr, "update", "users", "alice", "32"}, 2, "", `^shoal: required flag\(s\) "cas" not set\n$`},
		{[]string{"--addr", addr, "log", "range", "ev", "yesterday", "now"}, 2, "", `^shoal: bad timestamp "yesterday"`},
		// No node.
		{[]string{"--addr", down, "get", "users", "alice"}, 3, "", `^shoal: ` + regexp.QuoteMeta(down) + `: cannot connect: dial tcp ` + regexp.QuoteMeta(down) + `: connect: connection refused\n$`},
		// Another error of the node's.
		{[]string{"--addr", addr, "push", "users", "x"}, 4, "", `^shoal: ` + regexp.QuoteMeta(addr) + `: wrong channel kind: channel "users" is a kv channel\n$`},
	} {
		stdout, stderr, code := runShoal(t, c.args...)
		if code != c.code || stdout != c.stdout || !regexp.MustCompile(c.stderr).MatchString(stderr) {
			t.Errorf("shoal %s: exit %d, stdout %q, stderr %q; want %d, %q, stderr matching %s", strings.Join(c.args, " "), code, stdout, stderr, c.code, c.stdout, c.stderr)
		}
	}
	stdout, _, code := runShoal(t, "--help")
	if code != 0 || !strings.Contains(stdout, "Exit status:\n  0  success\n  1  a negative answer") || !strings.Contains(stdout, "  3  the cluster cannot be reached") {
		t.Errorf("--help: %d\n%s", code, stdout)
	}
}

// TestHTTPPort: the CLI pointed at a node's HTTP port says so at once,
// naming the data port, and exits 3; the HTTP port still serves HTTP.
func TestHTTPPort(t *testing.T) {
	n := startNodeN(t, func(c *config.Config) { c.HTTP = "127.0.0.1:0" })
	httpAddr := n.HTTPAddr().String()
	start := time.Now()
	stdout, stderr, code := runShoal(t, "--addr", httpAddr, "get", "users", "alice")
	want := fmt.Sprintf("shoal: %s: cannot connect: this is shoal's HTTP port; the data port is %s\n", httpAddr, n.Addr())
	if code != exitCluster || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 3 and %q", code, stdout, stderr, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	resp, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
}
