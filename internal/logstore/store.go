package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

// Errors callers test with errors.Is; the server maps each to a status.
var (
	ErrClosed         = errors.New("logstore: store closed")                              // after Close
	ErrBadChannel     = errors.New("logstore: bad channel name")                          // not 1..255 of [A-Za-z0-9_-]
	ErrBadRange       = errors.New("logstore: bad range: from is after to")               // Range with from > to
	ErrBadFilter      = errors.New("logstore: bad filter")                                // a regexp that does not compile
	ErrValueTooBig    = errors.New("logstore: value too big")                             // over Config.MaxValueSize
	ErrNoSpace        = errors.New("logstore: no space left on device")                   // disk full (wraps ENOSPC)
	ErrBadMutation    = errors.New("logstore: mutation not applicable to the log engine") // Apply/Stream/DropVBucket input
	ErrVBucketDropped = errors.New("logstore: vbucket dropped")                           // ends a Stream of a dropped vBucket
)

// noSpace marks a full-disk error with ErrNoSpace (keeping the original).
func noSpace(err error) error {
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// Store is the log engine: channels of (timestamp, value) records kept in
// time-bucketed segment files. It is safe for concurrent use.
//
// Locks, always taken in this order: maintMu serialises maintenance
// (retention, channel removal, vBucket drop), which replaces and deletes
// files; syncMu serialises Sync; writeMu is held by whoever writes files (the committer for one
// batch, maintenance while it swaps files); mu guards the in-memory index.
// The index (channels, their segment lists, seqnos, tombstones) changes
// only with both writeMu and mu held, so a writer may read it under
// writeMu alone.
type Store struct {
	cfg  Config
	fs   vfs.FS
	log  *slog.Logger
	span uint64
	dec  *zstd.Decoder

	maintMu  sync.Mutex
	maintGen uint64 // bumped under maintMu whenever maintenance replaces or deletes files

	syncMu  sync.Mutex // serialises Sync (taken before writeMu)
	writeMu sync.Mutex
	open    []*segFile // segments with an open writer
	useTick uint64     // batch counter, for LRU eviction of writers

	mu       sync.RWMutex
	closed   bool
	channels map[string]*channel
	high     []uint64 // per vBucket
	rr       uint64   // round-robin vBucket counter
	states   *vbmap.States
	tombs    tombs
	subs     map[uint16]map[*sub]struct{}

	qmu     sync.Mutex
	qclosed bool
	queue   []*request
	qsignal chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
	st   counters

	marks marks // engine.Persister (persist.go)
}

// channel is one log channel: its directory and segments.
type channel struct {
	name      string
	dir       string
	segs      []*segFile        // sorted by (bucket start, generation)
	vbMax     []uint64          // highest seqno of each vBucket found in the channel's files (0: none)
	rewriting map[uint64]uint32 // bucket start -> generation a rewrite in progress will write
}

// segFile is one segment file in the index.
type segFile struct {
	path    string
	hdr     segment.Header
	gen     uint32
	size    int64 // bytes holding committed records (the file's valid end)
	records uint64
	bytes   uint64 // value bytes
	minTs   uint64
	maxTs   uint64
	sorted  bool // records are in timestamp order
	vbs     bitset
	w       *writer // open for appends (guarded by writeMu)
	broken  bool    // a failed write could not be rolled back: no more appends
}

// writer is a segment file open for appends.
type writer struct {
	f       vfs.File
	dirty   bool // written since the last fsync
	used    uint64
	syncing bool // Sync is fsyncing f without writeMu
	orphan  bool // closed while syncing: Sync closes f once its fsync is done
}

func (sf *segFile) compressed() bool { return sf.hdr.Flags&segment.FlagCompressed != 0 }

// add accounts for one record found in or appended to the file.
func (sf *segFile) add(ts uint64, vb uint16, n int) {
	if sf.records == 0 {
		sf.minTs, sf.maxTs = ts, ts
	} else {
		if ts < sf.maxTs {
			sf.sorted = false
		}
		sf.minTs, sf.maxTs = min(sf.minTs, ts), max(sf.maxTs, ts)
	}
	sf.records++
	sf.bytes += uint64(n)
	sf.vbs.set(vb)
}

// bitset is a set of vBuckets.
type bitset []uint64

func newBitset(n int) bitset       { return make(bitset, (n+63)/64) }
func (b bitset) set(i uint16)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i uint16) bool { return b[i/64]&(1<<(i%64)) != 0 }

// segName returns the file name of a segment.
func segName(start uint64, gen uint32, compressed bool) string {
	ext := ".seg"
	if compressed {
		ext = ".segz"
	}
	return fmt.Sprintf("%016x-%08x%s", start, gen, ext)
}

