package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/dump"
	"shoal/internal/kv"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// fill puts n records key-i = ch-value-i into ch and returns them.
func fill(t *testing.T, c *client.Client, ch string, from, n int) map[string]string {
	t.Helper()
	want := map[string]string{}
	var recs []client.Record
	for i := from; i < from+n; i++ {
		k, v := fmt.Sprintf("key-%d", i), fmt.Sprintf("%s-value-%d", ch, i)
		want[k] = v
		recs = append(recs, client.Record{Key: []byte(k), Value: []byte(v)})
		if len(recs) == 500 || i == from+n-1 {
			if _, err := c.PutBatch(context.Background(), ch, recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	return want
}

// contents returns every record of ch.
func contents(t *testing.T, c *client.Client, ch string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for r, err := range c.GetAll(context.Background(), ch).All() {
		if err != nil {
			t.Fatal(err)
		}
		got[string(r.Key)] = string(r.Value)
	}
	return got
}

func sameRecords(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
}

func TestRestartAfterCleanStopHasEveryRecord(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil)
	users := fill(t, n.c, "users", 0, 3000)
	carts := fill(t, n.c, "carts", 0, 10)
	if _, err := n.c.Put(context.Background(), "carts", []byte("ttl"), []byte("soon"), client.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	carts["ttl"] = "soon"
	n.shutdown()
	if log := rootLog(t, dir); !strings.Contains(log, "final dump before shutdown") {
		t.Fatalf("root.log has no final dump:\n%s", log)
	}
	// The dump keeps the record's expiry.
	var expiry int64
	f, err := os.Open(dump.Path(filepath.Join(dir, "dump"), "carts"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = dump.Decode(f, f.Name(), func(_ uint16, _ uint64, recs []kv.Record) error {
		for _, r := range recs {
			if string(r.Key) == "ttl" {
				expiry = r.Expiry
			}
		}
		return nil
	})
	f.Close()
	if err != nil || expiry < time.Now().Add(59*time.Minute).Unix() {
		t.Fatalf("carts dump: expiry %d, %v", expiry, err)
	}

	n = startNode(t, dir, nil)
	sameRecords(t, "users", contents(t, n.c, "users"), users)
	sameRecords(t, "carts", contents(t, n.c, "carts"), carts)
	chans, err := n.c.Channels(context.Background())
	if err != nil || len(chans) != 2 || chans[0].Kind != "kv" {
		t.Fatalf("channels after the restart: %+v, %v", chans, err)
	}
	st := n.status()
	if len(st.Dumps.Loaded) != 2 || st.Dumps.Loaded[1].Records != 3000 || st.Dumps.Loaded[1].FromBackup {
		t.Fatalf("status of the load: %+v", st.Dumps.Loaded)
	}
}

// kvStandIn reports whether internal/kv is still the map-based stand-in,
// whose Load does not keep record seqnos (deleted when the packed engine
// lands, which makes the seqno test strict).
func kvStandIn() bool {
	_, file, _, _ := runtime.Caller(0)
	_, err := os.Stat(filepath.Join(filepath.Dir(file), "..", "kv", "stub.go"))
	return err == nil
}

func TestCASKeepsGrowingAcrossARestart(t *testing.T) {
	if kvStandIn() {
		t.Skip("internal/kv is the stand-in, whose Load does not keep seqnos")
	}
	dir := t.TempDir()
	n := startNode(t, dir, nil)
	var cas uint64
	for i := range 5 {
		var err error
		if cas, err = n.c.Put(context.Background(), "c", []byte("k"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	n.shutdown()
	n = startNode(t, dir, nil)
	if _, got, err := n.c.Gets(context.Background(), "c", []byte("k")); err != nil || got != cas {
		t.Fatalf("CAS after the restart %d, %v; want %d", got, err, cas)
	}
	// A stale CAS read before the restart must not match a later write.
	next, err := n.c.Put(context.Background(), "c", []byte("k"), []byte("after"))
	if err != nil || next <= cas {
		t.Fatalf("CAS of a write after the restart %d, %v; want above %d", next, err, cas)
	}
}

func TestDumpNowStatsAndStatusLog(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil, "--stats-interval", "1h", "--dump-codec", "s2")
	fill(t, n.c, "a", 0, 100)
	fill(t, n.c, "b", 0, 7)
	res, err := n.c.DumpNow(context.Background(), nil)
	if err != nil || len(res) != 2 || res[0].Channel != "a" || res[0].Records != 100 || res[1].Records != 7 || res[0].FileBytes == 0 {
		t.Fatalf("DumpNow: %+v, %v", res, err)
	}
	info, err := dump.Inspect(vfs.Default, dump.Path(filepath.Join(dir, "dump"), "a"))
	if err != nil || info.Records != 100 || info.Codec != dump.CodecS2 || info.VBuckets != 64 {
		t.Fatalf("a.dump: %+v, %v", info, err)
	}
	metrics := string(n.get("/metrics"))
	for _, m := range []string{"shoal_dumps_total 1", "shoal_dump_failures_total 0", "shoal_dump_records_written_total 107",
		`shoal_dump_channel_records{channel="a"} 100`} {
		if !strings.Contains(metrics, m+"\n") {
			t.Fatalf("/metrics has no %q:\n%s", m, metrics)
		}
	}
	st := n.status().Dumps
	if st.Dumps != 1 || st.Codec != "s2" || st.LastEnd == "" || len(st.Channels) != 2 || st.Channels[1].Records != 7 || st.LastError != "" {
		t.Fatalf("/status dumps: %+v", st)
	}
	n.shutdown()
	stats, err := os.ReadFile(filepath.Join(dir, "log", "stats.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{" dump/dumps:2", " dump/records_written:214", " dump/channel/a/records:100", " dump/failures:0"} {
		if !strings.Contains(string(stats), k) {
			t.Fatalf("stats.log has no %q:\n%s", k, stats)
		}
	}
}

func TestPeriodicDumps(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil, "--dump-interval", "200ms")
	fill(t, n.c, "p", 0, 10)
	// Two dumps after the records are in (dumps may have run while the
	// new node's cluster was being created, before the first write).
	from := n.status().Dumps.Dumps
	deadline := time.Now().Add(10 * time.Second)
	for n.status().Dumps.Dumps < from+2 {
		if time.Now().After(deadline) {
			t.Fatalf("no periodic dumps: %+v", n.status().Dumps)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info, err := dump.Inspect(vfs.Default, dump.Path(filepath.Join(dir, "dump"), "p")); err != nil || info.Records != 10 {
		t.Fatalf("p.dump: %+v, %v", info, err)
	}
}

func TestFailingDumpsKeepTheNodeServing(t *testing.T) {
	dir := t.TempDir()
	quota := vfs.NewDiskQuota(1 << 40)
	var syncFails atomic.Bool
	broken := vfs.InjectorFunc(func(op vfs.Op, _ string, n int) (int, error) {
		if op == vfs.OpSync && syncFails.Load() {
			return 0, vfs.ErrInjected
		}
		return n, nil
	})
	fsys := vfs.Faulty(vfs.Faulty(vfs.Default, quota), broken)
	n := startNode(t, dir, []Option{WithDumpFS(fsys)}, "--dump-interval", "0")
	ctx := context.Background()
	first := fill(t, n.c, "c", 0, 2000)
	if _, err := n.c.DumpNow(ctx, nil); err != nil {
		t.Fatal(err)
	}
	more := fill(t, n.c, "c", 2000, 2000)

	// The disk fills up in the middle of the next dump.
	quota.SetLimit(quota.Written() + 1000)
	res, err := n.c.DumpNow(ctx, nil)
	if !errors.Is(err, client.ErrNoSpace) || len(res) != 1 || !errors.Is(res[0].Err, client.ErrNoSpace) {
		t.Fatalf("DumpNow on a full disk: %+v, %v", res, err)
	}
	if _, err := n.c.Put(ctx, "c", []byte("during"), []byte("x")); err != nil {
		t.Fatalf("Put after a failed dump: %v", err)
	}
	more["during"] = "x"
	if !strings.Contains(string(n.get("/metrics")), "shoal_dump_failures_total 1\n") {
		t.Fatal("/metrics does not count the failure")
	}
	st := n.status().Dumps
	if st.Failures != 1 || !strings.Contains(st.LastError, "no space left on device") || st.LastErrorAt == "" || st.Channels[0].Error == "" {
		t.Fatalf("/status dumps after ENOSPC: %+v", st)
	}
	if !strings.Contains(rootLog(t, dir), "dump failed, the previous dump is kept") {
		t.Fatal("root.log does not report the failure")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "dump", "*"))
	if len(files) != 1 {
		t.Fatalf("dump directory after the failure: %v", files)
	}
	info, err := dump.Inspect(vfs.Default, files[0])
	if err != nil || info.Records != 2000 {
		t.Fatalf("previous dump after the failure: %+v, %v", info, err)
	}

	// An I/O error (fsync) fails the next one, with the same outcome.
	quota.SetLimit(1 << 40)
	syncFails.Store(true)
	if _, err := n.c.DumpNow(ctx, nil); !errors.Is(err, client.ErrInternal) || !strings.Contains(err.Error(), "injected I/O error") {
		t.Fatalf("DumpNow with a failing fsync: %v", err)
	}
	if st := n.status().Dumps; st.Failures != 2 || !strings.Contains(st.LastError, "cannot sync") {
		t.Fatalf("/status dumps after an I/O error: %+v", st)
	}
	if info, err := dump.Inspect(vfs.Default, files[0]); err != nil || info.Records != 2000 {
		t.Fatalf("previous dump after the I/O error: %+v, %v", info, err)
	}
	syncFails.Store(false)
	if _, err := n.c.DumpNow(ctx, nil); err != nil {
		t.Fatalf("DumpNow with space again: %v", err)
	}
	n.shutdown()
	n = startNode(t, dir, nil)
	maps.Copy(first, more)
	sameRecords(t, "after the restart", contents(t, n.c, "c"), first)
}

func TestFinalDumpFailureIsLoud(t *testing.T) {
	dir := t.TempDir()
	quota := vfs.NewDiskQuota(1 << 40)
	n := startNode(t, dir, []Option{WithDumpFS(vfs.Faulty(vfs.Default, quota))})
	want := fill(t, n.c, "c", 0, 500)
	if _, err := n.c.DumpNow(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	fill(t, n.c, "c", 500, 500) // lost: the final dump fails
	quota.SetLimit(quota.Written())
	n.shutdown()
	if log := rootLog(t, dir); !strings.Contains(log, "FINAL DUMP FAILED") {
		t.Fatalf("root.log does not say the final dump failed:\n%s", log)
	}
	n = startNode(t, dir, nil)
	sameRecords(t, "after the restart", contents(t, n.c, "c"), want)
}

func TestRemovedChannelsDumpsMoveAside(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil)
	fill(t, n.c, "gone", 0, 50)
	kept := fill(t, n.c, "kept", 0, 50)
	if _, err := n.c.DumpNow(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := n.c.RemoveChannel(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	deleted := filepath.Join(dir, "dump", dump.DeletedDir, "gone.dump")
	if info, err := dump.Inspect(vfs.Default, deleted); err != nil || info.Records != 50 {
		t.Fatalf("%s: %+v, %v", deleted, info, err)
	}
	n.shutdown()
	n = startNode(t, dir, nil)
	if got := contents(t, n.c, "gone"); len(got) != 0 {
		t.Fatalf("the removed channel came back with %d records", len(got))
	}
	sameRecords(t, "kept", contents(t, n.c, "kept"), kept)
}

func TestEmptiedChannelStaysEmptyAfterARestart(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil)
	fill(t, n.c, "c", 0, 3)
	if _, err := n.c.DumpNow(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := n.c.Remove(context.Background(), "c", []byte(fmt.Sprintf("key-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	n.shutdown()
	n = startNode(t, dir, nil)
	if got := contents(t, n.c, "c"); len(got) != 0 {
		t.Fatalf("removed records came back: %v", got)
	}
}

// writeDump writes dir/ch.dump (or another name) holding recs.
func writeDump(t *testing.T, dir, ch string, vbs int, recs map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := dump.WriteFile(vfs.Default, dir, dump.Header{Channel: ch, VBuckets: vbs, Created: time.Now()}, func(e *dump.Encoder) error {
		for k, v := range recs {
			vb := vbucket.OfString(k, vbs)
			if err := e.Add(vb, 1, []kv.Record{{Key: []byte(k), Value: []byte(v), Seqno: 1}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStartUpWithBadDumps(t *testing.T) {
	older := map[string]string{"k": "older"}
	newer := map[string]string{"k": "newer", "k2": "newer"}
	// corrupt writes a dump and a backup, then flips a byte of the dump.
	corrupt := func(t *testing.T) string {
		dir := t.TempDir()
		dd := filepath.Join(dir, "dump")
		writeDump(t, dd, "c", 64, older)
		writeDump(t, dd, "c", 64, newer)
		path := dump.Path(dd, "c")
		b, _ := os.ReadFile(path)
		b[len(b)/2] ^= 0x40
		os.WriteFile(path, b, 0o644)
		return dir
	}
	t.Run("backup", func(t *testing.T) {
		dir := corrupt(t)
		n := startNode(t, dir, nil)
		sameRecords(t, "c", contents(t, n.c, "c"), older)
		if log := rootLog(t, dir); !strings.Contains(log, "DUMP DOES NOT VERIFY, LOADING THE PREVIOUS DUMP") {
			t.Fatalf("no loud warning in root.log:\n%s", log)
		}
		if l := n.status().Dumps.Loaded; len(l) != 1 || !l[0].FromBackup || !strings.Contains(l[0].Problem, "corrupt at offset") {
			t.Fatalf("status of the load: %+v", l)
		}
	})
	t.Run("fail", func(t *testing.T) {
		dir := corrupt(t)
		cfg, err := newConfig(dir, "--on-corrupt-dump", "fail")
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg, "test")
		if !errors.Is(err, dump.ErrCorrupt) || !strings.Contains(err.Error(), "c.dump") || !strings.Contains(err.Error(), "offset") {
			t.Fatalf("New with a corrupt dump and fail: %v", err)
		}
	})
	t.Run("skip", func(t *testing.T) {
		dir := corrupt(t)
		n := startNode(t, dir, nil, "--on-corrupt-dump", "skip")
		if got := contents(t, n.c, "c"); len(got) != 0 {
			t.Fatalf("a skipped channel has records: %v", got)
		}
		// The skipped channel's files are left for the operator.
		n.shutdown()
		if _, err := dump.Inspect(vfs.Default, filepath.Join(dir, "dump", "c"+dump.BackupExt)); err != nil {
			t.Fatalf("the backup of a skipped channel: %v", err)
		}
	})
	t.Run("empty file and leftover tmp", func(t *testing.T) {
		dir := t.TempDir()
		dd := filepath.Join(dir, "dump")
		writeDump(t, dd, "ok", 64, older)
		os.WriteFile(dump.Path(dd, "empty"), nil, 0o644)
		os.WriteFile(filepath.Join(dd, "ok"+dump.TmpExt), []byte("half a dump"), 0o644)
		n := startNode(t, dir, nil)
		sameRecords(t, "ok", contents(t, n.c, "ok"), older)
		log := rootLog(t, dir)
		if !strings.Contains(log, "empty dump file") || !strings.Contains(log, "ignoring an unfinished dump") {
			t.Fatalf("root.log:\n%s", log)
		}
	})
	t.Run("other vbucket count", func(t *testing.T) {
		dir := t.TempDir()
		writeDump(t, filepath.Join(dir, "dump"), "c", 16, older)
		cfg, err := newConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg, "test")
		if !errors.Is(err, dump.ErrVBucketMismatch) || !strings.Contains(err.Error(), "c.dump") ||
			!strings.Contains(err.Error(), "16 vbuckets, this node has 64") {
			t.Fatalf("New with a dump of another vbucket count: %v", err)
		}
	})
}
