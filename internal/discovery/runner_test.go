package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeBackend answers from a function and records when it was called.
type fakeBackend struct {
	mu    sync.Mutex
	calls []time.Duration // since start
	start time.Time
	fn    func(ctx context.Context, call int) ([]Addr, error)
}

func (b *fakeBackend) Nodes(ctx context.Context) ([]Addr, error) {
	b.mu.Lock()
	b.calls = append(b.calls, time.Since(b.start))
	n := len(b.calls)
	b.mu.Unlock()
	return b.fn(ctx, n)
}

func (b *fakeBackend) times() []time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// fakePeers answer probes: an id, an error, or nothing until the probe's
// context is done (a blackholed address).
type fakePeers struct {
	mu     sync.Mutex
	how    map[Addr]string // "ok:ID", "error:MSG", "hang"
	probes map[Addr]int
}

func newFakePeers(how map[Addr]string) *fakePeers {
	return &fakePeers{how: how, probes: map[Addr]int{}}
}

func (p *fakePeers) set(a Addr, how string) {
	p.mu.Lock()
	p.how[a] = how
	p.mu.Unlock()
}

func (p *fakePeers) count(a Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.probes[a]
}

func (p *fakePeers) probe(ctx context.Context, a Addr) (string, error) {
	p.mu.Lock()
	p.probes[a]++
	how := p.how[a]
	p.mu.Unlock()
	kind, arg, _ := strings.Cut(how, ":")
	switch kind {
	case "ok":
		return arg, nil
	case "hang":
		<-ctx.Done()
		return "", ctx.Err()
	case "error":
		return "", errors.New(arg)
	}
	return "", errors.New("connection refused")
}

// run starts a runner in the bubble and returns it and a stop function
// that waits for it to return.
func run(t *testing.T, cfg RunnerConfig) (*Runner, func()) {
	t.Helper()
	r := NewRunner(cfg, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	return r, func() { cancel(); <-done }
}

func seconds(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprint(d.Seconds())
	}
	return strings.Join(s, " ")
}

func every(from, to, step time.Duration) []time.Duration {
	var out []time.Duration
	for d := from; d <= to; d += step {
		out = append(out, d)
	}
	return out
}

// TestRunnerIntervals pins the initial and regular intervals in fake
// time: a call at once, every 5 s for 5 minutes, then every 5 minutes.
func TestRunnerIntervals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{start: time.Now(), fn: func(context.Context, int) ([]Addr, error) { return []Addr{"10.0.0.1:7400"}, nil }}
		peers := newFakePeers(map[Addr]string{"10.0.0.1:7400": "ok:n1"})
		r, stop := run(t, RunnerConfig{Spec: "static:10.0.0.1:7400", Backend: b, Probe: peers.probe, Machine: Config{Self: "n0"}})
		defer stop()
		time.Sleep(16 * time.Minute)
		synctest.Wait()
		want := append(every(0, 300*time.Second, 5*time.Second), 600*time.Second, 900*time.Second)
		if got := b.times(); !slices.Equal(got, want) {
			t.Errorf("calls at %s\nwant %s", seconds(got), seconds(want))
		}
		st := r.Status()
		if st.Phase != PhaseRegular || st.LastResult.RetryType != RetryRegular || st.Backend != "static:10.0.0.1:7400" || st.StartTime.IsZero() {
			t.Errorf("status %+v", st)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{start: time.Now(), fn: func(context.Context, int) ([]Addr, error) { return nil, nil }}
		_, stop := run(t, RunnerConfig{Backend: b, Probe: newFakePeers(nil).probe,
			Machine: Config{InitialInterval: 2 * time.Second, RegularInterval: time.Minute, InitialPhase: 10 * time.Second}})
		defer stop()
		time.Sleep(3*time.Minute + 11*time.Second)
		synctest.Wait()
		want := append(every(0, 10*time.Second, 2*time.Second), every(70*time.Second, 190*time.Second, time.Minute)...)
		if got := b.times(); !slices.Equal(got, want) {
			t.Errorf("settable intervals: calls at %s\nwant %s", seconds(got), seconds(want))
		}
	})
}

