package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/dump"
	"shoal/internal/kv"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// putRecords stores keys key-from .. key-(from+n-1) in ch with values of
// size bytes and returns them.
func putRecords(t *testing.T, addr, ch string, from, n, size int) map[string]string {
	t.Helper()
	c := dialNode(t, addr)
	defer c.Close()
	want := make(map[string]string, n)
	pad := strings.Repeat("v", size)
	var recs []client.Record
	for i := from; i < from+n; i++ {
		k := fmt.Sprintf("key-%09d", i)
		v := (fmt.Sprintf("%s-%d-", ch, i) + pad)[:size]
		want[k] = v
		recs = append(recs, client.Record{Key: []byte(k), Value: []byte(v)})
		if len(recs) == 2000 || i == from+n-1 {
			if _, err := c.PutBatch(context.Background(), ch, recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	return want
}

// records returns every record of ch on the node at addr.
func records(t *testing.T, addr, ch string) map[string]string {
	t.Helper()
	c := dialNode(t, addr)
	defer c.Close()
	got := map[string]string{}
	for r, err := range c.GetAll(context.Background(), ch).All() {
		if err != nil {
			t.Fatal(err)
		}
		got[string(r.Key)] = string(r.Value)
	}
	return got
}

func mustEqual(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		missing := 0
		for k := range want {
			if _, ok := got[k]; !ok {
				missing++
			}
		}
		t.Fatalf("%s: %d records (%d missing), want %d", what, len(got), missing, len(want))
	}
}

func TestRestartsKeepWhatWasDumped(t *testing.T) {
	n := testproc.Start(t)
	dir := n.Dir
	want := putRecords(t, n.Addr, "users", 0, 2000, 50)

	// A clean stop dumps on its way out.
	n.Stop()
	n = testproc.StartIn(t, dir)
	mustEqual(t, "after a clean stop", records(t, n.Addr, "users"), want)

	// shoal dump --now, then more writes, then kill -9: the restarted node
	// has every record of that dump, and the writes after it are lost
	// (the documented behaviour of a crash: a kv channel is as durable as
	// its last completed dump).
	r := testproc.CLI(t, n.Addr, "", "dump", "--now")
	if r.Code != 0 || !strings.Contains(r.Stdout, "users") || !strings.Contains(r.Stdout, " 2000 ") {
		t.Fatalf("dump --now: %+v", r)
	}
	putRecords(t, n.Addr, "users", 2000, 500, 50)
	c := dialNode(t, n.Addr)
	if _, err := c.Remove(context.Background(), "users", []byte("key-000000007")); err != nil {
		t.Fatal(err)
	}
	n.Kill()
	n = testproc.StartIn(t, dir)
	mustEqual(t, "after kill -9 following a dump", records(t, n.Addr, "users"), want)
}

func TestKill9InTheMiddleOfADump(t *testing.T) {
	n := testproc.Start(t, "--dump-interval", "0")
	dir := n.Dir
	small := putRecords(t, n.Addr, "a-small", 0, 100, 20)
	big := putRecords(t, n.Addr, "big", 0, 1000, 100)
	if r := testproc.CLI(t, n.Addr, "", "dump", "--now"); r.Code != 0 {
		t.Fatalf("dump --now: %+v", r)
	}
	// Enough records that the next dump takes a while.
	putRecords(t, n.Addr, "big", 1000, 150_000, 100)
	maps.Copy(small, putRecords(t, n.Addr, "a-small", 100, 100, 20))

	dumper := testproc.Command(t, n.Addr, "dump", "--now")
	if err := dumper.Start(); err != nil {
		t.Fatal(err)
	}
	defer dumper.Wait()
	tmp := filepath.Join(dir, "dump", "big"+dump.TmpExt)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(tmp); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no big.dump.tmp appeared")
		}
		time.Sleep(time.Millisecond)
	}
	n.Kill()
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the dump finished before the kill: %v", err)
	}

	n = testproc.StartIn(t, dir)
	mustEqual(t, "big after kill -9 mid-dump", records(t, n.Addr, "big"), big)
	// a-small was dumped again before big was started.
	mustEqual(t, "a-small after kill -9 mid-dump", records(t, n.Addr, "a-small"), small)
	log, _ := os.ReadFile(filepath.Join(dir, "log", "root.log"))
	if !strings.Contains(string(log), "ignoring an unfinished dump") || !strings.Contains(string(log), "big.dump.tmp") {
		t.Fatalf("root.log does not warn about the unfinished dump:\n%s", log)
	}
}

