package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"shoal/client"
	"shoal/internal/dump"
	"shoal/internal/kv"
	"shoal/internal/vbucket"
	"shoal/internal/vfs"
)

// dumperConfig is the external dumper's command line.
type dumperConfig struct {
	out          string
	every        time.Duration // 0: one cycle
	initialDelay time.Duration
	retryWait    time.Duration
	codec        dump.Codec
}

// channelAttempts is how many times a cycle tries to dump a channel.
const channelAttempts = 3

// errStalled ends a GetAll that has received nothing for --timeout: the
// node is gone, and the channel is retried.
var errStalled = errors.New("no data from the node")

// dumper is the external dumper (swarm's dhtdump): it reads every kv
// channel of a node with GetAll and writes dump files.
type dumper struct {
	cfg dumperConfig
	g   *globals
	log *slog.Logger
}

// runDumper runs one cycle, or with --every one cycle per period until ctx
// ends (a signal), which is then a clean exit. A failed cycle is followed
// by another after --retry-wait.
func runDumper(ctx context.Context, g *globals, cfg dumperConfig) error {
	if cfg.every < 0 || cfg.initialDelay < 0 || cfg.retryWait < 0 {
		return usageError{errors.New("--every, --initial-delay and --retry-wait must not be negative")}
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return fmt.Errorf("cannot create the output directory: %w", err)
	}
	d := &dumper{cfg: cfg, g: g, log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if cfg.every == 0 {
		return d.cycle(ctx)
	}
	d.log.Info("external dumper started", "node", g.addr, "out", cfg.out, "every", cfg.every, "first_cycle_in", cfg.initialDelay)
	if !sleep(ctx, cfg.initialDelay) {
		return nil
	}
	for {
		start := time.Now()
		err := d.cycle(ctx)
		if ctx.Err() != nil {
			d.log.Info("external dumper stopped")
			return nil
		}
		wait := max(cfg.every-time.Since(start), 0)
		if err != nil {
			d.log.Error("dump cycle failed; retrying", "err", err, "retry_in", cfg.retryWait)
			wait = cfg.retryWait
		}
		d.log.Info("next dump cycle", "at", time.Now().Add(wait).Format(time.RFC3339), "in", wait.Round(time.Millisecond))
		if !sleep(ctx, wait) {
			d.log.Info("external dumper stopped")
			return nil
		}
	}
}

// cycle dumps every kv channel of the node once, retrying each failed
// channel after --retry-wait; it returns the errors of the channels that
// failed every attempt.
func (d *dumper) cycle(ctx context.Context) error {
	c, err := d.g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	vbs, err := nodeVBuckets(ctx, c)
	if err != nil {
		return err
	}
	chans, err := c.Channels(ctx)
	if err != nil {
		return fmt.Errorf("cannot list the channels: %w", err)
	}
	start := time.Now()
	var errs []error
	var channels int
	var records int64
	for _, ch := range chans {
		if ch.Kind != "kv" {
			continue
		}
		channels++
		for attempt := 1; ; attempt++ {
			d.log.Info("dumping channel", "channel", ch.Name, "attempt", attempt)
			t0 := time.Now()
			sum, err := d.channel(ctx, c, ch.Name, vbs)
			if err == nil {
				records += sum.Records
				d.log.Info("channel dumped", "channel", ch.Name, "records", sum.Records, "bytes", sum.Bytes,
					"file_bytes", sum.FileBytes, "duration", time.Since(t0).Round(time.Millisecond))
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.log.Warn("channel dump failed; the previous file is kept", "channel", ch.Name, "attempt", attempt, "err", err)
			if attempt == channelAttempts {
				errs = append(errs, fmt.Errorf("channel %q: %w", ch.Name, err))
				break
			}
			if !sleep(ctx, d.cfg.retryWait) {
				return ctx.Err()
			}
		}
	}
	d.log.Info("dump cycle finished", "channels", channels, "failed", len(errs), "records", records,
		"duration", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// channel writes OUT/ch.dump from a GetAll of ch.
func (d *dumper) channel(ctx context.Context, c *client.Client, ch string, vbs int) (dump.Summary, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var stall *time.Timer
	if d.g.timeout > 0 {
		stall = time.AfterFunc(d.g.timeout, func() { cancel(fmt.Errorf("%w for %v (--timeout)", errStalled, d.g.timeout)) })
		defer stall.Stop()
	}
	h := dump.Header{Channel: ch, VBuckets: vbs, Created: time.Now(), Codec: d.cfg.codec}
	return dump.WriteFile(vfs.Default, d.cfg.out, h, func(e *dump.Encoder) error {
		var run vbRun
		for r, err := range c.GetAll(ctx, ch, client.WithExpiry()).All() {
			if err != nil {
				if cause := context.Cause(ctx); errors.Is(err, context.Canceled) && cause != nil {
					return cause
				}
				return err
			}
			if stall != nil {
				stall.Reset(d.g.timeout)
			}
			vb := vbucket.Of(r.Key, vbs)
			if vb != run.vb && len(run.recs) > 0 {
				if err := run.flush(e); err != nil {
					return err
				}
			}
			run.vb = vb
			run.seqno = max(run.seqno, r.CAS)
			run.recs = append(run.recs, kv.Record{Key: r.Key, Value: r.Value, Seqno: r.CAS, Expiry: r.Expiry})
		}
		return run.flush(e)
	})
}

// vbRun gathers the records of one vBucket (GetAll sends them vBucket by
// vBucket) until its seqno is known: the highest CAS of its records, a
// lower bound of the vBucket's seqno when it was read (the vBucket's last
// mutation may be a removal, or a write to another channel).
type vbRun struct {
	vb    uint16
	seqno uint64
	recs  []kv.Record
}

func (r *vbRun) flush(e *dump.Encoder) error {
	if len(r.recs) == 0 {
		return nil
	}
	err := e.Add(r.vb, r.seqno, r.recs)
	r.seqno, r.recs = 0, r.recs[:0]
	return err
}

// nodeVBuckets returns the vBucket count of the first node.
func nodeVBuckets(ctx context.Context, c *client.Client) (int, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("cannot ask the node for its vbucket count: %w", err)
	}
	n, ok := info[c.Nodes()[0]]["vbuckets"].(float64)
	if !ok || n < 1 {
		return 0, fmt.Errorf("the node reported no vbucket count")
	}
	return int(n), nil
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