// TestRunnerAfterError: a backend that errors during startup is retried
// after 1 s, then recovers and is called at the initial interval.
func TestRunnerAfterError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{start: time.Now(), fn: func(_ context.Context, n int) ([]Addr, error) {
			if n <= 3 {
				return nil, errors.New("open /etc/shoal/nodes: no such file or directory")
			}
			return []Addr{"10.0.0.1:7400"}, nil
		}}
		peers := newFakePeers(map[Addr]string{"10.0.0.1:7400": "ok:n1"})
		r, stop := run(t, RunnerConfig{Backend: b, Probe: peers.probe, Machine: Config{Self: "n0"}})
		defer stop()
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		st := r.Status()
		if st.LastResult == nil || st.LastResult.OK || st.LastResult.RetryType != RetryAfterError || len(st.Discovered) != 0 {
			t.Errorf("while failing: %+v", st)
		}
		if ready, missing := r.Ready(); ready || len(missing) != 1 || !strings.Contains(missing[0], "no such file") {
			t.Errorf("ready while the backend fails: %v %q", ready, missing)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		want := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 8 * time.Second, 13 * time.Second}
		if got := b.times(); !slices.Equal(got, want) {
			t.Errorf("calls at %s, want %s", seconds(got), seconds(want))
		}
		if st := r.Status(); !st.LastResult.OK || !slices.Equal(st.Discovered, []Addr{"10.0.0.1:7400"}) {
			t.Errorf("after recovery: %+v", st)
		}
	})
}

// TestRunnerNodedown: a node that goes down in the regular phase gets
// a nodedown time and a backend call 30 s later; when it answers again it
// gets a nodeup time and a call at once.
func TestRunnerNodedown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const a, self = Addr("10.0.0.1:7400"), Addr("10.0.0.0:7400")
		b := &fakeBackend{start: time.Now(), fn: func(context.Context, int) ([]Addr, error) { return []Addr{self, a}, nil }}
		peers := newFakePeers(map[Addr]string{a: "ok:n1"})
		observe := func() Observed {
			return Observed{Member: true, Members: []Member{{"n0", self}, {"n1", a}}}
		}
		start := time.Now()
		r, stop := run(t, RunnerConfig{Backend: b, Probe: peers.probe, Observe: observe, Machine: Config{Self: "n0", SelfAddrs: []Addr{self}}})
		defer stop()
		time.Sleep(101 * time.Second)
		peers.set(a, "error:connection refused")
		time.Sleep(101 * time.Second) // to 202 s
		synctest.Wait()
		st := r.Status()
		n := st.Nodes[1]
		if n.Up || n.Nodedown == nil || n.Nodedown.Sub(start) != 105*time.Second || n.Nodeup == nil || n.Nodeup.Sub(start) != 0 || n.LastError != "connection refused" || !n.Joined {
			t.Errorf("after the nodedown: %+v", n)
		}
		if len(st.Unavailable) != 1 || st.Unavailable[0].Addr != a {
			t.Errorf("unavailable %+v", st.Unavailable)
		}
		peers.set(a, "ok:n1")
		time.Sleep(4 * time.Second)
		synctest.Wait()
		st = r.Status()
		if n := st.Nodes[1]; !n.Up || n.Nodeup.Sub(start) != 205*time.Second || n.Nodedown.Sub(start) != 105*time.Second {
			t.Errorf("back up: %+v", n)
		}
		time.Sleep(500 * time.Second)
		synctest.Wait()
		// 0: the first call (a member at once: regular from there); 135:
		// 30 s after the nodedown at 105; 205: the node is up again; 505:
		// regular.
		want := []time.Duration{0, 135 * time.Second, 205 * time.Second, 505 * time.Second}
		if got := b.times(); !slices.Equal(got, want) {
			t.Errorf("calls at %s, want %s", seconds(got), seconds(want))
		}
	})
}

