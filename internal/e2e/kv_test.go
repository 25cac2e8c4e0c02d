package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/testproc"
)

func TestCLIKV(t *testing.T) {
	n := testproc.Start(t)
	f := func(stdin string, wantCode int, wantOut string, args ...string) testproc.Result {
		t.Helper()
		r := testproc.CLI(t, n.Addr, stdin, args...)
		if r.Code != wantCode || (wantOut != "" && r.Stdout != wantOut) {
			t.Fatalf("shoal %v: code %d stdout %q stderr %q; want code %d stdout %q", args, r.Code, r.Stdout, r.Stderr, wantCode, wantOut)
		}
		return r
	}
	f("", 0, "", "put", "users", "alice", `{"age":31}`)
	f("", 0, `{"age":31}`, "get", "users", "alice")
	r := f("", 1, "", "get", "users", "bob")
	if !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("missing key stderr: %q", r.Stderr)
	}
	f("from stdin\n", 0, "", "put", "users", "carol", "-")
	f("", 0, "from stdin\n", "get", "users", "carol")
	f("", 0, "true\n", "exists", "users", "alice")
	f("", 1, "false\n", "exists", "users", "bob")
	r = f("", 0, "", "get", "--cas", "users", "alice")
	var cas uint64
	fmt.Sscanf(r.Stderr, "cas %d", &cas)
	r = f("", 1, "", "update", "users", "alice", "x", "--cas", fmt.Sprint(cas+1))
	if !strings.Contains(r.Stderr, "CAS mismatch") {
		t.Fatalf("stale update stderr: %q", r.Stderr)
	}
	f("", 0, "", "update", "users", "alice", "v2", "--cas", fmt.Sprint(cas))
	f("", 0, "v2", "get", "users", "alice")
	f("", 0, "", "put", "--ttl", "1h", "users", "dave", "d")
	r = f("", 0, "", "getall", "users")
	if !strings.Contains(r.Stdout, "alice\tv2\n") || !strings.Contains(r.Stdout, "carol\tfrom stdin\n\n") || !strings.Contains(r.Stdout, "dave\td\n") || len(r.Stdout) != len("alice\tv2\ncarol\tfrom stdin\n\ndave\td\n") {
		t.Fatalf("getall: %q", r.Stdout)
	}
	r = f("", 0, "", "getall", "--keys", "users")
	if strings.Contains(r.Stdout, "\t") || len(strings.Fields(r.Stdout)) != 3 {
		t.Fatalf("getall --keys: %q", r.Stdout)
	}
	f("", 0, "carol\tfrom stdin\n\n", "getall", "--filter", "stdin", "users")
	f("", 0, "users\tkv\n", "channels")
	f("", 0, "records 3\nbytes 28\n", "size", "users")
	f("", 0, "", "rm", "users", "dave")
	f("", 0, "records 2\nbytes 23\n", "size")
	r = f("", 0, "", "info")
	if !strings.Contains(r.Stdout, "node_id") || !strings.Contains(r.Stdout, "vbuckets") {
		t.Fatalf("info: %q", r.Stdout)
	}
	f("", 0, "", "rmchannel", "users")
	f("", 0, "", "channels")
	// Every error: one clear line on stderr and a non-zero status.
	for _, args := range [][]string{
		{"put", "bad channel", "k", "v"},
		{"get", "users"},
		{"update", "users", "k", "v"},
		{"nosuchcommand"},
	} {
		r := testproc.CLI(t, n.Addr, "", args...)
		if r.Code == 0 || strings.TrimSpace(r.Stderr) == "" {
			t.Fatalf("shoal %v: code %d stderr %q", args, r.Code, r.Stderr)
		}
	}
	r = testproc.CLI(t, "127.0.0.1:1", "", "get", "c", "k")
	if r.Code != 3 || !strings.Contains(r.Stderr, "cannot connect") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Fatalf("unreachable node: code %d stderr %q", r.Code, r.Stderr)
	}
}

