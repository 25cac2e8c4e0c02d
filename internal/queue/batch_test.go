package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"shoal/internal/vfs"
)

// TestPushBatch pushes batches that fill the ring, overflow, rotate
// segments and list two channels, and checks that every record comes back
// in order, across a restart.
func TestPushBatch(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	var want []string
	var batch []BatchPush
	var errs []error
	size := 1
	for i := range 600 {
		v := fmt.Sprintf("%05d-%s", i, strings.Repeat("v", i%90))
		want = append(want, v)
		batch = append(batch, BatchPush{Channels: []string{"a", "b"}, Value: []byte(v), VBucket: -1})
		if len(batch) == size || i == 599 {
			size = 1 + (size*7)%40
			errs = s.PushBatch(context.Background(), batch, errs)
			for j, err := range errs {
				if err != nil {
					t.Fatalf("push %d of a batch: %v", j, err)
				}
			}
			batch = batch[:0]
		}
	}
	errs = s.PushBatch(context.Background(), []BatchPush{{Channels: []string{"a", "b"}, Value: []byte("last"), VBucket: 3}, {Channels: []string{"bad name"}, VBucket: -1}}, errs)
	if errs[0] != nil || !errors.Is(errs[1], ErrBadChannelName) {
		t.Fatalf("a good and a bad push: %v", errs)
	}
	want = append(want, "last")
	if st := stats(t, s, "a", ""); st.OverflowRecords < 500 || st.Records != int64(len(want)) {
		t.Fatalf("stats %+v", st)
	}
	equal(t, "a", popAll(t, s, "a"), want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, testConfig(dir))
	defer s.Close()
	equal(t, "b after a restart", popAll(t, s, "b"), want)
}

// TestPushBatchDiskFull fills the disk with batches: the batch whose
// overflow write fails is pushed again push by push, so each push of it is
// stored in both its channels or refused with ErrNoSpace, as a Push.
func TestPushBatchDiskFull(t *testing.T) {
	quota := vfs.NewDiskQuota(1 << 62)
	cfg := testConfig(t.TempDir())
	cfg.FS = vfs.Faulty(vfs.Default, quota)
	s := mustOpen(t, cfg)
	defer s.Close()
	quota.SetLimit(quota.Written() + 20<<10)
	var stored []string
	var errs []error
	full := false
	for i := 0; !full; {
		var batch []BatchPush
		for range 16 {
			v := fmt.Sprintf("%05d-%s", i, strings.Repeat("v", 90))
			batch = append(batch, BatchPush{Channels: []string{"a", "b"}, Value: []byte(v), VBucket: -1})
			i++
		}
		errs = s.PushBatch(context.Background(), batch, errs)
		for j, err := range errs {
			switch {
			case err == nil && full:
				t.Fatalf("push %d stored after a refused one", j)
			case err == nil:
				stored = append(stored, string(batch[j].Value))
			case errors.Is(err, ErrNoSpace):
				full = true
			default:
				t.Fatalf("push on a full disk: %v", err)
			}
		}
		if i > 10000 {
			t.Fatal("disk never filled")
		}
	}
	quota.SetLimit(1 << 62)
	equal(t, "a", popAll(t, s, "a"), stored)
	equal(t, "b", popAll(t, s, "b"), stored)
}

// TestPushBatchWriteFails makes every write of more than one record to an
// overflow segment fail: each batch is rolled back and pushed again push
// by push, which succeeds.
func TestPushBatchWriteFails(t *testing.T) {
	cfg := testConfig(t.TempDir())
	failed := 0
	cfg.FS = vfs.Faulty(vfs.Default, vfs.InjectorFunc(func(op vfs.Op, path string, n int) (int, error) {
		if op == vfs.OpWrite && strings.HasSuffix(path, segSuffix) && n > 200 {
			failed++
			return n / 2, vfs.ErrInjected
		}
		return n, nil
	}))
	s := mustOpen(t, cfg)
	defer s.Close()
	var want []string
	var errs []error
	for i := 0; i < 400; i += 10 {
		var batch []BatchPush
		for j := range 10 {
			v := fmt.Sprintf("%05d-%s", i+j, strings.Repeat("v", 50))
			want = append(want, v)
			batch = append(batch, BatchPush{Channels: []string{"a", "b"}, Value: []byte(v), VBucket: -1})
		}
		for j, err := range s.PushBatch(context.Background(), batch, errs) {
			if err != nil {
				t.Fatalf("push %d: %v", i+j, err)
			}
		}
	}
	if failed == 0 || stats(t, s, "a", "").OverflowRecords < 300 {
		t.Fatalf("%d failed writes, %+v", failed, stats(t, s, "a", ""))
	}
	equal(t, "a", popAll(t, s, "a"), want)
	equal(t, "b", popAll(t, s, "b"), want)
}
