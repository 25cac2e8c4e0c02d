package logstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// Report is what Check found, and with repair what it did.
type Report struct {
	Channels   int
	Files      int    // segment files checked
	Records    uint64 // valid records
	Damaged    int    // damaged stretches in the middle of files
	TornTails  int    // damaged tails
	BadBytes   int64  // bytes in damaged stretches and tails
	BadHeaders int    // files whose header is bad (or missing)
	Unsorted   int    // files flagged sorted whose records are not
	Leftovers  int    // temporary, superseded and unknown files
	BadState   bool   // vbuckets.state is damaged
	Repaired   int    // files repair cut, rewrote, moved aside or removed
}

// Problems returns the number of problems found.
func (r Report) Problems() int {
	n := r.Damaged + r.TornTails + r.BadHeaders + r.Unsorted + r.Leftovers
	if r.BadState {
		n++
	}
	return n
}

// Check verifies every file of the log store in dir, which must not be
// open, printing one line per problem and a summary to out. With repair it
// cuts torn tails, rewrites files with damage in the middle (keeping every
// valid record, in file order, and the original as NAME.broken), salvages
// the records of files with a bad header, removes leftover temporary and
// superseded files, and moves a damaged state file aside (Open then
// rebuilds it from the segments; the tombstones it held are lost). The
// error is for failures that stopped the check.
func Check(fsys vfs.FS, dir string, repair bool, out io.Writer) (Report, error) {
	c := &checker{fs: fsys, dir: dir, repair: repair, out: out, nvb: vbucket.Max}
	dec, err := segment.NewDecoder()
	if err != nil {
		return c.rep, err
	}
	defer dec.Close()
	c.dec = dec
	if err := c.run(); err != nil {
		return c.rep, err
	}
	r := &c.rep
	repaired := ""
	if repair {
		repaired = fmt.Sprintf("; repaired %d files", r.Repaired)
	}
	fmt.Fprintf(out, "checked %d channels, %d segment files, %d records: %d damaged stretches, %d torn tails (%d bytes), "+
		"%d bad headers, %d unsorted, %d leftover files, state %s%s\n",
		r.Channels, r.Files, r.Records, r.Damaged, r.TornTails, r.BadBytes, r.BadHeaders, r.Unsorted, r.Leftovers,
		map[bool]string{true: "damaged", false: "ok"}[r.BadState], repaired)
	return c.rep, nil
}

type checker struct {
	fs     vfs.FS
	dir    string
	repair bool
	out    io.Writer
	dec    *zstd.Decoder
	nvb    int
	rep    Report
}

func (c *checker) printf(format string, args ...any) { fmt.Fprintf(c.out, format+"\n", args...) }

// fixed reports a repair action (or why it failed).
func (c *checker) fixed(err error, format string, args ...any) error {
	if err != nil {
		c.printf("  repair failed: %v", err)
		return err
	}
	c.rep.Repaired++
	c.printf("  repaired: "+format, args...)
	return nil
}

func (c *checker) run() error {
	st, err := readState(c.fs, c.dir)
	switch {
	case err != nil:
		c.rep.BadState = true
		c.printf("%s: %v", filepath.Join(c.dir, stateName), err)
		if c.repair {
			p := filepath.Join(c.dir, stateName)
			_ = c.fixed(c.fs.Rename(p, p+".broken"), "moved it aside as %s.broken; the next start rebuilds it", stateName)
		}
	case st == nil:
		c.printf("%s: missing (created at the next start)", filepath.Join(c.dir, stateName))
	default:
		c.nvb = len(st.floors)
	}
	entries, err := c.fs.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("cannot list %q: %w", c.dir, err)
	}
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(c.dir, e.Name())
		switch {
		case e.IsDir() && engine.ValidChannelString(name):
			c.rep.Channels++
			if err := c.channel(path); err != nil {
				return err
			}
		case name == stateName || name == stateName+".broken":
		default:
			c.leftover(path)
		}
	}
	return nil
}

