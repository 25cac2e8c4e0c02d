package bench

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"shoal/internal/wire"
)

// Workload is what the connections send.
type Workload string

// The workloads.
const (
	Get    Workload = "get"    // GET/Get of random keys of the key space
	Set    Workload = "set"    // SET/Put of random keys
	Mix    Workload = "mix"    // Get with probability GetRatio, else Set
	Push   Workload = "push"   // LPUSH/Push on one queue
	Pop    Workload = "pop"    // RPOP/Pop from that queue
	Append Workload = "append" // XADD/log append at the target's clock
	Range  Workload = "range"  // XRANGE/log range of RangeCount records of a log preloaded with Keys records
	Load   Workload = "load"   // SET/Put of every key of the key space once, in order; then stop
)

// Workloads lists every workload, for help texts.
var Workloads = []Workload{Get, Set, Mix, Push, Pop, Append, Range, Load}

// ParseWorkload returns the workload named s.
func ParseWorkload(s string) (Workload, error) {
	for _, w := range Workloads {
		if string(w) == s {
			return w, nil
		}
	}
	names := make([]string, len(Workloads))
	for i, w := range Workloads {
		names[i] = string(w)
	}
	return "", fmt.Errorf("unknown workload %q: want one of %s", s, strings.Join(names, ", "))
}

// Limits of the options.
const (
	MaxConns     = 10000
	MaxPipeline  = 4096
	MaxKeys      = 1_000_000_000_000 // keys are key:%012d
	MaxValueSize = 16 << 20
	MaxRange     = 10000
	// MaxBatchBytes bounds Pipeline x ValueSize, the values of one batch.
	MaxBatchBytes = 1 << 30
)

// Options describe one run.
type Options struct {
	Workload  Workload
	Conns     int           // connections, each run by one goroutine
	Pipeline  int           // requests per batch on each connection
	Keys      int64         // key space: keys key:000000000000 .. Keys-1 (and the size of the Range log)
	ValueSize int           // bytes of every value written
	Duration  time.Duration // measured time, when Requests is 0
	Requests  int64         // measured requests; 0: run for Duration
	Warmup    time.Duration // load sent before measuring, not recorded
	GetRatio  float64       // Mix: the share of Gets, 0..1
	RangeOf   int           // Range: records per request
	Channel   string        // base channel name: NAME-kv, NAME-queue, NAME-log, NAME-range by workload
	// Cleanup removes the run's channel (and everything in it) at the
	// end: the queue, the log, or the kv channel (on Redis the list or
	// stream key; kv keys stay there).
	Cleanup bool

	// Progress receives a live progress line every ProgressEvery (nil:
	// none).
	Progress      io.Writer
	ProgressEvery time.Duration
}

// DefaultOptions are the settings of `shoal bench` with no flags: the
// shapes of redis-benchmark -r 1000000 -d 100 with 50 clients.
func DefaultOptions() Options {
	return Options{
		Workload: Set, Conns: 50, Pipeline: 1, Keys: 1_000_000, ValueSize: 100,
		Duration: 10 * time.Second, Warmup: time.Second, GetRatio: 0.9, RangeOf: 10,
		Channel: "bench", ProgressEvery: time.Second,
	}
}

// Validate says what is wrong with o.
func (o *Options) Validate() error {
	var errs []error
	if _, err := ParseWorkload(string(o.Workload)); err != nil {
		errs = append(errs, err)
	}
	if o.Conns < 1 || o.Conns > MaxConns {
		errs = append(errs, fmt.Errorf("conns %d: want 1..%d", o.Conns, MaxConns))
	}
	if o.Pipeline < 1 || o.Pipeline > MaxPipeline {
		errs = append(errs, fmt.Errorf("pipeline %d: want 1..%d", o.Pipeline, MaxPipeline))
	}
	if o.Keys < 1 || o.Keys > MaxKeys {
		errs = append(errs, fmt.Errorf("keys %d: want 1..%d", o.Keys, int64(MaxKeys)))
	}
	if o.ValueSize < 0 || o.ValueSize > MaxValueSize {
		errs = append(errs, fmt.Errorf("value size %d: want 0..%d", o.ValueSize, MaxValueSize))
	}
	if int64(o.Pipeline)*int64(o.ValueSize) > MaxBatchBytes {
		errs = append(errs, fmt.Errorf("a batch of %d values of %d bytes is over %d bytes", o.Pipeline, o.ValueSize, MaxBatchBytes))
	}
	if o.Requests < 0 {
		errs = append(errs, fmt.Errorf("requests %d: must not be negative", o.Requests))
	}
	if o.Requests == 0 && o.Duration <= 0 && o.Workload != Load {
		errs = append(errs, errors.New("give a positive duration or a number of requests"))
	}
	if o.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup %v: must not be negative", o.Warmup))
	}
	if o.GetRatio < 0 || o.GetRatio > 1 {
		errs = append(errs, fmt.Errorf("get ratio %g: want 0..1", o.GetRatio))
	}
	if o.RangeOf < 1 || o.RangeOf > MaxRange || int64(o.RangeOf) > o.Keys {
		errs = append(errs, fmt.Errorf("range of %d: want 1..%d and at most the key space", o.RangeOf, MaxRange))
	}
	if !wire.ValidChannelString(o.Channel + "-range") {
		errs = append(errs, fmt.Errorf("channel %q: use 1-%d of A-Z a-z 0-9 _ -", o.Channel, wire.MaxChannelLen-len("-range")))
	}
	if o.Progress != nil && o.ProgressEvery <= 0 {
		errs = append(errs, errors.New("progress needs a positive interval"))
	}
	return errors.Join(errs...)
}

// channel returns the channel a workload's requests go to.
func (o *Options) channel() string {
	switch o.Workload {
	case Push, Pop:
		return o.Channel + "-queue"
	case Append:
		return o.Channel + "-log"
	case Range:
		return o.Channel + "-range"
	}
	return o.Channel + "-kv"
}

// ChannelName returns the channel the workload's requests go to.
func (o *Options) ChannelName() string { return o.channel() }

// CleansUpByDefault reports whether a workload's channel is removed at the
// end unless asked otherwise: the queue and log workloads, whose records
// nobody reads afterwards (the kv ones keep their records for a later get
// run).
func (w Workload) CleansUpByDefault() bool {
	switch w {
	case Push, Pop, Append, Range:
		return true
	}
	return false
}
