package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// AtomicTempSuffix ends the name of the temporary file WriteFileAtomic
// writes next to its target: path+AtomicTempSuffix. Only a crash leaves one
// behind; owners of a directory recognise (and ignore or remove) such
// leftovers by this suffix.
const AtomicTempSuffix = ".tmp"

// AtomicWriteError is the error of WriteFileAtomic and WriteFileAtomicFunc:
// the step that failed, the file being replaced, and the cause.
type AtomicWriteError struct {
	// Op is the step: OpCreate, OpWrite (the bytes, or the write function),
	// OpSync, OpClose, OpRename or OpSyncDir.
	Op   Op
	Path string // the file being replaced (not the temporary file)
	Err  error
}

// Error implements error.
func (e *AtomicWriteError) Error() string {
	return fmt.Sprintf("cannot replace %s: cannot %s: %v", e.Path, atomicStep(e.Op), e.Err)
}

// atomicStep describes a step of WriteFileAtomicFunc.
func atomicStep(op Op) string {
	switch op {
	case OpCreate:
		return "create its temporary file"
	case OpWrite:
		return "write its temporary file"
	case OpSync:
		return "sync its temporary file"
	case OpClose:
		return "close its temporary file"
	case OpRename:
		return "rename its temporary file over it"
	case OpSyncDir:
		return "sync its directory after the rename"
	}
	return opName(op)
}

// Unwrap returns the cause.
func (e *AtomicWriteError) Unwrap() error { return e.Err }

// Replaced reports whether err, returned by WriteFileAtomic or
// WriteFileAtomicFunc, came after the rename: the file holds its new
// contents, but the directory fsync failed, so a crash may still bring the
// old contents back.
func Replaced(err error) bool {
	var aerr *AtomicWriteError
	return errors.As(err, &aerr) && aerr.Op == OpSyncDir
}

// WriteFileAtomic replaces path with a file holding data, atomically and
// durably: it writes path+AtomicTempSuffix (created with perm, truncated if
// a crash left one), fsyncs and closes it, renames it over path and fsyncs
// the directory. Whatever fails, path holds either its old contents or
// data, never part of data; on a failure before the rename the temporary
// file is removed. The error is an *AtomicWriteError naming the step; once
// the rename is done only the directory fsync can fail (see Replaced).
func WriteFileAtomic(fsys FS, path string, data []byte, perm os.FileMode) error {
	return WriteFileAtomicFunc(fsys, path, perm, func(f File) error {
		n, err := f.Write(data)
		if err == nil && n < len(data) {
			err = io.ErrShortWrite
		}
		return err
	}, nil)
}

// WriteFileAtomicFunc is WriteFileAtomic with the contents written by
// write into the temporary file (buffered writers must be flushed before
// write returns); an error of write is returned as an *AtomicWriteError of
// step OpWrite that wraps it. beforeRename, when not nil, runs once the
// temporary file is written, fsynced and closed, just before the rename
// (the dump moves the previous file aside there); its error is returned as
// it is, after the temporary file is removed.
func WriteFileAtomicFunc(fsys FS, path string, perm os.FileMode, write func(File) error, beforeRename func() error) error {
	tmp := path + AtomicTempSuffix
	fail := func(op Op, err error) error {
		_ = fsys.Remove(tmp) // best effort: a leftover is what a crash leaves too
		return &AtomicWriteError{Op: op, Path: path, Err: err}
	}
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fail(OpCreate, err)
	}
	if err := write(f); err != nil {
		_ = f.Close()
		return fail(OpWrite, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fail(OpSync, err)
	}
	if err := f.Close(); err != nil {
		return fail(OpClose, err)
	}
	if beforeRename != nil {
		if err := beforeRename(); err != nil {
			_ = fsys.Remove(tmp)
			return err
		}
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fail(OpRename, err)
	}
	if err := fsys.SyncDir(filepath.Dir(path)); err != nil {
		return &AtomicWriteError{Op: OpSyncDir, Path: path, Err: err}
	}
	return nil
}