func TestMirrorCLI(t *testing.T) {
	n := testproc.Start(t)
	testproc.CLI(t, n.Addr, "", "put", "m", "a", "1")
	cmd := testproc.Command(t, n.Addr, "mirror", "--refresh", "m")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no mirror output")
		}
		return ""
	}
	if l := next(); l != "refresh\ta\t1" {
		t.Fatalf("first line %q", l)
	}
	if l := next(); l != "refresh-end" {
		t.Fatalf("second line %q", l)
	}
	testproc.CLI(t, n.Addr, "", "put", "m", "b", "2")
	if l := next(); l != "put\tb\t2" {
		t.Fatalf("put line %q", l)
	}
	testproc.CLI(t, n.Addr, "", "rm", "m", "a")
	if l := next(); l != "delete\ta" {
		t.Fatalf("delete line %q", l)
	}
	testproc.CLI(t, n.Addr, "", "rmchannel", "m")
	if err := cmd.Wait(); err == nil {
		t.Fatal("mirror exited 0 after its channel was removed")
	}
}

func TestSignalsStopCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		n := testproc.Start(t)
		testproc.CLI(t, n.Addr, "", "put", "c", "k", "v")
		n.Signal(sig)
		if code := n.Wait(30 * time.Second); code != 0 {
			t.Fatalf("exit code %d after %v", code, sig)
		}
		log, _ := os.ReadFile(filepath.Join(n.Dir, "log", "root.log"))
		if !strings.Contains(string(log), "shoald stopped") {
			t.Fatalf("root.log after %v:\n%s", sig, log)
		}
	}
}

func TestDataDirectoryLock(t *testing.T) {
	n := testproc.Start(t)
	second := testproc.Command(t, n.Addr)
	second.Path = filepath.Join(testproc.Build(t), "shoald")
	second.Args = []string{"shoald", "--data", n.Dir, "--listen", "127.0.0.1:0", "--http", "off"}
	out, err := second.CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("LOCK is locked by process %d (a running shoald", n.Pid())) {
		t.Fatalf("second node on the same data: %v %s", err, out)
	}
}

