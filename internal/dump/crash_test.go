package dump

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// crashChildEnv names the directory a child process dumps into; TestMain
// runs crashChild instead of the tests when it is set (groupcache's
// os.Args[0] trick).
const crashChildEnv = "SHOAL_DUMP_CRASH_CHILD_DIR"

const crashVBuckets = 64

// slowSource makes a dump slow enough to be killed in the middle.
type slowSource struct {
	*fakeStore
	pause time.Duration
}

func (s slowSource) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error {
	return s.fakeStore.SnapshotChannel(ch, func(vb uint16, seqno uint64, recs []engine.Record) error {
		time.Sleep(s.pause)
		return fn(vb, seqno, recs)
	})
}

// crashChild dumps a large channel slowly into the directory named by the
// environment, and is killed by TestCrashMidDump before it finishes.
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	s := newFakeStore(crashVBuckets)
	rng := rand.New(rand.NewPCG(5, 6))
	value := make([]byte, 100)
	for i := range 200_000 {
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		s.put("ch", fmt.Sprintf("key-%08d", i), string(value), 0)
	}
	src := slowSource{fakeStore: s, pause: 100 * time.Millisecond}
	_, err := WriteFile(vfs.Default, dir, Header{Channel: "ch", VBuckets: crashVBuckets}, func(e *Encoder) error {
		return src.SnapshotChannel("ch", e.Add)
	})
	fmt.Fprintln(os.Stderr, "child dump finished, it should have been killed:", err)
	os.Exit(3)
}

func TestCrashMidDump(t *testing.T) {
	dir := t.TempDir()
	prev := newFakeStore(crashVBuckets)
	prev.fill("ch", 1000, 50)
	if _, err := WriteFile(vfs.Default, dir, Header{Channel: "ch", VBuckets: crashVBuckets}, func(e *Encoder) error {
		return prev.SnapshotChannel("ch", e.Add)
	}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(Path(dir, "ch"))
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "ch"+TmpExt)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fi, err := os.Stat(tmp); err == nil && fi.Size() >= 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("the child wrote no 1 MiB of %s in 30 s; stderr: %s", tmp, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child: %v, want killed; stderr: %s", err, stderr.String())
	}

	after, err := os.ReadFile(Path(dir, "ch"))
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the previous dump changed under a crashed dump (err %v)", err)
	}
	if fi, err := os.Stat(tmp); err != nil || fi.Size() == 0 {
		t.Fatalf("no partial %s left by the crash: %v", tmp, err)
	}
	var logs logBuffer
	got := newFakeStore(crashVBuckets)
	res, err := Load(context.Background(), LoadConfig{Dir: dir, VBuckets: crashVBuckets, Sink: got, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	sameData(t, got, prev)
	if len(res) != 1 || res[0].FromBackup || res[0].Records != 1000 {
		t.Fatalf("results %+v", res)
	}
	if !strings.Contains(logs.String(), "ignoring an unfinished dump") || !strings.Contains(logs.String(), tmp) {
		t.Fatalf("no warning about %s in the log:\n%s", tmp, logs.String())
	}
}
