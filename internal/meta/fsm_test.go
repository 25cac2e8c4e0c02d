package meta

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"

	"shoal/internal/engine"
	"shoal/internal/vbmap"
)

func TestApplyCommands(t *testing.T) {
	c := newCluster(t, 3, "a", "b", "c")
	st := c.st
	if !st.Initialized() || st.ClusterID != "c1" || st.Map.Revision != 1 || len(st.Nodes) != 3 || st.Nodes[0].State != Active {
		t.Fatalf("after init: %+v", st)
	}
	step := func(cmd *Command) error {
		t.Helper()
		c.idx++
		next, err := c.st.Apply(c.idx, cmd)
		if next.Index != c.idx {
			t.Fatalf("index %d after %s at %d", next.Index, cmd.Op, c.idx)
		}
		if err != nil && (next.Map != c.st.Map || len(next.Channels) != len(c.st.Channels)) {
			t.Fatalf("a failed %s changed the state", cmd.Op)
		}
		c.st = next
		return err
	}
	// Errors leave the state alone and are the same on every node.
	for _, tc := range []struct {
		cmd  *Command
		want error
	}{
		{&Command{Op: OpInit, Init: &Init{ClusterID: "x"}}, ErrInitialized},
		{&Command{Op: OpChannelCreate, Channel: "bad name", Kind: engine.KindKV}, ErrBadCommand},
		{&Command{Op: OpChannelCreate, Channel: "c", Kind: 9}, ErrBadCommand},
		{&Command{Op: OpNodeState, NodeID: "zz", State: Active}, ErrUnknownNode},
		{&Command{Op: OpNodeState, NodeID: "a", State: "sleeping"}, ErrBadCommand},
		{&Command{Op: OpNodeAdd, Node: &Node{ID: "d"}}, ErrBadCommand},
		{&Command{Op: OpMap, ExpectRevision: 99, Chains: st.Map.Chains()}, ErrStaleMap},
		{&Command{Op: OpMap, ExpectRevision: 1, Chains: [][]string{{"a"}}}, ErrBadCommand},
		{&Command{Op: OpMap, ExpectRevision: 1, Chains: [][]string{{"a", "x"}, {"a"}, {"a"}, {"a"}}}, ErrBadCommand},
		{&Command{Op: OpNodeRemove, NodeID: "a"}, ErrHoldsVBuckets},
		{&Command{Op: "nonsense"}, ErrBadCommand},
	} {
		if err := step(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.cmd.Op, err, tc.want)
		}
	}
	// Channels: created once with one kind.
	if err := step(&Command{Op: OpChannelCreate, Channel: "users", Kind: engine.KindKV}); err != nil {
		t.Fatal(err)
	}
	if err := step(&Command{Op: OpChannelCreate, Channel: "users", Kind: engine.KindKV}); err != nil {
		t.Fatalf("creating a channel twice: %v", err)
	}
	if err := step(&Command{Op: OpChannelCreate, Channel: "users", Kind: engine.KindQueue}); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("another kind: %v", err)
	}
	if err := step(&Command{Op: OpChannelRemove, Channel: "users"}); err != nil || len(c.st.Channels) != 0 {
		t.Fatalf("remove: %v %v", err, c.st.Channels)
	}
	// A map change raises the epoch of the vBuckets whose active changed.
	chains := c.st.Map.Chains()
	chains[0] = []string{chains[0][1], chains[0][0]}
	if err := step(&Command{Op: OpMap, ExpectRevision: 1, Chains: chains}); err != nil {
		t.Fatal(err)
	}
	if c.st.Map.Revision != c.idx || c.st.Map.VBuckets[0].Epoch != 2 || c.st.Map.VBuckets[1].Epoch != 1 {
		t.Fatalf("map after the change: revision %d (index %d), epochs %d %d", c.st.Map.Revision, c.idx, c.st.Map.VBuckets[0].Epoch, c.st.Map.VBuckets[1].Epoch)
	}
	if err := step(&Command{Op: OpSettings, Settings: &Settings{FailoverTimeoutMillis: 1000, MaxFailovers: 2, Durability: "majority"}}); err != nil || c.st.Settings.MaxFailovers != 2 {
		t.Fatal(err, c.st.Settings)
	}
	// Before init nothing else applies.
	if _, err := (&State{}).Apply(1, &Command{Op: OpChannelCreate, Channel: "x", Kind: engine.KindKV}); !errors.Is(err, ErrNotInitialized) {
		t.Fatal(err)
	}
}

