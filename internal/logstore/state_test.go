package logstore

import (
	"bytes"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	st := &state{floors: []uint64{1, 2, 3, 4}, tombs: tombs{}}
	st.tombs.set("a", 1, 7)
	st.tombs.set("a", 3, 9)
	st.tombs.set("b-c", 0, 1)
	b := st.encode()
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.encode(), b) || got.tombs["a"][3] != 9 || got.floors[3] != 4 {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 4
		if _, err := decodeState(bad); err == nil {
			t.Fatalf("flip in byte %d accepted", i)
		}
	}
}

// FuzzDecodeState: any input decodes or fails cleanly; what decodes
// survives an encode/decode round trip.
func FuzzDecodeState(f *testing.F) {
	st := &state{floors: []uint64{5, 6}, tombs: tombs{}}
	st.tombs.set("ch", 1, 3)
	f.Add(st.encode())
	f.Add((&state{floors: make([]uint64, 1024), tombs: tombs{}}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			return
		}
		enc := st.encode()
		st2, err := decodeState(enc)
		if err != nil || !bytes.Equal(st2.encode(), enc) {
			t.Fatalf("re-encoded state does not round-trip: %v", err)
		}
	})
}
