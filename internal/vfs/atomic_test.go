package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// failAt fails the first operation op on a path ending with suffix; for a
// write it lets half of the bytes through first (a torn write).
type failAt struct {
	op     Op
	suffix string
	done   bool
}

func (f *failAt) Inject(op Op, path string, n int) (int, error) {
	if op != f.op || f.done || !strings.HasSuffix(path, f.suffix) {
		return n, nil
	}
	f.done = true
	return n / 2, ErrInjected
}

// readOr returns the contents of path, or "<missing>".
func readOr(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "<missing>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	// A temporary file a crash left behind, longer than the new contents.
	if err := os.WriteFile(path+AtomicTempSuffix, []byte("leftover from a crash, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(Default, path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(Default, path, []byte("second"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readOr(t, path); got != "second" {
		t.Fatalf("file holds %q", got)
	}
	if got := readOr(t, path+AtomicTempSuffix); got != "<missing>" {
		t.Fatalf("temporary file left behind: %q", got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}
}

// TestWriteFileAtomicFailures fails each step in turn: the old file stays
// (or, once renamed, the new one is complete), no temporary file is left
// and the error names the step.
func TestWriteFileAtomicFailures(t *testing.T) {
	for _, tc := range []struct {
		op     Op
		suffix string // of the path the failing operation sees
		says   string // in the error
	}{
		{OpCreate, AtomicTempSuffix, "cannot create its temporary file"},
		{OpWrite, AtomicTempSuffix, "cannot write its temporary file"}, // torn: half of the bytes are written
		{OpSync, AtomicTempSuffix, "cannot sync its temporary file"},
		{OpClose, AtomicTempSuffix, "cannot close its temporary file"},
		{OpRename, "state", "cannot rename its temporary file over it"}, // Faulty reports a rename by its new name
		{OpSyncDir, "", "cannot sync its directory"},
	} {
		t.Run(opName(tc.op), func(t *testing.T) {
			for _, existed := range []bool{true, false} {
				dir := t.TempDir()
				path := filepath.Join(dir, "state")
				old := "<missing>"
				if existed {
					old = "old contents"
					if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				fsys := Faulty(Default, &failAt{op: tc.op, suffix: tc.suffix})
				err := WriteFileAtomic(fsys, path, []byte("new contents, all of them"), 0o644)
				var aerr *AtomicWriteError
				if !errors.As(err, &aerr) || aerr.Op != tc.op || aerr.Path != path || !errors.Is(err, ErrInjected) {
					t.Fatalf("error %v, want an *AtomicWriteError of step %s on %s wrapping the injected error", err, opName(tc.op), path)
				}
				if !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "cannot replace "+path) {
					t.Fatalf("error %q does not name the step and the file", err)
				}
				want := old
				if tc.op == OpSyncDir {
					want = "new contents, all of them"
				}
				if got := readOr(t, path); got != want {
					t.Fatalf("file holds %q, want %q", got, want)
				}
				if Replaced(err) != (tc.op == OpSyncDir) {
					t.Fatalf("Replaced = %v after a failed %s", Replaced(err), opName(tc.op))
				}
				if got := readOr(t, path+AtomicTempSuffix); got != "<missing>" {
					t.Fatalf("temporary file left behind: %q", got)
				}
			}
		})
	}
}

func TestWriteFileAtomicFunc(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dump")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(f File) error {
		for _, s := range []string{"streamed ", "in ", "parts"} {
			if _, err := f.Write([]byte(s)); err != nil {
				return err
			}
		}
		return nil
	}

	// The hook runs with the temporary file complete and path untouched.
	calls := 0
	err := WriteFileAtomicFunc(Default, path, 0o644, write, func() error {
		calls++
		if tmp, cur := readOr(t, path+AtomicTempSuffix), readOr(t, path); tmp != "streamed in parts" || cur != "old" {
			t.Errorf("before the rename: temporary %q, file %q", tmp, cur)
		}
		return nil
	})
	if err != nil || calls != 1 || readOr(t, path) != "streamed in parts" {
		t.Fatalf("err %v, %d hook calls, file %q", err, calls, readOr(t, path))
	}

	// An error of write is wrapped as the write step.
	errEncode := errors.New("encoder failed")
	err = WriteFileAtomicFunc(Default, path, 0o644, func(f File) error {
		_, _ = f.Write([]byte("half"))
		return errEncode
	}, nil)
	var aerr *AtomicWriteError
	if !errors.As(err, &aerr) || aerr.Op != OpWrite || !errors.Is(err, errEncode) {
		t.Fatalf("error %v, want the write step wrapping the encoder's", err)
	}

	// An error of the hook is returned as it is, nothing is renamed.
	errHook := errors.New("cannot move the previous file aside")
	err = WriteFileAtomicFunc(Default, path, 0o644, write, func() error { return errHook })
	if err != errHook {
		t.Fatalf("error %v, want the hook's", err)
	}
	if got := readOr(t, path); got != "streamed in parts" {
		t.Fatalf("file holds %q after failures", got)
	}
	if got := readOr(t, path+AtomicTempSuffix); got != "<missing>" {
		t.Fatalf("temporary file left behind: %q", got)
	}
}

func TestFaultyClose(t *testing.T) {
	dir := t.TempDir()
	fsys := Faulty(Default, &failAt{op: OpClose, suffix: "c"})
	f, err := fsys.Create(filepath.Join(dir, "c"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errors.Is(err, ErrInjected) {
		t.Fatalf("close: %v, want the injected error", err)
	}
	// The file was closed all the same.
	if _, err := f.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after a failed close: %v, want os.ErrClosed", err)
	}
}
