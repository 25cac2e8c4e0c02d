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
	"slices"
	"strconv"

	"shoal/internal/checkreport"
	"shoal/internal/vfs"
)

// CheckReport is what Check found in a queue directory.
type CheckReport struct {
	Files    int // state and journal files checked
	Problems int // problems found (repaired or not)
	Repaired int // problems repair mended
}

// Check verifies, offline, the files Open reads in dir (DATA/queue): the
// state file (its whole structure), every overflow segment of the queues
// it names (every frame the node would read) and every journal segment
// the state leads to (every frame). The store must not be open. It writes one line per problem to
// out. With repair it mends what is safe to mend, as Open would: stray
// bytes after the state file's end frame and the torn tail of the last
// journal segment and of an overflow segment after what the state vouches
// for are cut, a state file left half-written by a crash is removed.
// Damage inside the state file, a journal segment other than the last or
// the records of an overflow segment the state vouches for cannot be
// mended without losing records: it is reported, with what to do. An error is returned only when dir cannot be read.
func Check(fsys vfs.FS, dir string, repair bool, out io.Writer) (CheckReport, error) {
	if fsys == nil {
		fsys = vfs.Default
	}
	c := &queueChecker{fs: fsys, dir: dir, found: checkreport.Findings{Out: out, Repair: repair, RepairNote: " (--repair mends it; a node mends it itself at start)"}}
	if err := c.state(); err != nil {
		return c.report(), err
	}
	if err := c.overflow(); err != nil {
		return c.report(), err
	}
	if err := c.journal(); err != nil {
		return c.report(), err
	}
	return c.report(), nil
}

// report is what the check found so far.
func (c *queueChecker) report() CheckReport {
	return CheckReport{Files: c.files, Problems: c.found.Problems, Repaired: c.found.Repaired}
}

type queueChecker struct {
	fs    vfs.FS
	dir   string
	found checkreport.Findings
	files int
	// known is what the state file holds; nil when there is none or it is
	// damaged (the overflow is then not checked: the node does not start,
	// or, without a state, deletes it).
	known *checkVisit
	// noState: there is no state file.
	noState bool
}

// checkVisit validates a state file, keeping what the check of the
// overflow and the journal needs.
type checkVisit struct {
	hd     stateHead
	queues map[uint64]ofState
}

func (v *checkVisit) head(h stateHead) error                      { v.hd = h; return nil }
func (*checkVisit) vbucket(uint16, uint64, uint64) error          { return nil }
func (*checkVisit) channel(string, bool, []byte) error            { return nil }
func (v *checkVisit) queue(_ string, id uint64, of ofState) error { v.queues[id] = of; return nil }
func (*checkVisit) skip(ofPos) error                              { return nil }
func (*checkVisit) ringItem(uint16, uint64, []byte) error         { return nil }

