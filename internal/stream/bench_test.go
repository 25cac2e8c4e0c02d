package stream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// genEngine streams synthetic mutations as fast as the sink takes them, so
// that a benchmark measures the stream library rather than an engine: vb's
// history is seqnos 1..perVB[vb], sent as one snapshot, after which the
// stream idles until it is cancelled. Values are 100 bytes cut at varying
// offsets of a 4 MiB random pool: incompressible, as s2 sees them.
type genEngine struct {
	perVB []uint64
	pool  []byte
}

const benchValueLen = 100

func newGenEngine(vbs, total int) *genEngine {
	g := &genEngine{perVB: make([]uint64, vbs), pool: make([]byte, 4<<20)}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range g.pool {
		g.pool[i] = byte(r.Uint32())
	}
	for i := range total {
		g.perVB[i%vbs]++
	}
	return g
}

func (g *genEngine) Kind() engine.Kind                  { return engine.KindKV }
func (g *genEngine) HighSeqno(vb uint16) uint64         { return g.perVB[vb] }
func (g *genEngine) Apply(*engine.Mutation) error       { return nil }
func (g *genEngine) DropVBucket(vb uint16) error        { return nil }
func (g *genEngine) SetState(uint16, vbmap.State) error { return nil }
func (g *genEngine) State(uint16) vbmap.State           { return vbmap.Replica }
func (g *genEngine) Stream(ctx context.Context, vb uint16, from uint64, sink engine.Sink) error {
	high := g.perVB[vb]
	if from < high {
		if err := sink.Snapshot(from+1, high); err != nil {
			return err
		}
	}
	key := make([]byte, 0, 16)
	m := engine.Mutation{VBucket: vb, Op: engine.OpSet, Channel: "bench"}
	for s := from + 1; s <= high; s++ {
		key = append(key[:0], "key:"...)
		key = strconv.AppendUint(key, s*uint64(len(g.perVB))+uint64(vb), 10)
		off := int(s*7919) % (len(g.pool) - benchValueLen)
		m.Seqno, m.Key, m.Value = s, key, g.pool[off:off+benchValueLen]
		if err := sink.Mutation(&m); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

// counter is a Handler that counts mutations and signals when all arrived.
type counter struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *counter) Started(uint16, []FailoverEntry) error { return nil }
func (c *counter) Snapshot(uint16, uint64, uint64) error { return nil }
func (c *counter) Ended(End)                             {}
func (c *counter) Lost(*ConnError)                       {}
func (c *counter) Mutation(m *engine.Mutation) error {
	if c.n.Add(1) == c.want {
		close(c.done)
	}
	return nil
}

// countingConn counts the bytes a consumer reads off the wire.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// BenchmarkStream measures streaming throughput over loopback TCP: 16
// vBuckets of 100-byte values over 1 and 4 connections, with and without
// s2. MB/s counts the mutation messages (about 130 bytes each); wire-MB/s
// what crossed the socket.
func BenchmarkStream(b *testing.B) {
	for _, conns := range []int{1, 4} {
		for _, s2 := range []bool{false, true} {
			b.Run(fmt.Sprintf("conns=%d/s2=%v", conns, s2), func(b *testing.B) {
				benchStream(b, conns, s2)
			})
		}
	}
}

func benchStream(b *testing.B, conns int, s2 bool) {
	const vbs = 16
	gen := newGenEngine(vbs, b.N)
	msg := appendMutation(nil, &engine.Mutation{Op: engine.OpSet, Channel: "bench", Key: []byte("key:10000000"), Value: make([]byte, benchValueLen)})
	b.SetBytes(int64(len(msg)))
	prod, err := NewProducer(ProducerConfig{Name: "node-a", Engines: func(string) engine.Engine { return gen }, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, conns)
	go func() {
		for range conns {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				h, body, err := readFrame(conn)
				if err != nil {
					served <- err
					return
				}
				served <- prod.Serve(ctx, conn, h, body)
			}()
		}
	}()
	var wireBytes atomic.Int64
	var d net.Dialer
	count := &counter{want: int64(b.N), done: make(chan struct{})}
	c, err := Dial(context.Background(), ConsumerConfig{
		Name: "node-b", Bucket: "kv", Addr: ln.Addr().String(), Connections: conns, Compression: s2,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "tcp", addr)
			return countingConn{conn, &wireBytes}, err
		},
		Handler: count, Logger: quiet,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for vb := range uint16(vbs) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			b.Fatal(err)
		}
	}
	<-count.done
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "mut/s")
	b.ReportMetric(float64(wireBytes.Load())/1e6/elapsed.Seconds(), "wire-MB/s")
	cancel()
	c.Close()
	c.Wait()
	for range conns {
		<-served
	}
}
