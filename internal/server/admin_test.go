package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"shoal/internal/dump"
	"shoal/internal/engine"
	"shoal/internal/wire"
)

type nopDumper struct{}

func (nopDumper) DumpEach(context.Context, func(dump.Result)) ([]dump.Result, error) { return nil, nil }

func TestDumpNowFraming(t *testing.T) {
	ts := startServer(t, Config{Dumps: nopDumper{}})
	r := dialRaw(t, ts.addr)
	if h, body := r.call(wire.OpDumpNow, 0, []byte{1}); h.Status != wire.StatusBadRequest {
		t.Fatalf("DumpNow with a body: %v %s", h.Status, body)
	}
	// No channel: one final frame, ok.
	if h, body := r.call(wire.OpDumpNow, 0, nil); h.Status != wire.StatusOK || h.Flags&wire.FlagMore != 0 || len(body) != 0 {
		t.Fatalf("DumpNow: %+v %q", h, body)
	}
}

func TestRemoveChannelCallsTheHook(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	fail := false
	ts := startServer(t, Config{ChannelRemoved: func(name string, kind engine.Kind) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, name+"/"+kind.String())
		if fail {
			return errors.New("cannot move the dumps aside")
		}
		return nil
	}})
	r := dialRaw(t, ts.addr)
	r.put("users", "k", "v")
	if h, body := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "users")); h.Status != wire.StatusOK {
		t.Fatalf("RemoveChannel: %v %s", h.Status, body)
	}
	// An unknown channel: nothing to remove, no call.
	if h, _ := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "nothing")); h.Status != wire.StatusOK {
		t.Fatalf("RemoveChannel of an unknown channel: %v", h.Status)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	r.put("other", "k", "v")
	h, body := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "other"))
	if h.Status != wire.StatusInternal || !strings.Contains(string(body), "cannot move the dumps aside") {
		t.Fatalf("RemoveChannel with a failing hook: %v %s", h.Status, body)
	}
	if st, _ := r.get("other", "k"); st != wire.StatusNotFound {
		t.Fatalf("the channel is still there: %v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(calls, ",") != "users/kv,other/kv" {
		t.Fatalf("hook calls %v", calls)
	}
}