// parseSegName parses a name made by segName.
func parseSegName(name string) (start uint64, gen uint32, compressed, ok bool) {
	base, ext, found := strings.Cut(name, ".")
	if !found || (ext != "seg" && ext != "segz") || len(base) != 25 || base[16] != '-' {
		return 0, 0, false, false
	}
	if _, err := fmt.Sscanf(base, "%016x-%08x", &start, &gen); err != nil {
		return 0, 0, false, false
	}
	if segName(start, gen, ext == "segz") != name {
		return 0, 0, false, false
	}
	return start, gen, ext == "segz", true
}

// Open opens the store in cfg.Dir, creating it if needed. It reads every
// segment: a torn tail is cut (and logged with its file, offset and
// length), damage in the middle of a file is counted and skipped from then
// on, a file with a bad header is logged and ignored.
func Open(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:      cfg,
		fs:       cfg.FS,
		log:      cfg.Logger.With("engine", "log"),
		span:     uint64(cfg.SegmentSpan / 1e9),
		channels: map[string]*channel{},
		subs:     map[uint16]map[*sub]struct{}{},
		states:   vbmap.NewStates(cfg.VBuckets),
		qsignal:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	if err := s.fs.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create %q: %w", cfg.Dir, err)
	}
	if s.dec, err = segment.NewDecoder(); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		s.dec.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.commitLoop()
	if cfg.Fsync > 0 {
		s.wg.Add(1)
		go s.syncLoop()
	}
	if cfg.MaintainEvery > 0 && (cfg.CompressAfter > 0 || cfg.Retention > 0) {
		s.wg.Add(1)
		go s.maintainLoop()
	}
	return s, nil
}

// load reads the state file and every channel directory.
func (s *Store) load() error {
	st, err := readState(s.fs, s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("cannot open log store %q: %w", s.cfg.Dir, err)
	}
	if st == nil {
		st = &state{floors: make([]uint64, s.cfg.VBuckets), tombs: tombs{}}
		if err := writeState(s.fs, s.cfg.Dir, st); err != nil {
			return fmt.Errorf("cannot create log store %q: %w", s.cfg.Dir, err)
		}
	}
	if len(st.floors) != s.cfg.VBuckets {
		return fmt.Errorf("cannot open log store %q: it has %d vbuckets, configured %d",
			s.cfg.Dir, len(st.floors), s.cfg.VBuckets)
	}
	s.high, s.tombs = st.floors, st.tombs
	for _, m := range s.tombs {
		for vb, seq := range m {
			s.high[vb] = max(s.high[vb], seq)
		}
	}
	entries, err := s.fs.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("cannot list %q: %w", s.cfg.Dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir() && engine.ValidChannelString(name):
			if err := s.loadChannel(name); err != nil {
				return err
			}
		case name == stateName:
		case strings.HasSuffix(name, ".tmp"):
			s.removeLeftover(filepath.Join(s.cfg.Dir, name))
		default:
			s.log.Warn("ignoring unknown file in log directory", "file", filepath.Join(s.cfg.Dir, name))
		}
	}
	return nil
}

func (s *Store) removeLeftover(path string) {
	s.log.Warn("removing leftover temporary file", "file", path)
	if err := s.fs.Remove(path); err != nil {
		s.log.Error("cannot remove leftover temporary file", "file", path, "err", err)
	}
}

// segCandidate is a segment file found in a channel directory.
type segCandidate struct {
	path  string
	start uint64
	gen   uint32
	hdr   segment.Header
	f     vfs.File
	size  int64
}

// loadChannel indexes the segments of one channel directory.
func (s *Store) loadChannel(name string) error {
	dir := filepath.Join(s.cfg.Dir, name)
	entries, err := s.fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cannot list channel %q: %w", dir, err)
	}
	var cands []*segCandidate
	defer func() {
		for _, c := range cands {
			if c.f != nil {
				c.f.Close()
			}
		}
	}()
	kept := 0
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		start, gen, compressed, ok := parseSegName(e.Name())
		switch {
		case ok && !e.IsDir():
			c, err := s.openCandidate(path, start, gen, compressed)
			if err != nil {
				return err
			}
			if c != nil {
				cands = append(cands, c)
			} else if s.exists(path) {
				kept++
			}
		case strings.HasSuffix(e.Name(), ".tmp"):
			s.removeLeftover(path)
		default:
			s.log.Warn("ignoring unknown file in channel directory", "file", path)
			kept++
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].start != cands[j].start {
			return cands[i].start < cands[j].start
		}
		return cands[i].gen < cands[j].gen
	})
	cands = s.dropSuperseded(cands)
	c := s.newChannel(name, dir)
	for _, cand := range cands {
		sf, err := s.scanCandidate(c, cand)
		if err != nil {
			return err
		}
		c.segs = append(c.segs, sf)
	}
	if len(c.segs) == 0 {
		if kept == 0 {
			if err := s.fs.Remove(dir); err != nil {
				s.log.Warn("cannot remove empty channel directory", "dir", dir, "err", err)
			}
		}
		return nil
	}
	s.channels[name] = c
	return nil
}

