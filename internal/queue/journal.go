package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// journalMagic starts every journal segment written; journalMagicV1 those
// written before the per-vBucket channel removal (entry 'Z'), which are
// still read.
const (
	journalMagic   = "SHQJNL02"
	journalMagicV1 = "SHQJNL01"
)

// journalSuffix ends the name of every journal segment.
const journalSuffix = ".jnl"

// Journal entry types (the frame type byte).
const (
	entryPush        = 'P' // a push to one or more channels
	entryPop         = 'O' // records popped from one queue
	entryApplyPop    = 'A' // a replicated pop
	entrySubscribe   = 'S' // a subscription
	entryUnsubscribe = 'U' // a subscriber removed
	entryRemove      = 'X' // a channel removed in every vBucket (written before per-vBucket removals)
	entryApplyRemove = 'Y' // a replicated channel removal in one vBucket
	entryRemoveIn    = 'Z' // a channel removed in the listed (active) vBuckets
	entryDrop        = 'D' // a vBucket dropped
)

// pushTarget is one channel of a push and the record's seqno there.
type pushTarget struct {
	channel string
	seqno   uint64
}

// popRef is one popped record: its vBucket and push seqno, and the seqno
// of the pop.
type popRef struct {
	vb    uint16
	ref   uint64
	seqno uint64
}

// entry is a decoded journal entry. Which fields are set depends on typ
// (see the package comment for the layouts).
type entry struct {
	typ        byte
	channel    string
	subscriber string // pop (when subscribed), subscribe, replicated pop (the mutation's key)
	subscribed bool
	vb         uint16
	seqno      uint64
	ref        uint64
	targets    []pushTarget
	pops       []popRef
	removals   []vbRemoval
	value      []byte
}

func appendPushEntry(dst []byte, vb uint16, targets []pushTarget, value []byte) []byte {
	start := len(dst)
	dst = beginFrame(dst, entryPush)
	dst = appendU16(dst, vb)
	dst = appendU8(dst, uint8(len(targets)))
	for _, t := range targets {
		dst = appendStr8(dst, t.channel)
		dst = appendU64(dst, t.seqno)
	}
	dst = append(dst, value...)
	return finishFrame(dst, start)
}

func appendPopEntry(dst []byte, q *queue, pops []popRef) []byte {
	start := len(dst)
	dst = beginFrame(dst, entryPop)
	dst = appendStr8(dst, q.ch.name)
	sub := uint8(0)
	if q.ch.subscribed {
		sub = 1
	}
	dst = appendU8(dst, sub)
	dst = appendStr8(dst, q.subscriber)
	dst = appendU32(dst, uint32(len(pops)))
	for _, p := range pops {
		dst = appendU16(dst, p.vb)
		dst = appendU64(dst, p.ref)
		dst = appendU64(dst, p.seqno)
	}
	return finishFrame(dst, start)
}

func appendApplyPopEntry(dst []byte, channel, key string, vb uint16, seqno, ref uint64) []byte {
	start := len(dst)
	dst = beginFrame(dst, entryApplyPop)
	dst = appendStr8(dst, channel)
	dst = appendStr8(dst, key)
	dst = appendU16(dst, vb)
	dst = appendU64(dst, seqno)
	dst = appendU64(dst, ref)
	return finishFrame(dst, start)
}

func appendNameEntry(dst []byte, typ byte, channel, subscriber string) []byte {
	start := len(dst)
	dst = beginFrame(dst, typ)
	dst = appendStr8(dst, channel)
	if typ == entrySubscribe || typ == entryUnsubscribe {
		dst = appendStr8(dst, subscriber)
	}
	return finishFrame(dst, start)
}

func appendApplyRemoveEntry(dst []byte, channel string, vb uint16, seqno uint64) []byte {
	start := len(dst)
	dst = beginFrame(dst, entryApplyRemove)
	dst = appendStr8(dst, channel)
	dst = appendU16(dst, vb)
	dst = appendU64(dst, seqno)
	return finishFrame(dst, start)
}

