package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/dump"
	"shoal/internal/server"
)

// fakeDumper answers DumpEach with fixed results.
type fakeDumper struct {
	results []dump.Result
	block   chan struct{} // if not nil, DumpEach waits for it after the first result
	mu      sync.Mutex
	calls   int
}

func (d *fakeDumper) DumpEach(ctx context.Context, fn func(dump.Result)) ([]dump.Result, error) {
	d.mu.Lock()
	d.calls++
	d.mu.Unlock()
	var errs []error
	for i, r := range d.results {
		fn(r)
		errs = append(errs, r.Err)
		if i == 0 && d.block != nil {
			select {
			case <-d.block:
			case <-ctx.Done():
				return d.results[:1], ctx.Err()
			}
		}
	}
	return d.results, errors.Join(errs...)
}

func TestDumpNow(t *testing.T) {
	ok := &fakeDumper{}
	for i := range 300 { // more frames than the stream's initial credit holds
		ok.results = append(ok.results, dump.Result{Channel: fmt.Sprintf("ch%d", i), Summary: dump.Summary{Records: int64(i), Bytes: 10, FileBytes: 40}, Duration: time.Millisecond})
	}
	ok.results[0].Channel = strings.Repeat("c", 255)
	n := startNode(t, server.Config{Dumps: ok}, "")
	c := dial(t, n.addr)
	var seen int
	res, err := c.DumpNow(t.Context(), func(client.DumpResult) { seen++ })
	if err != nil || len(res) != 300 || seen != 300 {
		t.Fatalf("DumpNow: %d results, %d seen, %v", len(res), seen, err)
	}
	if r := res[7]; r.Channel != "ch7" || r.Records != 7 || r.Bytes != 10 || r.FileBytes != 40 || r.Duration != time.Millisecond || r.Err != nil || r.Node != n.addr {
		t.Fatalf("result %+v", r)
	}

	full := &fakeDumper{results: []dump.Result{
		{Channel: "a", Summary: dump.Summary{Records: 3}},
		{Channel: "b", Err: fmt.Errorf("cannot write dump %q: %w", "b.dump.tmp", syscall.ENOSPC)},
	}}
	n = startNode(t, server.Config{Dumps: full}, "")
	res, err = dial(t, n.addr).DumpNow(t.Context(), nil)
	if !errors.Is(err, client.ErrNoSpace) || !strings.Contains(err.Error(), "1 of 2 channels") || len(res) != 2 {
		t.Fatalf("DumpNow on a full disk: %+v, %v", res, err)
	}
	if res[0].Err != nil || !errors.Is(res[1].Err, client.ErrNoSpace) || !strings.Contains(res[1].Err.Error(), "b.dump.tmp") {
		t.Fatalf("results %+v", res)
	}

	n = startNode(t, server.Config{}, "")
	if _, err := dial(t, n.addr).DumpNow(t.Context(), nil); !errors.Is(err, client.ErrUnsupported) {
		t.Fatalf("DumpNow on a node without dumps: %v", err)
	}
}

func TestDumpNowNeedsAdmin(t *testing.T) {
	creds := map[string][]byte{"admin": []byte("0123456789abcdef"), "app": []byte("fedcba9876543210")}
	d := &fakeDumper{results: []dump.Result{{Channel: "a"}}}
	n := startNode(t, server.Config{Credentials: creds, Dumps: d}, "")
	app := dial(t, n.addr, client.WithAuth("app", creds["app"]))
	if _, err := app.DumpNow(t.Context(), nil); !errors.Is(err, client.ErrNotPermitted) {
		t.Fatalf("DumpNow as app: %v", err)
	}
	admin := dial(t, n.addr, client.WithAuth("admin", creds["admin"]))
	if res, err := admin.DumpNow(t.Context(), nil); err != nil || len(res) != 1 {
		t.Fatalf("DumpNow as admin: %+v, %v", res, err)
	}
}

func TestDumpNowIsNotResentAfterADisconnect(t *testing.T) {
	d := &fakeDumper{results: []dump.Result{{Channel: "a"}, {Channel: "b"}}, block: make(chan struct{})}
	n := startNode(t, server.Config{Dumps: d}, "")
	c := dial(t, n.addr)
	errc := make(chan error, 1)
	first := make(chan struct{})
	go func() {
		_, err := c.DumpNow(t.Context(), func(client.DumpResult) { close(first) })
		errc <- err
	}()
	<-first
	n.stop() // the node shuts down: the running dump is abandoned
	if err := <-errc; !errors.Is(err, client.ErrShuttingDown) && !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("DumpNow across a shutdown: %v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.calls != 1 {
		t.Fatalf("the node dumped %d times", d.calls)
	}
}

func TestGetAllWithExpiry(t *testing.T) {
	n := startNode(t, server.Config{}, "")
	c := dial(t, n.addr)
	ctx := t.Context()
	before := time.Now().Unix()
	if _, err := c.Put(ctx, "ttl", []byte("short"), []byte("v"), client.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "ttl", []byte("forever"), []byte("w")); err != nil {
		t.Fatal(err)
	}
	got := map[string]client.Record{}
	for r, err := range c.GetAll(ctx, "ttl", client.WithExpiry()).All() {
		if err != nil {
			t.Fatal(err)
		}
		got[string(r.Key)] = r
	}
	if s := got["short"]; string(s.Value) != "v" || s.Expiry < before+3600 || s.Expiry > time.Now().Unix()+3601 || s.CAS == 0 {
		t.Fatalf("short: %+v", s)
	}
	if f := got["forever"]; string(f.Value) != "w" || f.Expiry != 0 {
		t.Fatalf("forever: %+v", f)
	}
	for r, err := range c.GetAll(ctx, "ttl").All() {
		if err != nil || r.Expiry != 0 {
			t.Fatalf("GetAll without WithExpiry: %+v, %v", r, err)
		}
	}
}
