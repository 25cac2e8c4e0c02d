package logstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/vfs"
)

// TestGroupCommitGathersEveryWriter makes every fsync take 10 ms while 10
// writers append one record after another with Fsync always: the
// committer waits for the writers of the previous batch, so an fsync
// serves nearly all ten, not the half that queued during the previous
// fsync.
func TestGroupCommitGathersEveryWriter(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, path string, n int) (int, error) {
		if op == vfs.OpSync && strings.HasSuffix(path, ".seg") {
			time.Sleep(10 * time.Millisecond)
		}
		return n, nil
	}))
	s := mustOpen(t, cfg)
	mustAppend(t, s, "g", rec(1, "first")) // the segment exists: later fsyncs are the batches'
	before := s.Stats().Fsyncs
	const writers, each = 10, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Append(context.Background(), "g", []Rec{rec(1, fmt.Sprint(w, "-", i))}, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	fsyncs := s.Stats().Fsyncs - before
	if perFsync := float64(writers*each) / float64(fsyncs); perFsync < 7 {
		t.Fatalf("%d fsyncs for %d records: %.1f records per fsync, want nearly %d", fsyncs, writers*each, perFsync, writers)
	}
}