func (s *Store) exists(path string) bool {
	_, err := s.fs.Stat(path)
	return err == nil
}

// openCandidate opens a segment file and reads its header. It returns nil
// for a file it removed (shorter than a header, or only zeros) or ignores
// (bad header).
func (s *Store) openCandidate(path string, start uint64, gen uint32, compressed bool) (*segCandidate, error) {
	f, err := s.fs.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open segment %q: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot stat segment %q: %w", path, err)
	}
	size := fi.Size()
	var hb [segment.HeaderSize]byte
	n, rerr := f.ReadAt(hb[:], 0)
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("cannot read segment %q: %w", path, rerr)
	}
	hdr, herr := segment.DecodeHeader(hb[:n])
	if herr == nil && (hdr.Start != start || (hdr.Flags&segment.FlagCompressed != 0) != compressed) {
		herr = fmt.Errorf("%w: header says start %#x flags %#x", segment.ErrBadHeader, hdr.Start, hdr.Flags)
	}
	if herr != nil {
		zeros, zerr := allZeros(f, size)
		f.Close()
		if zerr != nil {
			return nil, fmt.Errorf("cannot read segment %q: %w", path, zerr)
		}
		if size < segment.HeaderSize || zeros {
			s.log.Warn("removing segment left unfinished by a crash", "file", path, "bytes", size)
			if err := s.fs.Remove(path); err != nil {
				return nil, fmt.Errorf("cannot remove segment %q: %w", path, err)
			}
			return nil, nil
		}
		s.st.badFiles.Add(1)
		s.log.Error("ignoring segment with a bad header (run shoal check --repair)", "file", path, "err", herr)
		return nil, nil
	}
	return &segCandidate{path: path, start: start, gen: gen, hdr: hdr, f: f, size: size}, nil
}

// allZeros reports whether the first size bytes of f are all zero.
func allZeros(f vfs.File, size int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if bytes.ContainsFunc(buf[:n], func(r rune) bool { return r != 0 }) {
			return false, nil
		}
		if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
			return false, err
		}
		off += int64(n)
	}
	return true, nil
}

// dropSuperseded removes the files that a merged file of the same bucket
// and a higher generation replaced (a rewrite that crashed before deleting
// its inputs). cands is sorted by (start, gen).
func (s *Store) dropSuperseded(cands []*segCandidate) []*segCandidate {
	merged := map[uint64]uint32{}
	for _, c := range cands {
		if c.hdr.Flags&segment.FlagMerged != 0 {
			merged[c.start] = max(merged[c.start], c.gen)
		}
	}
	out := cands[:0]
	for _, c := range cands {
		if g, ok := merged[c.start]; ok && c.gen < g {
			s.log.Warn("removing segment superseded by a rewrite", "file", c.path, "by_generation", g)
			c.f.Close()
			c.f = nil
			if err := s.fs.Remove(c.path); err != nil {
				s.log.Error("cannot remove superseded segment", "file", c.path, "err", err)
			}
			continue
		}
		out = append(out, c)
	}
	return out
}

// validator returns the frame plausibility check for a file with header h.
func (s *Store) validator(h segment.Header) segment.Validate { return validFor(h, s.cfg.VBuckets) }

// validFor accepts the frames whose timestamp lies in h's bucket and whose
// vBucket is below nvb.
func validFor(h segment.Header, nvb int) segment.Validate {
	return func(ts uint64, vb uint16) bool { return h.Holds(ts) && int(vb) < nvb }
}

// scanCandidate reads every record of a segment file to index it, cutting
// a torn tail.
func (s *Store) scanCandidate(c *channel, cand *segCandidate) (*segFile, error) {
	sf := &segFile{path: cand.path, hdr: cand.hdr, gen: cand.gen, sorted: true, vbs: newBitset(s.cfg.VBuckets)}
	rd := segment.NewReader(cand.f, cand.hdr, cand.size, s.validator(cand.hdr), s.dec)
	for rd.Next() {
		r := rd.Record()
		sf.add(r.Timestamp, r.VBucket, len(r.Value))
		c.vbMax[r.VBucket] = max(c.vbMax[r.VBucket], r.Seqno)
		s.high[r.VBucket] = max(s.high[r.VBucket], r.Seqno)
	}
	if err := rd.Err(); err != nil {
		return nil, fmt.Errorf("cannot read segment %q: %w", cand.path, err)
	}
	sf.size = cand.size
	for _, d := range rd.Damage() {
		if !d.Tail {
			s.st.corruptAtOpen.Add(1)
			s.log.Warn("skipping damaged bytes in segment", "file", cand.path, "offset", d.Offset, "bytes", d.Length)
			continue
		}
		if err := cutFile(s.fs, cand.path, d.Offset); err != nil {
			return nil, err
		}
		s.st.tailsCut.Add(1)
		s.st.bytesCut.Add(uint64(d.Length))
		s.log.Warn("cut torn tail of segment", "file", cand.path, "offset", d.Offset, "bytes", d.Length)
		sf.size = d.Offset
	}
	return sf, nil
}

