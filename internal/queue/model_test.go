package queue

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"shoal/internal/vfs"
)

// noSyncFS skips fsyncs: the model test simulates process crashes, which
// keep the page cache, so fsyncs only cost time there.
type noSyncFS struct{ vfs.FS }

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error { return nil }

func (f noSyncFS) Create(name string) (vfs.File, error) { return wrapNoSync(f.FS.Create(name)) }
func (f noSyncFS) Open(name string) (vfs.File, error)   { return wrapNoSync(f.FS.Open(name)) }
func (f noSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	return wrapNoSync(f.FS.OpenFile(name, flag, perm))
}
func (noSyncFS) SyncDir(string) error { return nil }

func wrapNoSync(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

// queueModel is what the store should hold: plain slices.
type queueModel struct {
	plain map[string][]string // channels without subscribers
	subs  map[string][]string // subscriber queues of channel "s"
}

var modelChannels = []string{"a", "b", "c"}

// TestModel runs random pushes (to one or several channels, values from
// empty to several rings long), pops, batched consumption by subscribers,
// subscriptions, channel removals, clean restarts and crashes against a
// plain-slice model, with tiny rings and segments so overflow, segment
// rotation and checkpoints happen all the time.
func TestModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		dir, err := os.MkdirTemp("", "queue-model")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		cfg := Config{
			Dir:           dir,
			FS:            noSyncFS{vfs.Default},
			VBuckets:      4,
			RingSize:      rapid.Int64Range(64, 1024).Draw(t, "ring"),
			SegmentSize:   rapid.Int64Range(128, 2048).Draw(t, "segment"),
			JournalSize:   rapid.Int64Range(512, 8192).Draw(t, "journal"),
			IndexInterval: -1,
			FsyncInterval: time.Hour, // no fsync waits; crashes here keep the page cache
			Logger:        quiet,
		}
		if rapid.Bool().Draw(t, "journal mode") {
			cfg.Durability = DurabilityJournal
		}
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.Close() }()
		m := queueModel{plain: map[string][]string{}, subs: map[string][]string{}}
		consumers := map[string]*Consumer{}
		subscribe := func(name string) {
			c, err := s.Subscribe("s", name)
			if err != nil {
				t.Fatalf("Subscribe(%q): %v", name, err)
			}
			consumers[name] = c
			if _, ok := m.subs[name]; !ok {
				m.subs[name] = nil
			}
		}
		reopen := func() {
			s, err = Open(cfg)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			for name := range m.subs {
				subscribe(name)
			}
		}
		subscribe("X")
		n := 0
		value := func(t *rapid.T) string {
			n++
			size := rapid.OneOf(rapid.IntRange(0, 40), rapid.IntRange(0, 3000)).Draw(t, "size")
			return strings.Repeat(string(rune('a'+n%26)), size) + "#" + string(rune('0'+n%10))
		}
		t.Repeat(map[string]func(*rapid.T){
			"push": func(t *rapid.T) {
				chs := rapid.SliceOfNDistinct(rapid.SampledFrom(append(modelChannels, "s")), 1, 4, rapid.ID[string]).Draw(t, "channels")
				v := value(t)
				if err := s.Push(context.Background(), chs, []byte(v), nil); err != nil {
					t.Fatalf("Push: %v", err)
				}
				for _, ch := range chs {
					if ch == "s" {
						for name := range m.subs {
							m.subs[name] = append(m.subs[name], v)
						}
					} else {
						m.plain[ch] = append(m.plain[ch], v)
					}
				}
			},
			"pop": func(t *rapid.T) {
				ch := rapid.SampledFrom(modelChannels).Draw(t, "channel")
				got, err := s.Pop(ch, nil)
				if len(m.plain[ch]) == 0 {
					if !errors.Is(err, ErrEmpty) {
						t.Fatalf("Pop(%q) of an empty queue: %q, %v", ch, got, err)
					}
					return
				}
				if err != nil || string(got) != m.plain[ch][0] {
					t.Fatalf("Pop(%q) = %.30q, %v; want %.30q", ch, got, err, m.plain[ch][0])
				}
				m.plain[ch] = m.plain[ch][1:]
			},
			"pop subscribed": func(t *rapid.T) {
				if _, err := s.Pop("s", nil); !errors.Is(err, ErrSubscribed) {
					t.Fatalf("Pop of a subscribed channel: %v", err)
				}
			},
			"consume": func(t *rapid.T) {
				name := rapid.SampledFrom(slices.Sorted(maps.Keys(m.subs))).Draw(t, "subscriber")
				maxBytes := rapid.IntRange(0, 5000).Draw(t, "maxBytes")
				batch, k, err := consumers[name].Next(nil, maxBytes)
				want := m.subs[name]
				if len(want) == 0 {
					if !errors.Is(err, ErrEmpty) {
						t.Fatalf("Next of empty %q: %v", name, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Next(%q): %v", name, err)
				}
				got := decodeBatch(t, batch)
				if k != len(got) || k == 0 || !slices.Equal(got, want[:k]) {
					t.Fatalf("Next(%q) = %d records %.30q, want a prefix of %.30q", name, k, got, want)
				}
				m.subs[name] = want[k:]
			},
			"subscribe": func(t *rapid.T) {
				subscribe(rapid.SampledFrom([]string{"X", "Y", "Z"}).Draw(t, "name"))
			},
			"remove": func(t *rapid.T) {
				ch := rapid.SampledFrom(modelChannels).Draw(t, "channel")
				if _, err := s.RemoveChannel(ch); err != nil {
					t.Fatal(err)
				}
				delete(m.plain, ch)
			},
			"restart": func(t *rapid.T) {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				reopen()
			},
			"crash": func(t *rapid.T) {
				lost := map[string]int64{}
				if cfg.Durability == DurabilityMemory {
					// The memory part is lost; with a fresh index the
					// overflow comes back exactly.
					if err := s.Sync(); err != nil {
						t.Fatal(err)
					}
					for _, st := range s.Channels() {
						lost[st.Name+"/"+st.Subscriber] = st.MemoryRecords
					}
				}
				s.abandon()
				reopen()
				for ch := range m.plain {
					m.plain[ch] = m.plain[ch][lost[ch+"/"]:]
				}
				for name := range m.subs {
					m.subs[name] = m.subs[name][lost["s/"+name]:]
				}
			},
			"": func(t *rapid.T) {
				for _, st := range s.Channels() {
					want := m.plain[st.Name]
					if st.Name == "s" {
						want = m.subs[st.Subscriber]
					}
					var bytes int64
					for _, v := range want {
						bytes += int64(len(v))
					}
					if st.Records != int64(len(want)) || st.Bytes != bytes {
						t.Fatalf("stats %+v, model has %d records, %d bytes", st, len(want), bytes)
					}
				}
			},
		})
	})
}
