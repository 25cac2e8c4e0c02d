package dump

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// Path returns the path of channel ch's dump in dir.
func Path(dir, ch string) string { return filepath.Join(dir, ch+Ext) }

// WriteFile writes the dump of h.Channel in dir: fill adds the records to
// an Encoder writing dir/ch.dump.tmp; the file is then fsynced, the
// previous dir/ch.dump renamed to dir/ch.dump.backup, the new file renamed
// to dir/ch.dump and the directory fsynced (vfs.WriteFileAtomicFunc, with
// the backup made just before its rename). If any step fails, the error is
// returned and the previous dump is left loadable: the temporary file is
// removed, and if the new file could not take its place the previous dump
// is renamed back (if that fails too, it is the backup, which Load uses
// when the dump is missing). An error of the last step, the directory
// fsync, leaves the new dump in place but perhaps not durable
// (vfs.Replaced reports it).
func WriteFile(fsys vfs.FS, dir string, h Header, fill func(*Encoder) error) (Summary, error) {
	if err := h.validate(); err != nil {
		return Summary{}, err
	}
	final := Path(dir, h.Channel)
	backup := filepath.Join(dir, h.Channel+BackupExt)
	var sum Summary
	moved := false
	err := vfs.WriteFileAtomicFunc(fsys, final, 0o644, func(f vfs.File) error {
		var err error
		sum, err = encodeFile(f, h, fill)
		return err
	}, func() error {
		var err error
		moved, err = keepPrevious(fsys, final, backup)
		return err
	})
	var aerr *vfs.AtomicWriteError
	if moved && errors.As(err, &aerr) && aerr.Op == vfs.OpRename {
		if rerr := fsys.Rename(backup, final); rerr != nil {
			err = errors.Join(err, fmt.Errorf("cannot rename previous dump back from %q: %w", backup, rerr))
		}
	}
	if err != nil {
		return sum, fmt.Errorf("cannot write dump of channel %q: %w", h.Channel, err)
	}
	return sum, nil
}

// encodeFile writes the dump to f (the temporary file), through a buffer;
// fill adds the records.
func encodeFile(f vfs.File, h Header, fill func(*Encoder) error) (Summary, error) {
	bw := bufio.NewWriterSize(writeBehind(f), 64<<10) // chunks, larger, bypass it
	enc, err := NewEncoder(bw, h)
	if err != nil {
		return Summary{}, err
	}
	if err := fill(enc); err != nil {
		enc.Abort()
		return Summary{}, err
	}
	sum, err := enc.Close()
	if err == nil {
		err = bw.Flush()
	}
	return sum, err
}

// keepPrevious renames final to backup, if final exists, and reports
// whether it did.
func keepPrevious(fsys vfs.FS, final, backup string) (bool, error) {
	switch _, err := fsys.Stat(final); {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("cannot stat previous dump %q: %w", final, err)
	}
	if err := fsys.Rename(final, backup); err != nil {
		return false, fmt.Errorf("cannot rename previous dump %q to %q: %w", final, backup, err)
	}
	return true, nil
}

// Inspect verifies the dump file at path completely, every record
// included, and describes it (for `shoal dump inspect`).
func Inspect(fsys vfs.FS, path string) (Info, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("cannot open dump %q: %w", path, err)
	}
	defer f.Close()
	return Decode(f, path, func(uint16, uint64, []engine.Record) error { return nil })
}

// writeBehindEvery is how much a dump writes between two requests to the
// kernel to start writing the file back.
const writeBehindEvery = 8 << 20

// fileWriter starts the write-back of what it wrote every writeBehindEvery
// bytes (sync_file_range, without waiting), so that the disk works while
// the dump is encoded and the final fsync has little left to do.
type fileWriter struct {
	vfs.File
	fd          int
	off, queued int64
}

// writeBehind returns f, or a fileWriter over it when it is an operating
// system file.
func writeBehind(f vfs.File) io.Writer {
	osf, ok := f.(interface{ Fd() uintptr })
	if !ok {
		return f
	}
	return &fileWriter{File: f, fd: int(osf.Fd())}
}

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := w.File.Write(b)
	w.off += int64(n)
	if w.off-w.queued >= writeBehindEvery {
		// Only a hint: the fsync at the end is what makes the file durable.
		_ = unix.SyncFileRange(w.fd, w.queued, w.off-w.queued, unix.SYNC_FILE_RANGE_WRITE)
		w.queued = w.off
	}
	return n, err
}
