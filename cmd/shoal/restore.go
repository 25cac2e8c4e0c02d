package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"shoal/client"
	"shoal/internal/dump"
	"shoal/internal/kv"
	"shoal/internal/vfs"
)

// Restore batches stay well below the protocol's batch limit (16 MiB of
// body); a record larger than restoreBatchBytes goes alone.
const (
	restoreBatchRecords = 1000
	restoreBatchBytes   = 4 << 20
	restoreInFlight     = 4 // batches sent at once
)

func restoreCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE...",
		Short: "Load dump files into the node with PutBatch, keeping TTLs, with a progress bar",
		Long: `Verifies every file first (nothing is written if one does not verify), then
stores their records with PutBatch into the channel named in each file,
files in the order given (a later file wins for a key in both). A record
keeps the rest of its TTL; records already expired are skipped. Progress
goes to stderr.`,
		Args: cobra.MinimumNArgs(1),
		RunE: g.run(func(ctx context.Context, c *client.Client, files []string) error {
			return restore(ctx, c, files, os.Stderr)
		}),
	}
}

// restore verifies files, then stores their records.
func restore(ctx context.Context, c *client.Client, files []string, stderr *os.File) error {
	var total int64
	channels := make([]string, len(files))
	for i, path := range files {
		f, err := vfs.Default.Open(path)
		if err != nil {
			return fmt.Errorf("cannot open dump: %w", err)
		}
		info, err := dump.Scan(f, path)
		f.Close()
		if err != nil {
			return &exitError{code: exitNegative, msg: fmt.Sprintf("nothing restored: %v", err)}
		}
		total += info.Records
		channels[i] = info.Channel
	}
	p := startProgress(stderr, isTerminal(stderr), total)
	var err error
	for i, path := range files {
		if err = restoreFile(ctx, c, path, channels[i], p); err != nil {
			break
		}
	}
	p.finish()
	if err != nil {
		return fmt.Errorf("restore stopped after %d records: %w", p.done.Load(), err)
	}
	return nil
}

// restoreFile stores the records of one file into channel ch,
// restoreInFlight batches at a time.
func restoreFile(ctx context.Context, c *client.Client, path, ch string, p *progress) error {
	f, err := vfs.Default.Open(path)
	if err != nil {
		return fmt.Errorf("cannot open dump: %w", err)
	}
	defer f.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(restoreInFlight)
	b := newBatch(0)
	send := func() {
		if len(b.recs) == 0 {
			return
		}
		recs := b.recs
		g.Go(func() error {
			n, err := c.PutBatch(gctx, ch, recs)
			p.done.Add(int64(n))
			if err != nil {
				return fmt.Errorf("%s: channel %q: %w", path, ch, err)
			}
			return nil
		})
	}
	now := time.Now()
	_, err = dump.Decode(f, path, func(_ uint16, _ uint64, recs []kv.Record) error {
		if err := gctx.Err(); err != nil {
			return err
		}
		for _, r := range recs {
			var ttl time.Duration
			if r.Expiry != 0 {
				if ttl = time.Unix(r.Expiry, 0).Sub(now); ttl <= 0 {
					p.expired.Add(1)
					continue
				}
			}
			if n := len(r.Key) + len(r.Value); !b.fits(n) {
				send()
				b = newBatch(n)
			}
			b.add(r, ttl)
			if len(b.recs) == restoreBatchRecords {
				send()
				b = newBatch(0)
			}
		}
		return nil
	})
	if err == nil {
		send()
	}
	if gerr := g.Wait(); gerr != nil {
		return gerr
	}
	return err
}

// batch is the records of one PutBatch. Their bytes are copied into an
// arena that is never reallocated, so the records stay valid while the
// batch is sent.
type batch struct {
	recs  []client.Record
	arena []byte
}

// newBatch returns a batch with room for restoreBatchBytes, or for one
// record of need bytes if it is larger.
func newBatch(need int) *batch {
	return &batch{arena: make([]byte, 0, max(restoreBatchBytes, need))}
}

func (b *batch) fits(n int) bool { return len(b.arena)+n <= cap(b.arena) }

func (b *batch) add(r kv.Record, ttl time.Duration) {
	k := len(b.arena)
	b.arena = append(b.arena, r.Key...)
	v := len(b.arena)
	b.arena = append(b.arena, r.Value...)
	b.recs = append(b.recs, client.Record{Key: b.arena[k:v:v], Value: b.arena[v:len(b.arena):len(b.arena)], TTL: ttl})
}

// progress draws the restore's progress on stderr: a bar redrawn in place
// when stderr is a terminal, a line every few seconds otherwise.
type progress struct {
	w       io.Writer
	tty     bool
	total   int64
	start   time.Time
	done    atomic.Int64 // records stored
	expired atomic.Int64 // records skipped because their TTL had passed
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startProgress(w io.Writer, tty bool, total int64) *progress {
	p := &progress{w: w, tty: tty, total: total, start: time.Now(), stop: make(chan struct{})}
	every := 5 * time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.draw()
			}
		}
	}()
	return p
}

// draw writes the current state.
func (p *progress) draw() {
	done, expired := p.done.Load(), p.expired.Load()
	elapsed := time.Since(p.start)
	rate := float64(done) / max(elapsed.Seconds(), 1e-3)
	frac := 1.0
	if p.total > 0 {
		frac = float64(done+expired) / float64(p.total)
	}
	line := fmt.Sprintf("%d / %d records (%.0f%%), %d expired skipped, %.0f records/s, %v",
		done, p.total, 100*frac, expired, rate, elapsed.Round(time.Second))
	if !p.tty {
		fmt.Fprintln(p.w, "restore:", line)
		return
	}
	const width = 30
	n := min(width, int(frac*width))
	fmt.Fprintf(p.w, "\r[%s%s] %s\033[K", strings.Repeat("#", n), strings.Repeat(".", width-n), line)
}

// finish stops the redraws and writes the final state on a line of its own.
func (p *progress) finish() {
	close(p.stop)
	p.wg.Wait()
	p.draw()
	if p.tty {
		fmt.Fprintln(p.w)
	}
}