func TestStateEncoding(t *testing.T) {
	c := newCluster(t, 3, "a", "b", "c")
	c.propose(t, &Command{Op: OpChannelCreate, Channel: "jobs", Kind: engine.KindQueue})
	b, err := EncodeState(c.st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c.st, got, cmp.AllowUnexported(vbmap.Map{})); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	for _, bad := range [][]byte{nil, []byte("{"), []byte(`{"version":2}`), []byte(`{"version":1,"cluster_id":"x","vbuckets":4}`),
		[]byte(`{"version":1,"map":"AAEC"}`), []byte(`{"version":1,"nodes":[{"id":"b"},{"id":"a"}]}`)} {
		if _, err := DecodeState(bad); err == nil {
			t.Errorf("DecodeState(%q) accepted", bad)
		}
	}
}

// TestFSMSnapshotRestore: raft's snapshot of the FSM restores the same
// state, and the change callback sees it.
func TestFSMSnapshotRestore(t *testing.T) {
	c := newCluster(t, 3, "a", "b", "c")
	src := newFSM(nil)
	src.state.Store(c.st)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	var seen *State
	dst := newFSM(func(_, next *State) { seen = next })
	if err := dst.Restore(sink); err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.ClusterID != "c1" || dst.state.Load().Map.Revision != c.st.Map.Revision {
		t.Fatalf("restored %+v", dst.state.Load())
	}
	// A log entry that does not decode is an error result, not a panic,
	// and moves the index on.
	if res := dst.Apply(&raft.Log{Index: 50, Type: raft.LogCommand, Data: []byte("{nope")}); res == nil {
		t.Fatal("garbage entry applied without an error")
	}
	if dst.state.Load().Index != 50 {
		t.Fatal("index not moved by a bad entry")
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func FuzzDecodeState(f *testing.F) {
	c := &cluster{st: &State{Channels: map[string]engine.Kind{}}}
	t := &testing.T{}
	_ = t
	in := &Init{ClusterID: "c1", VBuckets: 2, Replicas: 1, Voters: 3, Nodes: []Node{{ID: "a", Addr: "a:1"}, {ID: "b", Addr: "b:1"}}, Chains: [][]string{{"a", "b"}, {"b", "a"}}}
	st, err := c.st.Apply(1, &Command{Op: OpInit, Init: in})
	if err != nil {
		f.Fatal(err)
	}
	b, _ := EncodeState(st)
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeState(b)
		if err != nil {
			return
		}
		again, err := EncodeState(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeState(again); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"op":"channel-create","channel":"x","kind":1}`))
	f.Add([]byte(`{"op":"map","chains":[["a"]],"expect_revision":1}`))
	st, _ := (&State{Channels: map[string]engine.Kind{}}).Apply(1, &Command{Op: OpInit, Init: &Init{ClusterID: "c", VBuckets: 1, Replicas: 1, Voters: 1, Nodes: []Node{{ID: "a", Addr: "a:1"}}, Chains: [][]string{{"a"}}}})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		st.Apply(2, c) // never panics, whatever the command says
	})
}

func TestApplyFailoverAndRecover(t *testing.T) {
	c := newCluster(t, 3, "a", "b", "c")
	rev := c.st.Map.Revision
	without := func(node string) [][]string {
		chains := c.st.Map.Chains()
		for vb, ch := range chains {
			var out []string
			for _, n := range ch {
				if n != node {
					out = append(out, n)
				}
			}
			if len(out) == 0 {
				out = []string{"b"}
			}
			chains[vb] = out
		}
		return chains
	}
	apply := func(cmd *Command) error {
		t.Helper()
		c.idx++
		next, err := c.st.Apply(c.idx, cmd)
		c.st = next
		return err
	}
	for _, tc := range []struct {
		cmd  *Command
		want error
	}{
		{&Command{Op: OpFailover, NodeID: "a", ExpectRevision: rev + 7, Chains: without("a")}, ErrStaleMap},
		{&Command{Op: OpFailover, NodeID: "zz", ExpectRevision: rev, Chains: without("a")}, ErrUnknownNode},
		{&Command{Op: OpFailover, NodeID: "a", ExpectRevision: rev, Chains: c.st.Map.Chains()}, ErrBadCommand},
		{&Command{Op: OpRecover, NodeID: "a", ExpectRevision: rev, Chains: c.st.Map.Chains()}, ErrBadCommand},
	} {
		if err := apply(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s %s: %v, want %v", tc.cmd.Op, tc.cmd.NodeID, err, tc.want)
		}
	}
	// A chain naming a node that is no longer active is a stale premise.
	if err := apply(&Command{Op: OpNodeState, NodeID: "c", State: Failed}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&Command{Op: OpFailover, NodeID: "a", ExpectRevision: rev, Chains: without("a")}); !errors.Is(err, ErrStaleMap) {
		t.Fatalf("failover onto a failed node: %v", err)
	}
	if err := apply(&Command{Op: OpRecover, NodeID: "c", ExpectRevision: rev, Chains: c.st.Map.Chains()}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&Command{Op: OpFailover, NodeID: "a", ExpectRevision: c.st.Map.Revision, Chains: without("a")}); err != nil {
		t.Fatal(err)
	}
	a, _ := c.st.Node("a")
	if a.State != Failed || c.st.Map.Revision != c.idx || c.st.Map.Counts()["a"] != (vbmap.Counts{}) {
		t.Fatalf("after the failover: %+v, revision %d, counts %v", a, c.st.Map.Revision, c.st.Map.Counts())
	}
	if err := apply(&Command{Op: OpRecover, NodeID: "a", ExpectRevision: c.st.Map.Revision, Chains: c.st.Map.Chains()}); err != nil {
		t.Fatal(err)
	}
	if a, _ := c.st.Node("a"); a.State != Active {
		t.Fatalf("after recover: %+v", a)
	}
}

// TestApplyMoves: a rebalance's edits apply to the vBuckets they name,
// only on the map they were made from and only onto active members; the
// state with moves encodes and decodes.
func TestApplyMoves(t *testing.T) {
	c := newCluster(t, 3, "a", "b", "c")
	apply := func(cmd *Command) error {
		t.Helper()
		c.idx++
		next, err := c.st.Apply(c.idx, cmd)
		c.st = next
		return err
	}
	m := c.st.Map
	chain := m.VBuckets[0].Chain
	other := ""
	for _, id := range []string{"a", "b", "c"} {
		if !slices.Contains(chain, id) {
			other = id
		}
	}
	if other == "" {
		t.Fatalf("vbucket 0's chain %v holds every node", chain)
	}
	build := []vbmap.Edit{{VBucket: 0, Pending: []string{other}}}
	for _, tc := range []struct {
		cmd  *Command
		want error
	}{
		{&Command{Op: OpMoves, ExpectRevision: m.Revision + 1, Edits: build}, ErrStaleMap},
		{&Command{Op: OpMoves, ExpectRevision: m.Revision}, ErrBadCommand},
		{&Command{Op: OpMoves, ExpectRevision: m.Revision, Edits: []vbmap.Edit{{VBucket: 0, Pending: []string{"zz"}}}}, ErrBadCommand},
		{&Command{Op: OpMoves, ExpectRevision: m.Revision, Edits: []vbmap.Edit{{VBucket: 0, Pending: []string{chain[0]}}}}, ErrBadCommand},
		{&Command{Op: OpMoves, ExpectRevision: m.Revision, Edits: []vbmap.Edit{{VBucket: 9999}}}, ErrBadCommand},
	} {
		if err := apply(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.cmd.Edits, err, tc.want)
		}
	}
	if c.st.Map != m {
		t.Fatal("a refused command changed the map")
	}
	if err := apply(&Command{Op: OpMoves, ExpectRevision: m.Revision, Edits: build}); err != nil {
		t.Fatal(err)
	}
	if s := c.st.Map.StateOf(other, 0); s != vbmap.Pending || c.st.Map.Revision != c.idx {
		t.Fatalf("after the build: %s at revision %d", s, c.st.Map.Revision)
	}
	b, err := EncodeState(c.st)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeState(b); err != nil || got.Map.StateOf(other, 0) != vbmap.Pending {
		t.Fatalf("a state with moves: %v", err)
	}
	// The takeover: the pending copy becomes the active, the epoch rises.
	epoch := c.st.Map.VBuckets[0].Epoch
	take := []vbmap.Edit{{VBucket: 0, Chain: []string{other, chain[0]}}}
	if err := apply(&Command{Op: OpNodeState, NodeID: other, State: Failed}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&Command{Op: OpMoves, ExpectRevision: c.st.Map.Revision, Edits: take}); !errors.Is(err, ErrStaleMap) {
		t.Fatalf("moves onto a failed node: %v", err)
	}
	if err := apply(&Command{Op: OpNodeState, NodeID: other, State: Active}); err != nil {
		t.Fatal(err)
	}
	if err := apply(&Command{Op: OpMoves, ExpectRevision: c.st.Map.Revision, Edits: take}); err != nil {
		t.Fatal(err)
	}
	if v := c.st.Map.VBuckets[0]; v.Active() != other || v.Epoch != epoch+1 || v.Moving() {
		t.Fatalf("after the takeover: %+v", v)
	}
}
