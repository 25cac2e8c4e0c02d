package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestDiskQuotaShortWriteThenENOSPC(t *testing.T) {
	dir := t.TempDir()
	q := NewDiskQuota(10)
	fsys := Faulty(Default, q)
	f, err := fsys.Create(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.Write([]byte("123456")); n != 6 || err != nil {
		t.Fatalf("first write: n=%d err=%v", n, err)
	}
	n, err := f.Write([]byte("abcdef"))
	if n != 4 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second write: n=%d err=%v, want 4 and ENOSPC", n, err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "a"))
	if string(got) != "123456abcd" {
		t.Fatalf("file holds %q", got)
	}
	q.SetLimit(100)
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
}

func TestFailAfterMatchesOnlyChosenOps(t *testing.T) {
	dir := t.TempDir()
	inj := NewFailAfter(1, ErrInjected, func(op Op, _ string) bool { return op == OpSync })
	fsys := Faulty(Default, inj)
	f, err := fsys.Create(filepath.Join(dir, "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("second sync: %v, want injected", err)
	}
	inj.Reset()
	if err := f.Sync(); err != nil {
		t.Fatalf("after reset: %v", err)
	}
	if err := fsys.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
}
