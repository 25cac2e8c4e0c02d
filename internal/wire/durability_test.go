package wire

import (
	"bytes"
	"testing"
	"time"
)

func FuzzParseDurablePrefix(f *testing.F) {
	f.Add(AppendDurablePrefix(nil, DurabilityMajority, 1500*time.Millisecond))
	f.Add([]byte{2, 0, 0, 0, 0, 'x'})
	f.Add([]byte{9})
	f.Fuzz(func(t *testing.T, body []byte) {
		d, timeout, rest, err := ParseDurablePrefix(body)
		if err != nil {
			return
		}
		if timeout <= 0 || timeout > MaxDurableTimeout || d > DurabilityPersistMajority {
			t.Fatalf("accepted level %d timeout %v", d, timeout)
		}
		if !bytes.Equal(rest, body[DurablePrefixLen:]) {
			t.Fatal("rest is not what follows the prefix")
		}
	})
}

func TestDurabilityNames(t *testing.T) {
	for _, d := range []Durability{DurabilityNone, DurabilityMajority, DurabilityPersistMajority} {
		got, err := ParseDurability(d.String())
		if err != nil || got != d {
			t.Fatalf("%v: %v %v", d, got, err)
		}
	}
	if _, err := ParseDurability("all"); err == nil {
		t.Fatal("all parsed")
	}
	if StatusAmbiguous.String() != "ambiguous" {
		t.Fatal(StatusAmbiguous.String())
	}
}
