package dump

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

func TestLoadAllChannels(t *testing.T) {
	dir := t.TempDir()
	want := newFakeStore(faultVBuckets)
	for i := range 5 {
		want.fill(fmt.Sprintf("ch%d", i), 200*(i+1), 30)
	}
	want.fill("many", progressMin, 8)
	for _, ch := range want.ChannelNames() {
		if _, err := writeDump(vfs.Default, dir, want, ch); err != nil {
			t.Fatal(err)
		}
	}
	var logs logBuffer
	got := newFakeStore(faultVBuckets)
	res, err := Load(context.Background(), LoadConfig{Dir: dir, VBuckets: faultVBuckets, Sink: got, Logger: logs.logger(), Parallel: 3})
	if err != nil {
		t.Fatal(err)
	}
	sameData(t, got, want)
	if len(res) != 6 || res[0].Channel != "ch0" || res[5].Channel != "many" || res[5].Records != progressMin {
		t.Fatalf("results %+v", res)
	}
	for _, line := range []string{"loading dumps", "percent=100", "dump loaded", "dumps loaded"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("no %q in the log:\n%s", line, logs.String())
		}
	}
}

// policyDir makes a directory whose channel "a" has a good backup and a
// damaged dump, and whose channel "b" is fine. damage edits a.dump.
func policyDir(t *testing.T, damage func(path string)) (dir string, aOld, b *fakeStore) {
	t.Helper()
	dir = t.TempDir()
	aOld = newFakeStore(faultVBuckets)
	aOld.fill("a", 300, 20)
	aNew := aOld.clone()
	aNew.fill("a", 600, 25)
	b = newFakeStore(faultVBuckets)
	b.fill("b", 100, 10)
	for _, s := range []*fakeStore{aOld, aNew} {
		if _, err := writeDump(vfs.Default, dir, s, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writeDump(vfs.Default, dir, b, "b"); err != nil {
		t.Fatal(err)
	}
	damage(Path(dir, "a"))
	return dir, aOld, b
}

func flipByte(off int64) func(string) {
	return func(path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			panic(err)
		}
		data[off] ^= 0xff
		if err := os.WriteFile(path, data, 0o644); err != nil {
			panic(err)
		}
	}
}

func truncateHalf(path string) {
	fi, err := os.Stat(path)
	if err != nil {
		panic(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		panic(err)
	}
}

func loadWith(dir string, policy OnCorrupt) (*fakeStore, []LoadResult, string, error) {
	var logs logBuffer
	got := newFakeStore(faultVBuckets)
	res, err := Load(context.Background(), LoadConfig{Dir: dir, VBuckets: faultVBuckets, Sink: got, OnCorrupt: policy, Logger: logs.logger()})
	return got, res, logs.String(), err
}

func TestLoadCorruptDump(t *testing.T) {
	for name, damage := range map[string]func(string){"flipped": flipByte(200), "truncated": truncateHalf} {
		t.Run(name+"/backup", func(t *testing.T) {
			dir, aOld, b := policyDir(t, damage)
			got, res, logs, err := loadWith(dir, OnCorruptBackup)
			if err != nil {
				t.Fatal(err)
			}
			want := aOld.clone()
			_ = b.SnapshotChannel("b", func(vb uint16, seqno uint64, recs []engine.Record) error { return want.Load("b", vb, seqno, recs) })
			sameData(t, got, want)
			if !res[0].FromBackup || !errors.Is(res[0].Problem, ErrCorrupt) || res[1].FromBackup {
				t.Fatalf("results %+v", res)
			}
			if !strings.Contains(logs, "DUMP DOES NOT VERIFY, LOADING THE PREVIOUS DUMP") || !strings.Contains(logs, Path(dir, "a")) {
				t.Fatalf("no loud warning:\n%s", logs)
			}
		})
		t.Run(name+"/fail", func(t *testing.T) {
			dir, _, _ := policyDir(t, damage)
			_, _, _, err := loadWith(dir, OnCorruptFail)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), Path(dir, "a")) || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("Load: %v, want a corrupt file error naming the file and offset", err)
			}
		})
		t.Run(name+"/skip", func(t *testing.T) {
			dir, _, b := policyDir(t, damage)
			got, res, logs, err := loadWith(dir, OnCorruptSkip)
			if err != nil {
				t.Fatal(err)
			}
			sameData(t, got, b)
			if res[0].File != "" || res[0].Problem == nil || res[1].Records != 100 {
				t.Fatalf("results %+v", res)
			}
			if !strings.Contains(logs, "CHANNEL NOT LOADED") {
				t.Fatalf("no loud warning:\n%s", logs)
			}
		})
	}
}

func TestLoadCorruptDumpWithoutUsableBackup(t *testing.T) {
	dir, _, _ := policyDir(t, flipByte(100))
	backup := filepath.Join(dir, "a"+BackupExt)
	flipByte(100)(backup)
	if _, _, _, err := loadWith(dir, OnCorruptBackup); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), backup) {
		t.Fatalf("corrupt backup: %v", err)
	}
	_, res, _, err := loadWith(dir, OnCorruptSkip)
	if err != nil || res[0].File != "" {
		t.Fatalf("skip with corrupt backup: %+v, %v", res, err)
	}
	if err := os.Remove(backup); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := loadWith(dir, OnCorruptBackup); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "no backup") {
		t.Fatalf("no backup: %v", err)
	}
}

