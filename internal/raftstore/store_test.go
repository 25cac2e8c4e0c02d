package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: i/10 + 1, Type: raft.LogCommand,
		Data: fmt.Appendf(nil, "command %d", i), AppendedAt: time.Unix(1700000000+int64(i), 0)}
}

func entries(lo, hi uint64) []*raft.Log {
	var ls []*raft.Log
	for i := lo; i <= hi; i++ {
		ls = append(ls, entry(i))
	}
	return ls
}

func checkIndexes(t *testing.T, s *Store, first, last uint64) {
	t.Helper()
	if got, err := s.FirstIndex(); err != nil || got != first {
		t.Errorf("FirstIndex = %d, %v; want %d", got, err, first)
	}
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Errorf("LastIndex = %d, %v; want %d", got, err, last)
	}
}

// checkLogs checks that exactly the indexes in want (within [lo, hi]) are stored.
func checkLogs(t *testing.T, s *Store, lo, hi uint64, want func(uint64) bool) {
	t.Helper()
	for i := lo; i <= hi; i++ {
		var l raft.Log
		err := s.GetLog(i, &l)
		switch {
		case want(i) && err != nil:
			t.Fatalf("GetLog(%d): %v", i, err)
		case want(i) && !sameLog(&l, entry(i)):
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, l, entry(i))
		case !want(i) && err != raft.ErrLogNotFound:
			t.Fatalf("GetLog(%d) = %v, want raft.ErrLogNotFound", i, err)
		}
	}
}

func TestEmpty(t *testing.T) {
	s, _ := openTemp(t)
	checkIndexes(t, s, 0, 0)
	var l raft.Log
	for _, i := range []uint64{0, 1, 1 << 63} {
		if err := s.GetLog(i, &l); err != raft.ErrLogNotFound {
			t.Errorf("GetLog(%d) on empty store = %v, want raft.ErrLogNotFound itself", i, err)
		}
	}
	if err := s.DeleteRange(1, 100); err != nil {
		t.Errorf("DeleteRange on empty store: %v", err)
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Errorf("StoreLogs(nil): %v", err)
	}
	checkIndexes(t, s, 0, 0)
}

func TestStoreAndGet(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.StoreLog(entry(1)); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 1, 1)
	if err := s.StoreLogs(entries(2, 10)); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 1, 10)
	checkLogs(t, s, 0, 11, func(i uint64) bool { return i >= 1 && i <= 10 })

	// Overwriting an index (a follower replacing a conflicting suffix).
	repl := &raft.Log{Index: 5, Term: 99, Type: raft.LogNoop}
	if err := s.StoreLog(repl); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(5, &got); err != nil || !sameLog(&got, repl) {
		t.Fatalf("GetLog(5) after overwrite = %+v, %v", got, err)
	}

	// Gaps are allowed (raft does not require a MonotonicLogStore here).
	if err := s.StoreLogs(entries(100, 101)); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 1, 101)
	if err := s.GetLog(50, &got); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog in a gap = %v", err)
	}
}

// TestGetLogCopies checks that a returned entry does not alias bbolt's
// memory-mapped pages, which are reused after the read transaction.
func TestGetLogCopies(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.StoreLogs(entries(1, 2)); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(1, &l); err != nil {
		t.Fatal(err)
	}
	data := bytes.Clone(l.Data)
	if err := s.StoreLogs(entries(1, 200)); err != nil { // rewrite the pages
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 200); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.Data, data) {
		t.Fatalf("Data changed under the caller: %q, was %q", l.Data, data)
	}
}

func TestDeleteRange(t *testing.T) {
	const n = 3000 // spans many bbolt pages
	s, _ := openTemp(t)
	if err := s.StoreLogs(entries(1, n)); err != nil {
		t.Fatal(err)
	}
	kept := func(lo, hi uint64) func(uint64) bool {
		return func(i uint64) bool { return i >= lo && i <= hi }
	}

	// The head, as raft's compaction does.
	if err := s.DeleteRange(1, 1000); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 1001, n)
	// The tail, as a follower truncating a conflicting suffix does.
	if err := s.DeleteRange(2001, n); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 1001, 2000)
	checkLogs(t, s, 1, n, kept(1001, 2000))

	// Bounds are inclusive; empty and partly missing ranges are fine.
	if err := s.DeleteRange(1500, 1499); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 1001); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(2000, 1<<63); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 1002, 1999)
	checkLogs(t, s, 995, 2005, kept(1002, 1999))

	// A single entry in the middle.
	if err := s.DeleteRange(1500, 1500); err != nil {
		t.Fatal(err)
	}
	checkLogs(t, s, 1495, 1505, func(i uint64) bool { return i != 1500 })

	// Everything.
	if err := s.DeleteRange(0, 1<<64-1); err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s, 0, 0)
}

