package vfs

import (
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Op is a file-system operation an Injector is asked about.
type Op uint8

// Operations seen by an Injector.
const (
	OpCreate Op = iota + 1
	OpOpen
	OpWrite
	OpRead
	OpSync
	OpRename
	OpRemove
	OpMkdir
	OpReadDir
	OpStat
	OpTruncate
	OpSyncDir
	OpClose
)

// Injector decides whether an operation fails. For OpWrite, n is the length
// of the write; an Injector may return a short count in allow (0 <= allow <
// n) together with an error to simulate a torn write. For other operations
// n is 0 and allow is ignored.
type Injector interface {
	Inject(op Op, path string, n int) (allow int, err error)
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(op Op, path string, n int) (int, error)

// Inject calls f.
func (f InjectorFunc) Inject(op Op, path string, n int) (int, error) { return f(op, path, n) }

// Errors injected by the stock injectors. ErrNoSpace is syscall.ENOSPC
// wrapped in an *fs.PathError by the file system, so errors.Is(err,
// syscall.ENOSPC) holds, as it does for a real full disk.
var (
	ErrNoSpace  = syscall.ENOSPC
	ErrInjected = errors.New("vfs: injected I/O error")
)

// Faulty wraps fs so that every operation first asks inj.
func Faulty(inner FS, inj Injector) FS { return &faultyFS{inner: inner, inj: inj} }

// DiskQuota is an Injector that lets at most limit bytes be written through
// it in total and fails further writes with ENOSPC, after writing what
// still fits (a short write, as a real full disk does).
type DiskQuota struct {
	mu      sync.Mutex
	limit   int64
	written int64
}

// NewDiskQuota returns a quota of limit bytes.
func NewDiskQuota(limit int64) *DiskQuota { return &DiskQuota{limit: limit} }

// SetLimit changes the limit (for example to free space again).
func (q *DiskQuota) SetLimit(limit int64) { q.mu.Lock(); q.limit = limit; q.mu.Unlock() }

// Written returns the bytes written so far.
func (q *DiskQuota) Written() int64 { q.mu.Lock(); defer q.mu.Unlock(); return q.written }

// Inject implements Injector.
func (q *DiskQuota) Inject(op Op, path string, n int) (int, error) {
	if op != OpWrite {
		return 0, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	room := q.limit - q.written
	if int64(n) <= room {
		q.written += int64(n)
		return n, nil
	}
	if room < 0 {
		room = 0
	}
	q.written += room
	return int(room), ErrNoSpace
}

// FailAfter is an Injector that fails the operations matching match once
// count of them have succeeded, with err; every later matching operation
// fails too until Reset.
type FailAfter struct {
	count atomic.Int64
	seen  atomic.Int64
	match func(op Op, path string) bool
	err   error
}

// NewFailAfter returns a FailAfter that lets count matching operations
// succeed.
func NewFailAfter(count int64, err error, match func(op Op, path string) bool) *FailAfter {
	f := &FailAfter{match: match, err: err}
	f.count.Store(count)
	return f
}

// Reset lets operations succeed again.
func (f *FailAfter) Reset() { f.count.Store(1 << 62) }

// Inject implements Injector.
func (f *FailAfter) Inject(op Op, path string, n int) (int, error) {
	if f.match != nil && !f.match(op, path) {
		return n, nil
	}
	if f.seen.Add(1) > f.count.Load() {
		return 0, f.err
	}
	return n, nil
}

type faultyFS struct {
	inner FS
	inj   Injector
}

func (f *faultyFS) check(op Op, path string) error {
	_, err := f.inj.Inject(op, path, 0)
	if err != nil {
		return &fs.PathError{Op: opName(op), Path: path, Err: err}
	}
	return nil
}

func (f *faultyFS) wrap(file File, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return &faultyFile{File: file, inj: f.inj}, nil
}

func (f *faultyFS) Create(name string) (File, error) {
	if err := f.check(OpCreate, name); err != nil {
		return nil, err
	}
	return f.wrap(f.inner.Create(name))
}

func (f *faultyFS) Open(name string) (File, error) {
	if err := f.check(OpOpen, name); err != nil {
		return nil, err
	}
	return f.wrap(f.inner.Open(name))
}

func (f *faultyFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	op := OpOpen
	if flag&os.O_CREATE != 0 {
		op = OpCreate
	}
	if err := f.check(op, name); err != nil {
		return nil, err
	}
	return f.wrap(f.inner.OpenFile(name, flag, perm))
}

func (f *faultyFS) Remove(name string) error {
	if err := f.check(OpRemove, name); err != nil {
		return err
	}
	return f.inner.Remove(name)
}

func (f *faultyFS) RemoveAll(name string) error {
	if err := f.check(OpRemove, name); err != nil {
		return err
	}
	return f.inner.RemoveAll(name)
}

func (f *faultyFS) Rename(oldname, newname string) error {
	if err := f.check(OpRename, newname); err != nil {
		return err
	}
	return f.inner.Rename(oldname, newname)
}

func (f *faultyFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := f.check(OpMkdir, dir); err != nil {
		return err
	}
	return f.inner.MkdirAll(dir, perm)
}

func (f *faultyFS) ReadDir(dir string) ([]os.DirEntry, error) {
	if err := f.check(OpReadDir, dir); err != nil {
		return nil, err
	}
	return f.inner.ReadDir(dir)
}

func (f *faultyFS) Stat(name string) (os.FileInfo, error) {
	if err := f.check(OpStat, name); err != nil {
		return nil, err
	}
	return f.inner.Stat(name)
}

func (f *faultyFS) SyncDir(dir string) error {
	if err := f.check(OpSyncDir, dir); err != nil {
		return err
	}
	return f.inner.SyncDir(dir)
}

type faultyFile struct {
	File
	inj Injector
}

func (f *faultyFile) pathErr(op Op, err error) error {
	return &fs.PathError{Op: opName(op), Path: f.Name(), Err: err}
}

func (f *faultyFile) Write(p []byte) (int, error) {
	allow, err := f.inj.Inject(OpWrite, f.Name(), len(p))
	if err == nil {
		return f.File.Write(p)
	}
	if allow > len(p) {
		allow = len(p)
	}
	n := 0
	if allow > 0 {
		n, _ = f.File.Write(p[:allow])
	}
	return n, f.pathErr(OpWrite, err)
}

func (f *faultyFile) Read(p []byte) (int, error) {
	if _, err := f.inj.Inject(OpRead, f.Name(), 0); err != nil {
		return 0, f.pathErr(OpRead, err)
	}
	return f.File.Read(p)
}

func (f *faultyFile) ReadAt(p []byte, off int64) (int, error) {
	if _, err := f.inj.Inject(OpRead, f.Name(), 0); err != nil {
		return 0, f.pathErr(OpRead, err)
	}
	return f.File.ReadAt(p, off)
}

func (f *faultyFile) Sync() error {
	if _, err := f.inj.Inject(OpSync, f.Name(), 0); err != nil {
		return f.pathErr(OpSync, err)
	}
	return f.File.Sync()
}

// Close closes the file even when the injector fails it, as a real close
// that reports an error still releases the descriptor.
func (f *faultyFile) Close() error {
	name := f.Name()
	_, ierr := f.inj.Inject(OpClose, name, 0)
	err := f.File.Close()
	if ierr != nil {
		return &fs.PathError{Op: opName(OpClose), Path: name, Err: ierr}
	}
	return err
}

func (f *faultyFile) Truncate(size int64) error {
	if _, err := f.inj.Inject(OpTruncate, f.Name(), 0); err != nil {
		return f.pathErr(OpTruncate, err)
	}
	return f.File.Truncate(size)
}

func opName(op Op) string {
	switch op {
	case OpCreate:
		return "create"
	case OpOpen:
		return "open"
	case OpWrite:
		return "write"
	case OpRead:
		return "read"
	case OpSync:
		return "sync"
	case OpRename:
		return "rename"
	case OpRemove:
		return "remove"
	case OpMkdir:
		return "mkdir"
	case OpReadDir:
		return "readdir"
	case OpStat:
		return "stat"
	case OpTruncate:
		return "truncate"
	case OpSyncDir:
		return "syncdir"
	case OpClose:
		return "close"
	}
	return "op"
}
