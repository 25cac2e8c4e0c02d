package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
)

// capture is a slog JSON handler on a buffer; records decodes what it got.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *capture) records(t *testing.T) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(c.buf.Bytes()) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		delete(m, "time")
		out = append(out, m)
	}
	c.buf.Reset()
	return out
}

func newCapture(handlerLevel slog.Level, source bool) (*capture, *slog.Logger) {
	c := &capture{}
	return c, slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{Level: handlerLevel, AddSource: source}))
}

func TestHCLoggerLevels(t *testing.T) {
	c, sl := newCapture(slog.LevelDebug-8, false)
	l := NewHCLogger(sl, "raft", slog.LevelDebug-4)
	l.Trace("t")
	l.Debug("d")
	l.Info("i")
	l.Warn("w")
	l.Error("e")
	l.Log(hclog.NoLevel, "none")
	l.Log(hclog.Warn, "logged warn")
	l.Log(hclog.Off, "off")
	want := []map[string]any{
		{"level": "DEBUG-4", "msg": "t", "component": "raft"},
		{"level": "DEBUG", "msg": "d", "component": "raft"},
		{"level": "INFO", "msg": "i", "component": "raft"},
		{"level": "WARN", "msg": "w", "component": "raft"},
		{"level": "ERROR", "msg": "e", "component": "raft"},
		{"level": "INFO", "msg": "none", "component": "raft"},
		{"level": "WARN", "msg": "logged warn", "component": "raft"},
	}
	if diff := cmp.Diff(want, c.records(t)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if !l.IsTrace() || l.GetLevel() != hclog.Trace {
		t.Errorf("IsTrace %v, GetLevel %v; want true, Trace", l.IsTrace(), l.GetLevel())
	}
}

func TestHCLoggerMinimum(t *testing.T) {
	c, sl := newCapture(slog.LevelDebug-8, false)
	l := NewHCLogger(sl, "raft", slog.LevelWarn)
	child := l.Named("snapshot").With("k", "v")
	l.Info("entering follower state")
	child.Info("compacting logs")
	l.Warn("failed to contact")
	child.Error("boom")
	got := c.records(t)
	if len(got) != 2 || got[0]["msg"] != "failed to contact" || got[1]["msg"] != "boom" {
		t.Fatalf("with minimum Warn got %v", got)
	}
	for _, lg := range []hclog.Logger{l, child} {
		if lg.IsTrace() || lg.IsDebug() || lg.IsInfo() || !lg.IsWarn() || !lg.IsError() || lg.GetLevel() != hclog.Warn {
			t.Errorf("%s: Is* = %v %v %v %v %v, GetLevel %v", lg.Name(), lg.IsTrace(), lg.IsDebug(), lg.IsInfo(), lg.IsWarn(), lg.IsError(), lg.GetLevel())
		}
	}

	// SetLevel reaches loggers derived before and after it.
	child.SetLevel(hclog.Debug)
	later := l.Named("net")
	for _, lg := range []hclog.Logger{l, child, later} {
		if !lg.IsDebug() || lg.IsTrace() {
			t.Errorf("%s after SetLevel(Debug): IsDebug %v IsTrace %v", lg.Name(), lg.IsDebug(), lg.IsTrace())
		}
	}
	l.Debug("now shown")
	if got := c.records(t); len(got) != 1 || got[0]["msg"] != "now shown" {
		t.Fatalf("after SetLevel(Debug) got %v", got)
	}
	l.SetLevel(hclog.Off)
	l.Error("hidden")
	if l.IsError() || len(c.records(t)) != 0 {
		t.Error("SetLevel(Off) still logs")
	}

	// Between hclog levels: Info+2 lets Warn through, not Info.
	if lv := NewHCLogger(sl, "", slog.LevelInfo+2).GetLevel(); lv != hclog.Warn {
		t.Errorf("minimum Info+2 gives %v, want Warn", lv)
	}
	if lv := NewHCLogger(sl, "", slog.LevelError+1).GetLevel(); lv != hclog.Off {
		t.Errorf("minimum Error+1 gives %v, want Off", lv)
	}
}

func TestHCLoggerHandlerLevel(t *testing.T) {
	c, sl := newCapture(slog.LevelInfo, false)
	l := NewHCLogger(sl, "raft", slog.LevelDebug-4)
	if l.IsTrace() || l.IsDebug() || !l.IsInfo() {
		t.Errorf("handler at Info: IsTrace %v IsDebug %v IsInfo %v", l.IsTrace(), l.IsDebug(), l.IsInfo())
	}
	l.Debug("hidden by the handler")
	l.Info("shown")
	if got := c.records(t); len(got) != 1 || got[0]["msg"] != "shown" {
		t.Fatalf("got %v", got)
	}
}

func TestHCLoggerArgs(t *testing.T) {
	c, sl := newCapture(slog.LevelDebug-8, false)
	l := NewHCLogger(sl, "raft", slog.LevelInfo)
	l.Info("pairs", "peer", "n1", "term", uint64(3), "error", errors.New("bad"))
	l.Info("odd", "a", 1, "dangling")
	l.Info("non-string key", 7, "seven")
	l.Info("formats", "servers", hclog.Fmt("%d servers", 3), "hex", hclog.Hex(255),
		"oct", hclog.Octal(8), "bin", hclog.Binary(5), "q", hclog.Quote("a b"))
	l.Info("stack", "a", 1, hclog.CapturedStacktrace("goroutine 1"))
	l.Info("no args")
	want := []map[string]any{
		{"level": "INFO", "msg": "pairs", "component": "raft", "peer": "n1", "term": float64(3), "error": "bad"},
		{"level": "INFO", "msg": "odd", "component": "raft", "a": float64(1), hclog.MissingKey: "dangling"},
		{"level": "INFO", "msg": "non-string key", "component": "raft", "7": "seven"},
		{"level": "INFO", "msg": "formats", "component": "raft", "servers": "3 servers", "hex": "0xff",
			"oct": "010", "bin": "0b101", "q": `"a b"`},
		{"level": "INFO", "msg": "stack", "component": "raft", "a": float64(1), "stacktrace": "goroutine 1"},
		{"level": "INFO", "msg": "no args", "component": "raft"},
	}
	if diff := cmp.Diff(want, c.records(t)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

func TestHCLoggerWithAndNames(t *testing.T) {
	c, sl := newCapture(slog.LevelDebug-8, false)
	root := NewHCLogger(sl.With("part", "meta"), "raft", slog.LevelInfo)
	a := root.With("node", "n1")
	b := a.With("peer", "n2", "odd")
	snap := b.Named("snapshot")
	reset := snap.ResetNamed("raft-net")
	unnamed := NewHCLogger(sl, "", slog.LevelInfo).Named("x")

	if got := root.ImpliedArgs(); len(got) != 0 {
		t.Errorf("root ImpliedArgs = %v", got)
	}
	if diff := cmp.Diff([]any{"node", "n1", "peer", "n2", hclog.MissingKey, "odd"}, snap.ImpliedArgs()); diff != "" {
		t.Errorf("ImpliedArgs (-want +got):\n%s", diff)
	}
	// The returned slice is a copy.
	b.ImpliedArgs()[0] = "changed"
	for lg, name := range map[hclog.Logger]string{root: "raft", a: "raft", snap: "raft.snapshot", reset: "raft-net", unnamed: "x"} {
		if lg.Name() != name {
			t.Errorf("Name() = %q, want %q", lg.Name(), name)
		}
	}

	root.Info("root")
	a.Info("a")
	snap.Info("snap", "k", 1)
	reset.Info("reset")
	NewHCLogger(sl, "", slog.LevelInfo).Info("nameless")
	want := []map[string]any{
		{"level": "INFO", "msg": "root", "part": "meta", "component": "raft"},
		{"level": "INFO", "msg": "a", "part": "meta", "component": "raft", "node": "n1"},
		{"level": "INFO", "msg": "snap", "part": "meta", "component": "raft.snapshot", "node": "n1", "peer": "n2", hclog.MissingKey: "odd", "k": float64(1)},
		{"level": "INFO", "msg": "reset", "part": "meta", "component": "raft-net", "node": "n1", "peer": "n2", hclog.MissingKey: "odd"},
		{"level": "INFO", "msg": "nameless"},
	}
	if diff := cmp.Diff(want, c.records(t)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

func TestHCLoggerSource(t *testing.T) {
	c, sl := newCapture(slog.LevelInfo, true)
	l := NewHCLogger(sl, "raft", slog.LevelInfo)
	l.Info("direct")
	l.Log(hclog.Info, "via Log")
	l.StandardLogger(nil).Print("via the standard logger")
	recs := c.records(t)
	if len(recs) != 3 {
		t.Fatalf("got %d records, want 3", len(recs))
	}
	for _, r := range recs {
		src, _ := r["source"].(map[string]any)
		if file, _ := src["file"].(string); filepath.Base(file) != "hclog_test.go" {
			t.Errorf("%q: source %v, want this file", r["msg"], src)
		}
	}
}

func TestHCLoggerStandard(t *testing.T) {
	c, sl := newCapture(slog.LevelDebug-8, false)
	l := NewHCLogger(sl, "raft", slog.LevelDebug-4)
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[WARN] disk slow")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERR] gone\n")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("plain")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true}).
		Print("2024/01/02 15:04:05 [DEBUG] stamped")
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error, InferLevels: true}).Print("[INFO] forced")
	if _, err := l.StandardWriter(nil).Write([]byte("written\n")); err != nil {
		t.Fatal(err)
	}
	var got [][2]any
	for _, r := range c.records(t) {
		got = append(got, [2]any{r["level"], r["msg"]})
	}
	want := [][2]any{{"WARN", "disk slow"}, {"ERROR", "gone"}, {"INFO", "plain"}, {"DEBUG", "stamped"}, {"ERROR", "forced"}, {"INFO", "written"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
