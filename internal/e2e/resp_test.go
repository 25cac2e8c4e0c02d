package e2e

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"shoal/internal/testproc"
)

var respAddrRE = regexp.MustCompile(`msg="shoald started".* resp=(\S+)`)

// needTool skips the test when a Redis tool is not installed.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (Debian package redis-tools; .ci/run installs it): skipping", name)
	}
	return p
}

// startRESP starts shoald with a RESP port and returns its port number.
func startRESP(t *testing.T, args ...string) (*testproc.Node, string) {
	t.Helper()
	n := testproc.Start(t, append([]string{"--resp", "127.0.0.1:0"}, args...)...)
	m := respAddrRE.FindStringSubmatch(n.Output())
	if m == nil {
		t.Fatalf("no resp address in the start line:\n%s", n.Output())
	}
	_, port, _ := strings.Cut(m[1], ":")
	return n, port
}

func redisCLI(t *testing.T, port, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, "redis-cli"), append([]string{"-h", "127.0.0.1", "-p", port}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestRedisCLI(t *testing.T) {
	needTool(t, "redis-cli")
	_, port := startRESP(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ping"}, "PONG\n"},
		{[]string{"set", "user:1", "alice"}, "OK\n"},
		{[]string{"get", "user:1"}, "alice\n"},
		{[]string{"get", "nobody"}, "\n"},
		{[]string{"incrby", "visits", "5"}, "5\n"},
		{[]string{"set", "tmp", "x", "EX", "100"}, "OK\n"},
		{[]string{"ttl", "tmp"}, "100\n"},
		{[]string{"mget", "user:1", "visits"}, "alice\n5\n"},
		{[]string{"rpush", "jobs", "a", "b"}, "2\n"},
		{[]string{"lpop", "jobs"}, "a\n"},
		{[]string{"llen", "jobs"}, "1\n"},
		{[]string{"dbsize"}, "3\n"},
		{[]string{"exists", "user:1", "tmp", "nope"}, "2\n"},
		{[]string{"frobnicate"}, "ERR unknown command 'frobnicate', with args beginning with: \n\n"},
		{[]string{"-n", "7", "get", "user:1"}, "\n"}, // SELECT 7: another channel
		{[]string{"-3", "hello", "3"}, ""},
	} {
		got := redisCLI(t, port, "", tc.args...)
		if tc.want != "" && got != tc.want {
			t.Fatalf("redis-cli %v = %q, want %q", tc.args, got, tc.want)
		}
	}
	if got := redisCLI(t, port, "", "--scan", "--pattern", "user:*"); got != "user:1\n" {
		t.Fatalf("--scan: %q", got)
	}
	if got := redisCLI(t, port, "", "info", "keyspace"); !strings.Contains(got, "db0:keys=3") {
		t.Fatalf("info keyspace: %q", got)
	}
	// Interactive use on stdin, and --pipe (mass insertion).
	if got := redisCLI(t, port, "set a 1\nget a\n"); got != "OK\n1\n" {
		t.Fatalf("stdin: %q", got)
	}
	var pipe strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&pipe, "*3\r\n$3\r\nSET\r\n$6\r\np:%04d\r\n$1\r\nx\r\n", i)
	}
	if got := redisCLI(t, port, pipe.String(), "--pipe"); !strings.Contains(got, "errors: 0, replies: 1000") {
		t.Fatalf("--pipe: %q", got)
	}
	if got := redisCLI(t, port, "", "dbsize"); got != "1004\n" {
		t.Fatalf("dbsize after --pipe: %q", got)
	}
}

func TestRedisBenchmark(t *testing.T) {
	bench := needTool(t, "redis-benchmark")
	_, port := startRESP(t)
	for _, p := range []string{"1", "16"} {
		out, err := exec.Command(bench, "-h", "127.0.0.1", "-p", port, "-t", "set,get,incr,lpush,rpop,mset",
			"-n", "3000", "-c", "10", "-P", p, "-d", "100", "-q").CombinedOutput()
		if err != nil {
			t.Fatalf("redis-benchmark -P %s: %v\n%s", p, err, out)
		}
		for _, name := range []string{"SET:", "GET:", "INCR:", "LPUSH:", "RPOP:", "MSET (10 keys):"} {
			if !strings.Contains(string(out), name) {
				t.Fatalf("redis-benchmark -P %s: no %s line:\n%s", p, name, out)
			}
		}
		if strings.Contains(string(out), "ERR") || strings.Contains(string(out), "rror") {
			t.Fatalf("redis-benchmark -P %s reported errors:\n%s", p, out)
		}
	}
	if got := redisCLI(t, port, "", "get", "key:__rand_int__"); len(got) != 101 {
		t.Fatalf("the benchmark's key: %d bytes %q", len(got), got)
	}
}
