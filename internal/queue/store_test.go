package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/internal/vfs"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConfig is a small store: 16 vBuckets, a 1 KiB ring, 4 KiB overflow
// segments, no background index writes.
func testConfig(dir string) Config {
	return Config{
		Dir: dir, VBuckets: 16, RingSize: 1 << 10, SegmentSize: 4 << 10,
		IndexInterval: -1, Logger: quiet,
	}
}

func mustOpen(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustPush(t testing.TB, s *Store, value string, channels ...string) {
	t.Helper()
	if err := s.Push(context.Background(), channels, []byte(value), nil); err != nil {
		t.Fatalf("Push(%v, %q): %v", channels, value, err)
	}
}

// popAll pops channel until it is empty.
func popAll(t testing.TB, s *Store, channel string) []string {
	t.Helper()
	var out []string
	for {
		v, err := s.Pop(channel, nil)
		if errors.Is(err, ErrEmpty) {
			return out
		}
		if err != nil {
			t.Fatalf("Pop(%q) after %d records: %v", channel, len(out), err)
		}
		out = append(out, string(v))
	}
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%04d-%s", prefix, i, strings.Repeat("x", i%37)))
	}
	return out
}

func equal(t testing.TB, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d records, want %d\n got: %.10q\nwant: %.10q", what, len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: record %d is %q, want %q", what, i, got[i], want[i])
		}
	}
}

func stats(t testing.TB, s *Store, channel, subscriber string) ChannelStats {
	t.Helper()
	for _, st := range s.Channels() {
		if st.Name == channel && st.Subscriber == subscriber {
			return st
		}
	}
	t.Fatalf("no stats for %q/%q in %+v", channel, subscriber, s.Channels())
	return ChannelStats{}
}

