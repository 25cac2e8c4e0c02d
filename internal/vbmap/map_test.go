package vbmap

import (
	"errors"
	"testing"
)

func TestNextRaisesEpochOnlyWhenTheActiveChanges(t *testing.T) {
	m1 := (*Map)(nil).Next(5, 1, [][]string{{"a", "b"}, {"b", "a"}, {}})
	if err := m1.Validate(nil); err != nil {
		t.Fatal(err)
	}
	if got := []uint64{m1.VBuckets[0].Epoch, m1.VBuckets[1].Epoch, m1.VBuckets[2].Epoch}; got[0] != 1 || got[1] != 1 || got[2] != 0 {
		t.Fatalf("first epochs %v, want [1 1 0]", got)
	}
	// vb 0: replica changes only; vb 1: failover to a; vb 2: gets a chain.
	m2 := m1.Next(9, 1, [][]string{{"a", "c"}, {"a"}, {"c"}})
	if got := []uint64{m2.VBuckets[0].Epoch, m2.VBuckets[1].Epoch, m2.VBuckets[2].Epoch}; got[0] != 1 || got[1] != 2 || got[2] != 1 {
		t.Fatalf("next epochs %v, want [1 2 1]", got)
	}
	if m2.Revision != 9 || m1.VBuckets[0].Chain[1] != "b" {
		t.Fatalf("revision %d, or m1 was modified: %v", m2.Revision, m1.VBuckets[0].Chain)
	}
	if s := m2.StateOf("c", 0); s != Replica {
		t.Fatalf("c on vb 0: %v", s)
	}
	if s := m2.StateOf("b", 0); s != Dead {
		t.Fatalf("b on vb 0: %v", s)
	}
	if s := m2.StateOf("a", 1); s != Active {
		t.Fatalf("a on vb 1: %v", s)
	}
	c := m2.Counts()
	if c["a"] != (Counts{Active: 2}) || c["c"] != (Counts{Active: 1, Replica: 1}) {
		t.Fatalf("counts %v", c)
	}
}

func TestValidate(t *testing.T) {
	bad := []*Map{
		{Replicas: 1},
		{Replicas: 4, VBuckets: []VBucket{{}}},
		{Replicas: 1, VBuckets: []VBucket{{Chain: []string{"a", "a"}, Epoch: 1}}},
		{Replicas: 0, VBuckets: []VBucket{{Chain: []string{"a", "b"}, Epoch: 1}}},
		{Replicas: 1, VBuckets: []VBucket{{Chain: []string{"a"}}}},
		{Replicas: 1, VBuckets: []VBucket{{Chain: []string{""}, Epoch: 1}}},
		{Replicas: 1, VBuckets: []VBucket{{Chain: []string{"x"}, Epoch: 1}}},
	}
	known := func(id string) bool { return id == "a" || id == "b" }
	for i, m := range bad {
		if err := m.Validate(known); !errors.Is(err, ErrInvalid) {
			t.Errorf("map %d: %v, want ErrInvalid", i, err)
		}
	}
	if err := Solo("a", 16).Validate(known); err != nil {
		t.Fatal(err)
	}
}

func TestTableRoute(t *testing.T) {
	m := (*Map)(nil).Next(3, 1, [][]string{{"a", "b"}, {"b", "a"}})
	tb := NewTable("b", m, map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"})
	r := tb.Route(0)
	if r.State != Replica || r.Active != "a" || r.ActiveAddr != "127.0.0.1:1" || r.Epoch != 1 || r.Revision != 3 {
		t.Fatalf("route 0: %+v", r)
	}
	if r := tb.Route(1); r.State != Active {
		t.Fatalf("route 1: %+v", r)
	}
	if r := tb.Route(2); r.State != 0 || r.Revision != 3 {
		t.Fatalf("route out of range: %+v", r)
	}
	var h Holder
	if h.Load() != nil {
		t.Fatal("zero holder not empty")
	}
	h.Store(tb)
	if h.Load().Self() != "b" {
		t.Fatal("holder")
	}
}

func TestStates(t *testing.T) {
	st := NewStates(4)
	if st.Get(3) != Active || st.Get(4) != 0 {
		t.Fatal("new states")
	}
	if prev, err := st.Set(2, Replica); err != nil || prev != Active || st.Get(2) != Replica {
		t.Fatal(prev, err)
	}
	if _, err := st.Set(4, Dead); err == nil {
		t.Fatal("out of range accepted")
	}
	if _, err := st.Set(1, 0); err == nil {
		t.Fatal("state 0 accepted")
	}
	for s := Active; s <= Dead; s++ {
		if p, err := ParseState(s.String()); err != nil || p != s {
			t.Fatal(s, p, err)
		}
	}
}