// TestRunnerHangingBackend: a backend call that takes 10 s (ignoring its
// context) delays nothing: the status answers at once, probes go on, no
// second call starts meanwhile, and its late answer counts as a timeout.
func TestRunnerHangingBackend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const a = Addr("10.0.0.1:7400")
		b := &fakeBackend{start: time.Now(), fn: func(_ context.Context, n int) ([]Addr, error) {
			if n == 2 {
				time.Sleep(10 * time.Second)
			}
			return []Addr{a}, nil
		}}
		peers := newFakePeers(map[Addr]string{a: "ok:n1"})
		r, stop := run(t, RunnerConfig{Backend: b, Probe: peers.probe, Machine: Config{Self: "n0", ProbeInterval: time.Second}})
		defer stop()
		time.Sleep(8 * time.Second) // the second call started at 5 s
		synctest.Wait()
		probes := peers.count(a)
		done := make(chan Status)
		go func() { done <- r.Status() }()
		synctest.Wait()
		select {
		case st := <-done:
			if !st.BackendRunning || st.RunningSince == nil || st.RunningSince.Sub(b.start) != 5*time.Second {
				t.Errorf("status while the backend hangs: %+v", st)
			}
		default:
			t.Fatal("Status blocked while the backend hangs")
		}
		if probes < 8 {
			t.Errorf("%d probes in 8 s at 1 s intervals while the backend hung", probes)
		}
		time.Sleep(7500 * time.Millisecond) // to 15.5 s
		synctest.Wait()
		st := r.Status()
		if st.LastResult.OK || !strings.Contains(st.LastResult.Error, "did not answer within 5s") || st.LastResult.At.Sub(b.start) != 15*time.Second {
			t.Errorf("the late answer: %+v", st.LastResult)
		}
		time.Sleep(2500 * time.Millisecond) // to 18 s
		synctest.Wait()
		want := []time.Duration{0, 5 * time.Second, 16 * time.Second}
		if got := b.times(); !slices.Equal(got, want) {
			t.Errorf("calls at %s, want %s", seconds(got), seconds(want))
		}
	})
	// A backend that honours its context fails at the timeout.
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{start: time.Now(), fn: func(ctx context.Context, _ int) ([]Addr, error) {
			<-ctx.Done()
			return nil, fmt.Errorf("lookup: %w", ctx.Err())
		}}
		r, stop := run(t, RunnerConfig{Backend: b, Probe: newFakePeers(nil).probe, BackendTimeout: 3 * time.Second})
		defer stop()
		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		if st := r.Status(); st.LastResult == nil || st.LastResult.At.Sub(b.start) != 3*time.Second || !strings.Contains(st.LastResult.Error, "within 3s") {
			t.Errorf("%+v", st.LastResult)
		}
	})
}

// TestRunnerBlackhole: an address that never answers delays neither the
// other probes nor the backend calls; it is unavailable once its probe
// times out.
func TestRunnerBlackhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hole, good = Addr("10.0.0.1:7400"), Addr("10.0.0.2:7400")
		b := &fakeBackend{start: time.Now(), fn: func(context.Context, int) ([]Addr, error) { return []Addr{hole, good}, nil }}
		peers := newFakePeers(map[Addr]string{hole: "hang", good: "ok:n2"})
		start := time.Now()
		r, stop := run(t, RunnerConfig{Backend: b, Probe: peers.probe, Machine: Config{Self: "n0"}})
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()
		st := r.Status()
		if !st.Nodes[1].Up || st.Nodes[1].Nodeup.Sub(start) != 0 || !st.Nodes[0].Probing || slices.Equal(r.Targets(), []Addr{good}) == false {
			t.Errorf("after 1 s: %+v, targets %v", st.Nodes, r.Targets())
		}
		if _, missing := r.Ready(); !slices.ContainsFunc(missing, func(s string) bool { return strings.Contains(s, string(hole)+" has not answered yet") }) {
			t.Errorf("missing %q", missing)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		st = r.Status()
		if n := st.Nodes[0]; n.Up || n.Probing || !strings.Contains(n.LastError, "no answer within 2s") || n.LastProbe.Sub(start) != 2*time.Second {
			t.Errorf("after the probe's timeout: %+v", n)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got, want := b.times(), []time.Duration{0, 5 * time.Second, 10 * time.Second}; !slices.Equal(got, want) {
			t.Errorf("calls at %s, want %s", seconds(got), seconds(want))
		}
	})
}

