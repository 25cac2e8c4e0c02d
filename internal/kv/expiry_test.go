package kv

import (
	"errors"
	"testing"
	"time"
)

func TestGetWithExpiry(t *testing.T) {
	clock := newFakeClock()
	s := newStore(t, Config{VBuckets: 4, Now: clock.Now})
	k := []byte("k")
	if _, _, _, err := s.GetWithExpiry("c", k, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent: %v", err)
	}
	cas, _ := s.Put("c", k, []byte("v"), 0)
	v, gcas, exp, err := s.GetWithExpiry("c", k, nil)
	if err != nil || string(v) != "v" || gcas != cas || exp != 0 {
		t.Fatalf("no ttl: %q %d %d %v", v, gcas, exp, err)
	}
	s.Put("c", k, []byte("w"), 10*time.Second)
	want := clock.Now().Add(10 * time.Second)
	_, _, exp, _ = s.GetWithExpiry("c", k, nil)
	if exp < want.Unix() || exp > want.Unix()+1 {
		t.Fatalf("expiry %d, want about %d", exp, want.Unix())
	}
	clock.Add(11 * time.Second)
	if _, _, _, err := s.GetWithExpiry("c", k, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired: %v", err)
	}
}

func TestAdd(t *testing.T) {
	clock := newFakeClock()
	s := newStore(t, Config{VBuckets: 4, Now: clock.Now})
	k := []byte("k")
	if _, err := s.Add("c", k, []byte("1"), time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add("c", k, []byte("2"), 0); !errors.Is(err, ErrExists) {
		t.Fatalf("second Add: %v", err)
	}
	clock.Add(3 * time.Second) // expired: Add stores again
	if _, err := s.Add("c", k, []byte("3"), 0); err != nil {
		t.Fatalf("Add over an expired record: %v", err)
	}
	s.Remove("c", k) // a tombstone does not count either
	if _, err := s.Add("c", k, []byte("4"), 0); err != nil {
		t.Fatalf("Add over a tombstone: %v", err)
	}
	v, _, _ := s.Get("c", k, nil)
	if string(v) != "4" {
		t.Fatalf("value %q", v)
	}
	if _, err := s.Add("c", nil, []byte("x"), 0); !errors.Is(err, ErrBadKey) {
		t.Fatalf("empty key: %v", err)
	}
}
