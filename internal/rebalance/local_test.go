package rebalance

import (
	"slices"
	"testing"

	"shoal/internal/vbmap"
)

func TestLocalLeases(t *testing.T) {
	l := NewLocal("c")
	l.Build(1, "a", 0, 100)
	l.Build(2, "b", 0, 300)
	if vbs, srcs := l.Pending(); !slices.Equal(vbs, []uint16{1, 2}) || !slices.Equal(srcs, []string{"a", "b"}) {
		t.Fatalf("pending %v %v", vbs, srcs)
	}
	if drop, thaw := l.Tick(99); drop != nil || thaw != nil {
		t.Fatalf("tick 99: drop %v thaw %v", drop, thaw)
	}
	if drop, _ := l.Tick(100); !slices.Equal(drop, []uint16{1}) {
		t.Fatalf("tick 100: drop %v, want the copy whose lease ran out", drop)
	}
	if l.Cancel(1) || !l.Cancel(2) {
		t.Fatal("cancel: the expired copy is gone, the other was there")
	}
}

func TestLocalFreezeEndsWithTheCommit(t *testing.T) {
	old := (*vbmap.Map)(nil).Next(1, 1, [][]string{{"a", "b"}, {"a", "c"}})
	l := NewLocal("a")
	l.Freeze(0, old.VBuckets[0].Epoch, 0, 1000)
	l.Freeze(1, old.VBuckets[1].Epoch, 0, 1000)
	if !l.Frozen(0) || !l.Frozen(1) {
		t.Fatal("not frozen")
	}
	// vb 0 moved to c (epoch raised); vb 1's map is unchanged: its move
	// has not committed, the freeze holds until its lease ends.
	next := old.Next(2, 1, [][]string{{"c", "a"}, {"a", "c"}})
	l.MapApplied(next)
	if l.Frozen(0) || !l.Frozen(1) {
		t.Fatalf("after the commit: frozen %v %v", l.Frozen(0), l.Frozen(1))
	}
	if _, thaw := l.Tick(1000); !slices.Equal(thaw, []uint16{1}) || l.Frozen(1) {
		t.Fatalf("lease over: thaw %v", thaw)
	}
	if l.Thaw(1) {
		t.Fatal("thawed twice")
	}
}

func TestLocalPendingBecomesAReplica(t *testing.T) {
	l := NewLocal("c")
	l.Build(0, "a", 0, 1000)
	l.Build(1, "a", 0, 1000)
	m := (*vbmap.Map)(nil).Next(1, 1, [][]string{{"a", "c"}, {"a", "b"}})
	l.MapApplied(m)
	if vbs, _ := l.Pending(); !slices.Equal(vbs, []uint16{1}) {
		t.Fatalf("pending %v: vb 0 is c's in the map now", vbs)
	}
}
