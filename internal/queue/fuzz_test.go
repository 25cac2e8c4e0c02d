package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

// framesFrom turns fuzz input into frames with valid checksums, so the
// fuzzer reaches the decoders behind them: data is read as repeated
// [type u8][length u16][body]; a last incomplete piece is appended raw (a
// torn tail).
func framesFrom(data []byte) []byte {
	var out []byte
	for len(data) >= 3 {
		n := int(binary.LittleEndian.Uint16(data[1:]))
		if len(data) < 3+n {
			break
		}
		start := len(out)
		out = beginFrame(out, data[0])
		out = append(out, data[3:3+n]...)
		out = finishFrame(out, start)
		data = data[3+n:]
	}
	return append(out, data...)
}

// splitFrames is the inverse of framesFrom for a file of valid frames after
// its magic: it makes seeds out of real files.
func splitFrames(file []byte) []byte {
	var out []byte
	fr := newFrameReader(bytes.NewReader(file[magicLen:]), magicLen)
	for {
		typ, body, err := fr.next()
		if err != nil {
			return out
		}
		out = append(out, typ)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(body)))
		out = append(out, body...)
	}
}

func fuzzConfig(dir string, d Durability) Config {
	cfg := testConfig(dir)
	cfg.FS = noSyncFS{vfs.Default}
	cfg.Durability = d
	cfg.FsyncInterval = time.Hour
	return cfg
}

// busySession leaves a store with every kind of journal entry, overflow,
// subscribers and removed-out-of-order records, and returns it open.
func busySession(t testing.TB, cfg Config) *Store {
	s := mustOpen(t, cfg)
	ctx := context.Background()
	for i := range 40 {
		v := make([]byte, i*7)
		if err := s.Push(ctx, []string{"a", "b", "s"}, v, nil); err != nil {
			t.Fatal(err)
		}
	}
	s.Pop("a", nil)
	c, _ := s.Subscribe("s", "X")
	c.Next(nil, 100)
	s.Subscribe("s", "Y")
	c.Close()
	s.SetState(2, vbmap.Replica)
	s.SetState(3, vbmap.Pending)
	s.Apply(&engine.Mutation{VBucket: 3, Seqno: 500, Op: engine.OpPop, Channel: "b", Ref: 5})
	s.Apply(&engine.Mutation{VBucket: 2, Seqno: 501, Op: engine.OpRemoveChannel, Channel: "a"})
	s.DropVBucket(1)
	s.RemoveChannel("c")
	return s
}

// exercise uses whatever a fuzzed store holds, closes it and checks that
// what it saved opens again.
func exercise(t *testing.T, s *Store) {
	for _, st := range s.Channels() {
		if !st.Subscribed {
			for {
				if _, err := s.Pop(st.Name, nil); err != nil {
					break
				}
			}
			continue
		}
		c, err := s.Subscribe(st.Name, st.Subscriber)
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, _, err := c.Next(nil, 1000); err != nil {
				break
			}
		}
	}
	for _, st := range s.Channels() {
		if st.Records != 0 {
			t.Fatalf("records left after reading everything: %+v", st)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err := Open(s.cfg)
	if err != nil {
		t.Fatalf("reopening what a fuzzed store saved: %v", err)
	}
	s.Close()
}

func FuzzJournalReplay(f *testing.F) {
	dir := f.TempDir()
	cfg := fuzzConfig(dir, DurabilityJournal)
	cfg.JournalSize = 1 << 30
	s := busySession(f, cfg)
	s.abandon()
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*"+journalSuffix))
	for _, p := range segs {
		b, _ := os.ReadFile(p)
		f.Add(splitFrames(b))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "journal"), 0o755)
		seg := append([]byte(journalMagic), framesFrom(data)...)
		os.WriteFile(filepath.Join(dir, "journal", "0000000000000001"+journalSuffix), seg, 0o644)
		s, err := Open(fuzzConfig(dir, DurabilityJournal))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("journal refused without ErrCorrupt: %v", err)
			}
			return
		}
		exercise(t, s)
	})
}

