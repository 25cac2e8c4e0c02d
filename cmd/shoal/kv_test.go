package main

import (
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"shoal/internal/config"
)

// runAll runs `shoal --addr addr args...` in this process with every
// command, and returns stdout, stderr and the error.
func runAll(t *testing.T, addr string, args ...string) (string, string, error) {
	t.Helper()
	root := rootCommand(&globals{})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--addr", addr, "--timeout", "5s"}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// mustRun is runAll that fails the test on an error.
func mustRun(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, errOut, err := runAll(t, addr, args...)
	if err != nil {
		t.Fatalf("shoal %s: %v (stderr %q)", strings.Join(args, " "), err, errOut)
	}
	return out
}

// TestTTLCommands: ttl, expire and persist, and update keeping the TTL,
// as text and --json.
func TestTTLCommands(t *testing.T) {
	addr := startNode(t)
	mustRun(t, addr, "put", "users", "alice", "31", "--ttl", "1h")
	out := mustRun(t, addr, "ttl", "users", "alice")
	m := regexp.MustCompile(`^(\S+)\t(\S+)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ttl: %q", out)
	}
	if left, err := time.ParseDuration(m[1]); err != nil || left < 59*time.Minute || left > time.Hour+time.Second {
		t.Fatalf("ttl's time left %q: %v", m[1], err)
	}
	at, err := time.Parse(time.RFC3339, m[2])
	if err != nil || at.Sub(time.Now()) > time.Hour+2*time.Second || at.Sub(time.Now()) < 59*time.Minute {
		t.Fatalf("ttl's time %q: %v", m[2], err)
	}
	var get struct {
		CAS uint64 `json:"cas"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, addr, "get", "--json", "users", "alice")), &get); err != nil {
		t.Fatal(err)
	}
	mustRun(t, addr, "update", "users", "alice", "32", "--cas", jsonNumber(get.CAS))
	var doc struct {
		TTL *int64     `json:"ttl_seconds"`
		At  *time.Time `json:"expires_at"`
		CAS uint64     `json:"cas"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, addr, "ttl", "--json", "users", "alice")), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.At == nil || !doc.At.Equal(at) || doc.TTL == nil || *doc.TTL < 3500 || doc.CAS == get.CAS {
		t.Fatalf("ttl --json after update without --ttl: %+v, want the expiry %v kept", doc, at)
	}
	var cas casDoc
	if err := json.Unmarshal([]byte(mustRun(t, addr, "persist", "--json", "users", "alice")), &cas); err != nil || cas.CAS <= doc.CAS {
		t.Fatalf("persist --json: %+v %v", cas, err)
	}
	if out := mustRun(t, addr, "ttl", "users", "alice"); out != "never\n" {
		t.Fatalf("ttl after persist: %q", out)
	}
	out = mustRun(t, addr, "ttl", "--json", "users", "alice")
	if !strings.HasPrefix(out, `{"ttl_seconds":null,"expires_at":null,"cas":`) {
		t.Fatalf("ttl --json of a record without TTL: %q", out)
	}
	mustRun(t, addr, "expire", "users", "alice", "90")
	if out := mustRun(t, addr, "ttl", "users", "alice"); !strings.HasPrefix(out, "1m3") && !strings.HasPrefix(out, "1m2") {
		t.Fatalf("ttl after expire 90: %q", out)
	}
	mustRun(t, addr, "expire", "users", "alice", "2h")
	if out := mustRun(t, addr, "get", "users", "alice"); out != "32" {
		t.Fatalf("expire changed the value: %q", out)
	}
	for _, args := range [][]string{{"ttl", "users", "bob"}, {"expire", "users", "bob", "1m"}, {"persist", "users", "bob"}} {
		if _, _, err := runAll(t, addr, args...); exitCode(err) != exitNegative || !strings.Contains(err.Error(), `not found: no key "bob"`) {
			t.Errorf("%v of a missing key: %v", args, err)
		}
	}
	for _, d := range []string{"0", "-5s", "soon"} {
		if _, _, err := runAll(t, addr, "expire", "users", "alice", d); exitCode(err) != exitUsage {
			t.Errorf("expire %s: %v", d, err)
		}
	}
}

func jsonNumber(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// TestKVCommandsJSON: --json of put, get, exists, rm, update, getall,
// channels, size, info and connections; non-UTF-8 bytes as base64.
func TestKVCommandsJSON(t *testing.T) {
	addr := startNode(t)
	var put casDoc
	if err := json.Unmarshal([]byte(mustRun(t, addr, "put", "--json", "kv", "a", "one")), &put); err != nil || put.CAS == 0 {
		t.Fatalf("put --json: %+v %v", put, err)
	}
	mustRun(t, addr, "put", "kv", "b", "\xff\xfe")
	if out := mustRun(t, addr, "get", "--json", "kv", "a"); out != `{"key":"a","value":"one","cas":`+jsonNumber(put.CAS)+"}\n" {
		t.Errorf("get --json: %q", out)
	}
	if out := mustRun(t, addr, "get", "--json", "kv", "b"); !strings.HasPrefix(out, `{"key":"b","value":{"base64":"//4="},"cas":`) {
		t.Errorf("get --json of bytes that are not UTF-8: %q", out)
	}
	if out := mustRun(t, addr, "exists", "--json", "kv", "a"); out != `{"exists":true}`+"\n" {
		t.Errorf("exists --json: %q", out)
	}
	if out, _, err := runAll(t, addr, "exists", "--json", "kv", "zz"); out != `{"exists":false}`+"\n" || exitCode(err) != exitNegative {
		t.Errorf("exists --json of a missing key: %q %v", out, err)
	}
	var up casDoc
	if err := json.Unmarshal([]byte(mustRun(t, addr, "update", "--json", "kv", "a", "uno", "--cas", jsonNumber(put.CAS))), &up); err != nil || up.CAS <= put.CAS {
		t.Errorf("update --json: %+v %v", up, err)
	}
	out := mustRun(t, addr, "getall", "--json", "kv")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("getall --json: %q", out)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("getall --json line %q: %v", l, err)
		}
		seen[r["key"].(string)] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("getall --json: %q", out)
	}
	if out := mustRun(t, addr, "channels", "--json"); out != `[{"name":"kv","kind":"kv"}]`+"\n" {
		t.Errorf("channels --json: %q", out)
	}
	if out := mustRun(t, addr, "size", "--json", "kv"); out != `{"kind":"kv","records":2,"bytes":7}`+"\n" {
		t.Errorf("size --json: %q", out)
	}
	var info map[string]map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, addr, "info", "--json")), &info); err != nil || info[addr] == nil {
		t.Errorf("info --json: %v %v", info, err)
	}
	var conns map[string]int64
	if err := json.Unmarshal([]byte(mustRun(t, addr, "connections", "--json")), &conns); err != nil || conns[addr] < 1 {
		t.Errorf("connections --json: %v %v", conns, err)
	}
	if out := mustRun(t, addr, "connections"); !regexp.MustCompile(`^\S+\t\d+ connections?\n$`).MatchString(out) || strings.Contains(out, "\t1 connections") {
		t.Errorf("connections: %q", out)
	}
	if out, _, err := runAll(t, addr, "rm", "--json", "kv", "a"); err != nil || out != `{"removed":true}`+"\n" {
		t.Errorf("rm --json: %q %v", out, err)
	}
	if out, _, err := runAll(t, addr, "rm", "--json", "kv", "a"); exitCode(err) != exitNegative || out != `{"removed":false}`+"\n" {
		t.Errorf("rm --json of a missing key: %q %v", out, err)
	}
}

// TestWriteValue: a value is written as it is, with a newline added only
// on a terminal, and only when it does not end with one.
func TestWriteValue(t *testing.T) {
	saved := isTerminal
	defer func() { isTerminal = saved }()
	for _, c := range []struct {
		tty      bool
		in, want string
	}{
		{false, "v", "v"}, {false, "v\n", "v\n"}, {false, "", ""},
		{true, "v", "v\n"}, {true, "v\n", "v\n"}, {true, "", "\n"},
	} {
		isTerminal = func(io.Writer) bool { return c.tty }
		var b bytes.Buffer
		if err := writeValue(&b, []byte(c.in)); err != nil || b.String() != c.want {
			t.Errorf("writeValue(%q) on a terminal %v: %q %v", c.in, c.tty, b.String(), err)
		}
	}
}

// TestDumpCommandsJSON: dump --now --json prints a JSON line per channel,
// dump inspect --json one per file (exit 1 when one does not verify).
func TestDumpCommandsJSON(t *testing.T) {
	var data string
	addr := startNodeWith(t, func(c *config.Config) { data = c.Data })
	mustRun(t, addr, "put", "users", "alice", "31")
	var d dumpResultDoc
	if err := json.Unmarshal([]byte(mustRun(t, addr, "dump", "--now", "--json")), &d); err != nil || d.Channel != "users" || d.Records != 1 || d.Error != "" {
		t.Fatalf("dump --now --json: %+v %v", d, err)
	}
	file := filepath.Join(data, "dump", "users.dump")
	var in struct {
		File    string            `json:"file"`
		OK      bool              `json:"ok"`
		Channel string            `json:"channel"`
		Records int64             `json:"records"`
		Seqnos  map[string]uint64 `json:"seqnos"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, addr, "dump", "inspect", "--json", file)), &in); err != nil || !in.OK || in.File != file || in.Channel != "users" || in.Records != 1 || len(in.Seqnos) != 1 {
		t.Fatalf("dump inspect --json: %+v %v", in, err)
	}
	missing := filepath.Join(data, "none.dump")
	out, _, err := runAll(t, addr, "dump", "inspect", "--json", missing)
	if exitCode(err) != exitNegative || !strings.Contains(out, `"ok":false`) {
		t.Fatalf("dump inspect --json of a missing file: %q %v", out, err)
	}
}
