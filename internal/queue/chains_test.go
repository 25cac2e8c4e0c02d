package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// mixedStore is a store of 4 vBuckets where 1 and 3 are replicas (their
// records copies of another node's) and 0 and 2 active, whose channel "q"
// holds, in push order, records alternating between an active vBucket
// (local pushes, "a…") and a replica one (applied copies, "r…"), more than
// the ring holds.
func mixedStore(t *testing.T, d Durability) (s *Store, cfg Config, active, copies []string) {
	t.Helper()
	cfg = testConfig(t.TempDir())
	cfg.VBuckets = 4
	cfg.RingSize = 1 << 10
	cfg.Durability = d
	s = mustOpen(t, cfg)
	s.SetState(1, vbmap.Replica)
	s.SetState(3, vbmap.Replica)
	seqno := map[uint16]uint64{}
	for i := range 60 {
		if i%2 == 0 {
			v := fmt.Sprintf("a%03d-%040d", i, 0)
			if err := s.Push(context.Background(), []string{"q"}, []byte(v), keyFor(uint16(i%4), 4)); err != nil {
				t.Fatal(err)
			}
			active = append(active, v)
			continue
		}
		vb := uint16(i % 4)
		seqno[vb]++
		v := fmt.Sprintf("r%03d-%040d", i, 0)
		if err := s.Apply(&engine.Mutation{VBucket: vb, Seqno: seqno[vb], Op: engine.OpPush, Channel: "q", Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, v)
	}
	if st := stats(t, s, "q", ""); st.OverflowRecords == 0 || st.MemoryRecords == 0 {
		t.Fatalf("want records in the ring and the overflow: %+v", st)
	}
	return s, cfg, active, copies
}

// TestPopTakesOnlyActiveRecords: Pop and a consumer take the records of
// active vBuckets only, in FIFO order among them, stepping over the
// copies of replica vBuckets in the ring and in the overflow; the copies
// stay until their active's pops arrive, and a restart replays the
// out-of-order pops.
func TestPopTakesOnlyActiveRecords(t *testing.T) {
	for _, d := range []Durability{DurabilityMemory, DurabilityJournal} {
		t.Run(d.String(), func(t *testing.T) {
			s, cfg, active, copies := mixedStore(t, d)
			var got []string
			// A restart before, and one in the middle of the pops.
			s.Close()
			s = mustOpen(t, cfg)
			s.SetState(1, vbmap.Replica)
			s.SetState(3, vbmap.Replica)
			for range len(active) / 2 {
				v, err := s.Pop("q", nil)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(v))
			}
			if d == DurabilityJournal {
				s.abandon() // a crash: the journal replays the pops
			} else {
				s.Close()
			}
			s = mustOpen(t, cfg)
			defer s.Close()
			s.SetState(1, vbmap.Replica)
			s.SetState(3, vbmap.Replica)
			got = append(got, popAll(t, s, "q")...)
			equal(t, "pops", got, active)
			if st := stats(t, s, "q", ""); st.Records != int64(len(copies)) {
				t.Fatalf("after popping every active record: %+v, want the %d copies", st, len(copies))
			}
			// The copies go with their active's pops (vb 1's first record
			// was pushed at its seqno 1).
			if err := s.Apply(&engine.Mutation{VBucket: 1, Seqno: 100, Op: engine.OpPop, Channel: "q", Ref: 1}); err != nil {
				t.Fatal(err)
			}
			if st := stats(t, s, "q", ""); st.Records != int64(len(copies)-1) {
				t.Fatalf("after a replicated pop: %+v", st)
			}
			// Promoted, the node pops its copies, FIFO.
			setAll(t, s, vbmap.Active)
			equal(t, "copies", popAll(t, s, "q"), copies[1:])
		})
	}
}

// TestConsumerTakesOnlyActiveRecords: the same for a subscriber's
// batches.
func TestConsumerTakesOnlyActiveRecords(t *testing.T) {
	s, _, active, copies := mixedStore(t, DurabilityMemory)
	defer s.Close()
	c, err := s.Subscribe("q", "x")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	for {
		b, _, err := c.Next(nil, 300)
		if errors.Is(err, ErrEmpty) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, decodeBatch(t, b)...)
	}
	equal(t, "consumed", got, active)
	if st := stats(t, s, "q", "x"); st.Records != int64(len(copies)) {
		t.Fatalf("%+v", st)
	}
}

// TestRemoveChannelActiveOnly: RemoveChannel takes a seqno and removes the
// records only in the active vBuckets; the copies of replica vBuckets stay
// until their actives' removals arrive, then the channel goes. Its
// consumers end at once. A journal replays the same.
func TestRemoveChannelActiveOnly(t *testing.T) {
	for _, d := range []Durability{DurabilityMemory, DurabilityJournal} {
		t.Run(d.String(), func(t *testing.T) {
			s, cfg, _, copies := mixedStore(t, d)
			c, err := s.Subscribe("q", "x")
			if err != nil {
				t.Fatal(err)
			}
			before := highSeqnos(s)
			if ok, err := s.RemoveChannel("q"); !ok || err != nil {
				t.Fatalf("RemoveChannel: %v %v", ok, err)
			}
			after := highSeqnos(s)
			for vb := range 4 {
				want := before[vb]
				if vb == 0 || vb == 2 {
					want++
				}
				if after[vb] != want {
					t.Fatalf("vb %d: seqno %d -> %d, want %d", vb, before[vb], after[vb], want)
				}
			}
			if _, _, err := c.Next(nil, 100); !errors.Is(err, ErrChannelRemoved) {
				t.Fatalf("consumer after the removal: %v", err)
			}
			if st := stats(t, s, "q", "x"); st.Records != int64(len(copies)) {
				t.Fatalf("copies after the removal: %+v, want %d", st, len(copies))
			}
			if d == DurabilityJournal {
				s.abandon()
			} else {
				s.Close()
			}
			s = mustOpen(t, cfg)
			defer s.Close()
			s.SetState(1, vbmap.Replica)
			s.SetState(3, vbmap.Replica)
			if got := highSeqnos(s); fmt.Sprint(got) != fmt.Sprint(after) {
				t.Fatalf("seqnos after the restart %v, want %v", got, after)
			}
			if st := stats(t, s, "q", "x"); st.Records != int64(len(copies)) {
				t.Fatalf("copies after the restart: %+v", st)
			}
			for i, vb := range []uint16{1, 3} {
				if err := s.Apply(&engine.Mutation{VBucket: vb, Seqno: 500, Op: engine.OpRemoveChannel, Channel: "q"}); err != nil {
					t.Fatal(err)
				}
				// The journal replays the removal in part; a memory-mode
				// state file does not record it, so there the channel stays,
				// empty, once its copies are gone.
				wantListed := i == 0 || d == DurabilityMemory
				if listed := len(s.Channels()) > 0; listed != wantListed {
					t.Fatalf("after the removal in vb %d: %+v", vb, s.Channels())
				}
			}
		})
	}
	// Without copies the channel goes at once.
	s := mustOpen(t, testConfig(t.TempDir()))
	defer s.Close()
	mustPush(t, s, "v", "p")
	if ok, err := s.RemoveChannel("p"); !ok || err != nil || len(s.Channels()) != 0 {
		t.Fatalf("RemoveChannel: %v %v %+v", ok, err, s.Channels())
	}
}
