package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Defaults of RunnerConfig.
const (
	DefaultBackendTimeout  = 5 * time.Second
	DefaultConnectTimeout  = 2 * time.Second
	DefaultObserveInterval = 100 * time.Millisecond
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Spec is the --discovery value, for the status.
	Spec string
	// Backend lists the nodes.
	Backend Backend
	// Probe connects to addr and returns the id of the node there. It
	// must return soon after ctx is done.
	Probe func(ctx context.Context, addr Addr) (nodeID string, err error)
	// Observe tells what the node knows of its cluster (nil: never a
	// member). It is called from the runner's goroutine and must not
	// block.
	Observe func() Observed
	// OnTargets is called, from the runner's goroutine, when the
	// addresses handed to the join machinery change.
	OnTargets func(targets []Addr)
	// Machine configures the decisions.
	Machine Config
	// BackendTimeout bounds one backend call, ConnectTimeout one probe.
	BackendTimeout time.Duration
	ConnectTimeout time.Duration
	// ObserveInterval is how often Observe is asked at most.
	ObserveInterval time.Duration
	Logger          *slog.Logger
}

// Runner drives a Machine: every backend call and probe runs in a worker
// goroutine with a timeout, so the runner's loop, and Status, never wait
// for a backend or a peer.
type Runner struct {
	cfg    RunnerConfig
	log    *slog.Logger
	events chan Event
	check  chan struct{}

	mu sync.Mutex
	m  *Machine
}

// NewRunner returns a runner for a node that started at start.
func NewRunner(cfg RunnerConfig, start time.Time) *Runner {
	if cfg.BackendTimeout <= 0 {
		cfg.BackendTimeout = DefaultBackendTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ObserveInterval <= 0 {
		cfg.ObserveInterval = DefaultObserveInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, log: log, events: make(chan Event, 16), check: make(chan struct{}, 1), m: NewMachine(cfg.Machine, start)}
}

// Run runs the discovery until ctx is done and its workers have returned.
func (r *Runner) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var observedAt time.Time
	for {
		var ev Event = Tick{}
		select {
		case <-ctx.Done():
			return
		case ev = <-r.events:
		case <-r.check:
			ev = CheckNow{}
		case <-timer.C:
		}
		now := time.Now()
		var acts []Action
		if r.cfg.Observe != nil && now.Sub(observedAt) >= r.cfg.ObserveInterval {
			obs := r.cfg.Observe()
			observedAt = now
			r.mu.Lock()
			acts = r.m.Step(now, obs)
			r.mu.Unlock()
		}
		r.mu.Lock()
		acts = append(acts, r.m.Step(now, ev)...)
		wake := r.m.NextWake()
		r.mu.Unlock()
		for _, a := range acts {
			r.do(ctx, &wg, a)
		}
		d := r.cfg.ObserveInterval
		if r.cfg.Observe == nil {
			d = time.Hour
		}
		if !wake.IsZero() {
			d = min(d, wake.Sub(now))
		}
		timer.Reset(max(d, 0))
	}
}

func (r *Runner) do(ctx context.Context, wg *sync.WaitGroup, a Action) {
	switch a := a.(type) {
	case CallBackend:
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.cfg.BackendTimeout)
			addrs, err := r.cfg.Backend.Nodes(cctx)
			if err == nil && cctx.Err() != nil {
				err = cctx.Err() // an answer after the timeout is none
			}
			if timedOut(ctx, cctx, err) {
				err = fmt.Errorf("the backend did not answer within %s: %w", r.cfg.BackendTimeout, err)
			}
			cancel()
			r.send(ctx, BackendDone{Addrs: addrs, Err: err})
		})
	case Probe:
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
			id, err := r.cfg.Probe(cctx, a.Addr)
			if err == nil && cctx.Err() != nil {
				err = cctx.Err()
			}
			if timedOut(ctx, cctx, err) {
				err = fmt.Errorf("no answer within %s: %w", r.cfg.ConnectTimeout, err)
			}
			cancel()
			r.send(ctx, ProbeDone{Addr: a.Addr, NodeID: id, Err: err})
		})
	case TargetsChanged:
		if r.cfg.OnTargets != nil {
			r.cfg.OnTargets(a.Targets)
		}
	case Log:
		r.log.Log(ctx, a.Level, a.Msg, a.Attrs...)
	}
}

// timedOut reports whether err is a worker's timeout: its context cctx
// (of the runner's ctx, still running) expired, or its deadline passed
// (a socket deadline set to it fires a moment before the context does).
func timedOut(ctx, cctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	if errors.Is(cctx.Err(), context.DeadlineExceeded) {
		return true
	}
	dl, _ := cctx.Deadline()
	return errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl.Add(-10*time.Millisecond))
}

// send hands a worker's result to the loop, unless the runner stops.
func (r *Runner) send(ctx context.Context, ev Event) {
	select {
	case r.events <- ev:
	case <-ctx.Done():
	}
}

// CheckNow asks for a backend call now (or right after the running one).
func (r *Runner) CheckNow() {
	select {
	case r.check <- struct{}{}:
	default:
	}
}

// Status returns the discovery's state.
func (r *Runner) Status() Status {
	r.mu.Lock()
	st := r.m.Status()
	r.mu.Unlock()
	st.Backend = r.cfg.Spec
	return st
}

// Ready reports whether the initial discovery is done, and what it waits
// for if not (Machine.Ready).
func (r *Runner) Ready() (bool, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.Ready()
}

// Targets are the addresses handed to the join machinery.
func (r *Runner) Targets() []Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.Targets()
}