func TestStable(t *testing.T) {
	s, _ := openTemp(t)
	// Missing keys: exactly the error raft recognises by its text.
	if v, err := s.Get([]byte("CurrentTerm")); err != ErrKeyNotFound || v != nil {
		t.Fatalf("Get(missing) = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != ErrKeyNotFound || v != 0 {
		t.Fatalf("GetUint64(missing) = %d, %v", v, err)
	}
	if ErrKeyNotFound.Error() != "not found" {
		t.Fatalf("ErrKeyNotFound text %q, raft needs \"not found\"", ErrKeyNotFound)
	}
	if _, err := s.Get(nil); err != ErrKeyNotFound {
		t.Fatalf("Get(nil) = %v", err)
	}

	if err := s.Set([]byte("LastVoteCand"), []byte("127.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "127.0.0.1:1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	if v, err := s.Get([]byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("Get(empty value) = %#v, %v; want a non-nil empty slice", v, err)
	}
	// A prefix or extension of a stored key is a different key.
	for _, k := range []string{"LastVote", "LastVoteCandX", "CurrentTer"} {
		if _, err := s.Get([]byte(k)); err != ErrKeyNotFound {
			t.Fatalf("Get(%q) = %v", k, err)
		}
	}
	if _, err := s.GetUint64([]byte("LastVoteCand")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetUint64 of an 11-byte value = %v, want ErrCorrupt", err)
	}
	if err := s.Set(nil, []byte("x")); err == nil {
		t.Fatal("Set with an empty key succeeded")
	}
	// Stable keys and logs live apart.
	checkIndexes(t, s, 0, 0)
}

func TestReopen(t *testing.T) {
	s, path := openTemp(t)
	if err := s.StoreLogs(entries(1, 50)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastIndex(); err == nil {
		t.Fatal("LastIndex after Close succeeded")
	}

	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkIndexes(t, s2, 11, 50)
	checkLogs(t, s2, 1, 51, func(i uint64) bool { return i >= 11 && i <= 50 })
	if v, err := s2.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("GetUint64 after reopen = %d, %v", v, err)
	}
	if v, err := s2.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("Get after reopen = %q, %v", v, err)
	}
}

func TestLocked(t *testing.T) {
	s, path := openTemp(t)
	start := time.Now()
	s2, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, bolt.ErrTimeout) {
		t.Fatalf("second Open: %v, want bbolt's timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("second Open took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(path, Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s3.Close()
}

// corrupt writes val under key into bucket with bbolt directly.
func corrupt(t *testing.T, path string, bucket, key, val []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(key, val)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFile(t *testing.T) {
	s, path := openTemp(t)
	if err := s.StoreLogs(entries(1, 5)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	good := mustEncode(t, entry(4))
	corrupt(t, path, bucketLogs, indexKey(2), []byte("garbage"))
	corrupt(t, path, bucketLogs, indexKey(3), good[:len(good)-3])
	corrupt(t, path, bucketLogs, indexKey(4), append(bytes.Clone(good[:20]), bytes.Repeat([]byte{0xff}, 40)...))
	corrupt(t, path, bucketLogs, indexKey(5), good) // entry 4's bytes under key 5
	corrupt(t, path, bucketLogs, []byte("bad key"), good)

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var l raft.Log
	if err := s.GetLog(1, &l); err != nil {
		t.Fatalf("GetLog(1), a good entry: %v", err)
	}
	for i := uint64(2); i <= 5; i++ {
		if err := s.GetLog(i, &l); !errors.Is(err, ErrCorrupt) {
			t.Errorf("GetLog(%d) of a corrupt value = %v, want ErrCorrupt", i, err)
		}
	}
	// "bad key" sorts after every 8-byte key starting with 0.
	if _, err := s.LastIndex(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("LastIndex with a 7-byte key = %v, want ErrCorrupt", err)
	}
	if err := s.DeleteRange(1, 1<<64-1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DeleteRange over a 7-byte key = %v, want ErrCorrupt", err)
	}
}

func TestFileVersion(t *testing.T) {
	s, path := openTemp(t)
	s.Close()
	corrupt(t, path, bucketMeta, keyVersion, []byte{2})
	if s, err := Open(path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open of a version-2 file succeeded")
	} else if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a version-2 file: %v", err)
	}
}

// BenchmarkStoreLogs is one metadata commit: one ~200-byte entry, fsynced.
func BenchmarkStoreLogs(b *testing.B) {
	s, _ := openTemp(b)
	data := bytes.Repeat([]byte("m"), 200)
	now := time.Now()
	b.SetBytes(int64(len(data)))
	i := uint64(0)
	for b.Loop() {
		i++
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: data, AppendedAt: now}}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCorruptPages damages bbolt's pages (not only our values): every
// operation must return, with or without an error, and never take the
// process down; a failed Open must not keep the file locked.
func TestCorruptPages(t *testing.T) {
	s, path := openTemp(t)
	if err := s.StoreLogs(entries(1, 2000)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	s.Close()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(orig) < 8*page || os.Getpagesize() != page {
		t.Skipf("file of %d bytes, OS page %d: the test assumes 4 KiB pages", len(orig), os.Getpagesize())
	}

	try := func(b []byte) (failed bool) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{LockTimeout: 5 * time.Second})
		if errors.Is(err, bolt.ErrTimeout) {
			t.Fatalf("Open: %v: an earlier failed Open kept the lock", err)
		}
		if err != nil {
			return true
		}
		defer s.Close()
		var l raft.Log
		for i := uint64(0); i <= 2001; i++ {
			failed = s.GetLog(i, &l) != nil && i >= 1 && i <= 2000 || failed
		}
		_, e1 := s.FirstIndex()
		_, e2 := s.LastIndex()
		_, e3 := s.GetUint64([]byte("CurrentTerm"))
		e4 := s.StoreLogs(entries(2001, 2100))
		e5 := s.DeleteRange(1, 1500)
		return failed || e1 != nil || e2 != nil || e3 != nil || e4 != nil || e5 != nil
	}

	// The freelist page's type: bbolt panics inside Open reading it.
	// The current meta page is the one with the higher txid; its freelist
	// page id is at offset 48 (16-byte page header, then magic, version,
	// page size, flags, root bucket of 16 bytes).
	meta := func(i int) (txid, freelist uint64) {
		m := orig[i*page:]
		return binary.LittleEndian.Uint64(m[64:]), binary.LittleEndian.Uint64(m[48:])
	}
	tx0, fl0 := meta(0)
	tx1, fl1 := meta(1)
	fl := fl0
	if tx1 > tx0 {
		fl = fl1
	}
	if fl < 2 || int(fl+1)*page > len(orig) {
		t.Fatalf("freelist page %d out of a %d-byte file", fl, len(orig))
	}
	b := bytes.Clone(orig)
	binary.LittleEndian.PutUint16(b[int(fl)*page+8:], 0x01) // branch page flag
	if !try(b) {
		t.Error("a file whose freelist page is not a freelist opened and worked")
	}

	rng := rand.New(rand.NewPCG(1, 2))
	failures := 0
	for range 100 {
		b := bytes.Clone(orig)
		for range 16 {
			b[2*page+rng.IntN(len(b)-2*page)] = byte(rng.Uint32())
		}
		if try(b) {
			failures++
		}
	}
	if failures == 0 {
		t.Error("100 damaged files and not one error")
	}
	t.Logf("%d of 100 damaged files gave errors", failures)
}

// TestCheck: a good file has no problem; one with corrupt entries names
// them; garbage is a file that cannot be opened; a missing file is
// fs.ErrNotExist.
func TestCheck(t *testing.T) {
	s, path := openTemp(t)
	if err := s.StoreLogs(entries(1, 5)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if p, err := Check(path, Options{}); err != nil || len(p) != 0 {
		t.Fatalf("check of a good file: %q %v", p, err)
	}
	corrupt(t, path, bucketLogs, indexKey(3), []byte("garbage"))
	if p, err := Check(path, Options{}); err != nil || len(p) != 1 || !strings.Contains(p[0], "log entry 3") {
		t.Fatalf("check of a corrupt entry: %q %v", p, err)
	}
	junk := filepath.Join(t.TempDir(), "raft.db")
	os.WriteFile(junk, bytes.Repeat([]byte("junk"), 4096), 0o600)
	if p, err := Check(junk, Options{}); err != nil || len(p) != 1 || !strings.Contains(p[0], "cannot be opened") {
		t.Fatalf("check of junk: %q %v", p, err)
	}
	if _, err := Check(filepath.Join(t.TempDir(), "none"), Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("check of a missing file: %v", err)
	}
}
