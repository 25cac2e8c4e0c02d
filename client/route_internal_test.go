package client

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"shoal/internal/wire"
)

// nmvbBody is a `not my vbucket` body: the active's address, the epoch,
// the revision, then map (may be empty).
func nmvbBody(active string, epoch, rev uint64, m []byte) []byte {
	b := wire.AppendStr8(nil, active)
	b = wire.AppendU64(b, epoch)
	b = wire.AppendU64(b, rev)
	return append(b, m...)
}

// TestNotMyVBucketCarriesAMap: the map after the two u64 of a `not my
// vbucket` body is kept for the router, which installs it only when it
// is newer than the map it routes by; a body without it (or from an
// older node, with the address alone) has none.
func TestNotMyVBucketCarriesAMap(t *testing.T) {
	m, _ := hex.DecodeString(goldenClusterMap)
	err := statusError("h2:7400", wire.StatusNotMyVBucket, nmvbBody("h1:7400", 3, 7, m))
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrNotMyVBucket) || e.Active != "h1:7400" || e.Epoch != 3 || e.Revision != 7 || string(e.mapBody) != string(m) {
		t.Fatalf("decoded %+v", err)
	}
	for _, body := range [][]byte{nmvbBody("h1:7400", 3, 7, nil), wire.AppendStr8(nil, "h1:7400"), nil, {200}} {
		if e := statusError("x", wire.StatusNotMyVBucket, body).(*Error); e.mapBody != nil {
			t.Fatalf("body %x: a map of %d bytes", body, len(e.mapBody))
		}
	}
	c := &Client{seeds: []*node{newNode("h2:7400", &options{conns: 1})}}
	r := newRouter(c)
	c.r = r
	if !r.offer(e.mapBody) {
		t.Fatal("the map was not installed")
	}
	rt := r.table.Load()
	if rt.m.Revision != 7 || rt.actives[0].addr != "h1:7400" || rt.actives[1].addr != "h2:7400" || rt.actives[3] != nil || len(rt.nodes) != 2 {
		t.Fatalf("table %+v", rt)
	}
	if rt.actives[1] != c.seeds[0] {
		t.Fatal("the seed's pool was not reused")
	}
	if r.offer(m) || r.offer(m[:len(m)-1]) || r.offer([]byte("junk")) {
		t.Fatal("the same revision, a truncated map or junk was installed")
	}
	older := append([]byte(nil), m...)
	older[strings.Index(goldenClusterMap, "0700000000000000")/2] = 6 // revision 6
	if r.offer(older) || r.table.Load() != rt {
		t.Fatal("an older map replaced a newer one")
	}
	if !r.install(rt.m, true) {
		t.Fatal("a full refresh of the same revision was not installed")
	}
}

// TestErrorsOfRouting: ErrUnavailable and a routed ErrNotMyVBucket name
// their vBucket and node.
func TestErrorsOfRouting(t *testing.T) {
	u := unavailable(12, "h1:7400", "connection refused")
	if !errors.Is(u, ErrUnavailable) || errors.Is(u, ErrNotMyVBucket) || errors.Is(u, ErrNotFound) || u.VBucket != 12 {
		t.Fatalf("%v", u)
	}
	if s := u.Error(); !strings.Contains(s, "h1:7400") || !strings.Contains(s, "vbucket 12") || !strings.Contains(s, "unavailable") || !strings.Contains(s, "refused") {
		t.Fatalf("message %q", s)
	}
	e := statusError("h2:7400", wire.StatusNotMyVBucket, nmvbBody("h1:7400", 1, 2, nil)).(*Error)
	if e.VBucket != -1 || strings.Contains(e.Error(), "vbucket -1") {
		t.Fatalf("an unrouted not my vbucket: %d %q", e.VBucket, e.Error())
	}
	e.VBucket = 5
	if s := e.Error(); !strings.Contains(s, "vbucket 5") || !strings.Contains(s, "h1:7400") {
		t.Fatalf("message %q", s)
	}
	if nf := statusError("h", wire.StatusNotFound, []byte("gone")).(*Error); nf.VBucket != -1 || errors.Is(nf, ErrUnavailable) {
		t.Fatalf("%+v", nf)
	}
}

// FuzzNotMyVBucket: any `not my vbucket` body decodes without panicking,
// and a map it carries is installed only if it decodes.
func FuzzNotMyVBucket(f *testing.F) {
	m, _ := hex.DecodeString(goldenClusterMap)
	f.Add(nmvbBody("h1:7400", 3, 7, m))
	f.Add(nmvbBody("", 0, 0, nil))
	f.Add([]byte{5, 'a'})
	f.Fuzz(func(t *testing.T, body []byte) {
		e := statusError("x", wire.StatusNotMyVBucket, body).(*Error)
		c := &Client{seeds: []*node{newNode("x", &options{conns: 1})}}
		c.r = newRouter(c)
		ok := c.r.offer(e.mapBody)
		if _, err := decodeClusterMap(e.mapBody); ok != (err == nil && len(e.mapBody) > 0 && c.r.table.Load() != nil) {
			t.Fatalf("offer %v, decode %v", ok, err)
		}
	})
}
