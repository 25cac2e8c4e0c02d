package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"shoal/internal/filedamage"
	"shoal/internal/raftstore"
	"shoal/internal/testproc"
)

// TestCheckCoversStartupFiles: shoal check verifies every file a node
// reads at start (queue state, failover logs, dumps, raft metadata beside
// the log); a queue state with stray bytes after its end is recovered by
// the node itself (root.log says so); a damaged dump is replaced by its
// backup by --repair; a node whose queue state is damaged inside refuses
// to start, naming the file and `shoal check --repair DATA`.
func TestCheckCoversStartupFiles(t *testing.T) {
	n := testproc.Start(t)
	dir := n.Dir
	for _, args := range [][]string{{"put", "users", "alice", "31"}, {"push", "jobs", "one"}, {"push", "jobs", "two"}} {
		if r := testproc.CLI(t, n.Addr, "", args...); r.Code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	n.Stop()
	r := testproc.CLI(t, "", "", "check", dir)
	for _, want := range []string{"checking " + filepath.Join(dir, "queue"), "checking " + filepath.Join(dir, "dump"), "checking " + filepath.Join(dir, "repl"),
		"checking " + filepath.Join(dir, "meta"), "no problems found"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Fatalf("check of a clean stop: no %q in %+v", want, r)
		}
	}
	if strings.Contains(r.Stdout, "found 0 files") {
		t.Errorf("check prints a count of nothing: %s", r.Stdout)
	}

	// 333 stray bytes after the queue state: check finds them; the node
	// starts anyway, says so in root.log and keeps the records.
	state := filepath.Join(dir, "queue", "state")
	filedamage.Append(t, state, filedamage.Stray(333))
	if r := testproc.CLI(t, "", "", "check", dir); r.Code != 1 || !strings.Contains(r.Stdout, state+": 333 stray bytes after the end of the state") {
		t.Fatalf("check of a state with stray bytes: %+v", r)
	}
	n = testproc.StartIn(t, dir)
	if r := testproc.CLI(t, n.Addr, "", "pop", "jobs"); r.Code != 0 || r.Stdout != "one" {
		t.Fatalf("pop after the stray bytes: %+v", r)
	}
	n.Stop()
	root, _ := os.ReadFile(filepath.Join(dir, "log", "root.log"))
	if !strings.Contains(string(root), "queue state file has stray bytes after its end") {
		t.Fatalf("root.log does not say the state was recovered")
	}

	// The second clean stop left users.dump and its backup: damage the dump.
	dumpFile := filepath.Join(dir, "dump", "users.dump")
	filedamage.Flip(t, dumpFile)
	r = testproc.CLI(t, "", "", "check", dir)
	if r.Code != 1 || !strings.Contains(r.Stdout, dumpFile+": ") || !strings.Contains(r.Stdout, "its backup verifies") {
		t.Fatalf("check of a damaged dump: %+v", r)
	}
	if r := testproc.CLI(t, "", "", "check", "--repair", dir); r.Code != 0 || !strings.Contains(r.Stdout, "replaced by its backup") || !strings.Contains(r.Stdout, "no problems remain") {
		t.Fatalf("check --repair of a damaged dump: %+v", r)
	}

	// Damage inside the queue state: the node refuses to start and says
	// what to run; check --repair says it cannot mend it.
	filedamage.Flip(t, state)
	cmd := exec.Command(filepath.Join(testproc.Build(t), "shoald"), "--data", dir, "--listen", "127.0.0.1:0", "--http", "off", "--console=false")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), state) || !strings.Contains(string(out), "`shoal check --repair "+dir+"`") {
		t.Fatalf("start on a damaged queue state: %v\n%s", err, out)
	}
	if r := testproc.CLI(t, "", "", "check", "--repair", dir); r.Code != 1 || !strings.Contains(r.Stdout, "cannot be repaired without losing the queues") {
		t.Fatalf("check --repair of a damaged state: %+v", r)
	}
}

