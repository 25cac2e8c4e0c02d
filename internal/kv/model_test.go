package kv

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"pgregory.net/rapid"
)

// modelRec is the model's view of one key: a live record or a tombstone.
type modelRec struct {
	value  []byte
	seqno  uint64
	expiry int64 // unix seconds, 0 = never (live records)
	tomb   bool
	stamp  int64 // removal time (tombstones)
}

// kvModel is what a Store must behave like.
type kvModel struct {
	vbs     int
	recs    map[string]map[string]*modelRec // channel -> key -> record
	seqno   []uint64
	purged  []uint64
	removed []map[string]modelRec // per vBucket: channel -> removal (seqno, stamp)
}

func (m *kvModel) vb(key string) int { return int(xxhash.Sum64String(key) % uint64(m.vbs)) }

func (m *kvModel) get(ch, key string, now int64) (*modelRec, bool) {
	r := m.recs[ch][key]
	if r == nil || r.tomb || (r.expiry != 0 && now >= r.expiry) {
		return nil, false
	}
	return r, true
}

func (m *kvModel) put(ch, key string, value []byte, expiry int64) uint64 {
	vb := m.vb(key)
	m.seqno[vb]++
	if m.recs[ch] == nil {
		m.recs[ch] = map[string]*modelRec{}
	}
	m.recs[ch][key] = &modelRec{value: slices.Clone(value), seqno: m.seqno[vb], expiry: expiry}
	return m.seqno[vb]
}

// storeTest drives a Store and its model with rapid.
type storeTest struct {
	s     *Store
	clock *fakeClock
	m     *kvModel
	keys  []string
	chans []string
}

const modelTombTTL = 10 * time.Second

func (st *storeTest) now() int64 { return st.clock.Now().Unix() }

func (st *storeTest) key(t *rapid.T) string { return rapid.SampledFrom(st.keys).Draw(t, "key") }
func (st *storeTest) ch(t *rapid.T) string  { return rapid.SampledFrom(st.chans).Draw(t, "ch") }

func (st *storeTest) value(t *rapid.T) []byte {
	n := rapid.OneOf(rapid.IntRange(0, 40), rapid.IntRange(100, 300), rapid.Just(9000)).Draw(t, "vlen")
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(i * 7)
	}
	if n > 0 {
		v[0] = rapid.Byte().Draw(t, "v0")
	}
	return v
}

func (st *storeTest) ttl(t *rapid.T) time.Duration {
	return rapid.SampledFrom([]time.Duration{0, 0, 500 * time.Millisecond, time.Second, 3 * time.Second}).Draw(t, "ttl")
}

func (st *storeTest) expiry(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return fromStamp(expiryStamp(st.clock.Now(), ttl))
}

func (st *storeTest) Put(t *rapid.T) {
	ch, key, v, ttl := st.ch(t), st.key(t), st.value(t), st.ttl(t)
	cas, err := st.s.Put(ch, []byte(key), v, ttl)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if want := st.m.put(ch, key, v, st.expiry(ttl)); cas != want {
		t.Fatalf("Put cas %d, want %d", cas, want)
	}
}

func (st *storeTest) Update(t *rapid.T) {
	ch, key, v, ttl := st.ch(t), st.key(t), st.value(t), st.ttl(t)
	r, ok := st.m.get(ch, key, st.now())
	cas := rapid.Uint64Range(0, 50).Draw(t, "cas")
	if ok && rapid.Bool().Draw(t, "rightCas") {
		cas = r.seqno
	}
	got, err := st.s.Update(ch, []byte(key), v, cas, ttl)
	switch {
	case !ok:
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update of missing key: %v", err)
		}
	case cas != r.seqno:
		if !errors.Is(err, ErrExists) {
			t.Fatalf("Update with stale cas: %v", err)
		}
	default:
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		exp := st.expiry(ttl)
		if ttl <= 0 {
			exp = r.expiry // Update without a TTL keeps the record's
		}
		if want := st.m.put(ch, key, v, exp); got != want {
			t.Fatalf("Update cas %d, want %d", got, want)
		}
	}
}

func (st *storeTest) Expire(t *rapid.T) {
	ch, key, ttl := st.ch(t), st.key(t), st.ttl(t)
	r, ok := st.m.get(ch, key, st.now())
	got, err := st.s.Expire(ch, []byte(key), ttl)
	if !ok {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Expire of missing key: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Expire: %v", err)
	}
	if want := st.m.put(ch, key, r.value, st.expiry(ttl)); got != want {
		t.Fatalf("Expire cas %d, want %d", got, want)
	}
}

