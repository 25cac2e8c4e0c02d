package vbmap

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeMap feeds DecodeMap anything: it must not panic, it must fail
// with ErrCorrupt or return a valid map that encodes back to exactly the
// bytes it took.
func FuzzDecodeMap(f *testing.F) {
	f.Add(goldenBytes)
	f.Add(AppendMap(nil, Solo("a", 3)))
	f.Add(AppendMap(nil, placedMap(f, 5, 16)))
	f.Add(AppendMap(nil, &Map{Revision: 1, Replicas: 3, VBuckets: []VBucket{{Epoch: 9}, {Chain: []string{"x", "y", "z", "w"}, Epoch: 1}}}))
	f.Add(append(AppendMap(nil, Solo("a", 1)), 0xde, 0xad))
	f.Add([]byte{})
	f.Add(AppendMap(nil, movingMap()))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := DecodeMap(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || m != nil || n != 0 {
				t.Fatalf("failure %v with %v, %d", err, m, n)
			}
			return
		}
		if n < 1 || n > len(b) {
			t.Fatalf("took %d of %d bytes", n, len(b))
		}
		if err := m.Validate(nil); err != nil {
			t.Fatalf("decoded an invalid map: %v", err)
		}
		if again := AppendMap(nil, m); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded\n% x\nfrom\n% x", again, b[:n])
		}
	})
}
