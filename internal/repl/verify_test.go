package repl

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"shoal/internal/stream"
)

func TestVerifyLogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failover-kv")
	if err := VerifyLogFile(nil, path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	b := encodeLogFile([][]stream.FailoverEntry{{{UUID: 1, Seqno: 2}}, nil, nil}, []uint64{3, 4, 5})
	os.WriteFile(path, b, 0o644)
	if err := VerifyLogFile(nil, path); err != nil {
		t.Fatalf("good file: %v", err)
	}
	for _, bad := range [][]byte{append(b, 1, 2, 3), b[:len(b)-1], b[:4]} {
		os.WriteFile(path, bad, 0o644)
		if err := VerifyLogFile(nil, path); !errors.Is(err, ErrCorruptLog) {
			t.Errorf("damaged file of %d bytes: %v", len(bad), err)
		}
	}
}