func (st *storeTest) Get(t *rapid.T) {
	ch, key := st.ch(t), st.key(t)
	buf := make([]byte, 0, 8)
	v, cas, err := st.s.Get(ch, []byte(key), buf)
	r, ok := st.m.get(ch, key, st.now())
	if !ok {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of missing %s/%s: %q %v", ch, key, v, err)
		}
		return
	}
	if err != nil || !bytes.Equal(v, r.value) || cas != r.seqno {
		t.Fatalf("Get %s/%s: %d bytes cas %d %v, want %d bytes cas %d", ch, key, len(v), cas, err, len(r.value), r.seqno)
	}
}

func (st *storeTest) Exists(t *rapid.T) {
	ch, key := st.ch(t), st.key(t)
	_, want := st.m.get(ch, key, st.now())
	if got := st.s.Exists(ch, []byte(key)); got != want {
		t.Fatalf("Exists %s/%s = %v", ch, key, got)
	}
}

func (st *storeTest) Remove(t *rapid.T) {
	ch, key := st.ch(t), st.key(t)
	_, want := st.m.get(ch, key, st.now())
	got, err := st.s.Remove(ch, []byte(key))
	if err != nil || got != want {
		t.Fatalf("Remove %s/%s = %v %v, want %v", ch, key, got, err, want)
	}
	if want {
		vb := st.m.vb(key)
		st.m.seqno[vb]++
		st.m.recs[ch][key] = &modelRec{seqno: st.m.seqno[vb], tomb: true, stamp: st.now()}
	}
}

func (st *storeTest) RemoveChannel(t *rapid.T) {
	ch := st.ch(t)
	vbs := map[int]bool{}
	for key := range st.m.recs[ch] {
		vbs[st.m.vb(key)] = true
	}
	if got := st.s.RemoveChannel(ch); got != (len(vbs) > 0) {
		t.Fatalf("RemoveChannel %s = %v", ch, got)
	}
	for vb := range vbs {
		st.m.seqno[vb]++
		st.m.removed[vb][ch] = modelRec{seqno: st.m.seqno[vb], stamp: st.now()}
	}
	delete(st.m.recs, ch)
}

func (st *storeTest) Tick(t *rapid.T) {
	st.clock.Add(time.Duration(rapid.IntRange(1, 15000).Draw(t, "ms")) * time.Millisecond)
}

func (st *storeTest) Sweep(t *rapid.T) {
	now := st.now()
	age := int64(modelTombTTL / time.Second)
	high := slices.Clone(st.m.seqno)
	// Work out the sweep's effect; what depends on the order in which the
	// sweeper visits the slots is read back from the store and validated.
	var readBack []func()
	for ch, recs := range st.m.recs {
		for key, r := range recs {
			vb := st.m.vb(key)
			tb := st.s.parts[vb].tables[ch]
			find := func() (rec, bool) {
				i, ok := tb.find([]byte(key), mix(xxhash.Sum64String(key)))
				if !ok {
					return rec{}, false
				}
				return tb.recAt(i), true
			}
			switch {
			case r.tomb && now-r.stamp >= age && r.seqno != high[vb]:
				st.m.purged[vb] = max(st.m.purged[vb], r.seqno)
				delete(recs, key)
			case r.tomb && now-r.stamp >= age:
				// The tombstone of the latest mutation is kept, unless an
				// expiry came first in this sweep.
				readBack = append(readBack, func() {
					if _, ok := find(); !ok {
						if st.m.seqno[vb] == high[vb] {
							t.Fatalf("tombstone %s/%s of the latest mutation purged", ch, key)
						}
						st.m.purged[vb] = max(st.m.purged[vb], r.seqno)
						delete(recs, key)
					}
				})
			case !r.tomb && r.expiry != 0 && now >= r.expiry:
				st.m.seqno[vb]++
				*r = modelRec{tomb: true, stamp: now}
				// The sweeper picks the order, hence the seqnos.
				readBack = append(readBack, func() {
					got, ok := find()
					if !ok {
						t.Fatalf("expired %s/%s gone", ch, key)
					}
					r.seqno = got.seqno
					if r.seqno <= high[vb] || r.seqno > st.m.seqno[vb] {
						t.Fatalf("expired %s/%s at seqno %d outside (%d, %d]", ch, key, r.seqno, high[vb], st.m.seqno[vb])
					}
				})
			}
		}
	}
	for vb, rm := range st.m.removed {
		for ch, c := range rm {
			if now-c.stamp < age {
				continue
			}
			if c.seqno != high[vb] {
				st.m.purged[vb] = max(st.m.purged[vb], c.seqno)
				delete(rm, ch)
				continue
			}
			readBack = append(readBack, func() {
				if st.s.parts[vb].removedAt(ch) == 0 {
					if st.m.seqno[vb] == high[vb] {
						t.Fatalf("removal of %s in vb %d, the latest mutation, purged", ch, vb)
					}
					st.m.purged[vb] = max(st.m.purged[vb], c.seqno)
					delete(rm, ch)
				}
			})
		}
	}
	sweepAll(st.s)
	for _, f := range readBack {
		f()
	}
	for ch, recs := range st.m.recs {
		if len(recs) == 0 {
			delete(st.m.recs, ch)
		}
	}
}

