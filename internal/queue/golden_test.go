package queue

import (
	"context"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The tests in this file pin the queue's file formats with golden bytes
// written by the code of the time the format was fixed: any change to how a
// state file, a journal entry or an overflow record is encoded fails them,
// and so does a reader that no longer loads files written then. A format
// change must come with a new magic or version, and new golden bytes.

// goldenMemoryDir is a store directory after a clean close in memory mode
// (goldenMemoryScenario): the state file with the rings, and one overflow
// segment.
var goldenMemoryDir = map[string]string{
	"overflow/0000000000000001/0000000000000001.seg": "5348514f56463031" +
		"447b40f80d00000050030001000000000000006134" +
		"7928b5de0d00000050000002000000000000007331",
	"state": "5348515354413031" +
		"dff2cd1a1a0000004801000000040000000300000000000000000000000000000001" +
		"9871cf901300000056000004000000000000000400000000000000" +
		"cb50b38a1300000056010001000000000000000000000000000000" +
		"b656089b1300000056020001000000000000000000000000000000" +
		"9d5461941300000056030001000000000000000000000000000000" +
		"7327ce2e110000004302636800080000000f00000000000000" +
		"997bc70d4200000051000100000000000000010000000000000001000000000000001d000000000000000100000000000000320000000000000001000000000000000200000000000000" +
		"0644a6dd0d00000052010001000000000000006132" +
		"55bb5f7c0d00000052020001000000000000006133" +
		"8e0be4990d00000052030001000000000000006134" +
		"8ec7097d12000000430373756201080000000100000000000000" +
		"b228b1d44300000051017802000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
		"162347740d00000052000003000000000000007331" +
		"3efeddde09000000450d00000000000000",
}

// goldenJournalDir is a store directory after a crash in journal mode
// (goldenJournalScenario): the state file of the checkpoint at open, and a
// journal segment holding every entry since. Version 2 of the journal:
// the removal of r is a 'Z' entry (the active vBuckets it was removed
// from, with their seqnos).
var goldenJournalDir = map[string]string{
	"journal/0000000000000001.jnl": "5348514a4e4c3032" +
		"3d370efa1a0000005000000201710100000000000000017202000000000000006a31" +
		"750de3641000000050020001017101000000000000006a32" +
		"437b20730700000053037375620178" +
		"d914ab841b0000004f0171000001000000000001000000000000000300000000000000" +
		"6ec0d278110000005a01720100000000000400000000000000",
	"state": goldenJournalDirV1["state"],
}

// goldenJournalDirV1 is the same scenario written by version 1 of the
// journal, whose removal of r is an 'X' entry (every vBucket): still read.
var goldenJournalDirV1 = map[string]string{
	"journal/0000000000000001.jnl": "5348514a4e4c3031" +
		"3d370efa1a0000005000000201710100000000000000017202000000000000006a31" +
		"750de3641000000050020001017101000000000000006a32" +
		"437b20730700000053037375620178" +
		"d914ab841b0000004f0171000001000000000001000000000000000300000000000000" +
		"2e60ac0f03000000580172",
	"state": "5348515354413031" +
		"299c3a511a0000004801000000040000000100000000000000010000000000000001" +
		"8978fbbd09000000450100000000000000",
}

// goldenConfig is the configuration of the golden scenarios: four
// vBuckets, rings of 64 bytes (three 2-byte records), so that a fourth
// record overflows.
func goldenConfig(dir string, d Durability) Config {
	return Config{Dir: dir, VBuckets: 4, RingSize: 64, SegmentSize: 4 << 10, IndexInterval: -1, Durability: d, Logger: quiet}
}

// goldenMemoryScenario: four pushes to ch (the fourth overflows), a
// subscriber x of sub, a push to both channels, a pop of ch, a clean close.
func goldenMemoryScenario(t *testing.T, dir string) {
	s := mustOpen(t, goldenConfig(dir, DurabilityMemory))
	for _, v := range []string{"a1", "a2", "a3", "a4"} {
		mustPush(t, s, v, "ch")
	}
	c, err := s.Subscribe("sub", "x")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	mustPush(t, s, "s1", "ch", "sub")
	if v, err := s.Pop("ch", nil); err != nil || string(v) != "a1" {
		t.Fatalf("Pop: %q, %v", v, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// goldenJournalScenario: pushes to q and r (one routed to vBucket 2), a
// subscription, a pop, the removal of r, then a crash.
func goldenJournalScenario(t *testing.T, dir string) {
	s := mustOpen(t, goldenConfig(dir, DurabilityJournal))
	ctx := context.Background()
	mustPush(t, s, "j1", "q", "r")
	if err := s.Push(ctx, []string{"q"}, []byte("j2"), keyFor(2, 4)); err != nil {
		t.Fatal(err)
	}
	c, err := s.Subscribe("sub", "x")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if v, err := s.Pop("q", nil); err != nil || string(v) != "j1" {
		t.Fatalf("Pop: %q, %v", v, err)
	}
	if ok, err := s.RemoveChannel("r"); !ok || err != nil {
		t.Fatalf("RemoveChannel: %v, %v", ok, err)
	}
	s.abandon()
}

// dirHex returns every file under dir by its slash-separated relative path,
// in hex.
func dirHex(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		out[filepath.ToSlash(rel)] = hex.EncodeToString(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeGolden writes files (relative path to hex) into a new directory.
func writeGolden(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, h := range files {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		path := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestGoldenFilesAreWrittenByteForByte(t *testing.T) {
	for _, tc := range []struct {
		name     string
		scenario func(*testing.T, string)
		golden   map[string]string
	}{
		{"memory", goldenMemoryScenario, goldenMemoryDir},
		{"journal", goldenJournalScenario, goldenJournalDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.scenario(t, dir)
			if diff := cmp.Diff(tc.golden, dirHex(t, dir)); diff != "" {
				t.Fatalf("files differ from the golden ones (-golden +written):\n%s", diff)
			}
		})
	}
}

func TestGoldenFilesLoad(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		s := mustOpen(t, goldenConfig(writeGolden(t, goldenMemoryDir), DurabilityMemory))
		defer s.Close()
		seqnos := highSeqnos(s)
		equal(t, "ch", popAll(t, s, "ch"), []string{"a2", "a3", "a4", "s1"})
		c, err := s.Subscribe("sub", "x")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		batch, _, err := c.Next(nil, 1<<10)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "sub/x", decodeBatch(t, batch), []string{"s1"})
		// Round-robin: a1 a2 a3 a4 s1 went to vBuckets 0 1 2 3 0, s1 in
		// both channels; the pop of a1 took one more seqno of vBucket 0.
		// (The pops above come after the seqnos are read.)
		checkSeqnos(t, seqnos, []uint64{4, 1, 1, 1})
	})
	for name, files := range map[string]map[string]string{"journal": goldenJournalDir, "journal-v1": goldenJournalDirV1} {
		t.Run(name, func(t *testing.T) { goldenJournalLoads(t, files) })
	}
}

// goldenJournalLoads checks the store replayed from a golden journal
// directory.
func goldenJournalLoads(t *testing.T, files map[string]string) {
	{
		s := mustOpen(t, goldenConfig(writeGolden(t, files), DurabilityJournal))
		defer s.Close()
		// j1 to q and r in vBucket 0 (seqnos 1, 2), j2 routed to vBucket 2,
		// the pop of j1 and the removal of r in vBucket 0 (3, 4).
		checkSeqnos(t, highSeqnos(s), []uint64{4, 0, 1, 0})
		// r was removed; sub has its subscriber x; q holds j2.
		queues := make(map[string]int64)
		for _, cs := range s.Channels() {
			queues[cs.Name+"/"+cs.Subscriber] = cs.Records
		}
		if diff := cmp.Diff(map[string]int64{"q/": 1, "sub/x": 0}, queues); diff != "" {
			t.Fatalf("queues after replay (-want +got):\n%s", diff)
		}
		equal(t, "q", popAll(t, s, "q"), []string{"j2"})
	}
}

func highSeqnos(s *Store) []uint64 {
	var out []uint64
	for vb := range uint16(4) {
		out = append(out, s.HighSeqno(vb))
	}
	return out
}

func checkSeqnos(t *testing.T, got, want []uint64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("high seqnos %v, want %v", got, want)
	}
}

// goldenEntries are the journal entries and the overflow record of
// TestGoldenEntries, each a whole frame (crc, length, type, body) in hex.
var goldenEntries = map[string]string{
	"apply-pop":    "0151cff11a00000041026368036b657902000b000000000000000500000000000000",
	"apply-remove": "4b159ad90e0000005902636801000c00000000000000",
	"drop":         "180bc57d03000000440200",
	"pop":          "75afb63c310000004f026368010373756202000000030007000000000000000900000000000000010002000000000000000a00000000000000",
	"push":         "b7a333a422000000500300020263680700000000000000056f74686572080000000000000076616c7565",
	"record":       "d0e74f1610000000500300070000000000000076616c7565",
	"remove":       "e4a9b8090400000058026368",
	"remove-in":    "bed3211d1c0000005a026368020000000100050000000000000003000900000000000000",
	"subscribe":    "33ade7da080000005302636803737562",
}

func TestGoldenEntries(t *testing.T) {
	ch := &channel{name: "ch", subscribed: true}
	q := &queue{ch: ch, subscriber: "sub"}
	got := map[string]string{
		"push":         hex.EncodeToString(appendPushEntry(nil, 3, []pushTarget{{"ch", 7}, {"other", 8}}, []byte("value"))),
		"pop":          hex.EncodeToString(appendPopEntry(nil, q, []popRef{{vb: 3, ref: 7, seqno: 9}, {vb: 1, ref: 2, seqno: 10}})),
		"apply-pop":    hex.EncodeToString(appendApplyPopEntry(nil, "ch", "key", 2, 11, 5)),
		"subscribe":    hex.EncodeToString(appendNameEntry(nil, entrySubscribe, "ch", "sub")),
		"remove":       hex.EncodeToString(appendNameEntry(nil, entryRemove, "ch", "")),
		"remove-in":    hex.EncodeToString(appendRemoveInEntry(nil, "ch", []vbRemoval{{vb: 1, seqno: 5}, {vb: 3, seqno: 9}})),
		"apply-remove": hex.EncodeToString(appendApplyRemoveEntry(nil, "ch", 1, 12)),
		"drop":         hex.EncodeToString(appendDropEntry(nil, 2)),
		"record":       hex.EncodeToString(appendRecord(nil, 3, 7, []byte("value"))),
	}
	if diff := cmp.Diff(goldenEntries, got); diff != "" {
		t.Fatalf("entries differ from the golden ones (-golden +encoded):\n%s", diff)
	}

	// The golden frames decode to what they were written from.
	want := map[string]entry{
		"push":         {typ: entryPush, vb: 3, targets: []pushTarget{{"ch", 7}, {"other", 8}}, value: []byte("value")},
		"pop":          {typ: entryPop, channel: "ch", subscribed: true, subscriber: "sub", pops: []popRef{{vb: 3, ref: 7, seqno: 9}, {vb: 1, ref: 2, seqno: 10}}},
		"apply-pop":    {typ: entryApplyPop, channel: "ch", subscriber: "key", vb: 2, seqno: 11, ref: 5},
		"subscribe":    {typ: entrySubscribe, channel: "ch", subscriber: "sub"},
		"remove":       {typ: entryRemove, channel: "ch"},
		"remove-in":    {typ: entryRemoveIn, channel: "ch", removals: []vbRemoval{{vb: 1, seqno: 5}, {vb: 3, seqno: 9}}},
		"apply-remove": {typ: entryApplyRemove, channel: "ch", vb: 1, seqno: 12},
		"drop":         {typ: entryDrop, vb: 2},
	}
	for name, h := range goldenEntries {
		b, _ := hex.DecodeString(h)
		fr := newFrameReader(strings.NewReader(string(b)), 0)
		typ, body, err := fr.next()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "record" {
			vb, seqno, value, err := decodeRecord(typ, body)
			if err != nil || vb != 3 || seqno != 7 || string(value) != "value" {
				t.Fatalf("record: vb %d seqno %d value %q, %v", vb, seqno, value, err)
			}
			continue
		}
		e, err := decodeEntry(typ, body, 4)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if diff := cmp.Diff(want[name], e, cmp.AllowUnexported(entry{}, pushTarget{}, popRef{}, vbRemoval{})); diff != "" {
			t.Fatalf("%s decodes differently (-want +got):\n%s", name, diff)
		}
	}
}