func TestObservability(t *testing.T) {
	n := testproc.Start(t, "--stats-interval", "200ms")
	testproc.CLI(t, n.Addr, "", "put", "obs", "k", "value")
	testproc.CLI(t, n.Addr, "", "get", "obs", "k")
	time.Sleep(600 * time.Millisecond)
	stats, err := os.ReadFile(filepath.Join(n.Dir, "log", "stats.log"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(stats)
	for _, field := range []string{"bytes_sent:", "bytes_received:", "handling_connections:", "channel/obs/records:1",
		"channel/obs/bytes:6", "request/Put/handled:", "request/Get/handled_10_micros:", "action/written/records:",
		"action/read/records:", "cpu_user:", "rss:", "total_records:1"} {
		if !strings.Contains(text, field) {
			t.Errorf("stats.log lacks %q", field)
		}
	}
	resp, err := http.Get("http://" + n.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`shoal_request_duration_seconds_count{request="Put"} 1`, `shoal_channel_records{channel="obs",kind="kv"} 1`, "shoal_connections ", "shoal_bytes_received_total"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	resp, err = http.Get("http://" + n.HTTP + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		NodeID   string `json:"node_id"`
		Channels []struct {
			Name    string `json:"name"`
			Records int64  `json:"records"`
		} `json:"channels"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.NodeID == "" || len(st.Channels) != 1 || st.Channels[0].Name != "obs" || st.Channels[0].Records != 1 {
		t.Fatalf("/status: %+v", st)
	}
	resp, err = http.Get("http://" + n.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The console draws /status in the browser (internal/node's
	// TestConsoleInABrowser); here it is only served.
	if !strings.Contains(string(page), "<title>shoal console</title>") {
		t.Fatalf("no console page:\n%s", page)
	}
}

func TestAuthAndTLSWithCLI(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte("admin:00112233445566778899aabbccddeeff\napp:ffeeddccbbaa99887766554433221100\n"), 0o600)
	adminSecret := filepath.Join(dir, "admin.secret")
	os.WriteFile(adminSecret, []byte("00112233445566778899aabbccddeeff\n"), 0o600)
	appSecret := filepath.Join(dir, "app.secret")
	os.WriteFile(appSecret, []byte("ffeeddccbbaa99887766554433221100"), 0o600)
	certFile, keyFile := testproc.WriteCert(t, dir)
	n := testproc.Start(t, "--credentials", creds, "--tls-cert", certFile, "--tls-key", keyFile)
	tlsArgs := []string{"--tls-ca", certFile}
	r := testproc.CLI(t, n.Addr, "", append(tlsArgs, "put", "c", "k", "v")...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "authentication") {
		t.Fatalf("without credentials: %+v", r)
	}
	app := append(tlsArgs, "--user", "app", "--secret-file", appSecret)
	if r := testproc.CLI(t, n.Addr, "", append(app, "put", "c", "k", "v")...); r.Code != 0 {
		t.Fatalf("as app: %+v", r)
	}
	if r := testproc.CLI(t, n.Addr, "", append(app, "rmchannel", "c")...); r.Code == 0 || !strings.Contains(r.Stderr, "admin") {
		t.Fatalf("rmchannel as app: %+v", r)
	}
	adm := append(tlsArgs, "--user", "admin", "--secret-file", adminSecret)
	if r := testproc.CLI(t, n.Addr, "", append(adm, "rmchannel", "c")...); r.Code != 0 {
		t.Fatalf("rmchannel as admin: %+v", r)
	}
	if r := testproc.CLI(t, n.Addr, "", "--user", "app", "--secret-file", appSecret, "get", "c", "k"); r.Code == 0 {
		t.Fatalf("clear text to a TLS port succeeded: %+v", r)
	}
}

func TestMemoryLimit(t *testing.T) {
	n := testproc.Start(t, "--memory-limit", "256KiB")
	c := dialNode(t, n.Addr)
	value := []byte(strings.Repeat("x", 1000))
	stored := 0
	for ; stored < 10000; stored++ {
		_, err := c.Put(t.Context(), "m", fmt.Appendf(nil, "k%d", stored), value)
		if errors.Is(err, client.ErrOutOfMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if stored == 10000 || stored < 100 {
		t.Fatalf("a 256 KiB node took %d records of 1000 bytes", stored)
	}
	// The same key again: its vBucket has no room (others may still have
	// room in their last chunk: the limit applies to allocations).
	r := testproc.CLI(t, n.Addr, "", "put", "m", fmt.Sprintf("k%d", stored), string(value))
	if r.Code == 0 || !strings.Contains(r.Stderr, "out of memory") {
		t.Fatalf("put at the limit: %+v", r)
	}
	if r := testproc.CLI(t, n.Addr, "", "get", "m", "k1"); r.Code != 0 {
		t.Fatalf("reads stop at the limit: %+v", r)
	}
	if r := testproc.CLI(t, n.Addr, "", "rm", "m", "k1"); r.Code != 0 {
		t.Fatalf("removes stop at the limit: %+v", r)
	}
}

// TestGarbageAgainstTheBinary sends garbage to the real process.
func TestGarbageAgainstTheBinary(t *testing.T) {
	n := testproc.Start(t)
	for _, junk := range []string{"\x00\x01\x02garbage", "\x53\x01\x10\x00\x00\x00\x00\x00\x01\x00\x00\x00\xff\xff\xff\xff", "GET / HTTP/1.0\r\n\r\n"} {
		c, err := net.Dial("tcp", n.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(junk))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
	if r := testproc.CLI(t, n.Addr, "", "put", "c", "k", "v"); r.Code != 0 {
		t.Fatalf("node not serving after garbage: %+v", r)
	}
}

// TestVersions: shoald --version and shoal version name the version, the
// commit (stamped by go build in a git checkout, "unknown" elsewhere) and
// the Go version; shoal version --json is one JSON object of the same.
func TestVersions(t *testing.T) {
	bin := testproc.Build(t)
	out, err := exec.Command(filepath.Join(bin, "shoald"), "--version").CombinedOutput()
	re := regexp.MustCompile(`^shoald dev \(commit ([0-9a-f]{40}(\+dirty)?|unknown), ` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`)
	if err != nil || !re.MatchString(string(out)) {
		t.Errorf("shoald --version: %v %q", err, out)
	}
	r := testproc.CLI(t, "", "", "version")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "shoal dev (commit ") || !strings.HasSuffix(r.Stdout, ", "+runtime.Version()+")\n") {
		t.Errorf("shoal version: %+v", r)
	}
	r = testproc.CLI(t, "", "", "version", "--json")
	var v struct{ Version, Commit, Go string }
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &v) != nil || v.Version != "dev" || v.Go != runtime.Version() || v.Commit == "" {
		t.Errorf("shoal version --json: %+v", r)
	}
}
