// Package raftstore is raft's LogStore and StableStore on one bbolt file.
//
// A [Store] implements [raft.LogStore], [raft.StableStore] and [io.Closer]
// for the metadata group's hashicorp/raft. Every write is one bbolt
// transaction, and bbolt fsyncs every commit: a StoreLogs that returned nil
// is on disk. The file is locked exclusively while open; a second opener
// gets an error after [Options.LockTimeout] instead of waiting forever.
//
// # File layout
//
// The bbolt file has three buckets:
//
//   - "meta": key "version" holds one byte, the file format version (1).
//   - "logs": key = the entry's index as 8 bytes big-endian (so bbolt's key
//     order is index order, and FirstIndex/LastIndex are the first and last
//     keys); value = the encoded entry below.
//   - "stable": raft's stable keys (CurrentTerm, LastVoteTerm, LastVoteCand)
//     verbatim; SetUint64 stores 8 bytes big-endian.
//
// # Log entry encoding, version 1
//
// All integers big-endian; D is len(Data), E is len(Extensions):
//
//	offset  size  field
//	0       1     format version, 1
//	1       8     Index (u64), equal to the key
//	9       8     Term (u64)
//	17      1     Type (raft.LogType, any value)
//	18      8     AppendedAt, seconds since the Unix epoch (two's complement i64;
//	              the zero time.Time is -62135596800)
//	26      4     AppendedAt, nanoseconds within the second (u32, < 1e9)
//	30      4     D (u32)
//	34      D     Data
//	34+D    4     E (u32)
//	38+D    E     Extensions
//	38+D+E  4     CRC-32C (Castagnoli) of bytes [0, 38+D+E)
//
// The value is exactly 42+D+E bytes: trailing bytes are corruption. A
// decoded AppendedAt is in UTC (the location and the monotonic reading are
// not stored); empty Data or Extensions decode as nil. Decoding checks the
// length, the checksum, the version and every field before allocating, and
// allocates one buffer of D+E bytes: a corrupt value gives an error
// wrapping [ErrCorrupt], never a panic.
//
// # Damaged files
//
// bbolt's own pages carry no checksums. A panic in bbolt, or a memory
// fault while it follows a corrupt page header through its mmap, is
// recovered and returned as an error wrapping ErrCorrupt (a failed Open
// releases the file lock). DeleteRange demands strictly increasing keys
// and checks that the range is empty afterwards, so a page whose keys are
// out of order gives an error, not a loop. Damage that sends bbolt itself
// into an endless descent (a cycle of branch pages) is not caught. The
// freelist is synced, bbolt's default: with NoFreelistSync bbolt walks the
// whole file at every Open and panics, leaking a goroutine, at the first
// inconsistency.
package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Errors of the package.
var (
	// ErrKeyNotFound is returned, unwrapped, by Get and GetUint64 for a key
	// that was never set. Its text is exactly "not found": raft v1.7.2
	// recognises a missing stable key by err.Error() == "not found".
	ErrKeyNotFound = errors.New("not found")

	// ErrCorrupt is wrapped by every error about a malformed value or key
	// read from the file.
	ErrCorrupt = errors.New("raftstore: corrupt data")

	// ErrTooLarge is wrapped by the error of a log entry too large to store.
	ErrTooLarge = errors.New("raftstore: log entry too large")
)

// DefaultLockTimeout is the wait for the file lock when Options.LockTimeout is zero.
const DefaultLockTimeout = time.Second

const fileVersion = 1

var (
	bucketMeta   = []byte("meta")
	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
	keyVersion   = []byte("version")
)

// Options configure Open.
type Options struct {
	// LockTimeout bounds the wait for the file's exclusive lock (held by
	// another Store, in this process or another). Zero means
	// DefaultLockTimeout.
	LockTimeout time.Duration
}

// Store is raft's log and stable store on one bbolt file. It is safe for
// concurrent use.
type Store struct {
	db *bolt.DB
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens the store at path, creating the file (mode 0600) if needed.
// The directory must exist.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open %s: %w", path, err)
	}
	s := &Store{db: db}
	err = s.update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketLogs, bucketStable} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyVersion); {
		case v == nil:
			return meta.Put(keyVersion, []byte{fileVersion})
		case len(v) != 1 || v[0] != fileVersion:
			return fmt.Errorf("file format version %x, want %d: %w", v, fileVersion, ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("raftstore: open %s: %w", path, err)
	}
	return s, nil
}

