package dump

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"shoal/internal/engine"
	"shoal/internal/vbucket"
)

// checkDecode decodes b and checks that any error is a corruption, and that
// what Decode accepts Scan accepts with the same description.
func checkDecode(t *testing.T, b []byte) {
	var n int64
	info, err := Decode(bytes.NewReader(b), "fuzz.dump", func(vb uint16, seqno uint64, recs []engine.Record) error {
		for _, r := range recs {
			if len(r.Key) == 0 || r.Seqno > seqno {
				t.Fatalf("Decode passed a bad record %+v in vbucket %d at seqno %d", r, vb, seqno)
			}
		}
		n += int64(len(recs))
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode of in-memory bytes: %v, not a corruption", err)
		}
		return
	}
	scanned, err := Scan(bytes.NewReader(b), "fuzz.dump")
	if err != nil {
		t.Fatalf("Decode accepted what Scan rejects: %v", err)
	}
	if d := cmp.Diff(info, scanned); d != "" || n != info.Records {
		t.Fatalf("Decode and Scan disagree, %d records passed (-decode +scan):\n%s", n, d)
	}
}

// FuzzDecode feeds whole files to the reader.
func FuzzDecode(f *testing.F) {
	f.Add(smallDump(f, CodecZstd))
	f.Add(smallDump(f, CodecS2))
	f.Add([]byte{})
	f.Add([]byte(magic))
	s := newFakeStore(2)
	b, _ := encodeChannel(f, s, "e", CodecZstd)
	f.Add(b)
	f.Fuzz(checkDecode)
}

// FuzzBlock feeds the content of one record block, framed with right CRCs
// and counts, so that the fuzzer reaches the run and record decoder.
func FuzzBlock(f *testing.F) {
	k := []byte("key")
	rec := engine.Record{Key: k, Value: []byte("value"), Seqno: 3, Expiry: -7}
	f.Add(uint16(4), run(vbucket.Of(k, 4), 5, -1, rec), uint32(1), uint64(5), uint64(8))
	f.Add(uint16(1), run(0, 9, -1, rec, rec), uint32(2), uint64(9), uint64(16))
	f.Add(uint16(3), []byte{0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255}, uint32(3), uint64(1), uint64(0))
	f.Fuzz(func(t *testing.T, vbs uint16, raw []byte, records uint32, seqno, kvBytes uint64) {
		if vbs == 0 || vbs > 1024 || len(raw) == 0 {
			return
		}
		seqnos := make([]uint64, vbs)
		for i := range seqnos {
			seqnos[i] = seqno
		}
		checkDecode(t, forge(int(vbs), seqnos, kvBytes, forged{raw: raw, records: records}))
	})
}
