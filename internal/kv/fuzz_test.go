package kv

import (
	"context"
	"encoding/binary"
	"testing"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

// FuzzApply feeds arbitrary mutations (as a replication stream would) and
// dump records (as a dump file would) to a Store: it must refuse what is
// invalid with an error, never panic, and keep its invariants; streaming
// the result must work.
func FuzzApply(f *testing.F) {
	f.Add([]byte("\x01\x00\x05\x03abc\x02hi"))
	f.Add([]byte("\x01\x01\x05\x01k\x00\x02\x01\x06\x01k\x00\x07\x01\x09\x00\x00"))
	f.Add([]byte("\x08\x00\x09\x02kk\x03val\x01\x00\x01\x01k\x00"))
	f.Fuzz(fuzzOne)
}

func fuzzOne(t *testing.T, data []byte) {
	{
		clock := newFakeClock()
		const vbs = 4
		s, err := New(Config{VBuckets: vbs, Now: clock.Now, SweepInterval: -1, MaxValueSize: 64, MemoryLimit: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.SetState(0, vbmap.Replica) // vBuckets 0 and 1 take Apply, 2 and 3 refuse it
		s.SetState(1, vbmap.Pending)
		take := func(n int) []byte {
			n = min(n, len(data))
			b := data[:n]
			data = data[n:]
			return b
		}
		byteOf := func() int {
			if b := take(1); len(b) == 1 {
				return int(b[0])
			}
			return 0
		}
		for len(data) > 0 {
			op := engine.Op(byteOf())
			vb := uint16(byteOf() % (vbs + 1))
			seqno := uint64(byteOf())
			key := take(byteOf())
			value := take(byteOf())
			ch := []string{"c", "d", "", "bad name"}[byteOf()%4]
			switch {
			case op == 8: // a dump record
				exp := int64(0)
				if seqno%3 == 0 {
					exp = clock.Now().Unix() + int64(seqno) - 100
				}
				s.Load(ch, vb, seqno/2, []Record{{Key: key, Value: value, Seqno: seqno, Expiry: exp}})
			case op == 9:
				clock.Add(30e9)
				sweepAll(s)
			default:
				m := engine.Mutation{VBucket: vb, Seqno: seqno, Op: op % 9, Channel: ch, Key: key, Value: value}
				if len(value) >= 8 {
					m.Expiry = int64(binary.LittleEndian.Uint64(value))
				}
				s.Apply(&m)
			}
		}
		if err := checkStore(s); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for vb := range uint16(vbs) {
			sink := newApplySink(nil)
			if err := s.Stream(ctx, vb, 0, sink); err != context.Canceled {
				t.Fatalf("stream of vb %d: %v", vb, err)
			}
			for _, e := range sink.snapshot() {
				if e.Op != 0 && e.Seqno > s.HighSeqno(vb) {
					t.Fatalf("streamed seqno %d above high %d", e.Seqno, s.HighSeqno(vb))
				}
			}
		}
	}
}
