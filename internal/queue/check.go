package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"shoal/internal/vfs"
)

// CheckReport is what Check found in a queue directory.
type CheckReport struct {
	Files    int // state and journal files checked
	Problems int // problems found (repaired or not)
	Repaired int // problems repair mended
}

// Check verifies, offline, the files Open reads in dir (DATA/queue): the
// state file (its whole structure) and every journal segment (every
// frame). The store must not be open. It writes one line per problem to
// out. With repair it mends what is safe to mend, as Open would: stray
// bytes after the state file's end frame and the torn tail of the last
// journal segment are cut, a state file left half-written by a crash is
// removed. Damage inside the state file or a journal segment other than
// the last cannot be mended without losing records: it is reported, with
// what to do. An error is returned only when dir cannot be read.
func Check(fsys vfs.FS, dir string, repair bool, out io.Writer) (CheckReport, error) {
	if fsys == nil {
		fsys = vfs.Default
	}
	c := &queueChecker{fs: fsys, dir: dir, repair: repair, out: out}
	if err := c.state(); err != nil {
		return c.rep, err
	}
	if err := c.journal(); err != nil {
		return c.rep, err
	}
	return c.rep, nil
}

type queueChecker struct {
	fs     vfs.FS
	dir    string
	repair bool
	out    io.Writer
	rep    CheckReport
}

// problem reports one problem; fix, when not nil, mends it under repair.
func (c *queueChecker) problem(path, what, unrepaired string, fix func() error) {
	c.rep.Problems++
	switch {
	case c.repair && fix != nil:
		if err := fix(); err != nil {
			fmt.Fprintf(c.out, "%s: %s; cannot repair it: %v\n", path, what, err)
			return
		}
		c.rep.Repaired++
		fmt.Fprintf(c.out, "%s: %s; repaired\n", path, what)
	case fix != nil:
		fmt.Fprintf(c.out, "%s: %s (--repair mends it; a node mends it itself at start)\n", path, what)
	default:
		fmt.Fprintf(c.out, "%s: %s; %s\n", path, what, unrepaired)
	}
}

// noVisit validates a state file without building anything.
type noVisit struct{}

func (noVisit) head(stateHead) error                  { return nil }
func (noVisit) vbucket(uint16, uint64, uint64) error  { return nil }
func (noVisit) channel(string, bool, []byte) error    { return nil }
func (noVisit) queue(string, uint64, ofState) error   { return nil }
func (noVisit) skip(ofPos) error                      { return nil }
func (noVisit) ringItem(uint16, uint64, []byte) error { return nil }

func (c *queueChecker) state() error {
	tmp := filepath.Join(c.dir, stateTmpName)
	if _, err := c.fs.Stat(tmp); err == nil {
		c.problem(tmp, "a state file left half-written by a crash", "", func() error { return c.fs.Remove(tmp) })
	}
	path := filepath.Join(c.dir, stateName)
	f, err := c.fs.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", path, err)
	}
	c.rep.Files++
	err = parseState(bufio.NewReaderSize(f, 1<<20), -1, noVisit{})
	f.Close()
	var stray *strayTailError
	switch {
	case errors.As(err, &stray):
		fi, _ := c.fs.Stat(path)
		n := int64(0)
		if fi != nil {
			n = fi.Size() - stray.off
		}
		c.problem(path, fmt.Sprintf("%d stray bytes after the end of the state, from offset %d", n, stray.off), "", func() error {
			return truncate(c.fs, path, stray.off)
		})
	case err != nil:
		c.problem(path, err.Error(), "it cannot be repaired without losing the queues: move it aside (the node then starts with no queues, and the overflow files of the old ones are deleted)", nil)
	}
	return nil
}

func (c *queueChecker) journal() error {
	j := newJournal(c.fs, slog.New(slog.DiscardHandler), filepath.Join(c.dir, "journal"), 0, 0)
	gens, err := j.segments()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		if _, serr := c.fs.Stat(j.dir); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for i, g := range gens {
		path, last := j.segPath(g), i == len(gens)-1
		if i > 0 && g != gens[i-1]+1 {
			c.problem(path, fmt.Sprintf("journal segment %016x is missing before it", gens[i-1]+1), "the records of the missing segment are lost; the node refuses to start until the segments from this one on are moved aside", nil)
		}
		c.rep.Files++
		off, err := scanSegment(c.fs, path)
		switch {
		case err == nil:
		case last && off >= 0:
			c.problem(path, fmt.Sprintf("torn tail from offset %d (%v)", off, err), "", func() error { return truncate(c.fs, path, off) })
		case last:
			c.problem(path, err.Error(), "", func() error { return c.fs.Remove(path) })
		default:
			c.problem(path, err.Error(), "damage before the last journal segment cannot be repaired: the node refuses to start; the records after it are lost if it and the later segments are moved aside", nil)
		}
	}
	return nil
}

// scanSegment reads every frame of a journal segment. On damage it returns
// the offset of the first bad frame (-1 when the header itself is bad).
func scanSegment(fsys vfs.FS, path string) (int64, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	if err := readMagic(f, journalMagic, journalMagicV1); err != nil {
		return -1, err
	}
	fr := newFrameReader(&offsetReader{f: f, off: magicLen}, magicLen)
	for {
		_, _, err := fr.next()
		if err == io.EOF {
			return 0, nil
		}
		if err != nil {
			return fr.off, err
		}
	}
}

// truncate cuts path at off and syncs it.
func truncate(fsys vfs.FS, path string, off int64) error {
	f, err := fsys.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
