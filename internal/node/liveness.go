package node

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"shoal/internal/liveness"
)

// probeFile, under DATA/repl, is written and fsynced by the disk readiness
// probe.
const probeFile = "disk-probe"

// livenessState is the node's liveness monitor and the local checks it is
// ticked with.
type livenessState struct {
	mu      sync.Mutex        // serialises the monitor: ticks and status views
	monitor *liveness.Monitor // under mu
	checks  []liveness.Check  // the last tick's readiness checks, under mu
	probe   diskProbe
}

// view is the liveness report at this instant (with the last tick's
// readiness checks), nil before the first tick. Computed at request time, a
// silent peer shows inactive within InactiveTicks ticks of its last frame,
// not up to a tick later.
func (l *livenessState) view() *liveness.Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.checks == nil {
		return nil
	}
	r := l.monitor.View(time.Now(), l.checks)
	return &r
}

// livenessLoop ticks the liveness monitor every --liveness-tick with the
// local readiness checks, logs the state changes and saves the failover
// logs the consumers changed.
func (n *Node) livenessLoop(ctx context.Context) {
	rp := n.rep
	t := time.NewTicker(time.Duration(n.cfg.LivenessTick))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			checks := n.readiness(now)
			rp.live.mu.Lock()
			rep := rp.live.monitor.Tick(now, checks)
			rp.live.checks = checks
			rp.live.mu.Unlock()
			for _, c := range rep.Changes {
				n.log.Info("liveness changed", "node", c.Node, "channel", c.Channel, "from", string(c.From), "to", string(c.To))
			}
			for _, b := range rp.buckets {
				if err := b.Logs.Save(); err != nil {
					n.log.Warn("cannot save a failover log", "bucket", b.Name, "err", err)
				}
			}
		}
	}
}

// readiness runs the local checks: the engines are loaded (New opened
// them, so they are while the node runs) and the disk takes writes.
func (n *Node) readiness(now time.Time) []liveness.Check {
	checks := make([]liveness.Check, 0, len(n.rep.buckets)+1)
	for _, b := range n.rep.buckets {
		checks = append(checks, liveness.Check{Name: "loaded", Channel: b.Name, OK: b.Engine != nil})
	}
	return append(checks, n.rep.live.probe.check(now, probeInterval(time.Duration(n.cfg.LivenessTick))))
}

// probeInterval is how often the disk is probed: every tick, at most once
// a second.
func probeInterval(tick time.Duration) time.Duration { return max(time.Second, tick) }

// probeLoop probes the disk every probeInterval.
func (n *Node) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval(time.Duration(n.cfg.LivenessTick)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.rep.live.probe.run()
		}
	}
}

// diskProbe writes and fsyncs a small file in DATA/repl; a disk that
// fails or stalls makes the node not ready.
type diskProbe struct {
	path string

	mu      sync.Mutex
	lastOK  time.Time // when the last successful probe finished
	lastErr error
}

func (p *diskProbe) run() {
	err := func() error {
		f, err := os.Create(p.path)
		if err != nil {
			return err
		}
		_, err = f.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + "\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	if err == nil {
		p.lastOK = time.Now()
	}
}

// check turns the last probes into a readiness check: the last probe
// must have succeeded, within 5 probe intervals (a stalled disk).
func (p *diskProbe) check(now time.Time, every time.Duration) liveness.Check {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := liveness.Check{Name: "disk", OK: true}
	switch since := now.Sub(p.lastOK); {
	case p.lastErr != nil:
		c.OK, c.Detail = false, p.lastErr.Error()
	case p.lastOK.IsZero() || since > 5*every:
		c.OK, c.Detail = false, fmt.Sprintf("no write+fsync of %s completed for %v", p.path, since.Round(time.Millisecond))
	}
	return c
}
