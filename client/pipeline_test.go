package client_test

import (
	"errors"
	"fmt"
	"testing"

	"shoal/client"
	"shoal/internal/server"
)

func TestPipeline(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	p := c.Pipeline()
	var puts []*client.Result
	for i := range 100 {
		puts = append(puts, p.Put("p", fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)))
	}
	bad := p.Put("bad name", []byte("k"), nil)
	if p.Len() != 101 {
		t.Fatalf("Len = %d", p.Len())
	}
	if err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, r := range puts {
		if r.Err != nil || r.CAS == 0 {
			t.Fatalf("put %d: %+v", i, r)
		}
	}
	if !errors.Is(bad.Err, client.ErrBadChannelName) {
		t.Fatalf("bad channel: %v", bad.Err)
	}
	get := p.Get("p", []byte("k7"))
	miss := p.Get("p", []byte("nope"))
	ex := p.Exists("p", []byte("k8"))
	rm := p.Remove("p", []byte("k9"))
	push := p.Push([]string{"q"}, []byte("x"))
	pop := p.Pop("q")
	empty := p.Pop("q")
	logp := p.LogPut("l", 1, []byte("entry"))
	if err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if string(get.Value) != "v7" || get.CAS != puts[7].CAS || !errors.Is(miss.Err, client.ErrNotFound) || !ex.OK || !rm.OK {
		t.Fatalf("get %+v miss %+v exists %+v remove %+v", get, miss, ex, rm)
	}
	if push.Err != nil || string(pop.Value) != "x" || !errors.Is(empty.Err, client.ErrEmpty) || logp.Err != nil {
		t.Fatalf("push %+v pop %+v empty %+v log %+v", push, pop, empty, logp)
	}
	if err := p.Exec(ctx); err != nil || p.Len() != 0 {
		t.Fatalf("empty Exec: %v", err)
	}
}