func FuzzStateFile(f *testing.F) {
	dir := f.TempDir()
	cfg := fuzzConfig(dir, DurabilityMemory)
	s := busySession(f, cfg)
	s.Close()
	b, _ := os.ReadFile(filepath.Join(dir, stateName))
	f.Add(splitFrames(b))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		state := append([]byte(stateMagic), framesFrom(data)...)
		os.WriteFile(filepath.Join(dir, stateName), state, 0o644)
		s, err := Open(fuzzConfig(dir, DurabilityMemory))
		if err != nil {
			return // a state file that is not right is refused, never half-loaded
		}
		exercise(t, s)
	})
}

// FuzzOverflowSegment replaces the last overflow segment of a crashed
// memory-mode store: whatever it holds, Open succeeds and reads stay
// consistent.
func FuzzOverflowSegment(f *testing.F) {
	dir := f.TempDir()
	s := busySession(f, fuzzConfig(dir, DurabilityMemory))
	s.Sync()
	s.abandon()
	segs, _ := filepath.Glob(filepath.Join(dir, "overflow", "*", "*"+segSuffix))
	for _, p := range segs {
		b, _ := os.ReadFile(p)
		f.Add(splitFrames(b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		s := mustOpen(t, fuzzConfig(dir, DurabilityMemory))
		for i := range 60 {
			mustPush(t, s, string(make([]byte, 10+i)), "q")
		}
		s.Sync()
		s.abandon()
		segs, _ := filepath.Glob(filepath.Join(dir, "overflow", "*", "*"+segSuffix))
		os.WriteFile(segs[len(segs)-1], append([]byte(segMagic), framesFrom(data)...), 0o644)
		s, err := Open(fuzzConfig(dir, DurabilityMemory))
		if err != nil {
			t.Fatalf("a damaged overflow segment must not stop Open: %v", err)
		}
		exercise(t, s)
	})
}

// FuzzDecodeEntry: the journal entry decoder never panics, and what it
// accepts encodes back to the same bytes.
func FuzzDecodeEntry(f *testing.F) {
	q := &queue{ch: &channel{name: "ch", subscribed: true}, subscriber: "sub"}
	for _, frame := range [][]byte{
		appendPushEntry(nil, 3, []pushTarget{{"a", 1}, {"b", 2}}, []byte("value")),
		appendPopEntry(nil, q, []popRef{{1, 2, 3}, {4, 5, 6}}),
		appendApplyPopEntry(nil, "ch", "key", 2, 9, 4),
		appendNameEntry(nil, entrySubscribe, "ch", "sub"),
		appendNameEntry(nil, entryRemove, "ch", ""),
		appendApplyRemoveEntry(nil, "ch", 7, 11),
		appendRemoveInEntry(nil, "ch", []vbRemoval{{vb: 1, seqno: 4}}),
		appendDropEntry(nil, 5),
	} {
		f.Add(frame[frameHeaderLen], frame[frameHeaderLen+1:])
	}
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		e, err := decodeEntry(typ, body, 16)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error without ErrCorrupt: %v", err)
			}
			return
		}
		var again []byte
		switch typ {
		case entryPush:
			again = appendPushEntry(nil, e.vb, e.targets, e.value)
		case entryPop:
			again = appendPopEntry(nil, &queue{ch: &channel{name: e.channel, subscribed: e.subscribed}, subscriber: e.subscriber}, e.pops)
		case entryApplyPop:
			again = appendApplyPopEntry(nil, e.channel, e.subscriber, e.vb, e.seqno, e.ref)
		case entrySubscribe, entryRemove:
			again = appendNameEntry(nil, typ, e.channel, e.subscriber)
		case entryApplyRemove:
			again = appendApplyRemoveEntry(nil, e.channel, e.vb, e.seqno)
		case entryRemoveIn:
			again = appendRemoveInEntry(nil, e.channel, e.removals)
		case entryDrop:
			again = appendDropEntry(nil, e.vb)
		}
		if again[frameHeaderLen] != typ || !bytes.Equal(again[frameHeaderLen+1:], body) {
			t.Fatalf("entry %q does not encode back:\n got %x\nwant %x", typ, again[frameHeaderLen+1:], body)
		}
	})
}