func TestExternalDumpAndRestore(t *testing.T) {
	src := testproc.Start(t)
	users := putRecords(t, src.Addr, "users", 0, 5000, 80)
	carts := putRecords(t, src.Addr, "carts", 0, 10, 10)
	if r := testproc.CLI(t, src.Addr, "", "put", "--ttl", "1h", "carts", "ttl", "soon"); r.Code != 0 {
		t.Fatalf("put --ttl: %+v", r)
	}
	carts["ttl"] = "soon"
	out := t.TempDir()
	r := testproc.CLI(t, src.Addr, "", "dump", "--out", out, "--codec", "s2")
	if r.Code != 0 || !strings.Contains(r.Stderr, "dump cycle finished") {
		t.Fatalf("dump --out: %+v", r)
	}
	r = testproc.CLI(t, src.Addr, "", "dump", "inspect", filepath.Join(out, "users.dump"), filepath.Join(out, "carts.dump"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "channel users\n  records 5000\n") || !strings.Contains(r.Stdout, "codec s2") {
		t.Fatalf("dump inspect: %+v", r)
	}

	// A record that expired since its dump is not restored.
	expired := filepath.Join(t.TempDir(), "old")
	os.MkdirAll(expired, 0o755)
	const vbs = 1024
	_, err := dump.WriteFile(vfs.Default, expired, dump.Header{Channel: "carts", VBuckets: vbs}, func(e *dump.Encoder) error {
		k := []byte("expired")
		return e.Add(vbucket.Of(k, vbs), 1, []kv.Record{{Key: k, Value: []byte("x"), Seqno: 1, Expiry: time.Now().Add(-time.Minute).Unix()}})
	})
	if err != nil {
		t.Fatal(err)
	}

	dst := testproc.Start(t)
	r = testproc.CLI(t, dst.Addr, "", "restore", filepath.Join(out, "users.dump"), filepath.Join(out, "carts.dump"), dump.Path(expired, "carts"))
	if r.Code != 0 || !strings.Contains(r.Stderr, "5011 / 5012 records (100%), 1 expired skipped") {
		t.Fatalf("restore: %+v", r)
	}
	mustEqual(t, "users restored", records(t, dst.Addr, "users"), users)
	mustEqual(t, "carts restored", records(t, dst.Addr, "carts"), carts)
	c := dialNode(t, dst.Addr)
	for rec, err := range c.GetAll(context.Background(), "carts", client.WithExpiry()).All() {
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().Unix()
		// Restore sends the remaining TTL rounded up to whole seconds and the
		// node adds it to its clock: up to 2 s past the original expiry.
		if string(rec.Key) == "ttl" && (rec.Expiry < now+3500 || rec.Expiry > now+3602) {
			t.Fatalf("restored TTL: expiry %d, now %d", rec.Expiry, now)
		}
	}

	// A file that does not verify: inspect names it and the offset, and
	// restore writes nothing.
	bad := filepath.Join(t.TempDir(), "users.dump")
	b, _ := os.ReadFile(filepath.Join(out, "users.dump"))
	b[len(b)/3] ^= 1
	os.WriteFile(bad, b, 0o644)
	r = testproc.CLI(t, src.Addr, "", "dump", "inspect", filepath.Join(out, "carts.dump"), bad)
	if r.Code != 1 || !strings.Contains(r.Stderr, bad) || !strings.Contains(r.Stderr, "corrupt at offset") || !strings.Contains(r.Stdout, "channel carts") {
		t.Fatalf("inspect of a damaged file: %+v", r)
	}
	fresh := testproc.Start(t)
	if r := testproc.CLI(t, fresh.Addr, "", "restore", filepath.Join(out, "carts.dump"), bad); r.Code != 1 || !strings.Contains(r.Stderr, "nothing restored") {
		t.Fatalf("restore of a damaged file: %+v", r)
	}
	if got := records(t, fresh.Addr, "carts"); len(got) != 0 {
		t.Fatalf("restore of a damaged set wrote %d records", len(got))
	}
}

// waitForDump waits until path verifies with want records.
func waitForDump(t *testing.T, path string, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := dump.Inspect(vfs.Default, path)
		if err == nil && info.Records == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v, %v; want %d records", path, info, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExternalDumperSurvivesANodeRestart(t *testing.T) {
	n := testproc.Start(t)
	dir, addr := n.Dir, n.Addr
	putRecords(t, addr, "c", 0, 100, 10)
	out := t.TempDir()
	cmd := testproc.Command(t, addr, "dump", "--out", out, "--every", "300ms", "--retry-wait", "200ms", "--timeout", "2s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	file := dump.Path(out, "c")
	waitForDump(t, file, 100)

	n.Stop()
	time.Sleep(time.Second) // the dumper's cycles fail meanwhile
	n = testproc.StartIn(t, dir, "--listen", addr)
	putRecords(t, addr, "c", 100, 100, 10)
	waitForDump(t, file, 200)
	select {
	case err := <-exited:
		t.Fatalf("the dumper exited: %v\n%s", err, stderr.String())
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := <-exited
	stopped = true
	if err != nil {
		t.Fatalf("dumper after SIGTERM: %v\n%s", err, stderr.String())
	}
	if log := stderr.String(); !strings.Contains(log, "dump cycle failed; retrying") || !strings.Contains(log, "external dumper stopped") {
		t.Fatalf("dumper log:\n%s", log)
	}
}

func TestDumpCommandErrors(t *testing.T) {
	n := testproc.Start(t)
	for _, args := range [][]string{{"dump"}, {"dump", "--now", "--out", "x"}, {"dump", "--out", "x", "--codec", "lz4"}} {
		if r := testproc.CLI(t, n.Addr, "", args...); r.Code != 2 {
			t.Fatalf("shoal %v: %+v, want exit 2", args, r)
		}
	}
	// A dump that cannot be written: the dump directory is a file.
	testproc.CLI(t, n.Addr, "", "put", "c", "k", "v")
	dd := filepath.Join(n.Dir, "dump")
	os.RemoveAll(dd)
	os.WriteFile(dd, []byte("not a directory"), 0o644)
	r := testproc.CLI(t, n.Addr, "", "dump", "--now")
	if r.Code != 4 || !strings.Contains(r.Stderr, "cannot create dump directory") {
		t.Fatalf("dump --now into a file: %+v", r)
	}
	// The node still serves, and its status names the failure.
	if r := testproc.CLI(t, n.Addr, "", "get", "c", "k"); r.Code != 0 || r.Stdout != "v" {
		t.Fatalf("get after a failed dump: %+v", r)
	}
	os.Remove(dd)
}
