package kv

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// checkStore verifies the internal invariants of every table and the memory
// account. It returns the first violation.
func checkStore(s *Store) error {
	var mem int64
	for _, p := range s.parts {
		p.mu.RLock()
		err := func() error {
			if p.log != nil {
				mem += p.log.size()
			}
			for name, t := range p.tables {
				if name != t.name {
					return fmt.Errorf("vb %d: table %q filed under %q", p.id, t.name, name)
				}
				if err := checkTable(t, p.id, len(s.parts)); err != nil {
					return fmt.Errorf("vb %d channel %q: %w", p.id, name, err)
				}
				mem += t.mem
			}
			return nil
		}()
		p.mu.RUnlock()
		if err != nil {
			return err
		}
	}
	if got := s.MemoryUsage(); got != mem {
		return fmt.Errorf("MemoryUsage %d, tables and logs hold %d", got, mem)
	}
	return nil
}

func checkTable(t *table, vb uint16, nvb int) error {
	count, live, timed, liveBytes := 0, 0, 0, int64(0)
	used := make([]int, len(t.chunks))
	if (t.count+0)*5 > len(t.slots)*4 || len(t.slots) < minSlots {
		return fmt.Errorf("%d entries in %d slots", t.count, len(t.slots))
	}
	for i, sl := range t.slots {
		if sl == 0 {
			continue
		}
		count++
		ref := sl & refMask
		ci, off := int(ref>>offBits), int(ref&offMask)
		if ci >= len(t.chunks) || off >= len(t.chunks[ci].buf) {
			return fmt.Errorf("slot %d: ref %d/%d outside the arena", i, ci, off)
		}
		r := t.recAt(i)
		if off+r.size > len(t.chunks[ci].buf) {
			return fmt.Errorf("slot %d: record overruns chunk %d", i, ci)
		}
		used[ci] += r.size
		h := xxhash.Sum64(r.key)
		if got := uint16(h % uint64(nvb)); got != vb {
			return fmt.Errorf("slot %d: key %q of vbucket %d", i, r.key, got)
		}
		if j, ok := t.find(r.key, mix(h)); !ok || j != i {
			return fmt.Errorf("slot %d: key %q found at %d (%v)", i, r.key, j, ok)
		}
		if (sl>>hintShift)&hintMask != mix(h)>>(64-hintBits) {
			return fmt.Errorf("slot %d: bad hint", i)
		}
		if r.flags&flagTime != 0 {
			timed++
		}
		if !r.tomb() {
			live++
			liveBytes += int64(len(r.key) + len(r.value))
		}
	}
	if count != t.count || live != t.live || liveBytes != t.liveBytes || timed != t.timed {
		return fmt.Errorf("counted %d/%d/%d/%d timed, table says %d/%d/%d/%d", count, live, liveBytes, timed, t.count, t.live, t.liveBytes, t.timed)
	}
	var chunkMem, data int64
	free := map[int]bool{}
	for _, ci := range t.free {
		free[int(ci)] = true
	}
	for ci, c := range t.chunks {
		if c.buf == nil {
			if !free[ci] {
				return fmt.Errorf("chunk %d: neither used nor free", ci)
			}
			continue
		}
		chunkMem += int64(cap(c.buf))
		data += int64(used[ci])
		if used[ci]+c.garbage != len(c.buf) {
			return fmt.Errorf("chunk %d (tail %v): %d live + %d garbage != %d", ci, ci == t.tail, used[ci], c.garbage, len(c.buf))
		}
		if ci != t.tail && c.garbage > cap(c.buf)/evacuateAt {
			return fmt.Errorf("chunk %d: %d of %d bytes garbage, not evacuated", ci, c.garbage, cap(c.buf))
		}
	}
	if data != t.data {
		return fmt.Errorf("record bytes %d, table says %d", data, t.data)
	}
	if chunkMem != t.chunkMem {
		return fmt.Errorf("chunk bytes %d, table says %d", chunkMem, t.chunkMem)
	}
	if want := tableOverhead + int64(len(t.slots))*8 + chunkMem + int64(cap(t.chunks))*chunkDescSize; want != t.mem {
		return fmt.Errorf("table mem %d, want %d", t.mem, want)
	}
	return nil
}

func hashOf(key []byte) uint64 { return xxhash.Sum64(key) }
