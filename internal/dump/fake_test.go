package dump

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

// fakeStore is a kv engine for tests: it is both a Source and a Sink.
type fakeStore struct {
	vbs   int
	mu    sync.Mutex
	seqno []uint64                              // per vBucket, shared by the channels
	data  map[string][]map[string]engine.Record // channel -> vBucket -> key -> record
}

func newFakeStore(vbs int) *fakeStore {
	return &fakeStore{vbs: vbs, seqno: make([]uint64, vbs), data: make(map[string][]map[string]engine.Record)}
}

func (s *fakeStore) channel(ch string) []map[string]engine.Record {
	c := s.data[ch]
	if c == nil {
		c = make([]map[string]engine.Record, s.vbs)
		for i := range c {
			c[i] = make(map[string]engine.Record)
		}
		s.data[ch] = c
	}
	return c
}

// put stores key=value in ch with a new seqno.
func (s *fakeStore) put(ch, key, value string, expiry int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vb := vbucket.OfString(key, s.vbs)
	s.seqno[vb]++
	s.channel(ch)[vb][key] = engine.Record{Key: []byte(key), Value: []byte(value), Seqno: s.seqno[vb], Expiry: expiry}
}

// fill puts n records key-i in ch with values of size bytes.
func (s *fakeStore) fill(ch string, n, size int) {
	for i := range n {
		v := fmt.Sprintf("%s-value-%d-", ch, i)
		v += string(bytes.Repeat([]byte{byte('a' + i%26)}, max(0, size-len(v))))
		s.put(ch, fmt.Sprintf("key-%d", i), v[:size], int64(i%3))
	}
}

func (s *fakeStore) SnapshotChannel(ch string, fn func(vb uint16, seqno uint64, recs []engine.Record) error) error {
	for vb := range s.vbs {
		s.mu.Lock()
		c := s.data[ch]
		if c == nil || len(c[vb]) == 0 {
			s.mu.Unlock()
			continue
		}
		recs := slices.SortedFunc(maps.Values(c[vb]), func(a, b engine.Record) int { return bytes.Compare(a.Key, b.Key) })
		seqno := s.seqno[vb]
		s.mu.Unlock()
		if err := fn(uint16(vb), seqno, recs); err != nil {
			return err
		}
	}
	return nil
}

func (s *fakeStore) ChannelNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.data))
}

func (s *fakeStore) Load(ch string, vb uint16, seqno uint64, recs []engine.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channel(ch)
	for _, r := range recs {
		c[vb][string(r.Key)] = engine.Record{Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Seqno: r.Seqno, Expiry: r.Expiry}
	}
	s.seqno[vb] = max(s.seqno[vb], seqno)
	return nil
}

// contents returns channel -> key -> record.
func (s *fakeStore) contents() map[string]map[string]engine.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]engine.Record)
	for ch, c := range s.data {
		m := make(map[string]engine.Record)
		for _, vb := range c {
			maps.Copy(m, vb)
		}
		if len(m) > 0 {
			out[ch] = m
		}
	}
	return out
}

// clone returns a deep copy, to compare with later.
func (s *fakeStore) clone() *fakeStore {
	c := newFakeStore(s.vbs)
	for ch := range s.contents() {
		_ = s.SnapshotChannel(ch, func(vb uint16, seqno uint64, recs []engine.Record) error {
			return c.Load(ch, vb, seqno, recs)
		})
	}
	return c
}

// sameData fails t unless got holds exactly want's records and at least
// want's seqnos.
func sameData(t tb, got, want *fakeStore) {
	t.Helper()
	// Compared by hand: cmp.Diff walks byte slices by reflection, which
	// takes minutes on the larger tests.
	g, w := got.contents(), want.contents()
	var diffs []string
	for ch, wm := range w {
		for k, wr := range wm {
			gr, ok := g[ch][k]
			if !ok || !bytes.Equal(gr.Value, wr.Value) || gr.Seqno != wr.Seqno || gr.Expiry != wr.Expiry {
				diffs = append(diffs, fmt.Sprintf("%s/%q: got %+v (present %v), want %+v", ch, k, gr, ok, wr))
			}
		}
	}
	for ch, gm := range g {
		for k := range gm {
			if _, ok := w[ch][k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s/%q: unexpected", ch, k))
			}
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		t.Fatalf("loaded data differs in %d records:\n%s", len(diffs), strings.Join(diffs[:min(len(diffs), 10)], "\n"))
	}
	for vb := range want.vbs {
		if got.seqno[vb] < want.seqno[vb] && len(want.data) > 0 {
			// Only vBuckets with records carry a seqno in a dump.
			for _, c := range want.data {
				if len(c[vb]) > 0 {
					t.Fatalf("vbucket %d seqno %d after load, want >= %d", vb, got.seqno[vb], want.seqno[vb])
				}
			}
		}
	}
}

// logBuffer is a slog.Logger writing text into a buffer.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tb is what the helpers need of a *testing.T, *testing.B or *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// removeChannel drops ch and its records.
func (s *fakeStore) removeChannel(ch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data, ch)
}