func appendRemoveInEntry(dst []byte, channel string, removals []vbRemoval) []byte {
	start := len(dst)
	dst = beginFrame(dst, entryRemoveIn)
	dst = appendStr8(dst, channel)
	dst = appendU32(dst, uint32(len(removals)))
	for _, r := range removals {
		dst = appendU16(dst, r.vb)
		dst = appendU64(dst, r.seqno)
	}
	return finishFrame(dst, start)
}

func appendDropEntry(dst []byte, vb uint16) []byte {
	start := len(dst)
	dst = beginFrame(dst, entryDrop)
	dst = appendU16(dst, vb)
	return finishFrame(dst, start)
}

// decodeEntry decodes a journal entry of a store with nvb vBuckets. It
// checks every field: names, vBuckets, counts.
func decodeEntry(typ byte, body []byte, nvb int) (entry, error) {
	e := entry{typ: typ}
	d := newFieldDecoder(body)
	badName := false
	channel := func() string {
		b := d.bytes8()
		if d.err == nil && !engine.ValidChannel(b) {
			badName = true
		}
		return string(b)
	}
	switch typ {
	case entryPush:
		e.vb = d.u16()
		n := int(d.u8())
		for range n {
			e.targets = append(e.targets, pushTarget{channel: channel(), seqno: d.u64()})
		}
		if n == 0 {
			return e, fmt.Errorf("%w: push entry without channels", ErrCorrupt)
		}
		e.value = d.rest()
	case entryPop:
		e.channel = channel()
		sub := d.u8()
		e.subscribed = sub == 1
		e.subscriber = string(d.bytes8())
		if sub > 1 || (sub == 0 && e.subscriber != "") {
			return e, fmt.Errorf("%w: pop entry with subscribed flag %d and subscriber %q", ErrCorrupt, sub, e.subscriber)
		}
		n := d.u32()
		if d.err == nil && uint64(n)*18 != uint64(d.len()) {
			return e, fmt.Errorf("%w: pop entry claims %d records in %d bytes", ErrCorrupt, n, d.len())
		}
		for range n {
			p := popRef{vb: d.u16(), ref: d.u64(), seqno: d.u64()}
			if int(p.vb) >= nvb {
				return e, fmt.Errorf("%w: vbucket %d out of range", ErrCorrupt, p.vb)
			}
			e.pops = append(e.pops, p)
		}
	case entryApplyPop:
		e.channel = channel()
		e.subscriber = string(d.bytes8())
		e.vb, e.seqno, e.ref = d.u16(), d.u64(), d.u64()
	case entrySubscribe, entryUnsubscribe:
		e.channel = channel()
		e.subscriber = string(d.bytes8())
	case entryRemove:
		e.channel = channel()
	case entryApplyRemove:
		e.channel = channel()
		e.vb, e.seqno = d.u16(), d.u64()
	case entryRemoveIn:
		e.channel = channel()
		n := d.u32()
		if d.err == nil && uint64(n)*10 != uint64(d.len()) {
			return e, fmt.Errorf("%w: removal entry claims %d vbuckets in %d bytes", ErrCorrupt, n, d.len())
		}
		for range n {
			r := vbRemoval{vb: d.u16(), seqno: d.u64()}
			if int(r.vb) >= nvb {
				return e, fmt.Errorf("%w: vbucket %d out of range", ErrCorrupt, r.vb)
			}
			e.removals = append(e.removals, r)
		}
	case entryDrop:
		e.vb = d.u16()
	default:
		return e, fmt.Errorf("%w: unknown journal entry type %q", ErrCorrupt, typ)
	}
	if err := d.finish(); err != nil {
		return e, fmt.Errorf("%w: journal entry %q: %w", ErrCorrupt, typ, err)
	}
	if int(e.vb) >= nvb {
		return e, fmt.Errorf("%w: vbucket %d out of range", ErrCorrupt, e.vb)
	}
	if badName {
		return e, fmt.Errorf("%w: bad channel name in journal entry %q", ErrCorrupt, typ)
	}
	if !validSubscriber(e.subscriber) {
		return e, fmt.Errorf("%w: bad subscriber name in journal entry %q", ErrCorrupt, typ)
	}
	return e, nil
}