// TestRunnerTargets: the join gets reachable addresses one at a time,
// and the node's join machinery is told when they change.
func TestRunnerTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		addrs := []Addr{"10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"}
		b := &fakeBackend{start: time.Now(), fn: func(context.Context, int) ([]Addr, error) { return addrs, nil }}
		peers := newFakePeers(map[Addr]string{addrs[0]: "ok:n1", addrs[1]: "ok:n2", addrs[2]: "ok:n3"})
		var (
			mu      sync.Mutex
			tried   = map[Addr]time.Time{}
			handed  [][]Addr
			nudges  atomic.Int32
			members []Member
		)
		observe := func() Observed {
			mu.Lock()
			defer mu.Unlock()
			return Observed{Member: len(members) > 0, Members: members, Tried: maps(tried)}
		}
		onTargets := func(ts []Addr) {
			mu.Lock()
			handed = append(handed, ts)
			mu.Unlock()
			nudges.Add(1)
		}
		r, stop := run(t, RunnerConfig{Backend: b, Probe: peers.probe, Observe: observe, OnTargets: onTargets, Machine: Config{Self: "n0"}})
		defer stop()
		// The join machinery tries the address handed last a while after
		// it is handed (the runner observes it every 100 ms): one more is
		// handed after each try.
		for i := range 3 {
			time.Sleep(250 * time.Millisecond)
			synctest.Wait()
			mu.Lock()
			if len(handed) != i+1 || len(handed[i]) != i+1 {
				mu.Unlock()
				t.Fatalf("after %d tries: handed %v", i, handed)
			}
			last := handed[i]
			tried[last[i]] = time.Now()
			mu.Unlock()
		}
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		final := slices.Sorted(slices.Values(handed[len(handed)-1]))
		if len(handed) != 3 || !slices.Equal(final, addrs) || !slices.Equal(handed[1][:1], handed[0]) || !slices.Equal(handed[2][:2], handed[1]) {
			t.Errorf("handed %v, want one more of %v at a time", handed, addrs)
		}
		members = []Member{{"n0", "10.0.0.0:7400"}, {"n1", addrs[0]}, {"n2", addrs[1]}, {"n3", addrs[2]}}
		mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if ready, missing := r.Ready(); !ready || nudges.Load() != 3 {
			t.Errorf("ready %v %q, %d nudges", ready, missing, nudges.Load())
		}
	})
}

func maps(m map[Addr]time.Time) map[Addr]time.Time {
	out := make(map[Addr]time.Time, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestRunnerStops: Run returns when its context is done even with a
// backend call and a probe in flight; nothing is left running (synctest
// fails on a goroutine left in the bubble).
func TestRunnerStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBackend{start: time.Now(), fn: func(ctx context.Context, n int) ([]Addr, error) {
			if n == 1 {
				return []Addr{"10.0.0.1:7400"}, nil
			}
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		_, stop := run(t, RunnerConfig{Backend: b, Probe: newFakePeers(map[Addr]string{"10.0.0.1:7400": "hang"}).probe, BackendTimeout: time.Hour, ConnectTimeout: time.Hour})
		defer stop()
		time.Sleep(6 * time.Second)
		synctest.Wait()
	})
}
