// Package catalog records the kind of every channel of a node. A channel is
// created by its first write with one kind (kv, queue or log); a request of
// another kind on the same name is refused until the channel is removed.
// Lookups are lock-free (an immutable map swapped on change), because every
// data request makes one and channels are created rarely.
package catalog

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"

	"shoal/internal/engine"
)

// ErrWrongKind is returned by Claim when the channel exists with another kind.
var ErrWrongKind = errors.New("catalog: channel exists with another kind")

// Catalog maps channel names to kinds. The zero value is not usable; use New.
type Catalog struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[string]entry]
}

type entry struct {
	name string // the map key, kept so lookups by []byte return it without allocating
	kind engine.Kind
}

// New returns an empty catalog.
func New() *Catalog {
	c := &Catalog{}
	m := map[string]entry{}
	c.m.Store(&m)
	return c
}

// Lookup returns the name as a string (shared, so callers need not
// allocate one), its kind and whether it is known.
func (c *Catalog) Lookup(name []byte) (string, engine.Kind, bool) {
	e, ok := (*c.m.Load())[string(name)]
	return e.name, e.kind, ok
}

// Claim records name as a channel of kind k if it is unknown and returns
// the name as a shared string. It fails with ErrWrongKind if name is a
// channel of another kind.
func (c *Catalog) Claim(name []byte, k engine.Kind) (string, error) {
	if e, ok := (*c.m.Load())[string(name)]; ok {
		if e.kind != k {
			return e.name, ErrWrongKind
		}
		return e.name, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if e, ok := old[string(name)]; ok {
		if e.kind != k {
			return e.name, ErrWrongKind
		}
		return e.name, nil
	}
	next := make(map[string]entry, len(old)+1)
	for n, e := range old {
		next[n] = e
	}
	s := string(name)
	next[s] = entry{name: s, kind: k}
	c.m.Store(&next)
	return s, nil
}

// Drop forgets name.
func (c *Catalog) Drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if _, ok := old[name]; !ok {
		return
	}
	next := make(map[string]entry, len(old))
	for n, e := range old {
		if n != name {
			next[n] = e
		}
	}
	c.m.Store(&next)
}

// Entry is one channel of the catalog.
type Entry struct {
	Name string
	Kind engine.Kind
}

// List returns every channel, sorted by name.
func (c *Catalog) List() []Entry {
	m := *c.m.Load()
	out := make([]Entry, 0, len(m))
	for n, e := range m {
		out = append(out, Entry{Name: n, Kind: e.kind})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
