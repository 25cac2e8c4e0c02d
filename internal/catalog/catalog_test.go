package catalog

import (
	"errors"
	"testing"

	"shoal/internal/engine"
)

func TestClaimKindsAndDrop(t *testing.T) {
	c := New()
	if name, err := c.Claim([]byte("a"), engine.KindKV); err != nil || name != "a" {
		t.Fatal(name, err)
	}
	if _, err := c.Claim([]byte("a"), engine.KindKV); err != nil {
		t.Fatalf("second claim of the same kind: %v", err)
	}
	if _, err := c.Claim([]byte("a"), engine.KindQueue); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("claim of another kind: %v", err)
	}
	if name, k, ok := c.Lookup([]byte("a")); !ok || k != engine.KindKV || name != "a" {
		t.Fatalf("Lookup = %q %v %v", name, k, ok)
	}
	if allocs := testing.AllocsPerRun(100, func() { c.Lookup([]byte("a")) }); allocs != 0 {
		t.Fatalf("Lookup allocates %v times", allocs)
	}
	c.Drop("a")
	if _, err := c.Claim([]byte("a"), engine.KindLog); err != nil {
		t.Fatalf("claim after drop: %v", err)
	}
	c.Claim([]byte("0"), engine.KindKV)
	got := c.List()
	if len(got) != 2 || got[0].Name != "0" || got[1].Kind != engine.KindLog {
		t.Fatalf("List = %+v", got)
	}
}