func TestLoadEmptyDump(t *testing.T) {
	empty := func(path string) {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			panic(err)
		}
	}
	dir, aOld, b := policyDir(t, empty)
	got, res, logs, err := loadWith(dir, OnCorruptFail)
	if err != nil {
		t.Fatalf("an empty dump stopped Load: %v", err)
	}
	sameData(t, got, b)
	if res[0].File != "" || !strings.Contains(logs, "empty dump file") {
		t.Fatalf("results %+v, log:\n%s", res, logs)
	}
	got, res, _, err = loadWith(dir, OnCorruptBackup)
	if err != nil || !res[0].FromBackup {
		t.Fatalf("results %+v, %v", res, err)
	}
	if len(got.contents()["a"]) != len(aOld.contents()["a"]) {
		t.Fatal("backup not loaded")
	}
}

func TestLoadLoneBackup(t *testing.T) {
	dir, aOld, _ := policyDir(t, func(path string) {
		if err := os.Remove(path); err != nil {
			panic(err)
		}
	})
	got, res, logs, err := loadWith(dir, OnCorruptFail)
	if err != nil || !res[0].FromBackup || !strings.Contains(logs, "dump missing, loading its backup") {
		t.Fatalf("results %+v, %v, log:\n%s", res, err, logs)
	}
	if len(got.contents()["a"]) != len(aOld.contents()["a"]) {
		t.Fatal("backup not loaded")
	}
}

func TestLoadRefusesOtherVBucketCount(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(8)
	s.fill("a", 50, 10)
	if _, err := WriteFile(vfs.Default, dir, Header{Channel: "a", VBuckets: 8}, func(e *Encoder) error {
		return s.SnapshotChannel("a", e.Add)
	}); err != nil {
		t.Fatal(err)
	}
	for _, policy := range []OnCorrupt{OnCorruptBackup, OnCorruptFail, OnCorruptSkip} {
		_, _, _, err := loadWith(dir, policy)
		if !errors.Is(err, ErrVBucketMismatch) || !strings.Contains(err.Error(), "8 vbuckets, this node has 16") {
			t.Fatalf("%v: %v, want ErrVBucketMismatch", policy, err)
		}
	}
}

func TestLoadIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 10, 10)
	if _, err := writeDump(vfs.Default, dir, s, "a"); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"notes.txt": "x", "bad name.dump": "x", "b" + TmpExt: "partial", "b.dump.old": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.dump"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, res, logs, err := loadWith(dir, OnCorruptFail)
	if err != nil {
		t.Fatal(err)
	}
	sameData(t, got, s)
	if len(res) != 1 || !strings.Contains(logs, "ignoring an unfinished dump") || !strings.Contains(logs, "not a channel name") {
		t.Fatalf("results %+v, log:\n%s", res, logs)
	}
}

func TestLoadMissingDirectory(t *testing.T) {
	_, res, _, err := loadWith(filepath.Join(t.TempDir(), "none"), OnCorruptFail)
	if err != nil || len(res) != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestLoadFileOfAnotherChannel(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 10, 10)
	if _, err := writeDump(vfs.Default, dir, s, "a"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(Path(dir, "a"), Path(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := loadWith(dir, OnCorruptFail); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `header names channel "a"`) {
		t.Fatalf("Load: %v", err)
	}
}

type failingSink struct{ after int }

func (s *failingSink) Load(string, uint16, uint64, []engine.Record) error {
	if s.after--; s.after < 0 {
		return errors.New("sink full")
	}
	return nil
}

func TestLoadSinkFailure(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 100, 10)
	if _, err := writeDump(vfs.Default, dir, s, "a"); err != nil {
		t.Fatal(err)
	}
	_, err := Load(context.Background(), LoadConfig{Dir: dir, VBuckets: faultVBuckets, Sink: &failingSink{after: 2}, OnCorrupt: OnCorruptSkip, Logger: (&logBuffer{}).logger()})
	if err == nil || !strings.Contains(err.Error(), "sink full") || !strings.Contains(err.Error(), "partly loaded") {
		t.Fatalf("Load: %v", err)
	}
}

func TestLoadChecksConfig(t *testing.T) {
	sink := newFakeStore(4)
	for _, cfg := range []LoadConfig{{VBuckets: 4, Sink: sink}, {Dir: "d", Sink: sink}, {Dir: "d", VBuckets: 4}} {
		if _, err := Load(context.Background(), cfg); err == nil {
			t.Errorf("Load(%+v) accepted", cfg)
		}
	}
}

func TestParseOnCorrupt(t *testing.T) {
	for _, p := range []OnCorrupt{OnCorruptBackup, OnCorruptFail, OnCorruptSkip} {
		if got, err := ParseOnCorrupt(p.String()); err != nil || got != p {
			t.Fatalf("%v: %v, %v", p, got, err)
		}
	}
	if _, err := ParseOnCorrupt("ignore"); err == nil {
		t.Fatal("accepted ignore")
	}
}

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 1000, 10)
	sum, err := writeDump(vfs.Default, dir, s, "a")
	if err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(vfs.Default, Path(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Channel != "a" || info.Records != 1000 || info.Bytes != sum.Bytes || info.FileSize != sum.FileBytes || len(info.Seqnos) != faultVBuckets {
		t.Fatalf("info %+v, summary %+v", info, sum)
	}
	for vb, seqno := range info.Seqnos {
		if seqno != s.seqno[vb] {
			t.Fatalf("vbucket %d: seqno %d, want %d", vb, seqno, s.seqno[vb])
		}
	}
	flipByte(info.FileSize - 40)(Path(dir, "a"))
	if _, err := Inspect(vfs.Default, Path(dir, "a")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Inspect of a damaged file: %v", err)
	}
	if _, err := Inspect(vfs.Default, Path(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Inspect of a missing file: %v", err)
	}
}
