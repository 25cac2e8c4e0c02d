package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{
		{VBuckets: -1}, {VBuckets: 70000}, {MaxValueSize: engine.MaxValueLen + 1}, {MaxValueSize: -1}, {MemoryLimit: -1},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Fatalf("New accepted %+v", cfg)
		}
	}
	s := newStore(t, Config{})
	if len(s.parts) != 1024 || s.cfg.MaxValueSize != 1<<20 || s.cfg.TombstoneTTL != time.Minute || s.Kind() != engine.KindKV {
		t.Fatalf("defaults: %+v", s.cfg)
	}
}

func TestErrors(t *testing.T) {
	s := newStore(t, Config{VBuckets: 16, MaxValueSize: 100})
	long := bytes.Repeat([]byte("k"), engine.MaxKeyLen+1)
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"empty key", put(s, "c", nil, nil), ErrBadKey},
		{"long key", put(s, "c", long, nil), ErrKeyTooBig},
		{"big value", put(s, "c", []byte("k"), make([]byte, 101)), ErrValueTooBig},
		{"bad channel", put(s, "c d", []byte("k"), nil), ErrBadChannel},
		{"empty channel", put(s, "", []byte("k"), nil), ErrBadChannel},
		{"get missing", get(s, "c", []byte("k")), ErrNotFound},
		{"get empty key", get(s, "c", nil), ErrBadKey},
		{"update missing", update(s, "c", []byte("k"), 1), ErrNotFound},
		{"load bad vbucket", s.Load("c", 16, 0, nil), ErrBadVBucket},
		{"load bad channel", s.Load("c.d", 0, 0, nil), ErrBadChannel},
		{"drop bad vbucket", s.DropVBucket(16), ErrBadVBucket},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
	if put(s, "c", []byte("k"), make([]byte, 100)) != nil {
		t.Fatal("value of exactly MaxValueSize refused")
	}
	if put(s, "c", bytes.Repeat([]byte("k"), engine.MaxKeyLen), nil) != nil {
		t.Fatal("key of MaxKeyLen refused")
	}
	if _, err := s.Remove("c", nil); !errors.Is(err, ErrBadKey) {
		t.Fatal(err)
	}
	s.Close()
	s.Close() // idempotent
	for name, err := range map[string]error{
		"put": put(s, "c", []byte("k"), nil), "get": get(s, "c", []byte("k")), "update": update(s, "c", []byte("k"), 1),
		"load": s.Load("c", 0, 0, nil), "apply": s.Apply(&engine.Mutation{Op: engine.OpSet}),
		"snapshot": s.SnapshotChannel("c", nil),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	if _, err := s.Remove("c", []byte("k")); !errors.Is(err, ErrClosed) || s.Exists("c", []byte("k")) || s.RemoveChannel("c") {
		t.Error("Remove/Exists/RemoveChannel after Close")
	}
}

func put(s *Store, ch string, k, v []byte) error { _, err := s.Put(ch, k, v, 0); return err }
func get(s *Store, ch string, k []byte) error    { _, _, err := s.Get(ch, k, nil); return err }
func update(s *Store, ch string, k []byte, cas uint64) error {
	_, err := s.Update(ch, k, []byte("u"), cas, 0)
	return err
}