// TestCheckOverflowAndMeta: shoal check reads the queue's overflow
// segments and the cluster metadata's applied state. Stray bytes after an
// overflow segment (memory mode) and after DATA/meta/state are found and
// cut by --repair, and a node starts over them by itself (root.log says
// so for the state); damage in the middle of an overflow segment is found
// and not repaired; a damaged DATA/meta/state stops the node, which names
// it and the command, and --repair moves it aside (raft's files rebuild
// it): the node then starts with its data.
func TestCheckOverflowAndMeta(t *testing.T) {
	n := testproc.Start(t, "--queue-ring-size", "1KiB")
	dir := n.Dir
	big := strings.Repeat("v", 2000)
	for i := range 3 {
		if r := testproc.CLI(t, n.Addr, "", "push", "jobs", big+string(rune('a'+i))); r.Code != 0 {
			t.Fatalf("push: %+v", r)
		}
	}
	if r := testproc.CLI(t, n.Addr, "", "put", "users", "alice", "31"); r.Code != 0 {
		t.Fatalf("put: %+v", r)
	}
	n.Stop()
	segs, _ := filepath.Glob(filepath.Join(dir, "queue", "overflow", "*", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("overflow segments: %v", segs)
	}
	r := testproc.CLI(t, "", "", "check", dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "checking "+filepath.Join(dir, "meta")+"\nchecked 2 files: 0 problems") ||
		!strings.Contains(r.Stdout, "checking "+filepath.Join(dir, "queue")+"\nchecked 2 files: 0 problems") {
		t.Fatalf("check of a clean stop: %+v", r)
	}

	// Stray bytes after the overflow segment and after the applied state.
	state := filepath.Join(dir, "meta", "state")
	filedamage.Append(t, segs[0], filedamage.Stray(333))
	filedamage.Append(t, state, []byte("KLMN\n"))
	r = testproc.CLI(t, "", "", "check", dir)
	if r.Code != 1 || !strings.Contains(r.Stdout, segs[0]+": torn tail from offset") || !strings.Contains(r.Stdout, state+": stray bytes after the end of the state") {
		t.Fatalf("check of stray bytes: %+v", r)
	}
	n = testproc.StartIn(t, dir, "--queue-ring-size", "1KiB")
	if r := testproc.CLI(t, n.Addr, "", "get", "users", "alice"); r.Code != 0 || r.Stdout != "31" {
		t.Fatalf("get after the stray bytes: %+v", r)
	}
	n.Stop()
	root, _ := os.ReadFile(filepath.Join(dir, "log", "root.log"))
	if !strings.Contains(string(root), "DATA/meta/state has stray bytes after its end") {
		t.Fatalf("root.log does not say the applied state was recovered")
	}
	if r := testproc.CLI(t, "", "", "check", "--repair", dir); r.Code != 0 {
		t.Fatalf("check --repair after the start: %+v", r)
	}

	// Damage in the middle of the overflow segment: found, not repaired.
	segs, _ = filepath.Glob(filepath.Join(dir, "queue", "overflow", "*", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("overflow segments: %v", segs)
	}
	saved, _ := os.ReadFile(segs[0])
	filedamage.Flip(t, segs[0])
	if r := testproc.CLI(t, "", "", "check", "--repair", dir); r.Code != 1 || !strings.Contains(r.Stdout, segs[0]+": damaged at offset") || !strings.Contains(r.Stdout, "cannot be repaired") {
		t.Fatalf("check of a damaged overflow segment: %+v", r)
	}
	os.WriteFile(segs[0], saved, 0o644)

	// A damaged applied state stops the node; --repair moves it aside.
	filedamage.Flip(t, state)
	cmd := exec.Command(filepath.Join(testproc.Build(t), "shoald"), "--data", dir, "--listen", "127.0.0.1:0", "--http", "off", "--console=false")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), state) || !strings.Contains(string(out), "`shoal check --repair "+dir+"`") {
		t.Fatalf("start on a damaged applied state: %v\n%s", err, out)
	}
	if r := testproc.CLI(t, "", "", "check", "--repair", dir); r.Code != 0 || !strings.Contains(r.Stdout, state+": ") || !strings.Contains(r.Stdout, "no problems remain") {
		t.Fatalf("check --repair of a damaged applied state: %+v", r)
	}
	n = testproc.StartIn(t, dir, "--queue-ring-size", "1KiB")
	defer n.Stop()
	if r := testproc.CLI(t, n.Addr, "", "get", "users", "alice"); r.Code != 0 || r.Stdout != "31" {
		t.Fatalf("get after the repair: %+v", r)
	}
}

// TestCheckRaftSnapshot: a damaged raft snapshot (a torn state.bin) stops
// the node, which names it and the command; shoal check finds it, and
// --repair moves it aside since the raft log still holds every entry: the
// node then starts with its data. (A node takes a snapshot every 1024
// metadata commands; the test writes one as raft's file store would.)
func TestCheckRaftSnapshot(t *testing.T) {
	n := testproc.Start(t)
	dir := n.Dir
	if r := testproc.CLI(t, n.Addr, "", "put", "users", "alice", "31"); r.Code != 0 {
		t.Fatalf("put: %+v", r)
	}
	n.Stop()
	state, err := os.ReadFile(filepath.Join(dir, "meta", "state"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := raftstore.Inspect(filepath.Join(dir, "meta", "raft.db"), raftstore.Options{})
	if err != nil || len(in.Problems) > 0 || in.Last < 2 {
		t.Fatalf("raft.db: %+v %v", in, err)
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "meta"), 3, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := snaps.Create(1, in.Last-1, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write(state)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(dir, "meta", "snapshots", sink.ID())
	if r := testproc.CLI(t, "", "", "check", dir); r.Code != 0 || !strings.Contains(r.Stdout, "checked 3 files: 0 problems") {
		t.Fatalf("check with a sound snapshot: %+v", r)
	}
	filedamage.Append(t, filepath.Join(snap, "state.bin"), []byte("torn"))
	cmd := exec.Command(filepath.Join(testproc.Build(t), "shoald"), "--data", dir, "--listen", "127.0.0.1:0", "--http", "off", "--console=false")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), snap) || !strings.Contains(string(out), "`shoal check --repair "+dir+"`") {
		t.Fatalf("start on a damaged snapshot: %v\n%s", err, out)
	}
	if r := testproc.CLI(t, "", "", "check", dir); r.Code != 1 || !strings.Contains(r.Stdout, snap+": state.bin: checksum") {
		t.Fatalf("check of a damaged snapshot: %+v", r)
	}
	if r := testproc.CLI(t, "", "", "check", "--repair", dir); r.Code != 0 || !strings.Contains(r.Stdout, "no problems remain") {
		t.Fatalf("check --repair of a damaged snapshot: %+v", r)
	}
	n = testproc.StartIn(t, dir)
	defer n.Stop()
	if r := testproc.CLI(t, n.Addr, "", "get", "users", "alice"); r.Code != 0 || r.Stdout != "31" {
		t.Fatalf("get after the repair: %+v", r)
	}
}