// leftover reports (and with repair removes) a file that is not part of
// the store; files kept by an earlier repair are only mentioned.
func (c *checker) leftover(path string) {
	if strings.HasSuffix(path, ".broken") {
		c.printf("%s: original kept by an earlier repair (delete it when satisfied)", path)
		return
	}
	c.rep.Leftovers++
	if !strings.HasSuffix(path, ".tmp") {
		c.printf("%s: unknown file (left alone)", path)
		return
	}
	c.printf("%s: leftover temporary file", path)
	if c.repair {
		_ = c.fixed(c.fs.Remove(path), "removed")
	}
}

type checkFile struct {
	path       string
	start      uint64
	gen        uint32
	compressed bool
	hdr        segment.Header
	hdrErr     error
}

func (c *checker) channel(dir string) error {
	entries, err := c.fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cannot list %q: %w", dir, err)
	}
	var files []*checkFile
	merged := map[uint64]uint32{}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		start, gen, compressed, ok := parseSegName(e.Name())
		if !ok || e.IsDir() {
			c.leftover(path)
			continue
		}
		cf := &checkFile{path: path, start: start, gen: gen, compressed: compressed}
		cf.hdr, cf.hdrErr = c.readHeader(cf)
		if cf.hdrErr == nil && cf.hdr.Flags&segment.FlagMerged != 0 {
			merged[start] = max(merged[start], gen)
		}
		files = append(files, cf)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	for _, cf := range files {
		if g, ok := merged[cf.start]; ok && cf.gen < g {
			c.rep.Leftovers++
			c.printf("%s: superseded by generation %d of its bucket (a rewrite was interrupted)", cf.path, g)
			if c.repair {
				_ = c.fixed(c.fs.Remove(cf.path), "removed")
			}
			continue
		}
		c.rep.Files++
		if err := c.segment(cf); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) readHeader(cf *checkFile) (segment.Header, error) {
	f, err := c.fs.Open(cf.path)
	if err != nil {
		return segment.Header{}, err
	}
	defer f.Close()
	var b [segment.HeaderSize]byte
	n, err := f.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return segment.Header{}, err
	}
	h, err := segment.DecodeHeader(b[:n])
	if err == nil && (h.Start != cf.start || (h.Flags&segment.FlagCompressed != 0) != cf.compressed) {
		err = fmt.Errorf("%w: header says start %#x, flags %#x", segment.ErrBadHeader, h.Start, h.Flags)
	}
	return h, err
}

// scanResult is what reading one segment file found.
type scanResult struct {
	size    int64
	records []segment.Record // valid records in file order (values copied), kept only when a rewrite needs them
	count   uint64
	maxTs   uint64
	damage  []segment.Damage
	sorted  bool
}

// scan reads a segment body from off with header h; keep keeps the records.
func (c *checker) scan(f vfs.File, h segment.Header, size int64, valid segment.Validate, keep bool) (*scanResult, error) {
	res := &scanResult{size: size, sorted: true}
	var rd interface {
		Next() bool
		Record() *segment.Record
		Damage() []segment.Damage
		Err() error
	}
	if h.Flags&segment.FlagCompressed != 0 {
		rd = segment.NewReader(f, h, size, valid, c.dec)
	} else {
		rd = segment.NewFrameScanner(f, segment.HeaderSize, size, valid)
	}
	var prev uint64
	for rd.Next() {
		r := rd.Record()
		if res.count > 0 && r.Timestamp < prev {
			res.sorted = false
		}
		prev = r.Timestamp
		res.count++
		res.maxTs = max(res.maxTs, r.Timestamp)
		if keep {
			rc := *r
			rc.Value = append([]byte(nil), r.Value...)
			res.records = append(res.records, rc)
		}
	}
	res.damage = rd.Damage()
	return res, rd.Err()
}