func (st *storeTest) Scan(t *rapid.T) {
	ch := st.ch(t)
	vb := rapid.IntRange(0, st.m.vbs-1).Draw(t, "vb")
	now := st.now()
	type kv struct {
		h   uint64
		key string
		r   *modelRec
	}
	var want []kv
	for key := range st.m.recs[ch] {
		if r, ok := st.m.get(ch, key, now); ok && st.m.vb(key) == vb {
			want = append(want, kv{xxhash.Sum64String(key), key, r})
		}
	}
	slices.SortFunc(want, func(a, b kv) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	var after []byte
	if len(want) > 0 && rapid.Bool().Draw(t, "resume") {
		i := rapid.IntRange(0, len(want)-1).Draw(t, "after")
		after = []byte(want[i].key)
		want = want[i+1:]
	}
	limit := rapid.IntRange(1, 20).Draw(t, "limit")
	n := 0
	st.s.Scan(ch, uint16(vb), after, func(r Record) bool {
		if n >= len(want) {
			t.Fatalf("Scan: extra record %q", r.Key)
		}
		w := want[n]
		if string(r.Key) != w.key || !bytes.Equal(r.Value, w.r.value) || r.Seqno != w.r.seqno || r.Expiry != w.r.expiry {
			t.Fatalf("Scan record %d: %q seqno %d expiry %d, want %q seqno %d expiry %d", n, r.Key, r.Seqno, r.Expiry, w.key, w.r.seqno, w.r.expiry)
		}
		n++
		return n < limit
	})
	if n != min(limit, len(want)) {
		t.Fatalf("Scan gave %d records, want %d", n, min(limit, len(want)))
	}
}

func (st *storeTest) Check(t *rapid.T) {
	if err := checkStore(st.s); err != nil {
		t.Fatal(err)
	}
	for vb := range st.m.vbs {
		if got := st.s.HighSeqno(uint16(vb)); got != st.m.seqno[vb] {
			t.Fatalf("vb %d high seqno %d, want %d", vb, got, st.m.seqno[vb])
		}
		if got := st.s.PurgeSeqno(uint16(vb)); got != st.m.purged[vb] {
			t.Fatalf("vb %d purge seqno %d, want %d", vb, got, st.m.purged[vb])
		}
	}
	var recs, byts int64
	var chans []ChannelStats
	for _, ch := range st.chans {
		cs := ChannelStats{Name: ch}
		for _, r := range st.m.recs[ch] {
			if !r.tomb {
				cs.Records++
			}
		}
		for key, r := range st.m.recs[ch] {
			if !r.tomb {
				cs.Bytes += int64(len(key) + len(r.value))
			}
		}
		if got := st.s.ChannelSize(ch); got != cs {
			t.Fatalf("ChannelSize %+v, want %+v", got, cs)
		}
		if cs.Records > 0 {
			chans = append(chans, cs)
		}
		recs += cs.Records
		byts += cs.Bytes
	}
	if got := st.s.Channels(); !slices.Equal(got, chans) {
		t.Fatalf("Channels %+v, want %+v", got, chans)
	}
	if r, b := st.s.Size(); r != recs || b != byts {
		t.Fatalf("Size %d %d, want %d %d", r, b, recs, byts)
	}
}

// TestModel checks Put/Get/Exists/Remove/Update/Scan/RemoveChannel, TTL
// expiry and tombstone purging against a map model, with a fake clock.
func TestModel(t *testing.T) { rapid.Check(t, runModel) }

// TestModelLargeIndex runs the model with every index past hintedSlots, the
// path of tables above 2^22 slots, whose home slots need the key's hash.
func TestModelLargeIndex(t *testing.T) {
	defer func(n uint64) { hintedSlots = n }(hintedSlots)
	hintedSlots = 4
	rapid.Check(t, runModel)
}

func runModel(t *rapid.T) {
	clock := newFakeClock()
	const vbs = 4
	s, err := New(Config{VBuckets: vbs, Now: clock.Now, TombstoneTTL: modelTombTTL, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st := &storeTest{s: s, clock: clock, chans: []string{"a", "b-2"},
		m: &kvModel{vbs: vbs, recs: map[string]map[string]*modelRec{}, seqno: make([]uint64, vbs), purged: make([]uint64, vbs)}}
	for range vbs {
		st.m.removed = append(st.m.removed, map[string]modelRec{})
	}
	nkeys := rapid.IntRange(1, 60).Draw(t, "nkeys")
	for i := range nkeys {
		st.keys = append(st.keys, string(benchKey(nil, i*7919)[:4+rapid.IntRange(1, 12).Draw(t, "klen")]))
	}
	t.Repeat(rapid.StateMachineActions(st))
}
