package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one run measured. Latencies are in milliseconds.
type Result struct {
	Target    string `json:"target"`
	Workload  string `json:"workload"`
	Conns     int    `json:"conns"`
	Pipeline  int    `json:"pipeline"`
	Keys      int64  `json:"keys"`
	ValueSize int    `json:"value_size"`
	Requests  int64  `json:"requests"` // answered requests in the measured time, errors included
	// WarmupRequests were answered before the measured time (and the range
	// workload's fill is not counted at all), for a server-side cost per
	// request.
	WarmupRequests int64   `json:"warmup_requests"`
	Errors         int64   `json:"errors"`
	Misses         int64   `json:"misses"` // gets of missing keys, pops of an empty queue, empty ranges
	Seconds        float64 `json:"seconds"`
	OpsPerSec      float64 `json:"ops_per_sec"` // requests answered without error per second
	MeanMs         float64 `json:"mean_ms"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	P999Ms         float64 `json:"p999_ms"`
	MaxMs          float64 `json:"max_ms"`
	// Nodes is each node's share of the measured time, for a target that
	// counts per node (a shoal node or cluster); see NodeResult.
	Nodes []NodeResult `json:"nodes,omitempty"`
	// FirstError is the first error seen, for the record.
	FirstError string `json:"first_error,omitempty"`
	// Warnings say what makes the figures doubtful (most gets missed) or
	// what the run left behind.
	Warnings []string `json:"warnings,omitempty"`
}

// maxMissRatio is the share of misses over which a run warns: it measured
// mostly misses, which cost less than hits.
const maxMissRatio = 0.10

// missWarning is the warning of a run with more than maxMissRatio misses;
// "" when there is none.
func missWarning(o Options, res Result) string {
	answered := res.Requests - res.Errors
	if answered <= 0 || float64(res.Misses) <= maxMissRatio*float64(answered) {
		return ""
	}
	pct := 100 * float64(res.Misses) / float64(answered)
	switch o.Workload {
	case Get, Mix:
		return fmt.Sprintf("%.0f%% of the gets missed: most keys of the key space are not there, and misses are cheaper than hits; "+
			"fill it first with --workload load --keys %d (same --channel)", pct, o.Keys)
	case Pop:
		return fmt.Sprintf("%.0f%% of the pops found the queue empty: fill it first with --workload push --cleanup=false, or run a push bench alongside", pct)
	}
	return fmt.Sprintf("%.0f%% of the requests were misses", pct)
}

// Latencies are recorded in microseconds, from 1 µs to 100 s, with 3
// significant digits.
const (
	histMin    = 1
	histMax    = 100_000_000
	histDigits = 3
)

// stopGrace is how long the requests in flight at the end of a run may
// take before they are cancelled (a variable for the tests).
var stopGrace = 10 * time.Second

// Phases of a run.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// run is the state the connections of one Run share.
type run struct {
	o     Options
	t     Target
	value []byte
	ch    string

	phase   atomic.Int32
	claimed atomic.Int64 // requests (or load keys) handed out in the measured phase
	done    atomic.Int64 // requests answered in the measured phase, for the progress line
	failed  atomic.Int64 // of which errors
}

// tally is what one connection measured.
type tally struct {
	hist     *hdrhistogram.Histogram
	requests int64
	warmup   int64 // requests answered in the warmup
	errors   int64
	misses   int64
	last     time.Time // when its last measured answer came
	firstErr error
	fatal    error // ErrUnsupported: the run stops
}

// Run loads t as o says and returns what it measured. A Range run first
// fills its log with o.Keys records (timestamps 1..Keys). When ctx ends
// early Run returns the figures so far and ctx's error.
func Run(ctx context.Context, t Target, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	r := &run{o: o, t: t, value: make([]byte, o.ValueSize), ch: o.channel()}
	for i := range r.value {
		r.value[i] = 'x'
	}
	// The shoal client's per-call timeout costs a timer per request; a
	// deadline on the context replaces it. A run that does not stop within
	// stopGrace of its end is cut by cancelling.
	parent := ctx
	ctx, cancel := context.WithDeadline(ctx, time.Now().Add(100*365*24*time.Hour))
	defer cancel()
	if o.Workload == Range {
		if err := r.fillLog(ctx); err != nil {
			return Result{}, err
		}
	}
	conns, err := r.open(ctx)
	if err != nil {
		return Result{}, err
	}

	warmup := o.Warmup
	if o.Workload == Load {
		warmup = 0
	}
	var counts map[string]NodeCount
	if warmup == 0 {
		counts = readNodeCounts(ctx, t)
		r.phase.Store(phaseMeasure)
	}
	start := time.Now()
	tallies := make([]tally, o.Conns)
	var wg sync.WaitGroup
	stopped := make(chan struct{})
	for i := range conns {
		wg.Go(func() { r.drive(ctx, conns[i], &tallies[i], uint64(i)) })
	}
	go func() { wg.Wait(); close(stopped) }()

	if warmup > 0 {
		select {
		case <-time.After(warmup):
		case <-stopped:
		case <-ctx.Done():
		}
		counts = readNodeCounts(ctx, t)
		start = time.Now()
		r.phase.Store(phaseMeasure)
	}

	var deadline <-chan time.Time
	if o.Requests == 0 && o.Workload != Load {
		tm := time.NewTimer(o.Duration)
		defer tm.Stop()
		deadline = tm.C
	}
	var tick <-chan time.Time
	if o.Progress != nil {
		tk := time.NewTicker(o.ProgressEvery)
		defer tk.Stop()
		tick = tk.C
	}
	var grace <-chan time.Time
wait:
	for {
		select {
		case <-stopped:
			break wait
		case <-deadline:
			r.phase.Store(phaseStop)
			grace = time.After(stopGrace)
		case <-parent.Done():
			r.phase.Store(phaseStop)
			cancel()
		case <-grace:
			cancel()
		case now := <-tick:
			fmt.Fprint(o.Progress, progressLine(string(o.Workload), t.String(), now.Sub(start), r.done.Load(), r.failed.Load()))
		}
	}
	if o.Progress != nil {
		fmt.Fprintln(o.Progress, progressLine(string(o.Workload), t.String(), time.Since(start), r.done.Load(), r.failed.Load()))
	}
	res := r.result(start, tallies)
	if counts != nil {
		res.Nodes = nodeResults(counts, readNodeCounts(parent, t), res.Seconds)
	}
	if w := missWarning(o, res); w != "" {
		res.Warnings = append(res.Warnings, w)
	}
	if o.Cleanup && parent.Err() == nil {
		if err := r.cleanup(parent); err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("cannot remove %s after the run: %v", r.ch, err))
		}
	}
	for i := range tallies {
		if tallies[i].fatal != nil {
			return res, tallies[i].fatal
		}
	}
	switch {
	case parent.Err() != nil:
		return res, parent.Err()
	case res.Requests == 0:
		return res, errors.New("no request was answered in the measured time")
	case res.Errors == res.Requests:
		return res, fmt.Errorf("every request failed; the first with: %s", res.FirstError)
	}
	return res, nil
}

// progressLine is the live line: it starts with a carriage return so that
// each one overwrites the last on a terminal.
func progressLine(workload, target string, elapsed time.Duration, done, failed int64) string {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(done) / s
	}
	return fmt.Sprintf("\r%s %s: %.0fs %s ops/s, %d requests, %d errors   ", workload, target, elapsed.Seconds(), thousands(int64(rate)), done, failed)
}

// thousands formats n with a comma every three digits.
func thousands(n int64) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// open opens o.Conns connections, several at a time.
func (r *run) open(ctx context.Context) ([]Conn, error) {
	conns := make([]Conn, r.o.Conns)
	errs := make([]error, r.o.Conns)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			conns[i], errs[i] = r.t.Open(ctx, r.o.Pipeline)
		})
	}
	wg.Wait()
	var first error
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		// One error, not one per connection: they are all the same.
		if failed == 1 && r.o.Conns == 1 {
			return nil, fmt.Errorf("cannot connect to %s: %w", r.t, first)
		}
		return nil, fmt.Errorf("cannot open %d connections to %s (%d failed), the first: %w", r.o.Conns, r.t, failed, first)
	}
	return conns, nil
}

// fillLog empties the Range log and appends o.Keys records with timestamps
// 1..Keys, in batches over one connection.
func (r *run) fillLog(ctx context.Context) error {
	const batch = 256
	c, err := r.t.Open(ctx, batch)
	if err != nil {
		return fmt.Errorf("cannot connect to %s to fill the log: %w", r.t, err)
	}
	defer c.Close()
	reqs, out := make([]Request, batch), make([]Outcome, batch)
	reqs[0] = Request{Op: OpDrop, Channel: r.ch}
	if err := firstError(c.Do(ctx, reqs[:1], out[:1]), out[:1]); err != nil {
		return fmt.Errorf("cannot empty %s: %w", r.ch, err)
	}
	for ts := int64(1); ts <= r.o.Keys; {
		n := int(min(batch, r.o.Keys-ts+1))
		for i := range n {
			reqs[i] = Request{Op: OpAppend, Channel: r.ch, Value: r.value, Time: ts + int64(i)}
		}
		if err := firstError(c.Do(ctx, reqs[:n], out[:n]), out[:n]); err != nil {
			return fmt.Errorf("cannot fill %s: %w", r.ch, err)
		}
		ts += int64(n)
	}
	return nil
}

// cleanup removes the run's channel.
func (r *run) cleanup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	c, err := r.t.Open(ctx, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	out := make([]Outcome, 1)
	return firstError(c.Do(ctx, []Request{{Op: OpDrop, Channel: r.ch}}, out), out)
}

// firstError returns err or the first request error of out.
func firstError(err error, out []Outcome) error {
	if err != nil {
		return err
	}
	for _, o := range out {
		if o.Err != nil {
			return o.Err
		}
	}
	return nil
}

// claim returns how many requests the next batch of a connection has; 0
// means stop. first is the key index of a Load batch.
func (r *run) claim(phase int32) (n int, first int64) {
	p := int64(r.o.Pipeline)
	switch {
	case phase == phaseStop:
		return 0, 0
	case r.o.Workload == Load:
		first = r.claimed.Add(p) - p
		return int(max(0, min(p, r.o.Keys-first))), first
	case phase == phaseMeasure && r.o.Requests > 0:
		before := r.claimed.Add(p) - p
		return int(max(0, min(p, r.o.Requests-before))), 0
	}
	return int(p), 0
}

// drive runs one connection until the run stops.
func (r *run) drive(ctx context.Context, c Conn, t *tally, seed uint64) {
	t.hist = hdrhistogram.New(histMin, histMax, histDigits)
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	p := r.o.Pipeline
	reqs, out := make([]Request, p), make([]Outcome, p)
	keys := make([]byte, p*keyLen)
	for i := range reqs {
		reqs[i] = Request{Channel: r.ch, Key: keys[i*keyLen : (i+1)*keyLen : (i+1)*keyLen]}
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		phase := r.phase.Load()
		n, first := r.claim(phase)
		if n == 0 {
			return
		}
		r.fill(reqs[:n], rng, first)
		clear(out[:n])
		var err error
		if c == nil {
			err = r.reopen(ctx, &c)
		}
		if c != nil {
			err = c.Do(ctx, reqs[:n], out[:n])
		}
		if errors.Is(err, ErrUnsupported) {
			t.fatal = err
			r.phase.Store(phaseStop)
			return
		}
		if c == nil {
			for i := range out[:n] {
				out[i].Err = err
			}
		}
		if phase == phaseMeasure {
			r.failed.Add(t.record(out[:n]))
			r.done.Add(int64(n))
			t.last = time.Now()
		} else {
			t.warmup += int64(n)
		}
		if err != nil && c != nil {
			c.Close()
			c = nil
		}
	}
}

// reopen replaces a broken connection, pausing a little after a failure.
func (r *run) reopen(ctx context.Context, c *Conn) error {
	nc, err := r.t.Open(ctx, r.o.Pipeline)
	if err != nil {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
		return err
	}
	*c = nc
	return nil
}

// record adds the outcomes of a batch to the tally and returns how many
// failed.
func (t *tally) record(out []Outcome) (failed int64) {
	for _, o := range out {
		t.requests++
		switch {
		case o.Err != nil:
			failed++
			if t.firstErr == nil {
				t.firstErr = o.Err
			}
			continue
		case o.Miss:
			t.misses++
		}
		us := max(o.Latency.Microseconds(), histMin)
		t.hist.RecordValue(min(us, histMax))
	}
	t.errors += failed
	return failed
}

// fill makes the requests of the next batch.
func (r *run) fill(reqs []Request, rng *rand.Rand, first int64) {
	for i := range reqs {
		q := &reqs[i]
		q.Value, q.Time, q.Count = nil, 0, 0
		switch r.o.Workload {
		case Get:
			q.Op = OpGet
		case Set:
			q.Op = OpSet
		case Mix:
			q.Op = OpSet
			if rng.Float64() < r.o.GetRatio {
				q.Op = OpGet
			}
		case Load:
			q.Op = OpSet
			formatKey(q.Key, first+int64(i))
		case Push:
			q.Op = OpPush
		case Pop:
			q.Op = OpPop
		case Append:
			q.Op = OpAppend
		case Range:
			q.Op, q.Count = OpRange, r.o.RangeOf
			q.Time = 1 + rng.Int64N(r.o.Keys-int64(r.o.RangeOf)+1)
		}
		switch q.Op {
		case OpGet, OpSet:
			if r.o.Workload != Load {
				formatKey(q.Key, rng.Int64N(r.o.Keys))
			}
		}
		switch q.Op {
		case OpSet, OpPush, OpAppend:
			q.Value = r.value
		}
	}
}

// keyLen is the length of every key: "key:" and 12 digits, the keys
// redis-benchmark -r makes.
const keyLen = 16

// formatKey writes key:%012d of n into k (keyLen bytes).
func formatKey(k []byte, n int64) {
	copy(k, "key:")
	for i := keyLen - 1; i >= 4; i-- {
		k[i] = byte('0' + n%10)
		n /= 10
	}
}

// result merges the tallies.
func (r *run) result(start time.Time, tallies []tally) Result {
	res := Result{
		Target: r.t.String(), Workload: string(r.o.Workload), Conns: r.o.Conns, Pipeline: r.o.Pipeline,
		Keys: r.o.Keys, ValueSize: r.o.ValueSize,
	}
	h := hdrhistogram.New(histMin, histMax, histDigits)
	end := start
	for i := range tallies {
		t := &tallies[i]
		if t.hist != nil {
			h.Merge(t.hist)
		}
		res.Requests += t.requests
		res.WarmupRequests += t.warmup
		res.Errors += t.errors
		res.Misses += t.misses
		if t.last.After(end) {
			end = t.last
		}
		if t.firstErr != nil && res.FirstError == "" {
			res.FirstError = t.firstErr.Error()
		}
	}
	res.Seconds = end.Sub(start).Seconds()
	if res.Seconds > 0 {
		res.OpsPerSec = float64(res.Requests-res.Errors) / res.Seconds
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	res.MeanMs = h.Mean() / 1000
	res.P50Ms = ms(h.ValueAtQuantile(50))
	res.P99Ms = ms(h.ValueAtQuantile(99))
	res.P999Ms = ms(h.ValueAtQuantile(99.9))
	res.MaxMs = ms(h.Max())
	return res
}

// WriteText writes res for people.
func (res Result) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w, `target    %s
workload  %s, %d conns x pipeline %d, %d keys, %d-byte values
requests  %d in %.2fs, %d errors, %d misses
ops/s     %s
latency   mean %.3f ms, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms
`, res.Target, res.Workload, res.Conns, res.Pipeline, res.Keys, res.ValueSize,
		res.Requests, res.Seconds, res.Errors, res.Misses, thousands(int64(res.OpsPerSec)),
		res.MeanMs, res.P50Ms, res.P99Ms, res.P999Ms, res.MaxMs)
	if err == nil && len(res.Nodes) > 1 {
		err = writeNodes(w, res.Nodes)
	}
	if err == nil && res.FirstError != "" {
		_, err = fmt.Fprintf(w, "first error: %s\n", res.FirstError)
	}
	return err
}
