package dump

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vfs"
)

// fakeClock is a manual clock; every After call is reported on waits.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
	waits  chan time.Duration
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), waits: make(chan time.Duration, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	c.mu.Unlock()
	c.waits <- d
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			keep = append(keep, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = keep
}

func newTestManager(t *testing.T, dir string, src Source, clk *fakeClock, fsys vfs.FS) *Manager {
	t.Helper()
	m, err := NewManager(Config{
		FS: fsys, Dir: dir, VBuckets: faultVBuckets, Source: src, Interval: time.Hour,
		Logger: (&logBuffer{}).logger(), Now: clk.Now, After: clk.After,
		FirstDelay: func(d time.Duration) time.Duration { return d / 3 },
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManagerPeriodicOnDemandAndFinalDumps(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 100, 10)
	s.fill("b", 50, 10)
	clk := newFakeClock()
	start := clk.Now()
	m := newTestManager(t, dir, s, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()

	if d := <-clk.waits; d != 20*time.Minute {
		t.Fatalf("first delay %v, want 20m", d)
	}
	if st := m.Stats(); !st.Next.Equal(start.Add(20*time.Minute)) || st.Dumps != 0 {
		t.Fatalf("stats before the first dump %+v", st)
	}
	clk.Advance(20 * time.Minute)
	if d := <-clk.waits; d != time.Hour {
		t.Fatalf("second delay %v, want 1h", d)
	}
	st := m.Stats()
	if st.Dumps != 1 || st.Failures != 0 || st.Records != 150 || len(st.Last) != 2 || st.Last[0].Channel != "a" || st.Last[1].Records != 50 {
		t.Fatalf("stats after the first dump %+v", st)
	}
	got, _ := loadDir(t, dir, OnCorruptFail)
	sameData(t, got, s)

	s.put("a", "on-demand", "x", 0)
	res, err := m.DumpNow(context.Background())
	if err != nil || len(res) != 2 || res[0].Records != 101 {
		t.Fatalf("DumpNow: %+v, %v", res, err)
	}

	s.put("b", "at-shutdown", "y", 0)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, _ = loadDir(t, dir, OnCorruptFail)
	sameData(t, got, s)
	if st := m.Stats(); st.Dumps != 3 || !st.Next.IsZero() || st.Running {
		t.Fatalf("stats after shutdown %+v", st)
	}
}

func TestManagerCountsFailures(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 10, 10)
	s.fill("b", 10, 10)
	full := vfs.InjectorFunc(func(op vfs.Op, path string, n int) (int, error) {
		if op == vfs.OpWrite && strings.HasSuffix(path, "b"+TmpExt) {
			return 0, vfs.ErrNoSpace
		}
		return n, nil
	})
	m := newTestManager(t, dir, s, newFakeClock(), vfs.Faulty(vfs.Default, full))
	res, err := m.DumpNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "b"+TmpExt) || res[0].Err != nil || res[1].Err == nil {
		t.Fatalf("DumpNow: %+v, %v", res, err)
	}
	st := m.Stats()
	if st.Failures != 1 || st.LastError == nil || st.Records != 10 || st.Dumps != 1 {
		t.Fatalf("stats %+v", st)
	}
	got, _ := loadDir(t, dir, OnCorruptFail)
	if len(got.contents()["a"]) != 10 || got.contents()["b"] != nil {
		t.Fatalf("loaded %v", got.contents())
	}
}

// blockingSource blocks in SnapshotChannel until release is closed.
type blockingSource struct {
	*fakeStore
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *blockingSource) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.fakeStore.SnapshotChannel(ch, fn)
}

func TestManagerShutdownAbandonsRunningDump(t *testing.T) {
	dir := t.TempDir()
	s := newFakeStore(faultVBuckets)
	s.fill("a", 100, 10)
	src := &blockingSource{fakeStore: s, entered: make(chan struct{}), release: make(chan struct{})}
	clk := newFakeClock()
	m := newTestManager(t, dir, src, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	<-clk.waits
	clk.Advance(time.Hour)
	<-src.entered // the periodic dump is running

	// A second dump waits for the first; its own context ends the wait.
	short, stop := context.WithCancel(context.Background())
	stop()
	if _, err := m.DumpNow(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("DumpNow while a dump runs: %v", err)
	}
	if !m.Stats().Running {
		t.Fatal("stats do not say a dump is running")
	}

	cancel()
	close(src.release)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := m.Stats()
	if st.Dumps != 2 || st.Failures != 0 || st.Records != 100 {
		t.Fatalf("stats %+v", st)
	}
	got, _ := loadDir(t, dir, OnCorruptFail)
	sameData(t, got, s)
}

// clockSource advances a fake clock while it is snapshotted, as a long dump
// would.
type clockSource struct {
	*fakeStore
	clk  *fakeClock
	took time.Duration
}

func (s clockSource) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error {
	s.clk.Advance(s.took)
	return s.fakeStore.SnapshotChannel(ch, fn)
}

func TestManagerDumpLongerThanInterval(t *testing.T) {
	s := newFakeStore(faultVBuckets)
	s.fill("a", 10, 10)
	clk := newFakeClock()
	m := newTestManager(t, t.TempDir(), clockSource{fakeStore: s, clk: clk, took: 2 * time.Hour}, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	clk.Advance(<-clk.waits)
	if d := <-clk.waits; d != 6*time.Minute {
		t.Fatalf("delay after a 2h dump with a 1h interval: %v, want 6m", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewManagerChecksConfig(t *testing.T) {
	s := newFakeStore(4)
	for _, cfg := range []Config{
		{VBuckets: 4, Source: s},
		{Dir: "d", VBuckets: 0, Source: s},
		{Dir: "d", VBuckets: 4},
		{Dir: "d", VBuckets: 4, Source: s, Interval: -time.Second},
	} {
		if _, err := NewManager(cfg); err == nil {
			t.Errorf("NewManager(%+v) accepted", cfg)
		}
	}
}
