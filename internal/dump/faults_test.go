package dump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"shoal/internal/vfs"
)

const faultVBuckets = 16

// writeDump dumps channel ch of s into dir through fsys.
func writeDump(fsys vfs.FS, dir string, s Source, ch string) (Summary, error) {
	return WriteFile(fsys, dir, Header{Channel: ch, VBuckets: faultVBuckets}, func(e *Encoder) error {
		return s.SnapshotChannel(ch, e.Add)
	})
}

// faultStores returns the data of a previous dump and a newer, larger one
// whose file takes several writes.
func faultStores() (old, newer *fakeStore) {
	old = newFakeStore(faultVBuckets)
	old.fill("ch", 500, 40)
	newer = old.clone()
	rng := rand.New(rand.NewPCG(7, 8))
	v := make([]byte, 100)
	for i := range 25000 {
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		newer.put("ch", fmt.Sprintf("key-%d", i), string(v), 0)
	}
	return old, newer
}

// loadDir loads dir with policy and returns what was loaded.
func loadDir(t *testing.T, dir string, policy OnCorrupt) (*fakeStore, []LoadResult) {
	t.Helper()
	got := newFakeStore(faultVBuckets)
	var logs logBuffer
	res, err := Load(context.Background(), LoadConfig{Dir: dir, VBuckets: faultVBuckets, Sink: got, OnCorrupt: policy, Logger: logs.logger()})
	if err != nil {
		t.Fatalf("Load (%v): %v\n%s", policy, err, logs.String())
	}
	return got, res
}

// opCounter counts the operations of a successful dump.
type opCounter struct {
	mu sync.Mutex
	n  map[vfs.Op]int
}

func (c *opCounter) Inject(op vfs.Op, _ string, n int) (int, error) {
	c.mu.Lock()
	c.n[op]++
	c.mu.Unlock()
	return n, nil
}

func TestWriteFailureAtEveryStepKeepsPreviousDump(t *testing.T) {
	old, newer := faultStores()
	// The operations of a dump over a previous one: every step, the
	// backup's rename included.
	counter := &opCounter{n: make(map[vfs.Op]int)}
	probe := t.TempDir()
	if _, err := writeDump(vfs.Default, probe, old, "ch"); err != nil {
		t.Fatal(err)
	}
	if _, err := writeDump(vfs.Faulty(vfs.Default, counter), probe, newer, "ch"); err != nil {
		t.Fatal(err)
	}
	if counter.n[vfs.OpWrite] < 3 {
		t.Fatalf("a dump took %d writes; the test wants several", counter.n[vfs.OpWrite])
	}
	steps := []vfs.Op{vfs.OpCreate, vfs.OpWrite, vfs.OpSync, vfs.OpClose, vfs.OpStat, vfs.OpRename, vfs.OpSyncDir}
	for _, op := range steps {
		for n := range counter.n[op] {
			t.Run(fmt.Sprintf("op%d-after%d", op, n), func(t *testing.T) {
				dir := t.TempDir()
				if _, err := writeDump(vfs.Default, dir, old, "ch"); err != nil {
					t.Fatal(err)
				}
				inj := vfs.NewFailAfter(int64(n), vfs.ErrInjected, func(o vfs.Op, _ string) bool { return o == op })
				_, err := writeDump(vfs.Faulty(vfs.Default, inj), dir, newer, "ch")
				if !errors.Is(err, vfs.ErrInjected) {
					t.Fatalf("dump: %v, want the injected error", err)
				}
				want := old
				if op == vfs.OpSyncDir {
					want = newer // in place, perhaps not durable
				}
				// fail: no corrupt file may be left where Load looks.
				got, _ := loadDir(t, dir, OnCorruptFail)
				sameData(t, got, want)
				if _, err := os.Stat(filepath.Join(dir, "ch"+TmpExt)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("temporary file left behind: %v", err)
				}
			})
		}
	}
}

// renameOnce fails the first rename onto a path ending with suffix.
type renameOnce struct {
	suffix string
	done   atomic.Bool
}

func (r *renameOnce) Inject(op vfs.Op, path string, n int) (int, error) {
	if op == vfs.OpRename && strings.HasSuffix(path, r.suffix) && r.done.CompareAndSwap(false, true) {
		return 0, vfs.ErrInjected
	}
	return n, nil
}

func TestFailedRenamePutsPreviousDumpBack(t *testing.T) {
	old, newer := faultStores()
	dir := t.TempDir()
	if _, err := writeDump(vfs.Default, dir, old, "ch"); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(Path(dir, "ch"))
	if err != nil {
		t.Fatal(err)
	}
	// The previous dump goes to ch.dump.backup, the new one fails to take
	// its place, and the previous one is renamed back.
	_, err = writeDump(vfs.Faulty(vfs.Default, &renameOnce{suffix: string(filepath.Separator) + "ch" + Ext}), dir, newer, "ch")
	if !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("dump: %v, want the injected error", err)
	}
	if after, err := os.ReadFile(Path(dir, "ch")); err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the previous dump is not back in place (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ch"+TmpExt)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	got, res := loadDir(t, dir, OnCorruptFail)
	sameData(t, got, old)
	if res[0].FromBackup {
		t.Fatal("loaded the backup")
	}
}

func TestDiskFullKeepsPreviousDump(t *testing.T) {
	old, newer := faultStores()
	probe := t.TempDir()
	sum, err := writeDump(vfs.Default, probe, newer, "ch")
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{0, 100, 1 << 20, sum.FileBytes - 1} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			dir := t.TempDir()
			if _, err := writeDump(vfs.Default, dir, old, "ch"); err != nil {
				t.Fatal(err)
			}
			q := vfs.NewDiskQuota(limit)
			fsys := vfs.Faulty(vfs.Default, q)
			_, err := writeDump(fsys, dir, newer, "ch")
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("dump with %d bytes free: %v, want ENOSPC", limit, err)
			}
			got, res := loadDir(t, dir, OnCorruptFail)
			sameData(t, got, old)
			if res[0].FromBackup {
				t.Fatal("loaded the backup after a failed dump")
			}
			if limit != 0 {
				return
			}
			// Space is back: the next dump works and keeps the old one as backup.
			q.SetLimit(1 << 40)
			if _, err := writeDump(fsys, dir, newer, "ch"); err != nil {
				t.Fatal(err)
			}
			got, _ = loadDir(t, dir, OnCorruptFail)
			sameData(t, got, newer)
			if _, err := os.Stat(filepath.Join(dir, "ch"+BackupExt)); err != nil {
				t.Fatalf("no backup: %v", err)
			}
		})
	}
}

func TestRotationKeepsOneBackup(t *testing.T) {
	dir := t.TempDir()
	var stores []*fakeStore
	for i := range 3 {
		s := newFakeStore(faultVBuckets)
		s.fill("ch", 100*(i+1), 20)
		stores = append(stores, s)
		if _, err := writeDump(vfs.Default, dir, s, "ch"); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := loadDir(t, dir, OnCorruptFail)
	sameData(t, got, stores[2])
	if err := os.Remove(Path(dir, "ch")); err != nil {
		t.Fatal(err)
	}
	got, res := loadDir(t, dir, OnCorruptFail)
	sameData(t, got, stores[1])
	if !res[0].FromBackup {
		t.Fatalf("result %+v", res[0])
	}
}