func (c *checker) segment(cf *checkFile) error {
	f, err := c.fs.Open(cf.path)
	if err != nil {
		return fmt.Errorf("cannot open %q: %w", cf.path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot stat %q: %w", cf.path, err)
	}
	size := fi.Size()
	if cf.hdrErr != nil {
		return c.badHeader(cf, f, size)
	}
	valid := validFor(cf.hdr, c.nvb)
	res, err := c.scan(f, cf.hdr, size, valid, false)
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", cf.path, err)
	}
	c.rep.Records += res.count
	middle := false
	for _, d := range res.damage {
		c.rep.BadBytes += d.Length
		if d.Tail {
			c.rep.TornTails++
			c.printf("%s: torn tail at offset %d: %d bytes", cf.path, d.Offset, d.Length)
		} else {
			c.rep.Damaged++
			middle = true
			c.printf("%s: damaged stretch at offset %d: %d bytes skipped", cf.path, d.Offset, d.Length)
		}
	}
	if cf.hdr.Flags&segment.FlagSorted != 0 && !res.sorted {
		c.rep.Unsorted++
		c.printf("%s: flagged sorted but records are out of timestamp order", cf.path)
	}
	if !c.repair || len(res.damage) == 0 {
		return nil
	}
	if !middle { // only a tail: cut it
		tail := res.damage[len(res.damage)-1]
		f.Close()
		_ = c.fixed(cutFile(c.fs, cf.path, tail.Offset), "cut at offset %d", tail.Offset)
		return nil
	}
	res, err = c.scan(f, cf.hdr, size, valid, true)
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", cf.path, err)
	}
	f.Close()
	_ = c.fixed(c.rewrite(cf.path, cf.hdr, res.records), "rewrote it with its %d valid records; original kept as %s.broken",
		len(res.records), filepath.Base(cf.path))
	return nil
}

// badHeader handles a segment file whose header is bad: an unfinished
// file is removed, any other has its valid frames salvaged.
func (c *checker) badHeader(cf *checkFile, f vfs.File, size int64) error {
	c.rep.BadHeaders++
	zeros, err := allZeros(f, size)
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", cf.path, err)
	}
	if size < segment.HeaderSize || zeros {
		c.printf("%s: unfinished segment (%d bytes, no header)", cf.path, size)
		if c.repair {
			f.Close()
			_ = c.fixed(c.fs.Remove(cf.path), "removed")
		}
		return nil
	}
	c.printf("%s: %v", cf.path, cf.hdrErr)
	if !c.repair {
		return nil
	}
	if cf.compressed {
		c.printf("  cannot salvage a compressed segment without its header (left alone)")
		return nil
	}
	nvb := c.nvb
	h := segment.Header{Start: cf.start, Span: ^uint64(0) - cf.start}
	res, err := c.scan(f, h, size, func(ts uint64, vb uint16) bool { return ts >= cf.start && int(vb) < nvb }, true)
	if err != nil {
		return fmt.Errorf("cannot read %q: %w", cf.path, err)
	}
	f.Close()
	h.Span = max(res.maxTs-cf.start+1, 1)
	c.rep.Records += res.count
	_ = c.fixed(c.rewrite(cf.path, h, res.records), "salvaged %d records under a new header; original kept as %s.broken",
		len(res.records), filepath.Base(cf.path))
	return nil
}

// rewrite replaces path with a file of header h holding recs, keeping the
// original as path.broken.
func (c *checker) rewrite(path string, h segment.Header, recs []segment.Record) error {
	write := func(f vfs.File) error {
		bw := bufio.NewWriter(f)
		if _, err := bw.Write(h.Append(nil)); err != nil {
			return err
		}
		if h.Flags&segment.FlagCompressed != 0 {
			enc, err := segment.NewEncoder()
			if err != nil {
				return err
			}
			defer enc.Close()
			blocks := segment.NewBlockWriter(bw, enc)
			for i := range recs {
				if err := blocks.Add(&recs[i]); err != nil {
					return err
				}
			}
			if err := blocks.Flush(); err != nil {
				return err
			}
		} else {
			var frame []byte
			for i := range recs {
				frame = segment.AppendFrame(frame[:0], &recs[i])
				if _, err := bw.Write(frame); err != nil {
					return err
				}
			}
		}
		return bw.Flush()
	}
	moveAside := func() error { return c.fs.Rename(path, path+".broken") }
	return vfs.WriteFileAtomicFunc(c.fs, path, 0o644, write, moveAside)
}

// cutFile truncates path to size and fsyncs it.
func cutFile(fsys vfs.FS, path string, size int64) error {
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot open segment %q to cut it: %w", path, err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot cut segment %q at %d: %w", path, size, err)
	}
	return nil
}
