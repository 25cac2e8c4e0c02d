package liveness

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"shoal/internal/engine"
	"shoal/internal/stream"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var _ stream.Spy = (*Spy)(nil)

// TestSpyConcurrent: stream connections report from their own goroutines
// while the monitor ticks.
func TestSpyConcurrent(t *testing.T) {
	spy := NewSpy()
	mon := NewMonitor(Config{Self: "n0"}, spy)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				spy.Heard(uint64(c), fmt.Sprintf("n%d", c%3+1), "kv", start.Add(time.Duration(i)*time.Millisecond))
				if i == 199 && c%2 == 0 {
					spy.Forget(uint64(c))
				}
			}
		}()
	}
	for i := range 50 {
		mon.Tick(start.Add(time.Duration(i)*time.Millisecond), nil)
	}
	wg.Wait()
	r := mon.Tick(start.Add(time.Second), nil)
	if len(r.Nodes) != 4 {
		t.Fatalf("nodes %+v, want n0..n3", r.Nodes)
	}
	for _, n := range r.Nodes[1:] {
		if n.State != Active || *n.SecondsSinceLastHeard != 0.801 {
			t.Errorf("%s: %s, %v s since heard; want active, 0.801", n.Node, n.State, *n.SecondsSinceLastHeard)
		}
	}
}

// idleEngine has no data: its streams only idle, so the connection carries
// NOOPs and nothing else.
type idleEngine struct{}

func (idleEngine) Kind() engine.Kind                  { return engine.KindKV }
func (idleEngine) HighSeqno(uint16) uint64            { return 0 }
func (idleEngine) Apply(*engine.Mutation) error       { return nil }
func (idleEngine) SetState(uint16, vbmap.State) error { return nil }
func (idleEngine) State(uint16) vbmap.State           { return vbmap.Active }
func (idleEngine) DropVBucket(uint16) error           { return nil }
func (idleEngine) Stream(ctx context.Context, _ uint16, _ uint64, _ engine.Sink) error {
	<-ctx.Done()
	return ctx.Err()
}

type nopHandler struct{}

func (nopHandler) Started(uint16, []stream.FailoverEntry) error { return nil }
func (nopHandler) Snapshot(uint16, uint64, uint64) error        { return nil }
func (nopHandler) Mutation(*engine.Mutation) error              { return nil }
func (nopHandler) Ended(stream.End)                             {}
func (nopHandler) Lost(*stream.ConnError)                       {}

// TestWithStreams wires a real stream session to a Spy: an idle stream's
// NOOPs keep the producer active in the consumer's monitor; once the
// producer leaves, it turns inactive about InactiveTicks later (the exact
// boundaries are the scenario tests' business) and stays listed.
func TestWithStreams(t *testing.T) {
	// Inactive after 4 ticks of silence with NOOPs every 40 ms: 250 ms
	// ticks leave a loaded machine (-race, load 9 on 2 cores) 960 ms of
	// scheduling delay; 2 ticks, 460 ms, were not always enough.
	const tick, inactive = 250 * time.Millisecond, 4
	quiet := slog.New(slog.DiscardHandler)
	prod, err := stream.NewProducer(stream.ProducerConfig{Name: "node-a", Logger: quiet,
		Engines: func(string) engine.Engine { return idleEngine{} }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		var hb [wire.HeaderLen]byte
		io.ReadFull(conn, hb[:])
		h, _ := wire.ParseHeader(hb[:])
		body := make([]byte, min(h.BodyLen, 1024))
		io.ReadFull(conn, body)
		served <- prod.Serve(ctx, conn, h, body)
	}()
	spy := NewSpy()
	mon := NewMonitor(Config{Self: "node-b", Tick: tick, InactiveTicks: inactive}, spy)
	c, err := stream.Dial(context.Background(), stream.ConsumerConfig{Name: "node-b", Bucket: "kv",
		Addr: ln.Addr().String(), NoopInterval: 40 * time.Millisecond, Handler: nopHandler{}, Spy: spy, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); c.Wait() }()
	if err := c.Request(stream.Request{VBucket: 3}); err != nil {
		t.Fatal(err)
	}
	state := func() State {
		for _, n := range mon.Tick(time.Now(), nil).Nodes {
			if n.Node == "node-a" {
				return n.State
			}
		}
		return ""
	}
	for range 6 {
		time.Sleep(tick)
		if s := state(); s != Active {
			t.Fatalf("idle producer is %q, want active", s)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	c.Wait()
	left := time.Now()
	for state() == Active {
		if time.Since(left) > (inactive+1)*tick+time.Second {
			t.Fatal("the producer stayed active")
		}
		time.Sleep(tick / 5)
	}
	if s := state(); s != Inactive {
		t.Fatalf("after the connection closed: %q, want inactive", s)
	}
}