func (c *queueChecker) state() error {
	tmp := filepath.Join(c.dir, stateTmpName)
	if _, err := c.fs.Stat(tmp); err == nil {
		c.found.Problem(tmp, "a state file left half-written by a crash", "", func() error { return c.fs.Remove(tmp) })
	}
	path := filepath.Join(c.dir, stateName)
	f, err := c.fs.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.noState = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", path, err)
	}
	c.files++
	v := &checkVisit{queues: map[uint64]ofState{}}
	err = parseState(bufio.NewReaderSize(f, 1<<20), -1, v)
	f.Close()
	var stray *strayTailError
	switch {
	case errors.As(err, &stray) || err == nil:
		c.known = v
	}
	switch {
	case errors.As(err, &stray):
		fi, _ := c.fs.Stat(path)
		n := int64(0)
		if fi != nil {
			n = fi.Size() - stray.off
		}
		c.found.Problem(path, fmt.Sprintf("%d stray bytes after the end of the state, from offset %d", n, stray.off), "", func() error {
			return truncate(c.fs, path, stray.off)
		})
	case err != nil:
		c.found.Problem(path, err.Error(), "it cannot be repaired without losing the queues: move it aside (the node then starts with no queues, and the overflow files of the old ones are deleted)", nil)
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
	if c.known != nil && c.known.hd.journalFirst > 0 {
		// Older segments are deleted at start, unread.
		first := c.known.hd.journalFirst
		gens = slices.DeleteFunc(gens, func(g uint64) bool { return g < first })
	}
	for i, g := range gens {
		path, last := j.segPath(g), i == len(gens)-1
		if i > 0 && g != gens[i-1]+1 {
			c.found.Problem(path, fmt.Sprintf("journal segment %016x is missing before it", gens[i-1]+1), "the records of the missing segment are lost; the node refuses to start until the segments from this one on are moved aside", nil)
		}
		c.files++
		off, err := scanSegment(c.fs, path)
		switch {
		case err == nil:
		case last && off >= 0:
			c.found.Problem(path, fmt.Sprintf("torn tail from offset %d (%v)", off, err), "", func() error { return truncate(c.fs, path, off) })
		case last:
			c.found.Problem(path, err.Error(), "", func() error { return c.fs.Remove(path) })
		default:
			c.found.Problem(path, err.Error(), "damage before the last journal segment cannot be repaired: the node refuses to start; the records after it are lost if it and the later segments are moved aside", nil)
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

// overflow checks the overflow segments of the queues the state names,
// as the node's start and reads use them (see overflow.restore): the
// records the state vouches for (from the head on) must all read; after
// them (memory mode: records pushed after the last index) the node keeps
// the frames that read and cuts at the first that does not.
func (c *queueChecker) overflow() error {
	if c.known == nil && !c.noState {
		return nil // a damaged state: the node does not start
	}
	od := filepath.Join(c.dir, "overflow")
	ents, err := c.fs.ReadDir(od)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", od, err)
	}
	orphans := 0
	for _, e := range ents {
		id, err := strconv.ParseUint(e.Name(), 16, 64)
		if err != nil || len(e.Name()) != 16 || !e.IsDir() {
			continue // the node ignores it
		}
		var st ofState
		ok := false
		if c.known != nil {
			st, ok = c.known.queues[id]
		}
		if !ok {
			orphans++
			continue
		}
		if err := c.overflowQueue(filepath.Join(od, e.Name()), st); err != nil {
			return err
		}
	}
	if orphans > 0 && c.noState {
		fmt.Fprintf(c.found.Out, "%s: %d overflow directories and no state file (not problems: the node deletes them at start, and their records are lost unless the journal holds them)\n", od, orphans)
	} else if orphans > 0 {
		fmt.Fprintf(c.found.Out, "%s: %d overflow directories of queues the state does not know (not problems: the node deletes them at start; in journal mode the journal rebuilds those queues)\n", od, orphans)
	}
	return nil
}

// overflowQueue checks the segments in one queue's overflow directory.
func (c *queueChecker) overflowQueue(dir string, st ofState) error {
	ents, err := c.fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cannot list %s: %w", dir, err)
	}
	var nums []uint64
	for _, e := range ents {
		if n, ok := parseSegName(e.Name()); ok {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	exact := c.known.hd.journalFirst > 0
	live := st.records > 0
	headOff, tailOff := max(st.headOff, magicLen), max(st.tailOff, magicLen)
	segPath := func(n uint64) string { return filepath.Join(dir, fmt.Sprintf("%016x%s", n, segSuffix)) }
	if live {
		present := uint64(0)
		for _, n := range nums {
			if n >= st.headSeg && n <= st.tailSeg {
				present++
			}
		}
		if want := st.tailSeg - st.headSeg + 1; present < want {
			c.found.Problem(dir, fmt.Sprintf("%d of the overflow segments %016x to %016x the state counts records in are missing", want-present, st.headSeg, st.tailSeg),
				"their records are lost (the node counts what is left)", nil)
		}
	}
	for _, n := range nums {
		// The segment is read from start; the state vouches for its
		// records up to vouched (-1: to its end); after limit the node
		// cuts, unread (-1: none).
		start, vouched, limit := int64(magicLen), int64(-1), int64(-1)
		switch {
		case live && n >= st.headSeg && n < st.tailSeg:
		case live && n == st.tailSeg:
			vouched = tailOff
			if exact {
				limit = tailOff // the journal replays what came after
			}
		case n > st.tailSeg && !exact:
			vouched = magicLen
		default:
			continue // deleted at start, unread
		}
		if live && n == st.headSeg {
			start = headOff
		}
		c.files++
		c.overflowSegment(segPath(n), start, vouched, limit)
	}
	return nil
}

// overflowSegment checks one overflow segment read from start, whose
// records the state vouches for up to vouched (-1: all) and which the node
// cuts at limit (-1: never).
func (c *queueChecker) overflowSegment(path string, start, vouched, limit int64) {
	const lost = "cannot be repaired: the node drops the records from there to the segment's end when its reads reach them (and logs it in root.log)"
	f, err := c.fs.Open(path)
	if err != nil {
		c.found.Problem(path, fmt.Sprintf("cannot be read: %v", err), "check its permissions", nil)
		return
	}
	defer f.Close()
	if err := readMagic(f, segMagic); err != nil {
		if vouched == magicLen {
			c.found.Problem(path, err.Error(), "", func() error { return c.fs.Remove(path) })
		} else {
			c.found.Problem(path, err.Error(), "cannot be repaired: the node drops the segment at start, and its records are lost", nil)
		}
		return
	}
	fi, err := f.Stat()
	if err != nil {
		c.found.Problem(path, fmt.Sprintf("cannot be read: %v", err), "check its permissions", nil)
		return
	}
	size := fi.Size()
	if vouched > size {
		c.found.Problem(path, fmt.Sprintf("%d bytes, shorter than the %d the state vouches for", size, vouched), "cannot be repaired: the records after its end are lost (the node counts what is left)", nil)
		return
	}
	end := size
	if limit >= 0 {
		end = min(end, limit)
	}
	fr := newFrameReader(io.NewSectionReader(f, start, max(end-start, 0)), start)
	for {
		off := fr.off
		typ, body, err := fr.next()
		if err == nil {
			_, _, _, err = decodeRecord(typ, body)
		}
		switch {
		case err == nil:
			continue
		case err == io.EOF:
		case vouched < 0 || off < vouched:
			c.found.Problem(path, fmt.Sprintf("damaged at offset %d (%v), %d bytes before its end", off, err, size-off), lost, nil)
		default:
			c.found.Problem(path, fmt.Sprintf("torn tail from offset %d (%v)", off, err), "", func() error { return truncate(c.fs, path, off) })
		}
		return
	}
}
