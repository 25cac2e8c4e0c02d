package repl

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/stream"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// keysOf returns n keys that hash to vb.
func keysOf(vb uint16, n int) [][]byte {
	var out [][]byte
	for i := 0; len(out) < n; i++ {
		k := []byte(fmt.Sprintf("key-%d", i))
		if vbucket.Of(k, testVBuckets) == vb {
			out = append(out, k)
		}
	}
	return out
}

// putIn writes n records into vb of a's kv.
func putIn(t *testing.T, a *side, vb uint16, n int, value string) {
	t.Helper()
	for _, k := range keysOf(vb, n) {
		if _, err := a.kv.Put("c", k, []byte(value), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// caughtUpOn waits until r holds a's high seqno for every vBucket of vbs.
func caughtUpOn(t *testing.T, a *side, b *side, r *Replicator, vbs []uint16) {
	t.Helper()
	eventually(t, 20*time.Second, "caught up", func() (bool, string) {
		for _, vb := range vbs {
			if b.kv.HighSeqno(vb) != a.kv.HighSeqno(vb) {
				return false, fmt.Sprintf("vb %d: replica %d, producer %d", vb, b.kv.HighSeqno(vb), a.kv.HighSeqno(vb))
			}
		}
		st := r.Status(false)
		return st.CaughtUp == st.VBuckets, fmt.Sprintf("%+v", st)
	})
}

// TestSetVBucketsLeavesOthersAlone: a map change that moves one
// vBucket's replica away and brings another changes only those two
// streams: the session, its counters and the other vBuckets' streams go
// on untouched, the removed vBucket gets nothing more once SetVBuckets
// returns, the added one is copied.
func TestSetVBucketsLeavesOthersAlone(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	for vb := range uint16(testVBuckets) {
		putIn(t, a, vb, 20, "v1")
	}
	addr := a.serve(nil)
	b := newSide(t, "node-b", t.TempDir(), false, false)
	first := []uint16{0, 1, 2, 3, 4, 5, 6, 7}
	r := b.replicate(addr, "kv", b.kv, func(c *Config) { c.VBuckets = first })
	caughtUpOn(t, a, b, r, first)
	before := r.Status(true)
	if before.Sessions != 1 || before.VBuckets != 8 {
		t.Fatalf("before: %+v", before)
	}

	next := []uint16{0, 1, 2, 3, 4, 5, 6, 8}
	b.kv.SetState(8, vbmap.Replica)
	if err := r.SetVBuckets(next); err != nil {
		t.Fatal(err)
	}
	b.kv.SetState(7, vbmap.Dead) // what applyMap does next: an apply to 7 would now fail
	held7 := b.kv.HighSeqno(7)
	for vb := range uint16(testVBuckets) {
		if vb != 8 { // its copy then holds its 20 keys whenever it starts
			putIn(t, a, vb, 5, "v2")
		}
	}
	caughtUpOn(t, a, b, r, next)
	after := r.Status(true)
	switch {
	case after.Sessions != 1 || after.Reconnects != 0 || after.Rollbacks != 0 || after.State != StateStreaming:
		t.Fatalf("the session was touched: %+v", after)
	case !slices.Equal(after.VBucketList, next) || !slices.Equal(r.VBuckets(), next):
		t.Fatalf("vbuckets %v", after.VBucketList)
	case b.kv.HighSeqno(7) != held7:
		t.Fatalf("vb 7 got %d after its removal (held %d)", b.kv.HighSeqno(7), held7)
	case after.LastError != "":
		t.Fatalf("last error %q", after.LastError)
	}
	// Applied counts 0..6's 5 new writes each, plus vb 8's copy (its 20
	// keys, once each, at their latest seqnos): nothing of 0..6 was copied
	// again.
	if got, want := after.Applied-before.Applied, uint64(7*5+20); got != want {
		t.Fatalf("applied %d more, want %d", got, want)
	}
	// The producer serves the same connection, now with 0..6 and 8.
	var served []uint16
	for _, cs := range a.producerStatus(t) {
		for _, v := range cs.PerVBucket {
			served = append(served, v.VBucket)
		}
	}
	slices.Sort(served)
	if !slices.Equal(served, next) {
		t.Fatalf("producer serves %v", served)
	}

	// Removing while stopped, then starting: only the new set is asked for.
	r.Stop()
	if err := r.SetVBuckets([]uint16{8}); err != nil {
		t.Fatal(err)
	}
	r.Start()
	caughtUpOn(t, a, b, r, []uint16{8})
	if st := r.Status(false); st.VBuckets != 1 {
		t.Fatalf("after a stopped change: %+v", st)
	}
	for _, bad := range [][]uint16{nil, {1, 1}} {
		if err := r.SetVBuckets(bad); err == nil {
			t.Fatalf("SetVBuckets(%v) accepted", bad)
		}
	}
}

// producerStatus returns the status of the producer a serves with.
func (s *side) producerStatus(t *testing.T) []ConsumerStatus {
	t.Helper()
	if s.prod == nil {
		t.Fatal("no producer")
	}
	return s.prod.Status(true)
}

// TestLagBothSides: while the replica's applies are held back, both sides
// see how far behind each vBucket is, in seqnos and bytes; once released,
// both show nothing behind (the consumer's acknowledgement reaches the
// producer at rest).
func TestLagBothSides(t *testing.T) {
	a := newSide(t, "node-a", t.TempDir(), false, false)
	addr := a.serveCfg(ProducerConfig{SeqnoInterval: 20 * time.Millisecond})
	b := newSide(t, "node-b", t.TempDir(), false, false)
	var hold atomic.Bool
	gate := make(chan struct{})
	var release sync.Once
	open := func() { release.Do(func() { close(gate) }) }
	r := b.replicate(addr, "kv", b.kv, func(c *Config) {
		c.VBuckets = []uint16{3}
		c.Options.NoopInterval = 100 * time.Millisecond
		c.ApplyHook = func(m *engine.Mutation) error {
			if hold.Load() && m.Seqno > 10 {
				<-gate
			}
			return nil
		}
	})
	t.Cleanup(open) // runs before the replicator's Stop, which waits for the apply
	putIn(t, a, 3, 10, "before")
	caughtUpOn(t, a, b, r, []uint16{3})
	hold.Store(true)
	putIn(t, a, 3, 40, strings.Repeat("x", 1000))
	// The replica knows the producer's figures as of the last message its
	// blocked handler read: behind, but not how far (the producer does).
	eventually(t, 10*time.Second, "lag seen by the replica", func() (bool, string) {
		st := r.Status(true)
		v := st.PerVBucket[0]
		return v.High > v.Seqno && v.LagSeqnos == v.High-v.Seqno && v.State != "caught_up" &&
			st.Lagging == 1 && st.LagSeqnos == v.LagSeqnos && st.LagBytes == v.LagBytes, fmt.Sprintf("%+v", st)
	})
	if l := r.Behind(); l.VBuckets != 1 || l.Seqnos == 0 || l.Unknown != 0 {
		t.Fatalf("Behind %+v", l)
	}
	eventually(t, 10*time.Second, "lag seen by the producer", func() (bool, string) {
		cs := a.producerStatus(t)
		if len(cs) != 1 || len(cs[0].PerVBucket) != 1 {
			return false, fmt.Sprintf("%+v", cs)
		}
		v := cs[0].PerVBucket[0]
		return cs[0].Consumer == "node-b" && v.High == a.kv.HighSeqno(3) && v.LagSeqnos >= 30 && v.LagBytes > 0 && cs[0].CaughtUp == 0, fmt.Sprintf("%+v", cs)
	})
	open()
	caughtUpOn(t, a, b, r, []uint16{3})
	eventually(t, 10*time.Second, "nothing behind on either side", func() (bool, string) {
		st := r.Status(true)
		cs := a.producerStatus(t)
		v, p := st.PerVBucket[0], cs[0].PerVBucket[0]
		return v.LagSeqnos == 0 && v.LagBytes == 0 && v.State == "caught_up" && p.LagSeqnos == 0 && p.LagBytes == 0 && p.Acked == p.High && cs[0].CaughtUp == 1,
			fmt.Sprintf("replica %+v producer %+v", v, p)
	})
	if l := r.Behind(); l != (Lag{}) {
		t.Fatalf("Behind at rest %+v", l)
	}
}

// TestChainCheck: a producer with a map streams a vBucket only while it
// is its active and only to a consumer in its chain (or a standby); the
// others are refused with the reason and asked again later, so a map
// change is picked up without a new session.
func TestChainCheck(t *testing.T) {
	chains := make([][]string, testVBuckets)
	for vb := range chains {
		switch {
		case vb < 8:
			chains[vb] = []string{"node-a", "node-b"}
		case vb < 15:
			chains[vb] = []string{"node-a", "node-c"}
		default:
			chains[vb] = []string{"node-c", "node-a"}
		}
	}
	var table atomic.Pointer[vbmap.Table]
	m := (*vbmap.Map)(nil).Next(1, 1, chains)
	table.Store(vbmap.NewTable("node-a", m, nil))
	a := newSide(t, "node-a", t.TempDir(), false, false)
	for vb := range uint16(testVBuckets) {
		putIn(t, a, vb, 3, "v")
	}
	addr := a.serveCfg(ProducerConfig{Table: table.Load})
	b := newSide(t, "node-b", t.TempDir(), false, false)
	r := b.replicate(addr, "kv", b.kv, nil)
	eventually(t, 10*time.Second, "0..7 streamed, the rest refused", func() (bool, string) {
		st := r.Status(true)
		for _, v := range st.PerVBucket {
			want := "caught_up"
			if v.VBucket >= 8 {
				want = "unknown"
			}
			if v.State != want {
				return false, fmt.Sprintf("vb %d %s: %+v", v.VBucket, v.State, st)
			}
		}
		return strings.Contains(st.LastError, "refused") && strings.Contains(st.LastError, "not"), st.LastError
	})
	if st := r.Status(false); st.Sessions != 1 || st.Reconnects != 0 {
		t.Fatalf("refusals cost a session: %+v", st)
	}
	// The map moves vb 8's replica to node-b: picked up at the next ask.
	chains[8] = []string{"node-a", "node-b"}
	m = m.Next(2, 1, chains)
	table.Store(vbmap.NewTable("node-a", m, nil))
	eventually(t, 10*time.Second, "vb 8 streamed", func() (bool, string) {
		st := r.Status(true)
		return st.PerVBucket[8].State == "caught_up" && b.kv.HighSeqno(8) == a.kv.HighSeqno(8), fmt.Sprintf("%+v", st.PerVBucket[8])
	})
	// A standby may stream what node-a is active for, not vb 15.
	sb := newSide(t, "node-s", t.TempDir(), false, false)
	rs := sb.replicate(addr, "kv", sb.kv, func(c *Config) { c.Standby = true })
	eventually(t, 10*time.Second, "the standby streams 0..14", func() (bool, string) {
		st := rs.Status(true)
		return st.CaughtUp == 15 && st.PerVBucket[15].State == "unknown" && strings.Contains(st.LastError, "is not the active of vbucket 15"), fmt.Sprintf("%+v", st)
	})
	for _, tc := range []struct {
		t    *vbmap.Table
		c    stream.ConsumerInfo
		vb   uint16
		want string
	}{
		{nil, stream.ConsumerInfo{Name: "node-b"}, 0, "no vbucket map"},
		{table.Load(), stream.ConsumerInfo{Name: "node-b"}, 99, "no vbucket 99"},
		{table.Load(), stream.ConsumerInfo{Name: "node-c"}, 0, "consumer node-c is not in the chain [node-a node-b] of vbucket 0 (map revision 2, epoch 1)"},
		{table.Load(), stream.ConsumerInfo{Name: "node-a"}, 15, `node node-a is not the active of vbucket 15 (map revision 2, epoch 1: active "node-c")`},
	} {
		if err := CheckChain(tc.t, tc.c, tc.vb); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("CheckChain(%v, %d) = %v, want %q", tc.c, tc.vb, err, tc.want)
		}
	}
}