func TestPointOperations(t *testing.T) {
	s := newStore(t, Config{VBuckets: 4})
	cas1, _ := s.Put("c", []byte("k"), []byte("v1"), 0)
	dst := []byte("prefix:")
	v, cas, err := s.Get("c", []byte("k"), dst)
	if err != nil || string(v) != "prefix:v1" || cas != cas1 {
		t.Fatalf("Get: %q %d %v", v, cas, err)
	}
	if _, err := s.Update("c", []byte("k"), []byte("v2"), cas1+1, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("Update with a wrong cas: %v", err)
	}
	cas2, err := s.Update("c", []byte("k"), []byte("v2"), cas1, 0)
	if err != nil || cas2 <= cas1 {
		t.Fatalf("Update: %d %v", cas2, err)
	}
	if _, err := s.Update("c", []byte("k"), []byte("v3"), cas1, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("Update with a used cas: %v", err)
	}
	if !s.Exists("c", []byte("k")) || s.Exists("d", []byte("k")) {
		t.Fatal("Exists")
	}
	if ok, _ := s.Remove("c", []byte("k")); !ok {
		t.Fatal("Remove of a record")
	}
	if ok, _ := s.Remove("c", []byte("k")); ok {
		t.Fatal("Remove of a removed record")
	}
	if _, err := s.Update("c", []byte("k"), []byte("v"), cas2, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of a removed record: %v", err)
	}
	s.Put("b", []byte("x"), []byte("12345"), 0)
	s.Put("a", []byte("y"), []byte("1"), 0)
	s.Put("a", []byte("z"), nil, 0)
	want := []ChannelStats{{"a", 2, 3}, {"b", 1, 6}}
	if d := cmp.Diff(want, s.Channels()); d != "" {
		t.Fatal(d)
	}
	if r, b := s.Size(); r != 3 || b != 9 {
		t.Fatalf("Size %d %d", r, b)
	}
	s.Get("a", []byte("y"), nil)
	for vb := range 4 {
		s.Scan("a", uint16(vb), nil, func(Record) bool { return true })
	}
	c := s.Counters()
	wantC := Counters{Written: 5, WrittenBytes: 3 + 3 + 6 + 2 + 1, Read: 2, ReadBytes: 2 + 1, Deleted: 1, DeletedBytes: 3, Iterated: 2, IteratedBytes: 3}
	if c != wantC {
		t.Fatalf("Counters\n %+v, want\n %+v", c, wantC)
	}
	if !s.RemoveChannel("a") || s.RemoveChannel("a") || s.ChannelSize("a") != (ChannelStats{Name: "a"}) {
		t.Fatal("RemoveChannel")
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	s := newStore(t, Config{VBuckets: 16})
	s.Put("c", []byte("key"), make([]byte, 100), 0)
	s.Put("c", []byte("ttl"), make([]byte, 100), time.Hour)
	dst := make([]byte, 0, 128)
	for _, k := range []string{"key", "ttl"} {
		key := []byte(k)
		if n := testing.AllocsPerRun(100, func() { s.Get("c", key, dst[:0]) }); n != 0 {
			t.Fatalf("Get of %s: %v allocations", k, n)
		}
	}
	key := []byte("key")
	if n := testing.AllocsPerRun(100, func() { s.Exists("c", key) }); n != 0 {
		t.Fatalf("Exists: %v allocations", n)
	}
}

func TestTTL(t *testing.T) {
	clock := newFakeClock()
	s := newStore(t, Config{VBuckets: 2, Now: clock.Now})
	clock.Add(300 * time.Millisecond)
	s.Put("c", []byte("k"), []byte("v"), 1500*time.Millisecond) // expires at the whole second after +1.8 s
	clock.Add(1600 * time.Millisecond)
	if !s.Exists("c", []byte("k")) {
		t.Fatal("expired early")
	}
	clock.Add(100 * time.Millisecond)
	if s.Exists("c", []byte("k")) {
		t.Fatal("visible after expiry")
	}
	if _, err := s.Update("c", []byte("k"), nil, 1, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of an expired record: %v", err)
	}
	if ok, _ := s.Remove("c", []byte("k")); ok {
		t.Fatal("Remove of an expired record")
	}
	vb := s.locateVB([]byte("k"))
	if s.HighSeqno(vb) != 1 {
		t.Fatal("expired record changed the seqno before the sweep")
	}
	sweepAll(s)
	if s.HighSeqno(vb) != 2 || s.Counters().Expired != 1 {
		t.Fatalf("sweep: high %d, counters %+v", s.HighSeqno(vb), s.Counters())
	}
	if es, _ := entries(s, vb); len(es) != 1 || !es[0].Expired {
		t.Fatalf("entries %+v", es)
	}
	// Put over an expired record is an ordinary put.
	s.Put("c", []byte("j"), []byte("v"), time.Second)
	clock.Add(2 * time.Second)
	if cas, err := s.Put("c", []byte("j"), []byte("w"), 0); err != nil || !s.Exists("c", []byte("j")) || cas != s.HighSeqno(s.locateVB([]byte("j"))) {
		t.Fatalf("Put over an expired record: %v", err)
	}
}

func (s *Store) locateVB(key []byte) uint16 {
	p, _ := s.locate(key)
	return p.id
}

// TestSweeperRuns checks the background sweeper: expiries and tombstone
// purges happen without anyone calling it.
func TestSweeperRuns(t *testing.T) {
	clock := newFakeClock()
	s, err := New(Config{VBuckets: 64, Now: clock.Now, TombstoneTTL: time.Second, SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 5000
	for i := range n {
		s.Put("c", fmt.Appendf(nil, "k%d", i), make([]byte, 100), time.Second)
	}
	mem := s.MemoryUsage()
	clock.Add(2 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for s.Counters().Expired != n {
		if time.Now().After(deadline) {
			t.Fatalf("expired %d of %d", s.Counters().Expired, n)
		}
		time.Sleep(time.Millisecond)
	}
	clock.Add(2 * time.Second)
	// Every tombstone goes but the one of each vBucket's latest mutation.
	for vb := uint16(0); vb < 64; vb++ {
		for {
			es, _ := entries(s, vb)
			if len(es) <= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("vb %d: %d tombstones left", vb, len(es))
			}
			time.Sleep(time.Millisecond)
		}
	}
	if got := s.MemoryUsage(); got >= mem/4 {
		t.Fatalf("memory %d after purging, %d before", got, mem)
	}
	s.Close() // stop the sweeper before looking inside
	if err := checkStore(s); err != nil {
		t.Fatal(err)
	}
}

func TestScanResume(t *testing.T) {
	s := newStore(t, Config{VBuckets: 1})
	var want []string
	for i := range 500 {
		k := fmt.Sprintf("key%d", i)
		s.Put("c", []byte(k), []byte(k), 0)
		want = append(want, k)
	}
	s.Put("d", []byte("other"), nil, 0)
	// Read in pages of 7, resuming after the last key of each page, while
	// records are added and removed behind and ahead of the cursor.
	var got []string
	var after []byte
	removed := map[string]bool{}
	for page := 0; ; page++ {
		n := 0
		s.Scan("c", 0, after, func(r Record) bool {
			if string(r.Key) != string(r.Value) {
				t.Fatalf("record %q=%q", r.Key, r.Value)
			}
			got = append(got, string(r.Key))
			after = slices.Clone(r.Key)
			n++
			return n < 7
		})
		if n == 0 {
			break
		}
		if page%5 == 0 {
			k := want[(page*37)%len(want)]
			if ok, _ := s.Remove("c", []byte(k)); ok {
				removed[k] = true
			}
		}
	}
	// Every record present throughout was seen exactly once, in hash order.
	seen := map[string]int{}
	for _, k := range got {
		seen[k]++
	}
	for _, k := range want {
		if seen[k] > 1 || seen[k] == 0 && !removed[k] {
			t.Fatalf("key %s seen %d times", k, seen[k])
		}
	}
	for i := 1; i < len(got); i++ {
		if cmpKeys([]byte(got[i-1]), []byte(got[i])) >= 0 {
			t.Fatalf("scan order broken at %d: %s then %s", i, got[i-1], got[i])
		}
	}
}

func TestSnapshotAndLoad(t *testing.T) {
	clock := newFakeClock()
	const vbs = 8
	a := newStore(t, Config{VBuckets: vbs, Now: clock.Now})
	for i := range 300 {
		ttl := time.Duration(0)
		if i%3 == 0 {
			ttl = time.Duration(1+i%2) * time.Hour
		}
		a.Put("c", fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i), ttl)
		a.Put("other", fmt.Appendf(nil, "k%d", i), nil, 0)
	}
	for i := range 50 {
		a.Remove("c", fmt.Appendf(nil, "k%d", i*2))
	}
	type dump struct {
		vb    uint16
		seqno uint64
		recs  []Record
	}
	var dumps []dump
	err := a.SnapshotChannel("c", func(vb uint16, seqno uint64, recs []Record) error {
		d := dump{vb: vb, seqno: seqno}
		for _, r := range recs {
			d.recs = append(d.recs, Record{Key: slices.Clone(r.Key), Value: slices.Clone(r.Value), Seqno: r.Seqno, Expiry: r.Expiry})
		}
		dumps = append(dumps, d)
		return nil
	})
	if err != nil || len(dumps) != vbs {
		t.Fatalf("SnapshotChannel: %d dumps, %v", len(dumps), err)
	}
	boom := errors.New("boom")
	if err := a.SnapshotChannel("c", func(uint16, uint64, []Record) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("error of fn: %v", err)
	}

	clock.Add(90 * time.Minute) // half of the records with a ttl expire
	b := newStore(t, Config{VBuckets: vbs, Now: clock.Now})
	for _, d := range dumps {
		if err := b.Load("c", d.vb, d.seqno, d.recs); err != nil {
			t.Fatal(err)
		}
		if b.HighSeqno(d.vb) != a.HighSeqno(d.vb) || b.PurgeSeqno(d.vb) != a.HighSeqno(d.vb) {
			t.Fatalf("vb %d: seqno %d purge %d, want %d", d.vb, b.HighSeqno(d.vb), b.PurgeSeqno(d.vb), a.HighSeqno(d.vb))
		}
	}
	for vb := range uint16(vbs) {
		var ra, rb []string
		a.Scan("c", vb, nil, func(r Record) bool {
			ra = append(ra, fmt.Sprint(string(r.Key), string(r.Value), r.Seqno, r.Expiry))
			return true
		})
		b.Scan("c", vb, nil, func(r Record) bool {
			rb = append(rb, fmt.Sprint(string(r.Key), string(r.Value), r.Seqno, r.Expiry))
			return true
		})
		if d := cmp.Diff(ra, rb); d != "" {
			t.Fatalf("vb %d after load:\n%s", vb, d)
		}
	}
	want := int64(0)
	for i := range 300 {
		removed, expired := i%2 == 0 && i < 100, i%6 == 0
		if !removed && !expired {
			want++
		}
	}
	if got := b.ChannelSize("c").Records; got != want {
		t.Fatalf("loaded %d records, want %d", got, want)
	}

	// Hostile dumps.
	d := dumps[0]
	r := d.recs[0]
	for name, recs := range map[string][]Record{
		"wrong vbucket": {{Key: dumps[1].recs[0].Key}},
		"empty key":     {{Key: nil}},
		"long key":      {{Key: make([]byte, 251)}},
		"big value":     {{Key: r.Key, Value: make([]byte, 2<<20)}},
	} {
		if err := b.Load("c", d.vb, d.seqno, recs); err == nil {
			t.Errorf("Load of a record with %s accepted", name)
		}
	}
	// An older record does not replace a newer one.
	old := Record{Key: r.Key, Value: []byte("older"), Seqno: r.Seqno - 1}
	if err := b.Load("c", d.vb, 0, []Record{old}); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := b.Get("c", r.Key, nil); !bytes.Equal(v, r.Value) {
		t.Fatalf("older record loaded over a newer one: %q", v)
	}
}

// TestSnapshotConsistency runs SnapshotChannel while writers put records,
// and checks that each vBucket's snapshot is exactly the state at its
// seqno, rebuilt from the writers' history.
func TestSnapshotConsistency(t *testing.T) {
	const vbs = 16
	s := newStore(t, Config{VBuckets: vbs})
	type write struct {
		key, value string
	}
	var mu sync.Mutex
	history := make([]map[uint64]write, vbs) // per vb: seqno -> write
	for i := range history {
		history[i] = map[uint64]write{}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k%d", rng.IntN(2000))
				value := fmt.Sprintf("w%d-%d", w, i)
				vb := s.locateVB([]byte(key))
				mu.Lock() // so that history holds every seqno a snapshot can see
				cas, err := s.Put("c", []byte(key), []byte(value), 0)
				if err != nil {
					panic(err)
				}
				history[vb][cas] = write{key, value}
				mu.Unlock()
			}
		}()
	}
	type snap struct {
		seqno uint64
		recs  map[string]string
	}
	var snaps [][]snap
	for range 5 {
		per := make([]snap, vbs)
		err := s.SnapshotChannel("c", func(vb uint16, seqno uint64, recs []Record) error {
			m := map[string]string{}
			for _, r := range recs {
				m[string(r.Key)] = string(r.Value)
			}
			per[vb] = snap{seqno, m}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, per)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, per := range snaps {
		for vb, sn := range per {
			if sn.recs == nil {
				sn.recs = map[string]string{} // no table yet
			}
			want := map[string]string{}
			for seq := uint64(1); seq <= sn.seqno; seq++ {
				w, ok := history[vb][seq]
				if !ok {
					t.Fatalf("vb %d: seqno %d missing from the history", vb, seq)
				}
				want[w.key] = w.value
			}
			if d := cmp.Diff(want, sn.recs); d != "" {
				t.Fatalf("vb %d snapshot at seqno %d is not the state at that seqno:\n%s", vb, sn.seqno, d)
			}
		}
	}
}

// TestConcurrent mixes every operation from several goroutines with the
// background sweeper, a stream and a watcher (run it with -race).
func TestConcurrent(t *testing.T) {
	clock := newFakeClock()
	s, err := New(Config{VBuckets: 8, Now: clock.Now, TombstoneTTL: time.Second, SweepInterval: time.Millisecond, StreamBacklog: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	replica := newStore(t, Config{VBuckets: 8, Now: clock.Now})
	run := startConsumer(s, replica, 3)
	w := s.Watch("c0", 4096)
	defer w.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 0, 256)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ch := fmt.Sprintf("c%d", rng.IntN(3))
				key := fmt.Appendf(nil, "k%d", rng.IntN(500))
				switch r := rng.IntN(100); {
				case r < 40:
					s.Put(ch, key, make([]byte, rng.IntN(200)), time.Duration(rng.IntN(3))*time.Second)
				case r < 60:
					s.Get(ch, key, buf[:0])
				case r < 75:
					s.Remove(ch, key)
				case r < 85:
					if _, cas, err := s.Get(ch, key, buf[:0]); err == nil {
						s.Update(ch, key, []byte("u"), cas, 0)
					}
				case r < 95:
					s.Scan(ch, uint16(rng.IntN(8)), nil, func(Record) bool { return rng.IntN(10) != 0 })
				case r < 97:
					clock.Add(500 * time.Millisecond)
				case r < 98:
					s.SnapshotChannel(ch, func(uint16, uint64, []Record) error { return nil })
				default:
					s.RemoveChannel(ch)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var evs []Event
		for {
			select {
			case <-stop:
				return
			case <-w.Ready():
				evs, _ = w.Drain(evs)
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	sweepAll(s) // the clock stands still now: nothing more expires
	waitVBCaughtUp(t, s, replica, 3)
	if err := run.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("stream ended: %v", err)
	}
	if err := checkStore(s); err != nil {
		t.Fatal(err)
	}
	ea, _ := entries(s, 3)
	eb, _ := entries(replica, 3)
	// Tombstones purged on the active may survive on the replica (purged
	// later there); live records must match.
	live := func(es []entry) []entry {
		return slices.DeleteFunc(es, func(e entry) bool { return e.Tomb })
	}
	if d := cmp.Diff(live(ea), live(eb)); d != "" {
		t.Fatalf("replica of vb 3 differs:\n%s", d)
	}
}

// cmpKeys orders keys as Scan does.
func cmpKeys(a, b []byte) int {
	ha, hb := hashOf(a), hashOf(b)
	switch {
	case ha < hb:
		return -1
	case ha > hb:
		return 1
	}
	return strings.Compare(string(a), string(b))
}

// TestSizesInVBuckets: sizes restricted to some vBuckets count exactly
// the records of those vBuckets.
func TestSizesInVBuckets(t *testing.T) {
	s := newStore(t, Config{VBuckets: 16})
	want := map[bool]ChannelStats{true: {Name: "c"}, false: {Name: "c"}}
	for i := range 200 {
		key := fmt.Appendf(nil, "key-%d", i)
		if err := put(s, "c", key, []byte("vv")); err != nil {
			t.Fatal(err)
		}
		even := vbucket.Of(key, 16)%2 == 0
		st := want[even]
		st.Records++
		st.Bytes += int64(len(key) + 2)
		want[even] = st
	}
	even := func(vb uint16) bool { return vb%2 == 0 }
	if got := s.ChannelSizeIn("c", even); got != want[true] {
		t.Fatalf("even vBuckets: %+v, want %+v", got, want[true])
	}
	if got := s.ChannelsIn(func(vb uint16) bool { return !even(vb) }); len(got) != 1 || got[0] != want[false] {
		t.Fatalf("odd vBuckets: %+v, want %+v", got, want[false])
	}
	if got := s.ChannelsIn(func(uint16) bool { return false }); len(got) != 0 {
		t.Fatalf("no vBucket: %+v", got)
	}
	if all := s.ChannelSize("c"); all.Records != 200 || all.Bytes != want[true].Bytes+want[false].Bytes {
		t.Fatalf("every vBucket: %+v", all)
	}
}

// TestUpdateKeepsTTL: Update without a TTL keeps the record's expiry
// (Redis's KEEPTTL), with one sets it anew; Expire sets or clears it as a
// write of its own (a new CAS, the value unchanged); Expiry reports it.
func TestUpdateKeepsTTL(t *testing.T) {
	clock := newFakeClock()
	s := newStore(t, Config{VBuckets: 2, Now: clock.Now})
	key := []byte("k")
	cas, err := s.Put("c", key, []byte("v1"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	at := clock.Now().Add(10 * time.Second)
	if exp, c, err := s.Expiry("c", key); err != nil || !exp.Equal(at) || c != cas {
		t.Fatalf("Expiry after Put: %v %d %v, want %v %d", exp, c, err, at, cas)
	}
	clock.Add(4 * time.Second)
	if cas, err = s.Update("c", key, []byte("v2"), cas, 0); err != nil {
		t.Fatal(err)
	}
	if exp, _, _ := s.Expiry("c", key); !exp.Equal(at) {
		t.Fatalf("Update without a TTL: expiry %v, want the old %v", exp, at)
	}
	clock.Add(7 * time.Second) // past the original expiry
	if s.Exists("c", key) {
		t.Fatal("an updated record outlived its TTL")
	}

	// A new TTL on Update replaces the old one.
	cas, _ = s.Put("c", key, []byte("v1"), 10*time.Second)
	if cas, err = s.Update("c", key, []byte("v2"), cas, time.Hour); err != nil {
		t.Fatal(err)
	}
	if exp, _, _ := s.Expiry("c", key); !exp.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("Update with a TTL: expiry %v", exp)
	}
	// A negative TTL clears it.
	if cas, err = s.Update("c", key, []byte("v2"), cas, -1); err != nil {
		t.Fatal(err)
	}
	if exp, _, _ := s.Expiry("c", key); !exp.IsZero() {
		t.Fatalf("Update with a negative TTL: expiry %v, want none", exp)
	}
	// A record without a TTL keeps none.
	other := []byte("forever")
	c2, _ := s.Put("c", other, []byte("x"), 0)
	s.Update("c", other, []byte("y"), c2, 0)
	if exp, _, err := s.Expiry("c", other); err != nil || !exp.IsZero() {
		t.Fatalf("Update of a record without TTL: %v %v", exp, err)
	}

	// Expire: a write with the value kept.
	vb := s.locateVB(key)
	high := s.HighSeqno(vb)
	ncas, err := s.Expire("c", key, 30*time.Second)
	if err != nil || ncas != high+1 || ncas == cas {
		t.Fatalf("Expire: %d %v (high was %d)", ncas, err, high)
	}
	if v, c, _ := s.Get("c", key, nil); string(v) != "v2" || c != ncas {
		t.Fatalf("after Expire: %q %d", v, c)
	}
	var scanned Record
	s.Scan("c", vb, nil, func(r Record) bool {
		if string(r.Key) == "k" {
			scanned = r
		}
		return true
	})
	if want := clock.Now().Add(30 * time.Second).Unix(); scanned.Expiry != want {
		t.Fatalf("the record's expiry as scanned (and streamed): %d, want %d", scanned.Expiry, want)
	}
	// Persist (ttl 0) clears it.
	if _, err := s.Expire("c", key, 0); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	if exp, _, err := s.Expiry("c", key); err != nil || !exp.IsZero() || !s.Exists("c", key) {
		t.Fatalf("after persist: %v %v", exp, err)
	}
	for _, k := range []string{"missing", "k2"} {
		if _, err := s.Expire("c", []byte(k), time.Second); !errors.Is(err, ErrNotFound) {
			t.Errorf("Expire of %s: %v", k, err)
		}
		if _, _, err := s.Expiry("c", []byte(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Expiry of %s: %v", k, err)
		}
	}
	if _, _, err := s.Expiry("nochannel", key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Expiry in a missing channel: %v", err)
	}
}