// openBolt opens the bbolt file, its freelist synced (see the package
// comment). A panic inside bolt.Open (a corrupt file) leaves bbolt's file open,
// mapped and locked: openBolt unlocks and closes it (unlocking explicitly,
// since the mapping, which stays, holds the open file too).
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	var file *os.File
	defer func() {
		if err != nil && file != nil {
			// Both fail harmlessly if bbolt closed the file already.
			_ = unix.Flock(int(file.Fd()), unix.LOCK_UN)
			_ = file.Close()
		}
	}()
	defer guard(&err)()
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	})
}

// guard makes a corrupt file an error: it sets the goroutine to panic
// rather than crash on a memory fault (bbolt follows page headers in its
// mmap, and a corrupt one can point past it), and returns the function to
// defer, which restores that setting and turns a panic into an error
// wrapping ErrCorrupt. bbolt's View and Update roll their transaction
// back on the way out.
func guard(err *error) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			*err = fmt.Errorf("bbolt panicked, is the file corrupt? %v: %w", r, ErrCorrupt)
		}
	}
}

// view runs fn in a read transaction.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	defer guard(&err)()
	return s.db.View(fn)
}

// update runs fn in a write transaction, committed and fsynced if fn
// returns nil.
func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	defer guard(&err)()
	return s.db.Update(fn)
}

// Close closes the file; later calls fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("raftstore: close: %w", err)
	}
	return nil
}

// FirstIndex returns the lowest stored index, 0 when there are no entries.
func (s *Store) FirstIndex() (uint64, error) {
	return s.edgeIndex(true)
}

// LastIndex returns the highest stored index, 0 when there are no entries.
func (s *Store) LastIndex() (uint64, error) {
	return s.edgeIndex(false)
}

func (s *Store) edgeIndex(first bool) (idx uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		k, _ := c.Last()
		if first {
			k, _ = c.First()
		}
		if k == nil {
			return nil
		}
		idx, err = keyIndex(k)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raftstore: first/last index: %w", err)
	}
	return idx, nil
}

// GetLog reads the entry at index into log. It returns raft.ErrLogNotFound,
// unwrapped (raft compares with ==), when there is no such entry.
func (s *Store) GetLog(index uint64, log *raft.Log) error {
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(indexKey(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		if err := decodeLog(v, log); err != nil {
			return err
		}
		if log.Index != index {
			return fmt.Errorf("entry under key %d holds index %d: %w", index, log.Index, ErrCorrupt)
		}
		return nil
	})
	if err == raft.ErrLogNotFound {
		return err
	}
	if err != nil {
		return fmt.Errorf("raftstore: get log %d: %w", index, err)
	}
	return nil
}

// StoreLog stores one entry, replacing any entry at its index.
func (s *Store) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores the entries in one fsynced transaction: all or none.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	size := 0
	for _, l := range logs {
		size += encodedLogSize(l)
	}
	// bbolt keeps the value slices until the commit: encode into one buffer
	// that outlives the transaction.
	buf := make([]byte, 0, size)
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			start := len(buf)
			var err error
			if buf, err = appendLog(buf, l); err != nil {
				return err
			}
			if err := b.Put(indexKey(l.Index), buf[start:len(buf):len(buf)]); err != nil {
				return fmt.Errorf("put log %d: %w", l.Index, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("raftstore: store %d logs: %w", len(logs), err)
	}
	return nil
}

// DeleteRange deletes the entries with lo <= index <= hi (raft's min and
// max), in one transaction. Missing indexes are skipped; lo > hi deletes
// nothing.
func (s *Store) DeleteRange(lo, hi uint64) error {
	if lo > hi {
		return nil
	}
	err := s.update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		// Seek past each deleted key rather than call Next, whose position
		// after Delete is not to be trusted; demanding strictly increasing
		// keys also ends the loop on a corrupt tree.
		for from := lo; ; from++ {
			k, _ := c.Seek(indexKey(from))
			if k == nil {
				break
			}
			idx, err := keyIndex(k)
			if err != nil {
				return err
			}
			if idx < from {
				return fmt.Errorf("seek to %d found %d: %w", from, idx, ErrCorrupt)
			}
			if idx > hi {
				break
			}
			if err := c.Delete(); err != nil {
				return fmt.Errorf("delete log %d: %w", idx, err)
			}
			if idx == hi {
				break
			}
			from = idx
		}
		// A delete that missed its key (keys out of order on a page) would
		// leave it behind.
		if k, _ := c.Seek(indexKey(lo)); k != nil {
			if idx, err := keyIndex(k); err != nil || idx <= hi {
				return fmt.Errorf("log %x survived the delete: %w", k, ErrCorrupt)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("raftstore: delete logs %d..%d: %w", lo, hi, err)
	}
	return nil
}

// Set stores val under key. The key must be 1 to 32768 bytes.
func (s *Store) Set(key, val []byte) error {
	err := s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStable).Put(key, val)
	})
	if err != nil {
		return fmt.Errorf("raftstore: set %q: %w", key, err)
	}
	return nil
}