func TestFIFOAcrossOverflow(t *testing.T) {
	for _, d := range []Durability{DurabilityMemory, DurabilityJournal} {
		t.Run(d.String(), func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			cfg.Durability = d
			s := mustOpen(t, cfg)
			defer s.Close()
			want := seq("a", 0, 200)
			for _, v := range want[:100] {
				mustPush(t, s, v, "ch")
			}
			st := stats(t, s, "ch", "")
			if st.Records != 100 || st.MemoryRecords == 0 || st.OverflowRecords == 0 {
				t.Fatalf("want records split between memory and overflow: %+v", st)
			}
			if st.Fullness <= 80 || st.Fullness > 100 {
				t.Fatalf("fullness %.1f%% with an overflowing ring", st.Fullness)
			}
			// Interleave: pop 30, push 100 more, pop the rest.
			var got []string
			for range 30 {
				v, err := s.Pop("ch", nil)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(v))
			}
			for _, v := range want[100:] {
				mustPush(t, s, v, "ch")
			}
			got = append(got, popAll(t, s, "ch")...)
			equal(t, "pops", got, want)
			st = stats(t, s, "ch", "")
			if st.Records != 0 || st.Bytes != 0 || st.Fullness != 0 {
				t.Fatalf("empty queue stats: %+v", st)
			}
			c := s.Counters()
			if c.PushedRecords != 200 || c.PoppedRecords != 200 || c.PushedBytes != c.PoppedBytes {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxValueSize = 8 << 10
	s := mustOpen(t, cfg)
	defer s.Close()
	ctx := context.Background()
	if err := s.Push(ctx, nil, []byte("v"), nil); !errors.Is(err, ErrNoChannels) {
		t.Errorf("no channels: %v", err)
	}
	many := make([]string, 256)
	for i := range many {
		many[i] = fmt.Sprint("c", i)
	}
	if err := s.Push(ctx, many, []byte("v"), nil); !errors.Is(err, ErrTooManyChannels) {
		t.Errorf("256 channels: %v", err)
	}
	if err := s.Push(ctx, many[:255], []byte("v"), nil); err != nil {
		t.Errorf("255 channels: %v", err)
	}
	for _, bad := range []string{"", "a b", "é", strings.Repeat("a", 256)} {
		if err := s.Push(ctx, []string{"ok", bad}, []byte("v"), nil); !errors.Is(err, ErrBadChannelName) {
			t.Errorf("channel %q: %v", bad, err)
		}
		if _, err := s.Pop(bad, nil); !errors.Is(err, ErrBadChannelName) {
			t.Errorf("pop %q: %v", bad, err)
		}
	}
	if _, err := s.Subscribe("ok", "bad name"); !errors.Is(err, ErrBadSubscriber) {
		t.Errorf("bad subscriber: %v", err)
	}
	if err := s.Push(ctx, []string{"big"}, make([]byte, 8<<10+1), nil); !errors.Is(err, ErrValueTooBig) {
		t.Errorf("value over MaxValueSize: %v", err)
	}
	if _, err := s.Pop("nothing", nil); !errors.Is(err, ErrEmpty) {
		t.Errorf("pop of unknown channel: %v", err)
	}
	// Larger than the ring (1 KiB) but allowed: straight to the overflow,
	// in order with the small records around it.
	big := strings.Repeat("B", 4<<10)
	mustPush(t, s, "before", "big")
	mustPush(t, s, big, "big")
	mustPush(t, s, "after", "big")
	if st := stats(t, s, "big", ""); st.OverflowRecords != 2 || st.MemoryRecords != 1 {
		t.Fatalf("stats with a record larger than the ring: %+v", st)
	}
	equal(t, "big", popAll(t, s, "big"), []string{"before", big, "after"})
	// An empty value is a value.
	mustPush(t, s, "", "empty")
	equal(t, "empty", popAll(t, s, "empty"), []string{""})
}

func TestRingSizeByPrefix(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RingSizeByPrefix = map[string]int64{"big_": 1 << 20, "b": 10}
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("overlapping prefixes: %v", err)
	}
	cfg.RingSizeByPrefix = map[string]int64{"big_": 1 << 20, "tiny_": 64}
	s := mustOpen(t, cfg)
	defer s.Close()
	mustPush(t, s, "v", "big_one", "tiny_one", "other")
	for name, want := range map[string]int64{"big_one": 1 << 20, "tiny_one": 64, "other": 1 << 10} {
		if got := stats(t, s, name, "").RingSize; got != want {
			t.Errorf("%s: ring size %d, want %d", name, got, want)
		}
	}
}

func TestMemoryModeCloseRestoresOrder(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	want := seq("r", 0, 150)
	for _, v := range want {
		mustPush(t, s, v, "a", "b")
	}
	// Pop some so the overflow head has moved and segments were consumed.
	got := popAll(t, s, "b")[:0]
	for range 40 {
		v, err := s.Pop("a", nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(v))
	}
	before := stats(t, s, "a", "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Push(context.Background(), []string{"a"}, []byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("push after close: %v", err)
	}
	s = mustOpen(t, testConfig(dir))
	defer s.Close()
	after := stats(t, s, "a", "")
	if after.Records != before.Records || after.MemoryRecords != before.MemoryRecords || after.Bytes != before.Bytes {
		t.Fatalf("stats before close %+v, after open %+v", before, after)
	}
	got = append(got, popAll(t, s, "a")...)
	equal(t, "a after restart", got, want)
	equal(t, "b after restart", popAll(t, s, "b"), nil)
}

// abandon simulates a crash: the goroutines stop and the files are closed,
// but nothing is saved.
func (s *Store) abandon() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.stopIndex)
	s.bg.Wait()
	s.closeFiles()
}

func TestMemoryModeCrashKeepsIndexedOverflow(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	want := seq("c", 0, 120)
	for _, v := range want {
		mustPush(t, s, v, "a")
	}
	st := stats(t, s, "a", "")
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.abandon()
	s = mustOpen(t, testConfig(dir))
	defer s.Close()
	// The ring is lost; the overflow (the newest records) survives, in order.
	equal(t, "after crash", popAll(t, s, "a"), want[st.MemoryRecords:])
}

