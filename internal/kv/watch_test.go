package kv

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// drained renders events as "op key=value", sorted (Drain's key order is
// not specified; a channel removal comes first).
func drained(evs []Event) []string {
	var out []string
	for i, e := range evs {
		switch e.Op {
		case EventChannelRemoved:
			if i != 0 {
				out = append(out, "removal not first")
			}
			out = append(out, "removed")
		case EventPut:
			out = append(out, fmt.Sprintf("put %s=%s", e.Key, e.Value))
		case EventDelete:
			out = append(out, fmt.Sprintf("delete %s", e.Key))
		}
	}
	slices.Sort(out)
	return out
}

func ready(w *Watcher) bool {
	select {
	case <-w.Ready():
		return true
	case <-time.After(time.Second):
		return false
	}
}

func TestWatch(t *testing.T) {
	s := newStore(t, Config{VBuckets: 8})
	w := s.Watch("c", 0)
	defer w.Close()
	other := s.Watch("d", 0)
	s.Put("c", []byte("a"), []byte("1"), 0)
	if !ready(w) {
		t.Fatal("no ready signal after a put")
	}
	s.Put("c", []byte("a"), []byte("2"), 0) // coalesces with the first
	s.Put("c", []byte("b"), []byte("x"), 0)
	s.Remove("c", []byte("b"))
	s.Put("c", []byte("c"), []byte("y"), 0)
	s.Put("d", []byte("a"), []byte("other channel"), 0)
	s.Put("c", []byte("c"), []byte("z"), 0) // read at drain time
	evs, lost := w.Drain(nil)
	if lost {
		t.Fatal("lost without reason")
	}
	if d := cmp.Diff([]string{"delete b", "put a=2", "put c=z"}, drained(evs)); d != "" {
		t.Fatal(d)
	}
	if evs, _ := w.Drain(evs); len(evs) != 0 {
		t.Fatalf("second drain: %v", drained(evs))
	}
	other.Close()
	s.Put("d", []byte("a"), []byte("after close"), 0)
	if evs, _ := other.Drain(nil); len(evs) != 0 {
		t.Fatalf("closed watcher got %v", drained(evs))
	}

	// A channel removal comes first; puts after it survive.
	s.Put("c", []byte("a"), []byte("3"), 0)
	s.RemoveChannel("c")
	s.Put("c", []byte("n"), []byte("new"), 0)
	evs, _ = w.Drain(evs)
	if d := cmp.Diff([]string{"delete a", "put n=new", "removed"}, drained(evs)); d != "" {
		t.Fatal(d)
	}
	if evs[0].Op != EventChannelRemoved {
		t.Fatalf("first event %v", evs[0].Op)
	}
}

func TestWatchBound(t *testing.T) {
	s := newStore(t, Config{VBuckets: 8})
	w := s.Watch("c", 10*(pendingCost+4))
	defer w.Close()
	for i := range 10 {
		s.Put("c", fmt.Appendf(nil, "k%03d", i), nil, 0)
	}
	for range 3 { // repeated changes of pending keys cost nothing
		s.Put("c", []byte("k000"), nil, 0)
	}
	if w.Lost() {
		t.Fatal("lost within the bound")
	}
	s.Put("c", []byte("k010"), nil, 0)
	if !w.Lost() {
		t.Fatal("not lost past the bound")
	}
	s.Put("c", []byte("k011"), nil, 0) // not recorded while lost
	if w.bytes != 0 || len(w.pending) != 0 {
		t.Fatalf("lost watcher holds %d bytes", w.bytes)
	}
	evs, lost := w.Drain(nil)
	if !lost || len(evs) != 0 || w.Lost() {
		t.Fatalf("drain of a lost watcher: %v %v", lost, drained(evs))
	}
	s.Put("c", []byte("k012"), []byte("v"), 0)
	if evs, lost := w.Drain(nil); lost || len(evs) != 1 {
		t.Fatalf("after the refresh: %v %v", lost, drained(evs))
	}
	// A dropped vBucket makes the watchers of its channels lost.
	s.Put("c", []byte("k013"), nil, 0)
	p, _ := s.locate([]byte("k013"))
	s.DropVBucket(p.id)
	if !w.Lost() {
		t.Fatal("not lost after DropVBucket")
	}
}
