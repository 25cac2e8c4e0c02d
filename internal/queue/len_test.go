package queue

import "testing"

func TestLen(t *testing.T) {
	s := mustOpen(t, testConfig(t.TempDir()))
	if n, sub := s.Len("jobs"); n != 0 || sub {
		t.Fatalf("unknown channel: %d %v", n, sub)
	}
	for _, v := range []string{"a", "b", "c"} {
		mustPush(t, s, v, "jobs")
	}
	if n, _ := s.Len("jobs"); n != 3 {
		t.Fatalf("Len %d after 3 pushes", n)
	}
	if _, err := s.Pop("jobs", nil); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Len("jobs"); n != 2 {
		t.Fatalf("Len %d after a pop", n)
	}
}
