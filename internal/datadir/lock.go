// Package datadir guards a node's data directory: the exclusive lock on
// DATA/LOCK that keeps two processes (two nodes, or a node and an offline
// `shoal check`) from using one directory at once.
package datadir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockName is the lock file's name inside the data directory.
const LockName = "LOCK"

// ErrLocked is returned (wrapped, with the holder's PID when the lock file
// names one) when another process holds the lock.
var ErrLocked = errors.New("data directory in use")

// Lock takes the exclusive lock on DIR/LOCK and writes this process's PID
// into it. The lock lasts until the returned file is closed (or the
// process ends). When another process holds it, the error wraps ErrLocked
// and names that process's PID, read from the file.
func Lock(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := holder(f)
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cannot lock %s: %w", path, err)
		}
		who := "another process"
		if pid > 0 {
			who = fmt.Sprintf("process %d", pid)
		}
		return nil, fmt.Errorf("%w: %s is locked by %s (a running shoald, or shoal check): stop it first", ErrLocked, path, who)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// holder reads the PID the lock file names; 0 when it names none.
func holder(f *os.File) int {
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
