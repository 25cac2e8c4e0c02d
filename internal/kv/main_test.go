package kv

import (
	"flag"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The model tests need longer runs than rapid's default of 30 actions.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.steps" })
	if !set {
		if err := flag.Set("rapid.steps", "200"); err != nil {
			panic(err)
		}
	}
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newStore returns a Store without background sweeper, closed at the end of
// the test.
func newStore(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = -1
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// sweepAll runs the sweeper over every slot of every vBucket once: the
// rest of the current vBucket, then all of them.
func sweepAll(s *Store) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	for n := 0; n <= len(s.parts); {
		p := s.parts[s.sweep.vb]
		p.mu.Lock()
		started := s.sweep.started
		s.sweepStep(p, s.nowUnix(), 1<<20)
		p.mu.Unlock()
		if started && !s.sweep.started {
			n++ // a vBucket done
		}
	}
}
