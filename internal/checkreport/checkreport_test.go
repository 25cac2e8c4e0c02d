package checkreport

import (
	"errors"
	"strings"
	"testing"
)

// TestFindings: each problem is one line and counted; fixes run only
// under Repair, and a failed fix is not counted as a repair.
func TestFindings(t *testing.T) {
	var out strings.Builder
	ran := 0
	fix := func() error { ran++; return nil }
	f := Findings{Out: &out, RepairNote: " (--repair mends it)"}
	f.Problem("a", "torn tail", "", fix)
	f.Problem("b", "damaged", "move it aside", nil)
	if want := "a: torn tail (--repair mends it)\nb: damaged; move it aside\n"; out.String() != want || ran != 0 || f.Problems != 2 || f.Repaired != 0 {
		t.Fatalf("without repair: %q, %d fixes run, %+v", out.String(), ran, f)
	}
	out.Reset()
	f = Findings{Out: &out, Repair: true}
	f.Problem("a", "torn tail", "", fix)
	f.Repairable("c", "leftover", "", func() error { return errors.New("read-only") })
	if want := "a: torn tail; repaired\nc: leftover; cannot repair it: read-only\n"; out.String() != want || ran != 1 || f.Problems != 2 || f.Repaired != 1 {
		t.Fatalf("with repair: %q, %d fixes run, %+v", out.String(), ran, f)
	}
}