func TestSubscribers(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	defer s.Close()
	mustPush(t, s, "old1", "ch")
	mustPush(t, s, "old2", "ch")
	// The first subscriber takes the backlog over.
	a1, err := s.Subscribe("ch", "A")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pop("ch", nil); !errors.Is(err, ErrSubscribed) {
		t.Fatalf("pop of a subscribed channel: %v", err)
	}
	select {
	case <-a1.Ready():
	default:
		t.Fatal("consumer with a backlog is not ready")
	}
	// A second name starts empty and gets what is pushed from now on.
	b, err := s.Subscribe("ch", "B")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Next(nil, 1000); !errors.Is(err, ErrEmpty) {
		t.Fatalf("new subscriber: %v", err)
	}
	for i := range 50 {
		mustPush(t, s, fmt.Sprint("new", i), "ch")
	}
	select {
	case <-b.Ready():
	default:
		t.Fatal("consumer not signalled by a push")
	}
	// Two consumers named A split A's queue.
	a2, err := s.Subscribe("ch", "A")
	if err != nil {
		t.Fatal(err)
	}
	var gotA []string
	for i := 0; ; i++ {
		c := a1
		if i%2 == 1 {
			c = a2
		}
		batch, n, err := c.Next(nil, 40)
		if errors.Is(err, ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs := decodeBatch(t, batch)
		if len(recs) != n {
			t.Fatalf("Next says %d records, batch has %d", n, len(recs))
		}
		gotA = append(gotA, recs...)
	}
	want := []string{"old1", "old2"}
	for i := range 50 {
		want = append(want, fmt.Sprint("new", i))
	}
	equal(t, "A (split between two consumers)", gotA, want)
	var gotB []string
	for {
		batch, _, err := b.Next(nil, 1<<20)
		if errors.Is(err, ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		gotB = append(gotB, decodeBatch(t, batch)...)
	}
	equal(t, "B", gotB, want[2:])
	if st := stats(t, s, "ch", "A"); st.Consumers != 2 || !st.Subscribed {
		t.Fatalf("A stats %+v", st)
	}
	a2.Close()
	if _, _, err := a2.Next(nil, 10); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	// Removing the channel ends the consumers.
	if ok, err := s.RemoveChannel("ch"); !ok || err != nil {
		t.Fatalf("RemoveChannel: %v %v", ok, err)
	}
	<-a1.Ready()
	if _, _, err := a1.Next(nil, 10); !errors.Is(err, ErrChannelRemoved) {
		t.Fatalf("Next after RemoveChannel: %v", err)
	}
	if ok, _ := s.RemoveChannel("ch"); ok {
		t.Fatal("second RemoveChannel found the channel")
	}
	if len(s.Channels()) != 0 {
		t.Fatalf("channels left: %+v", s.Channels())
	}
}

// decodeBatch splits a Next batch into its values.
func decodeBatch(t interface{ Fatalf(string, ...any) }, b []byte) []string {
	d := newFieldDecoder(b)
	var out []string
	for d.len() > 0 {
		out = append(out, string(d.bytes32()))
	}
	if err := d.finish(); err != nil {
		t.Fatalf("batch: %v", err)
	}
	return out
}

// A consumer that never asks for more costs the node only its queue: the
// ring stays at its size and the rest overflows to disk.
func TestIdleConsumerDoesNotBuffer(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	defer s.Close()
	c, err := s.Subscribe("ch", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 2000 {
		mustPush(t, s, fmt.Sprintf("%0100d", i), "ch")
	}
	st := stats(t, s, "ch", "")
	if st.Records != 2000 || st.Fullness > 100 || st.OverflowRecords < 1900 {
		t.Fatalf("stats %+v", st)
	}
	s.mu.Lock()
	buf := s.channels["ch"].queues[0].ring.allocated()
	s.mu.Unlock()
	if buf > 1<<10 {
		t.Fatalf("ring buffer %d bytes, over its 1 KiB size", buf)
	}
}

func TestRemoveChannelDeletesFiles(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, testConfig(dir))
	for _, v := range seq("x", 0, 200) {
		mustPush(t, s, v, "gone", "kept")
	}
	if _, err := s.RemoveChannel("gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "overflow"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("overflow dirs after removing one of two channels: %v %v", ents, err)
	}
	s = mustOpen(t, testConfig(dir))
	defer s.Close()
	equal(t, "kept", popAll(t, s, "kept"), seq("x", 0, 200))
	equal(t, "gone", popAll(t, s, "gone"), nil)
}

func TestDiskFullWhileOverflowing(t *testing.T) {
	for _, d := range []Durability{DurabilityMemory, DurabilityJournal} {
		t.Run(d.String(), func(t *testing.T) {
			dir := t.TempDir()
			quota := vfs.NewDiskQuota(1 << 62)
			cfg := testConfig(dir)
			cfg.Durability = d
			cfg.FS = vfs.Faulty(vfs.Default, quota)
			s := mustOpen(t, cfg)
			quota.SetLimit(quota.Written() + 20<<10)
			var stored []string
			var full error
			for i := 0; full == nil; i++ {
				v := fmt.Sprintf("%05d-%s", i, strings.Repeat("v", 90))
				// Two channels: a refused push must leave neither holding it.
				full = s.Push(context.Background(), []string{"a", "b"}, []byte(v), nil)
				if full == nil {
					stored = append(stored, v)
				}
				if i > 10000 {
					t.Fatal("disk never filled")
				}
			}
			if !errors.Is(full, ErrNoSpace) {
				t.Fatalf("push on a full disk: %v, want ErrNoSpace", full)
			}
			if stats(t, s, "a", "").OverflowRecords == 0 {
				t.Fatal("disk filled before anything overflowed")
			}
			// Pops still work: in memory mode with no space at all, in
			// journal mode with room for their entries (~40 bytes each).
			if d == DurabilityJournal {
				quota.SetLimit(quota.Written() + 1<<10)
			}
			var got []string
			for range 5 {
				v, err := s.Pop("a", nil)
				if err != nil {
					t.Fatalf("pop on a nearly full disk: %v", err)
				}
				got = append(got, string(v))
			}
			quota.SetLimit(1 << 62)
			mustPush(t, s, "after", "a", "b")
			stored = append(stored, "after")
			got = append(got, popAll(t, s, "a")...)
			equal(t, "a", got, stored)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			cfg.FS = vfs.Default
			s = mustOpen(t, cfg)
			defer s.Close()
			equal(t, "b after restart", popAll(t, s, "b"), stored)
		})
	}
}

func TestParseDurability(t *testing.T) {
	for _, d := range []Durability{DurabilityMemory, DurabilityJournal} {
		if got, err := ParseDurability(d.String()); got != d || err != nil {
			t.Errorf("ParseDurability(%q) = %v, %v", d, got, err)
		}
	}
	if _, err := ParseDurability("disk"); err == nil {
		t.Error("ParseDurability accepted \"disk\"")
	}
	if _, err := Open(Config{Dir: t.TempDir(), Durability: 7}); err == nil {
		t.Error("Open accepted an unknown durability")
	}
}

// TestUnsubscribe: removing one of several subscribers drops its queue
// and ends its consumers; removing the last one gives its records back to
// Pop. Subscribers reports each queue and its idle time. In journal mode
// the removal survives a crash (replayed from the journal) and, in memory
// mode, a clean restart.
func TestUnsubscribe(t *testing.T) {
	for _, mode := range []Durability{DurabilityJournal, DurabilityMemory} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.Durability = mode
			now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			cfg.Now = func() time.Time { return now }
			s := mustOpen(t, cfg)
			if ok, err := s.Unsubscribe("ch", "A"); ok || err != nil {
				t.Fatalf("Unsubscribe of a missing channel: %v %v", ok, err)
			}
			a, err := s.Subscribe("ch", "A")
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.Subscribe("ch", "B")
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
			now = now.Add(time.Hour)
			mustPush(t, s, "one", "ch")
			mustPush(t, s, "two", "ch")
			subs := s.Subscribers("ch")
			if len(subs) != 2 || subs[0].Subscriber != "A" || subs[0].Consumers != 1 || !subs[0].IdleSince.IsZero() ||
				subs[1].Subscriber != "B" || subs[1].Consumers != 0 || !subs[1].IdleSince.Equal(now.Add(-time.Hour)) || subs[1].Records != 2 {
				t.Fatalf("Subscribers: %+v", subs)
			}
			if _, err := s.Pop("ch", nil); !errors.Is(err, ErrSubscribed) {
				t.Fatalf("Pop of a subscribed channel: %v", err)
			}
			if ok, err := s.Unsubscribe("ch", "nobody"); ok || err != nil {
				t.Fatalf("Unsubscribe of a stranger: %v %v", ok, err)
			}
			if ok, err := s.Unsubscribe("ch", "A"); !ok || err != nil {
				t.Fatalf("Unsubscribe A: %v %v", ok, err)
			}
			if _, _, err := a.Next(nil, 0); !errors.Is(err, ErrUnsubscribed) {
				t.Fatalf("A's consumer after Unsubscribe: %v", err)
			}
			if subs := s.Subscribers("ch"); len(subs) != 1 || subs[0].Subscriber != "B" {
				t.Fatalf("Subscribers after removing A: %+v", subs)
			}
			// A crash (journal) or a clean close (memory) and a restart.
			if mode == DurabilityJournal {
				s.abandon()
			} else {
				s.Close()
			}
			s = mustOpen(t, cfg)
			defer func() { s.Close() }()
			if subs := s.Subscribers("ch"); len(subs) != 1 || subs[0].Subscriber != "B" || subs[0].Records != 2 {
				t.Fatalf("Subscribers after the restart: %+v", subs)
			}
			if ok, err := s.Unsubscribe("ch", "B"); !ok || err != nil {
				t.Fatalf("Unsubscribe B: %v %v", ok, err)
			}
			if subs := s.Subscribers("ch"); len(subs) != 0 {
				t.Fatalf("Subscribers after removing the last: %+v", subs)
			}
			equal(t, "pops after the last subscriber left", popAll(t, s, "ch"), []string{"one", "two"})
			if st := stats(t, s, "ch", ""); st.Subscribed {
				t.Fatalf("stats: %+v", st)
			}
		})
	}
}
