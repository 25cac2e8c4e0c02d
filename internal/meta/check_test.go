package meta

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shoal/internal/filedamage"
	"shoal/internal/raftstore"
)

// openSolo opens a member of a group of one in dir and waits until it
// leads.
func openSolo(t *testing.T, dir string) (*Meta, error) {
	t.Helper()
	m, err := Open(Config{Dir: dir, NodeID: "n1", Advertise: "127.0.0.1:1", Logger: slog.New(slog.DiscardHandler),
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return nil, errors.New("no peers in this test")
		}})
	if err != nil {
		return nil, err
	}
	if !m.HasState() {
		if err := m.Bootstrap([]Server{{ID: "n1", Addr: "127.0.0.1:1", Voter: true}}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); !m.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			m.Close()
			t.Fatal("no leader")
		}
	}
	return m, nil
}

// checkMeta runs Check and verifies the counts and that out holds want.
func checkMeta(t *testing.T, dir string, repair bool, problems, repaired int, want ...string) {
	t.Helper()
	var out bytes.Buffer
	rep, err := Check(dir, repair, &out)
	if err != nil || rep.Problems != problems || rep.Repaired != repaired {
		t.Fatalf("check (repair %v): %+v %v, want %d problems, %d repaired\n%s", repair, rep, err, problems, repaired, out.String())
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("check (repair %v): no %q in\n%s", repair, w, out.String())
		}
	}
}

// TestCheckMeta: Check verifies raft.db, every snapshot and the
// applied-state file. Stray bytes after the state are cut; a damaged state
// is moved aside (raft's files rebuild it); a damaged snapshot that the log
// covers is moved aside, and Open refuses it meanwhile, naming it; one the
// log does not cover cannot be repaired, and Open says why.
func TestCheckMeta(t *testing.T) {
	dir := t.TempDir()
	m, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	init := &Command{Op: OpInit, Init: &Init{ClusterID: "c1", VBuckets: 4, Replicas: 0, Voters: 1,
		Nodes: []Node{{ID: "n1", Addr: "127.0.0.1:1", State: Active, Voter: true}}, Chains: [][]string{{"n1"}, {"n1"}, {"n1"}, {"n1"}}}}
	if _, err := m.Propose(ctx, init); err != nil {
		t.Fatal(err)
	}
	if err := m.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Propose(ctx, &Command{Op: OpFailoverReset}); err != nil {
		t.Fatal(err)
	}
	b, err := EncodeState(m.State())
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, StateFile)
	os.WriteFile(state, b, 0o644)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if rep, err := Check(dir, false, &out); err != nil || rep.Problems != 0 || rep.Files != 3 {
		t.Fatalf("check of a clean close: %+v %v\n%s", rep, err, out.String())
	}

	// The applied-state file: stray bytes, then damage in the middle.
	filedamage.Append(t, state, []byte("KLMN stray"))
	if st, stray, err := ReadStateFile(state); err != nil || stray != int64(len(b)) || st.ClusterID != "c1" {
		t.Fatalf("ReadStateFile with stray bytes: %v %d %v", st, stray, err)
	}
	checkMeta(t, dir, false, 1, 0, state+": stray bytes after the end of the state, from offset")
	checkMeta(t, dir, true, 1, 1)
	checkMeta(t, dir, false, 0, 0)
	filedamage.Flip(t, state)
	if _, _, err := ReadStateFile(state); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), state) {
		t.Fatalf("ReadStateFile of a damaged file: %v", err)
	}
	checkMeta(t, dir, false, 1, 0, "the node refuses to start; --repair moves it aside")
	checkMeta(t, dir, true, 1, 1)
	checkMeta(t, dir, false, 0, 0)

	// A half-written snapshot is removed.
	tmp := filepath.Join(dir, SnapshotsDir, "2-3-99.tmp")
	os.MkdirAll(tmp, 0o755)
	checkMeta(t, dir, true, 1, 1, tmp+": a snapshot left half-written")

	// A damaged snapshot the log still covers (raft would refuse it).
	snaps, _ := filepath.Glob(filepath.Join(dir, SnapshotsDir, "*", "state.bin"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots: %v", snaps)
	}
	snap := filepath.Dir(snaps[0])
	filedamage.Append(t, snaps[0], []byte("torn"))
	if _, err := openSolo(t, dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), snap) {
		t.Fatalf("Open with a damaged snapshot: %v", err)
	}
	checkMeta(t, dir, false, 1, 0, snap+": state.bin: checksum", "raft refuses to start while it is there")
	checkMeta(t, dir, true, 1, 1)
	checkMeta(t, dir, false, 0, 0)
	m, err = openSolo(t, dir)
	if err != nil {
		t.Fatalf("Open after the repair: %v", err)
	}
	if err := m.WaitApplied(ctx, 3); err != nil || m.State().ClusterID != "c1" {
		t.Fatalf("state after the repair: %+v %v", m.State(), err)
	}
	if err := m.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	last := m.raft.LastIndex()
	m.Close()

	// A damaged snapshot whose entries the log no longer holds (raft
	// compacted them): nothing to repair it from.
	s, err := raftstore.Open(filepath.Join(dir, RaftFile), raftstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.FirstIndex()
	if err := s.DeleteRange(first, last-1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	snaps, _ = filepath.Glob(filepath.Join(dir, SnapshotsDir, "*", "state.bin"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots: %v", snaps)
	}
	filedamage.Flip(t, snaps[0])
	checkMeta(t, dir, true, 2, 0, filepath.Dir(snaps[0])+": state.bin", "entries 1 to", "it cannot be repaired: move DATA/meta aside")
	if _, err := openSolo(t, dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open with a log that does not continue a snapshot: %v", err)
	}
}