// journal is the append-only log of every mutation in journal mode. Writes
// happen under the store's lock; a flusher goroutine fsyncs what was
// written, either as soon as something is (always mode: every writer that
// arrives during an fsync is covered by the next one, the group commit) or
// every interval.
type journal struct {
	fs       vfs.FS
	log      *slog.Logger
	dir      string
	interval time.Duration // 0: fsync before acknowledging

	mu       sync.Mutex // guards the fields below; never held during an fsync
	w        appender
	gen      uint64 // number of the segment w writes
	appended uint64 // bytes appended since open: the log sequence number
	synced   uint64 // appended value covered by the last fsync
	failed   error  // a failed fsync: nothing can be trusted after it
	syncedCh chan struct{}

	syncMu  sync.Mutex // held during an fsync and while switching segments
	kick    chan struct{}
	started bool
	stop    chan struct{}
	done    chan struct{}
}

func newJournal(fsys vfs.FS, log *slog.Logger, dir string, gen uint64, interval time.Duration) *journal {
	return &journal{
		fs: fsys, log: log, dir: dir, gen: gen, interval: interval,
		syncedCh: make(chan struct{}),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (j *journal) segPath(gen uint64) string {
	return filepath.Join(j.dir, fmt.Sprintf("%016x%s", gen, journalSuffix))
}

// start runs the flusher.
func (j *journal) start() {
	j.started = true
	go j.run()
}

func (j *journal) run() {
	defer close(j.done)
	var tick <-chan time.Time
	if j.interval > 0 {
		t := time.NewTicker(j.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-j.stop:
			return
		case <-j.kick:
		case <-tick:
		}
		if err := j.sync(); err != nil {
			j.log.Error("journal sync failed", "err", err)
		}
	}
}

// append writes a frame and returns the sequence number to wait for.
func (j *journal) append(b []byte) (uint64, error) {
	j.mu.Lock()
	if j.failed != nil {
		j.mu.Unlock()
		return 0, j.failed
	}
	err := j.w.write(b)
	if err == nil {
		j.appended += uint64(len(b))
	}
	lsn := j.appended
	j.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("cannot append to journal: %w", err)
	}
	if j.interval == 0 {
		select {
		case j.kick <- struct{}{}:
		default:
		}
	}
	return lsn, nil
}

// wait blocks until an fsync covered lsn.
func (j *journal) wait(ctx context.Context, lsn uint64) error {
	for {
		j.mu.Lock()
		synced, failed, ch := j.synced, j.failed, j.syncedCh
		j.mu.Unlock()
		if synced >= lsn {
			return nil
		}
		if failed != nil {
			return failed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sync fsyncs what was appended so far.
func (j *journal) sync() error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	j.mu.Lock()
	f, target, failed := j.w.f, j.appended, j.failed
	done := j.synced >= target
	j.mu.Unlock()
	if failed != nil || done {
		return failed
	}
	err := f.Sync()
	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		j.failed = fmt.Errorf("journal fsync failed; the store refuses writes until it is reopened: %w", err)
	} else {
		j.synced = max(j.synced, target)
	}
	close(j.syncedCh)
	j.syncedCh = make(chan struct{})
	return j.failed
}

// createSegment creates segment gen, durable and empty but for its magic.
func (j *journal) createSegment(gen uint64) (vfs.File, error) {
	path := j.segPath(gen)
	f, err := j.fs.Create(path)
	if err == nil {
		a := appender{f: f}
		if err = a.write([]byte(journalMagic)); err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = j.fs.SyncDir(j.dir)
		}
		if err != nil {
			_ = f.Close()
			_ = j.fs.Remove(path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cannot create journal segment %q: %w", path, err)
	}
	return f, nil
}

// switchTo makes f (segment gen, just created) the one appended to, once a
// state file covers everything written before: waiters are released.
// Older segments are deleted.
func (j *journal) switchTo(f vfs.File, gen uint64) {
	j.syncMu.Lock()
	j.mu.Lock()
	old := j.w.f
	j.w, j.gen = appender{f: f, size: magicLen}, gen
	j.synced = j.appended
	close(j.syncedCh)
	j.syncedCh = make(chan struct{})
	j.mu.Unlock()
	j.syncMu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	gens, err := j.segments()
	if err != nil {
		j.log.Warn("cannot list journal segments to delete", "err", err)
		return
	}
	for _, g := range gens {
		if g < gen {
			if err := j.fs.Remove(j.segPath(g)); err != nil {
				j.log.Warn("cannot delete journal segment", "file", j.segPath(g), "err", err)
			}
		}
	}
}

// segments lists the segment numbers in the journal directory, ascending.
func (j *journal) segments() ([]uint64, error) {
	ents, err := j.fs.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("cannot list journal directory %q: %w", j.dir, err)
	}
	var gens []uint64
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), journalSuffix)
		if !ok || len(hex) != 16 {
			j.log.Warn("ignoring unknown file in journal directory", "dir", j.dir, "file", e.Name())
			continue
		}
		g, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return gens, nil
}

