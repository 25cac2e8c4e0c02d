package diskspeed

import (
	"errors"
	"testing"
)

func TestWriteRead(t *testing.T) {
	w, r, err := WriteRead(t.TempDir(), 4)
	if errors.Is(err, ErrNoDD) {
		t.Skip("no dd")
	}
	if err != nil {
		// O_DIRECT is refused on some file systems (tmpfs): not our bug.
		t.Skipf("dd: %v", err)
	}
	if w <= 0 || r <= 0 {
		t.Fatalf("rates %v %v", w, r)
	}
}
