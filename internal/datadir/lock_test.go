package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLockNamesTheHolder: a second Lock of a locked directory fails with
// ErrLocked and the PID of the process holding it; once released, the
// directory can be locked again.
func TestLockNamesTheHolder(t *testing.T) {
	dir := t.TempDir()
	f, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LockName))
	if string(b) != fmt.Sprintf("%d\n", os.Getpid()) {
		t.Errorf("lock file holds %q", b)
	}
	_, err = Lock(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("locked by process %d", os.Getpid())) {
		t.Errorf("second lock: %v", err)
	}
	f.Close()
	f, err = Lock(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	f.Close()
}

// TestLockOfAGarbledFile: a lock file holding no PID still locks; the
// holder is then "another process".
func TestLockOfAGarbledFile(t *testing.T) {
	dir := t.TempDir()
	f, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.WriteFile(filepath.Join(dir, LockName), []byte("\x00garbage"), 0o644)
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second lock: %v", err)
	}
}