// Close waits for queued appends, stops the background work, fsyncs and
// closes every file. Streams end with ErrClosed; iterators fail from their
// next batch on.
func (s *Store) Close() error {
	s.qmu.Lock()
	if s.qclosed {
		s.qmu.Unlock()
		return nil
	}
	s.qclosed = true
	s.qmu.Unlock()
	s.signal()
	close(s.stop)
	s.wg.Wait()

	s.maintMu.Lock()
	defer s.maintMu.Unlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.endSubs(func(*sub) bool { return true }, ErrClosed)
	s.mu.Unlock()
	var errs []error
	for len(s.open) > 0 {
		errs = append(errs, s.closeWriter(s.open[0]))
	}
	s.dec.Close()
	return errors.Join(errs...)
}

// bucket returns the start of the time bucket of ts.
func (s *Store) bucket(ts uint64) uint64 { return ts - ts%s.span }

// counters are the Store's statistics.
type counters struct {
	appends, appendBytes, appendErrors          atomic.Uint64
	fsyncs, fsyncNanos, fsyncMaxNanos           atomic.Uint64
	fsyncBuckets                                [len(FsyncBounds) + 1]atomic.Uint64
	tailsCut, bytesCut, corruptAtOpen, badFiles atomic.Uint64
	corruptRead, compressed, deleted            atomic.Uint64
}

// FsyncBounds are the upper bounds of the fsync latency buckets of Stats.
var FsyncBounds = [...]time.Duration{10 * time.Microsecond, 100 * time.Microsecond,
	time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}

// Stats are the Store's counters since Open, and its current size.
type Stats struct {
	Appends      uint64 // records appended
	AppendBytes  uint64 // value bytes appended
	AppendErrors uint64 // appends refused by an I/O error (a full disk included)
	Fsyncs       uint64
	FsyncTime    time.Duration // total time spent in fsync
	FsyncMax     time.Duration
	// FsyncBuckets counts fsyncs by latency: FsyncBuckets[i] those up to
	// FsyncBounds[i], the last one those above every bound.
	FsyncBuckets  [len(FsyncBounds) + 1]uint64
	TailsCut      uint64 // torn tails cut at open (each the unfinished end of one write)
	BytesCut      uint64 // bytes those tails held
	CorruptAtOpen uint64 // damaged stretches found in the middle of files at open
	CorruptRead   uint64 // damaged stretches met by reads
	BadFiles      uint64 // segment files ignored at open for a bad header
	Compressed    uint64 // segments written compressed by retention
	Deleted       uint64 // segment files deleted by retention
	Channels      int    // current channels
	Segments      int    // current segment files
}

// Stats returns the store's statistics.
func (s *Store) Stats() Stats {
	st := Stats{
		Appends: s.st.appends.Load(), AppendBytes: s.st.appendBytes.Load(), AppendErrors: s.st.appendErrors.Load(),
		Fsyncs: s.st.fsyncs.Load(), FsyncTime: time.Duration(s.st.fsyncNanos.Load()),
		FsyncMax: time.Duration(s.st.fsyncMaxNanos.Load()),
		TailsCut: s.st.tailsCut.Load(), BytesCut: s.st.bytesCut.Load(), CorruptAtOpen: s.st.corruptAtOpen.Load(),
		CorruptRead: s.st.corruptRead.Load(), BadFiles: s.st.badFiles.Load(),
		Compressed: s.st.compressed.Load(), Deleted: s.st.deleted.Load(),
	}
	for i := range st.FsyncBuckets {
		st.FsyncBuckets[i] = s.st.fsyncBuckets[i].Load()
	}
	s.mu.RLock()
	st.Channels = len(s.channels)
	for _, c := range s.channels {
		st.Segments += len(c.segs)
	}
	s.mu.RUnlock()
	return st
}

// observeFsync records one fsync's latency.
func (s *Store) observeFsync(d time.Duration) {
	s.st.fsyncs.Add(1)
	s.st.fsyncNanos.Add(uint64(d))
	for {
		m := s.st.fsyncMaxNanos.Load()
		if uint64(d) <= m || s.st.fsyncMaxNanos.CompareAndSwap(m, uint64(d)) {
			break
		}
	}
	i := sort.Search(len(FsyncBounds), func(i int) bool { return d <= FsyncBounds[i] })
	s.st.fsyncBuckets[i].Add(1)
	if fn := s.cfg.OnFsync; fn != nil {
		fn(d)
	}
}