// replay calls apply for every entry of the segments from first on, in
// order. A torn or corrupt tail of the last segment is what a crash leaves
// and is cut off; damage anywhere else is an error. It returns the number
// of the last segment (first-1 when there is none).
func (j *journal) replay(first uint64, apply func(typ byte, body []byte) error) (uint64, error) {
	gens, err := j.segments()
	if err != nil {
		return 0, err
	}
	last := first - 1
	var todo []uint64
	for _, g := range gens {
		if g < first {
			j.log.Warn("deleting journal segment older than the state", "file", j.segPath(g))
			if err := j.fs.Remove(j.segPath(g)); err != nil {
				return 0, fmt.Errorf("cannot delete old journal segment: %w", err)
			}
			continue
		}
		todo = append(todo, g)
	}
	for i, g := range todo {
		if g != first+uint64(i) {
			return 0, fmt.Errorf("%w: journal segment %s missing", ErrCorrupt, j.segPath(first+uint64(i)))
		}
		if err := j.replaySegment(g, i == len(todo)-1, apply); err != nil {
			return 0, err
		}
		last = g
	}
	return last, nil
}

func (j *journal) replaySegment(gen uint64, isLast bool, apply func(typ byte, body []byte) error) error {
	path := j.segPath(gen)
	f, err := j.fs.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open journal segment: %w", err)
	}
	defer f.Close()
	if err := readMagic(f, journalMagic, journalMagicV1); err != nil {
		if !isLast {
			return err
		}
		// A crash right after creating the segment.
		j.log.Warn("journal segment without a header", "file", path, "err", err)
		return nil
	}
	fr := newFrameReader(&offsetReader{f: f, off: magicLen}, magicLen)
	for {
		typ, body, err := fr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if !isLast || !(errors.Is(err, errTorn) || errors.Is(err, ErrCorrupt)) {
				return fmt.Errorf("cannot replay journal segment %q: %w", path, err)
			}
			j.log.Warn("cutting torn tail of journal", "file", path, "offset", fr.off, "err", err)
			if err := f.Truncate(fr.off); err != nil {
				return fmt.Errorf("cannot cut journal segment %q: %w", path, err)
			}
			return nil
		}
		if err := apply(typ, body); err != nil {
			return fmt.Errorf("cannot replay journal segment %q at %d: %w", path, fr.off, err)
		}
	}
}

// close stops the flusher and closes the segment.
func (j *journal) close() {
	if j.started {
		close(j.stop)
		<-j.done
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.w.f != nil {
		_ = j.w.f.Close()
		j.w.f = nil
	}
}

// marks returns the bytes appended and those an fsync (or a checkpoint)
// covered, and a channel closed at the next fsync or checkpoint.
func (j *journal) marks() (written, synced uint64, moved <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.appended, j.synced, j.syncedCh
}
