// Package chaos is shoal's Jepsen-style harness: a cluster of real shoald
// processes, concurrent clients on a small key set, a seeded schedule of
// faults (kill -9 and restart, SIGSTOP/SIGCONT, frozen links), and checks
// of what the clients saw: per-key linearizability of the kv operations
// (porcupine; an operation that failed without a definite answer is
// indeterminate: it may take effect at any time after its call, or never)
// and no lost acknowledged write (Jepsen's set check: every acknowledged
// put of a key written once is read back at the end). The harness itself
// is the package's test (chaos_test.go): `go test ./internal/chaos
// -chaos.duration=60s`. This file is the pure part: histories, the model
// and the checks.
package chaos

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kinds of kv operations.
const (
	OpPut = iota // Put(key, value)
	OpGet        // Get(key)
	OpCAS        // Update(key, value) with the CAS read along with Expect
)

// Input is a kv operation's call. Values are unique per write, so the
// model compares values (a CAS matches exactly when the record still
// holds the value its cas was read with).
type Input struct {
	Kind   int
	Key    string
	Value  string // Put, CAS: the value written
	Expect string // CAS: the value read with the cas passed
}

// Outcomes of an operation.
const (
	OutOK       = iota // Put, CAS stored; Get found Value
	OutNotFound        // Get: no record; CAS: no record
	OutMismatch        // CAS: the record changed (ErrExists)
	OutUnknown         // no definite answer: indeterminate
)

// Output is a kv operation's result.
type Output struct {
	Outcome int
	Value   string // Get
}

// Op is one recorded operation: times in nanoseconds from the history's
// start; an indeterminate operation's Return is open (math.MaxInt64).
type Op struct {
	Client int
	In     Input
	Out    Output
	Call   int64
	Return int64
}

// History records operations from many goroutines.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewHistory starts an empty history now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the time since the history began, in nanoseconds.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records a finished operation; an OutUnknown one gets an open return.
func (h *History) Add(op Op) {
	if op.Out.Outcome == OutUnknown {
		op.Return = math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations recorded.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Model is the per-key register with compare-and-swap; its state is the
// key's value, "" for none.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(Input).Key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in, out := state.(string), input.(Input), output.(Output)
		switch in.Kind {
		case OpPut:
			return out.Outcome == OutOK || out.Outcome == OutUnknown, in.Value
		case OpGet:
			if out.Outcome == OutNotFound {
				return st == "", st
			}
			return out.Outcome == OutOK && st == out.Value, st
		case OpCAS:
			switch out.Outcome {
			case OutOK:
				return st == in.Expect, in.Value
			case OutMismatch:
				return st != in.Expect && st != "", st
			case OutNotFound:
				return st == "", st
			case OutUnknown:
				if st == in.Expect {
					return true, in.Value
				}
				return true, st
			}
		}
		return false, st
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(Input), output.(Output)
		res := [...]string{"ok", "not found", "mismatch", "unknown"}[out.Outcome]
		switch in.Kind {
		case OpPut:
			return fmt.Sprintf("put(%s, %s) -> %s", in.Key, in.Value, res)
		case OpGet:
			if out.Outcome == OutOK {
				return fmt.Sprintf("get(%s) -> %s", in.Key, out.Value)
			}
			return fmt.Sprintf("get(%s) -> %s", in.Key, res)
		default:
			return fmt.Sprintf("cas(%s, %s -> %s) -> %s", in.Key, in.Expect, in.Value, res)
		}
	},
	DescribeState: func(state interface{}) string {
		if state.(string) == "" {
			return "(none)"
		}
		return state.(string)
	},
}

// Linearizable checks the history per key within timeout; with a
// violation (porcupine.Illegal) it writes porcupine's HTML visualization
// to html (if not "").
func Linearizable(ops []Op, timeout time.Duration, html string) (porcupine.CheckResult, error) {
	hist := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: op.In, Output: op.Out, Call: op.Call, Return: op.Return})
	}
	res, info := porcupine.CheckOperationsVerbose(Model, hist, timeout)
	if res == porcupine.Illegal && html != "" {
		if err := porcupine.VisualizePath(Model, info, html); err != nil {
			return res, fmt.Errorf("cannot write the visualization: %w", err)
		}
	}
	return res, nil
}

// SetResult is the outcome of the set check.
type SetResult struct {
	Acknowledged int      // writes acknowledged
	Found        int      // of them, read back
	Lost         []string // acknowledged and not found
	Unknown      int      // indeterminate writes (not checked)
	UnknownFound int      // of them, read back
}

// CheckSet compares the acknowledged writes with what was read back.
func CheckSet(acked, unknown []string, present map[string]bool) SetResult {
	r := SetResult{Acknowledged: len(acked), Unknown: len(unknown)}
	for _, k := range acked {
		if present[k] {
			r.Found++
		} else {
			r.Lost = append(r.Lost, k)
		}
	}
	for _, k := range unknown {
		if present[k] {
			r.UnknownFound++
		}
	}
	sort.Strings(r.Lost)
	return r
}

// Event is one entry of the fault timeline.
type Event struct {
	At   time.Duration
	What string
}

// Timeline records faults and what the cluster did.
type Timeline struct {
	start time.Time
	mu    sync.Mutex
	ev    []Event
	w     io.Writer // also printed here as they happen (nil: not)
}

// NewTimeline starts an empty timeline; events are also written to w.
func NewTimeline(start time.Time, w io.Writer) *Timeline { return &Timeline{start: start, w: w} }

// Add records an event.
func (t *Timeline) Add(format string, args ...any) {
	e := Event{At: time.Since(t.start).Round(time.Millisecond), What: fmt.Sprintf(format, args...)}
	t.mu.Lock()
	t.ev = append(t.ev, e)
	t.mu.Unlock()
	if t.w != nil {
		fmt.Fprintf(t.w, "chaos %8v  %s\n", e.At, e.What)
	}
}

// String is the timeline, one event a line.
func (t *Timeline) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for _, e := range t.ev {
		fmt.Fprintf(&b, "%8v  %s\n", e.At, e.What)
	}
	return b.String()
}

// WriteReport writes the timeline and a summary into dir.
func WriteReport(dir, summary string, tl *Timeline) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "timeline.txt"), []byte(tl.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary), 0o644)
}