// Get returns a copy of the value under key, or ErrKeyNotFound (unwrapped)
// if the key was never set. An empty value reads back as an empty, non-nil
// slice.
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.view(func(tx *bolt.Tx) error {
		// bbolt's Get cannot tell a missing key from an empty value; the
		// cursor can.
		k, v := tx.Bucket(bucketStable).Cursor().Seek(key)
		if k == nil || !bytes.Equal(k, key) || len(key) == 0 {
			return ErrKeyNotFound
		}
		val = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	if err == ErrKeyNotFound {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("raftstore: get %q: %w", key, err)
	}
	return val, nil
}

// SetUint64 stores val under key as 8 bytes big-endian.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the value SetUint64 stored under key, or 0 and
// ErrKeyNotFound (unwrapped) if the key was never set.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftstore: get %q: value of %d bytes, want 8: %w", key, len(v), ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Check verifies the bbolt file at path offline (read-only; it waits
// opts.LockTimeout for a running node to let go): that it opens, its
// buckets and file format version, every key of every bucket, and that
// every log entry decodes under its index. It returns the problems found, and an
// error only when the file cannot be opened at all (a missing one is
// fs.ErrNotExist).
func Check(path string, opts Options) (problems []string, err error) {
	in, err := Inspect(path, opts)
	return in.Problems, err
}

// Inspection is what Inspect found in a raft store file.
type Inspection struct {
	Problems    []string // as Check returns them
	First, Last uint64   // the log's first and last index (0, 0: empty); set only without problems
}

// Inspect is Check that also gives the log's index range, which a check of
// raft's snapshots needs (the log must continue the snapshot raft restores).
func Inspect(path string, opts Options) (in Inspection, err error) {
	problems, first, last, err := inspect(path, opts)
	return Inspection{Problems: problems, First: first, Last: last}, err
}

func inspect(path string, opts Options) (problems []string, first, last uint64, err error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if _, err := os.Stat(path); err != nil {
		return nil, 0, 0, err
	}
	var db *bolt.DB
	func() {
		defer guard(&err)()
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: opts.LockTimeout})
	}()
	if err != nil {
		return []string{fmt.Sprintf("cannot be opened: %v", err)}, 0, 0, nil
	}
	defer db.Close()
	s := &Store{db: db}
	err = s.view(func(tx *bolt.Tx) error {
		// Every page is visited (bbolt's own tx.Check runs in a goroutine
		// of its own, where a corrupt page's panic could not be caught).
		meta := tx.Bucket(bucketMeta)
		if meta == nil || tx.Bucket(bucketLogs) == nil || tx.Bucket(bucketStable) == nil {
			problems = append(problems, "a bucket is missing")
			return nil
		}
		if v := meta.Get(keyVersion); len(v) != 1 || v[0] != fileVersion {
			problems = append(problems, fmt.Sprintf("file format version %x, want %d", v, fileVersion))
		}
		for _, name := range [][]byte{bucketMeta, bucketLogs, bucketStable} {
			if err := tx.Bucket(name).ForEach(func(k, v []byte) error { return nil }); err != nil {
				problems = append(problems, fmt.Sprintf("bucket %s: %v", name, err))
			}
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return problems, 0, 0, nil
	}
	first, ferr := s.FirstIndex()
	last, lerr := s.LastIndex()
	if ferr != nil || lerr != nil {
		return append(problems, fmt.Sprint(errors.Join(ferr, lerr))), 0, 0, nil
	}
	for i := first; i != 0 && i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			problems = append(problems, fmt.Sprintf("log entry %d: %v", i, err))
			if len(problems) >= 20 {
				break
			}
		}
	}
	if len(problems) > 0 {
		return problems, 0, 0, nil
	}
	return nil, first, last, nil
}
