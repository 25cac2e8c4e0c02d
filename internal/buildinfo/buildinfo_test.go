package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	in := Read("1.2.3")
	if in.Version != "1.2.3" || in.Go != runtime.Version() || in.Commit == "" {
		t.Fatalf("%+v", in)
	}
	if s := in.String("shoal"); !strings.HasPrefix(s, "shoal 1.2.3 (commit ") || !strings.HasSuffix(s, ", "+runtime.Version()+")") {
		t.Errorf("String: %q", s)
	}
}
