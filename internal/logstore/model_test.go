package logstore

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"shoal/internal/vfs"
)

// noSyncFS skips fsyncs: the model test is about logic, not durability,
// and fsyncs would make it slow.
type noSyncFS struct{ vfs.FS }

func (n noSyncFS) SyncDir(string) error { return nil }

func (n noSyncFS) Create(name string) (vfs.File, error) { return noSyncFile(n.FS.Create(name)) }

func (n noSyncFS) Open(name string) (vfs.File, error) { return noSyncFile(n.FS.Open(name)) }

func (n noSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	return noSyncFile(n.FS.OpenFile(name, flag, perm))
}

type nsFile struct{ vfs.File }

func (nsFile) Sync() error { return nil }

func noSyncFile(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return nsFile{f}, nil
}

// modelRec is a record of the in-memory model.
type modelRec struct {
	ts    uint64
	vb    uint16
	value string
}

// logModel is the store as a list per channel, in append order.
type logModel struct {
	chans map[string][]modelRec
	rr    uint64 // the store's round-robin counter (not kept across a reopen)
	n     int    // values are unique: "v<n>"
}

// rangeOf is what Range must return: the records in [from, to] that f
// selects, stably sorted by timestamp.
func (m *logModel) rangeOf(ch string, from, to uint64, f func(string) bool) []modelRec {
	var out []modelRec
	for _, r := range m.chans[ch] {
		if r.ts >= from && r.ts <= to && f(r.value) {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b modelRec) int { return cmp.Compare(a.ts, b.ts) })
	return out
}

const (
	modelVBuckets = 4
	modelSpan     = 10
)

// TestModel runs random sequences of appends, range reads (whole and
// resumed batch by batch), reopens, channel removals, vBucket drops and
// retention passes (compression and deletion, under a clock the test
// moves) against the store and an in-memory list, and compares every read.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		dir, err := os.MkdirTemp("", "logmodel")
		if err != nil {
			rt.Fatal(err)
		}
		defer os.RemoveAll(dir)
		clock := &settableClock{sec: 100}
		cfg := Config{Dir: dir, FS: noSyncFS{vfs.Default}, VBuckets: modelVBuckets, SegmentSpan: modelSpan * time.Second,
			Fsync: time.Hour, MaintainEvery: -1, CompressAfter: 20 * time.Second, Retention: 80 * time.Second,
			Now: clock.now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		s, err := Open(cfg)
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { s.Close() }()
		m := &logModel{chans: map[string][]modelRec{}}
		channel := rapid.SampledFrom([]string{"a", "b", "c"})

		read := func(rt *rapid.T, ch string, from, to uint64, f Filter, batch int, resume bool) []modelRec {
			var out []modelRec
			pos := Position{}
			it, err := s.Range(ch, from, to, f, pos)
			if err != nil {
				rt.Fatal(err)
			}
			for {
				b, err := it.Next(batch)
				if err != nil {
					rt.Fatal(err)
				}
				if b == nil {
					break
				}
				for _, r := range b {
					out = append(out, modelRec{r.Timestamp, r.VBucket, string(r.Value)})
				}
				if resume {
					pos = it.Position()
					it.Close()
					if it, err = s.Range(ch, from, to, f, pos); err != nil {
						rt.Fatal(err)
					}
				}
			}
			it.Close()
			return out
		}
		compare := func(rt *rapid.T, what string, got, want []modelRec) {
			if !slices.Equal(got, want) {
				rt.Fatalf("%s:\n got %v\nwant %v", what, got, want)
			}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"append": func(rt *rapid.T) {
				ch := channel.Draw(rt, "ch")
				n := rapid.IntRange(1, 4).Draw(rt, "n")
				lo := uint64(max(clock.sec-90, 0))
				var recs []Rec
				var add []modelRec
				for range n {
					// Few distinct timestamps, so that ties are common.
					ts := lo + 7*rapid.Uint64Range(0, uint64(clock.sec+20-int64(lo))/7).Draw(rt, "ts")
					m.n++
					v := fmt.Sprintf("v%d", m.n)
					recs = append(recs, Rec{Timestamp: ts, Value: []byte(v)})
					add = append(add, modelRec{ts, uint16(m.rr % modelVBuckets), v})
					m.rr++
				}
				if err := s.Append(context.Background(), ch, recs, nil); err != nil {
					rt.Fatal(err)
				}
				m.chans[ch] = append(m.chans[ch], add...)
			},
			"range": func(rt *rapid.T) {
				ch := channel.Draw(rt, "ch")
				from := rapid.Uint64Range(0, uint64(clock.sec+30)).Draw(rt, "from")
				to := from + rapid.Uint64Range(0, 60).Draw(rt, "len")
				digit := rapid.SampledFrom([]string{"", "1", "7"}).Draw(rt, "filter")
				f, match := Filter{}, func(string) bool { return true }
				if digit != "" {
					f, match = Substring(digit), func(v string) bool { return strings.Contains(v, digit) }
				}
				compare(rt, "range", read(rt, ch, from, to, f, DefaultBatchBytes, false), m.rangeOf(ch, from, to, match))
			},
			"resumed range": func(rt *rapid.T) {
				ch := channel.Draw(rt, "ch")
				batch := rapid.IntRange(1, 12).Draw(rt, "batch")
				compare(rt, "resumed range", read(rt, ch, 0, 1<<40, Filter{}, batch, true),
					m.rangeOf(ch, 0, 1<<40, func(string) bool { return true }))
			},
			"reopen": func(rt *rapid.T) {
				if err := s.Close(); err != nil {
					rt.Fatal(err)
				}
				if s, err = Open(cfg); err != nil {
					rt.Fatal(err)
				}
				m.rr = 0
			},
			"remove channel": func(rt *rapid.T) {
				ch := channel.Draw(rt, "ch")
				if err := s.RemoveChannel(ch); err != nil {
					rt.Fatal(err)
				}
				delete(m.chans, ch)
			},
			"drop vbucket": func(rt *rapid.T) {
				vb := uint16(rapid.IntRange(0, modelVBuckets-1).Draw(rt, "vb"))
				if err := s.DropVBucket(vb); err != nil {
					rt.Fatal(err)
				}
				for ch, recs := range m.chans {
					m.chans[ch] = slices.DeleteFunc(recs, func(r modelRec) bool { return r.vb == vb })
				}
			},
			"time passes": func(rt *rapid.T) {
				clock.sec += int64(rapid.IntRange(0, 30).Draw(rt, "seconds"))
				if err := s.Maintain(); err != nil {
					rt.Fatal(err)
				}
				for ch, recs := range m.chans {
					m.chans[ch] = slices.DeleteFunc(recs, func(r modelRec) bool {
						return int64(r.ts-r.ts%modelSpan+modelSpan) <= clock.sec-80
					})
				}
			},
			"": func(rt *rapid.T) {
				for _, ch := range []string{"a", "b", "c"} {
					cs, _ := s.ChannelSize(ch)
					if int(cs.Records) != len(m.chans[ch]) {
						rt.Fatalf("channel %s holds %d records, model %d", ch, cs.Records, len(m.chans[ch]))
					}
				}
			},
		})
	})
}
