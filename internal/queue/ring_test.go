package queue

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRingModel drives rings of several sizes with random pushes, pops,
// out-of-order removals and rollbacks and compares them with a slice.
func TestRingModel(t *testing.T) {
	for _, limit := range []int64{1 << 10, 100 << 10, 8 << 20} {
		rng := rand.New(rand.NewPCG(uint64(limit), 1))
		r := ring{limit: limit}
		type rec struct {
			seqno   uint64
			value   []byte
			removed bool
		}
		var model []rec
		var seqno uint64
		check := func(step int) {
			t.Helper()
			var live []rec
			for _, m := range model {
				if !m.removed {
					live = append(live, m)
				}
			}
			i := 0
			r.each(func(off int, h itemHeader) bool {
				if i >= len(live) || h.seqno != live[i].seqno || !bytes.Equal(r.appendValue(nil, off, h), live[i].value) {
					t.Fatalf("limit %d step %d: item %d is seqno %d, want %v", limit, step, i, h.seqno, live[i:])
				}
				i++
				return true
			})
			if i != len(live) || r.live != len(live) {
				t.Fatalf("limit %d step %d: %d items (live %d), want %d", limit, step, i, r.live, len(live))
			}
			if a := r.allocated(); int64(a) > 2*max(limit, minRingAlloc)+2*maxRingChunk {
				t.Fatalf("limit %d step %d: %d bytes allocated", limit, step, a)
			}
		}
		maxV := int(min(limit/8, 200<<10))
		for step := range 20000 {
			switch op := rng.IntN(10); {
			case op < 5: // push, sometimes rolled back
				v := bytes.Repeat([]byte{byte(seqno), byte(seqno >> 8), 7}, rng.IntN(maxV)/3)
				if !r.fits(len(v)) {
					break
				}
				m := r.mark()
				seqno++
				r.push(1, seqno, v)
				if rng.IntN(8) == 0 {
					r.rollback(m)
					break
				}
				model = append(model, rec{seqno: seqno, value: v})
			case op < 8: // pop
				if r.live == 0 {
					break
				}
				got := r.pop(nil)
				for model[0].removed {
					model = model[1:]
				}
				if !bytes.Equal(got, model[0].value) {
					t.Fatalf("limit %d step %d: popped a wrong value", limit, step)
				}
				model = model[1:]
			default: // remove a random live item
				if r.live == 0 {
					break
				}
				k := rng.IntN(r.live)
				r.each(func(off int, h itemHeader) bool {
					if k > 0 {
						k--
						return true
					}
					r.remove(off, h)
					for i := range model {
						if model[i].seqno == h.seqno {
							model[i].removed = true
						}
					}
					return false
				})
			}
			if step%97 == 0 {
				check(step)
			}
		}
		for r.live > 0 {
			r.pop(nil)
		}
		r.skipRemoved()
		if r.items != 0 || len(r.chunks) != 1 || r.head != 0 || r.allocated() > maxRingChunk {
			t.Fatalf("limit %d: emptied ring keeps %d chunks, %d bytes, head %d", limit, len(r.chunks), r.allocated(), r.head)
		}
	}
}

// TestRingGrowsByChunks checks that a big ring grows by appending chunks,
// releases them as the head passes, and that an item may span chunks.
func TestRingGrowsByChunks(t *testing.T) {
	r := ring{limit: 1 << 30}
	v := bytes.Repeat([]byte("x"), 100_000)
	for i := range 100 {
		r.push(0, uint64(i), v)
	}
	if n := len(r.chunks); n != 10 || r.allocated() != 10*maxRingChunk {
		t.Fatalf("%d chunks, %d bytes for 100 × 100 kB", n, r.allocated())
	}
	for i := range 60 {
		if got := r.pop(nil); !bytes.Equal(got, v) {
			t.Fatalf("pop %d: wrong value", i)
		}
	}
	if n := len(r.chunks); n > 5 {
		t.Fatalf("%d chunks left holding 40 × 100 kB", n)
	}
}

// allocated is the bytes of the ring's chunks.
func (r *ring) allocated() int {
	n := len(r.spare)
	for _, c := range r.chunks {
		n += len(c)
	}
	return n
}
