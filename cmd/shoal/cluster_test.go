package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/meta"
	"shoal/internal/server"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
)

// mainEnv makes the test binary run main (TestMain).
const mainEnv = "SHOAL_TEST_RUN_MAIN"

// runCLI runs `shoal --addr addr args...` in this process.
func runCLI(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	g := &globals{addr: addr, timeout: 5 * time.Second}
	root := &cobra.Command{Use: "shoal", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(clusterCommands(g)...)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// runShoal runs the shoal command as a process (this test binary running
// main) and returns its standard output and error and its exit status.
func runShoal(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// dialT connects a client for the test.
func dialT(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClusterCommandsOnOneNode runs nodes, vbmap and cluster against a
// node that bootstrapped a cluster of its own, text and --json.
func TestClusterCommandsOnOneNode(t *testing.T) {
	addr := startNode(t)
	c := dialT(t, addr)
	ci, err := c.Cluster(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.ClusterMap(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	id := ci.Self
	vbs := len(m.VBuckets)

	t.Run("nodes", func(t *testing.T) {
		out, err := runCLI(t, addr, "nodes")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("want a header and one row:\n%s", out)
		}
		if f := strings.Fields(lines[0]); !reflect.DeepEqual(f, []string{"ID", "ADDRESS", "STATE", "VOTER", "LEADER", "ACTIVE", "REPLICA", "ZONE", "SINCE", "LIVENESS", "(leader's", "view)"}) {
			t.Errorf("header %q", f)
		}
		f := strings.Fields(lines[1])
		want := []string{id, addr, "active", "yes", "yes", fmt.Sprint(vbs), "0", "-"}
		if len(f) != 10 || !reflect.DeepEqual(f[:8], want) || !regexp.MustCompile(`^\d+s$`).MatchString(f[8]) || f[9] != "-" {
			t.Errorf("row %q, want %q and an age", f, want)
		}
		// The columns line up: every field of the row starts under its header.
		if i := strings.Index(lines[0], "SINCE"); i < 0 || !strings.HasSuffix(strings.TrimRight(lines[1][:i], " "), "-") {
			t.Errorf("columns do not line up:\n%s", out)
		}

		out, err = runCLI(t, addr, "nodes", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var members []client.ClusterMember
		if err := json.Unmarshal([]byte(out), &members); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(members) != 1 || members[0].ID != id || members[0].Addr != addr || !members[0].Leader || members[0].Active != vbs || !members[0].Since.Equal(ci.Nodes[0].Since) {
			t.Errorf("nodes --json: %+v", members)
		}
	})

	t.Run("vbmap", func(t *testing.T) {
		out, err := runCLI(t, addr, "vbmap")
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("revision %d, %d vbuckets, 1 replica\nNODE", m.Revision, vbs)
		if !strings.HasPrefix(out, want) || !regexp.MustCompile(`(?m)^`+id+`\s+`+addr+`\s+active\s+`+fmt.Sprint(vbs)+`\s+0$`).MatchString(out) {
			t.Errorf("vbmap:\n%s\nwant it to start with %q and list %s", out, want, id)
		}

		out, err = runCLI(t, addr, "vbmap", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var back client.ClusterMap
		if err := json.Unmarshal([]byte(out), &back); err != nil {
			t.Fatalf("%v: %.200s", err, out)
		}
		if !reflect.DeepEqual(&back, m) {
			t.Errorf("vbmap --json does not parse back to the map: %+v", back)
		}

		for _, key := range []string{"alice", "bob", "a key with spaces", "é"} {
			vb := int(vbucket.Of([]byte(key), vbs))
			out, err := runCLI(t, addr, "vbmap", "--key", key)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("key %q is in vbucket %d of %d\nvbucket %d, epoch %d, map revision %d\n", key, vb, vbs, vb, m.VBuckets[vb].Epoch, m.Revision)
			if !strings.HasPrefix(out, want) || !regexp.MustCompile(`(?m)^active\s+`+id+`\s+`+addr+`\s+active$`).MatchString(out) {
				t.Errorf("vbmap --key %q:\n%s\nwant it to start with %q", key, out, want)
			}
			out, err = runCLI(t, addr, "vbmap", "--key", key, "--json")
			if err != nil {
				t.Fatal(err)
			}
			var d vbucketDoc
			if err := json.Unmarshal([]byte(out), &d); err != nil {
				t.Fatal(err)
			}
			wantDoc := vbucketDoc{VBucket: vb, Key: key, Epoch: m.VBuckets[vb].Epoch, Revision: m.Revision, Chain: []chainNode{{ID: id, Role: "active", Addr: addr, State: "active"}}}
			if !reflect.DeepEqual(d, wantDoc) {
				t.Errorf("vbmap --key %q --json = %+v, want %+v", key, d, wantDoc)
			}
		}

		out, err = runCLI(t, addr, "vbmap", "--vb", fmt.Sprint(vbs-1))
		if err != nil || !strings.HasPrefix(out, fmt.Sprintf("vbucket %d, epoch ", vbs-1)) {
			t.Errorf("vbmap --vb %d: %v\n%s", vbs-1, err, out)
		}
		for _, vb := range []string{fmt.Sprint(vbs), "-1", "65536"} {
			_, err := runCLI(t, addr, "vbmap", "--vb", vb)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("vbucket %s is out of range", vb)) || !strings.Contains(err.Error(), fmt.Sprintf("(0..%d)", vbs-1)) || isUsage(err) {
				t.Errorf("vbmap --vb %s: %v", vb, err)
			}
		}
		for _, args := range [][]string{{"--vb", "1", "--key", "a"}, {"--key", ""}} {
			if _, err := runCLI(t, "127.0.0.1:1", append([]string{"vbmap"}, args...)...); !isUsage(err) {
				t.Errorf("vbmap %q: %v, want a usage error", args, err)
			}
		}
	})

	t.Run("cluster", func(t *testing.T) {
		out, err := runCLI(t, addr, "cluster")
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range []string{
			`^cluster\s+` + ci.ClusterID + `$`,
			fmt.Sprintf(`^revision\s+%d \(metadata index \d+\)$`, m.Revision),
			`^leader\s+` + id + ` at ` + addr + `$`,
			`^this node\s+` + id + `: leader$`,
			`^voters\s+1 of \d+ wanted: ` + id + `$`,
			`^replicas\s+1$`,
			fmt.Sprintf(`^vbuckets\s+%d$`, vbs),
			`^nodes\s+1: 1 active$`,
			`^leader changes\s+\d+$`,
		} {
			if !regexp.MustCompile(`(?m)` + re).MatchString(out) {
				t.Errorf("no line %s in\n%s", re, out)
			}
		}
		if strings.Contains(out, "join") {
			t.Errorf("a member shows its join phase:\n%s", out)
		}

		out, err = runCLI(t, addr, "cluster", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var back client.ClusterInfo
		if err := json.Unmarshal([]byte(out), &back); err != nil {
			t.Fatal(err)
		}
		if back.ClusterID != ci.ClusterID || back.Self != id || back.Leader != id || back.RaftState != "leader" || back.VBuckets != vbs ||
			len(back.Nodes) != 1 || back.Join.Phase != "member" || !reflect.DeepEqual(back.Voters, ci.Voters) {
			t.Errorf("cluster --json: %+v", back)
		}
		var generic map[string]any
		json.Unmarshal([]byte(out), &generic)
		if _, ok := generic["settings"]; !ok {
			t.Errorf("cluster --json lacks the settings: %s", out)
		}
	})

	t.Run("nodes remove", func(t *testing.T) {
		_, err := runCLI(t, addr, "nodes", "remove", id)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("node %s is active for %d and replica for 0 vbuckets", id, vbs)) || !strings.Contains(err.Error(), "rebalance") {
			t.Errorf("removing a node that holds vbuckets: %v", err)
		}
		if _, err := runCLI(t, addr, "nodes", "remove", "nobody"); !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), `"nobody" is not a member`) {
			t.Errorf("removing a stranger: %v", err)
		}
		if _, err := runCLI(t, addr, "nodes", "remove"); err == nil {
			t.Error("nodes remove without an id")
		}
	})

	t.Run("exit status", func(t *testing.T) {
		stdout, stderr, code := runShoal(t, "--addr", addr, "vbmap", "--vb", "99999")
		if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "shoal: vbucket 99999 is out of range") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		stdout, stderr, code = runShoal(t, "--addr", addr, "vbmap", "--key", "alice")
		if code != 0 || stderr != "" || !strings.Contains(stdout, fmt.Sprintf("vbucket %d of %d", vbucket.Of([]byte("alice"), vbs), vbs)) {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
}

// fakeCluster answers the cluster requests with canned answers.
type fakeCluster struct {
	doc   string
	rmErr error
}

func (f *fakeCluster) ClusterMap() ([]byte, uint64, error) { return nil, 0, errors.New("no map") }
func (f *fakeCluster) Document() ([]byte, error)           { return []byte(f.doc), nil }
func (f *fakeCluster) Join([]byte) ([]byte, error)         { return nil, errors.New("no") }
func (f *fakeCluster) Propose([]byte) (uint64, error)      { return 0, errors.New("no") }
func (f *fakeCluster) RemoveNode(id string) error          { return f.rmErr }

// startServer serves the cluster requests of f, or none when f is nil.
func startServer(t *testing.T, f *fakeCluster) string {
	t.Helper()
	s := server.New(server.Config{VBuckets: 64, NodeID: "fake", Logger: slog.New(slog.DiscardHandler)}, server.Engines{})
	if f != nil {
		s.HandleCluster(f)
	}
	return testproc.Serve(t, s)
}

// TestClusterCommandErrors: the node's message of no quorum and refused,
// a node in no cluster, a node waiting for its cluster.
func TestClusterCommandErrors(t *testing.T) {
	f := &fakeCluster{doc: `{"self":"n1","nodes":[{"id":"n1","addr":"a1","state":"active","active_vbuckets":3},{"id":"n2","addr":"a2","state":"active"}]}`}
	addr := startServer(t, f)
	f.rmErr = fmt.Errorf("%w: 1 of 3 voters reachable", meta.ErrNoQuorum)
	_, err := runCLI(t, addr, "nodes", "remove", "n2")
	if !errors.Is(err, client.ErrNoQuorum) || !strings.Contains(err.Error(), "no quorum") || !strings.Contains(err.Error(), "1 of 3 voters reachable") {
		t.Errorf("no quorum: %v", err)
	}
	f.rmErr = fmt.Errorf("%w: not today", meta.ErrRefused)
	if _, err := runCLI(t, addr, "nodes", "remove", "n2"); !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "refused: ") || !strings.Contains(err.Error(), "not today") {
		t.Errorf("refused: %v", err)
	}
	f.rmErr = nil
	if out, err := runCLI(t, addr, "nodes", "remove", "n2"); err != nil || out != "node n2 is leaving; the leader takes it out of the metadata group\n" {
		t.Errorf("remove: %q %v", out, err)
	}
	if _, err := runCLI(t, addr, "nodes", "remove", "n1"); err == nil || !strings.Contains(err.Error(), "node n1 is active for 3 and replica for 0 vbuckets") {
		t.Errorf("remove n1: %v", err)
	}

	f.doc = `{"self":"n9","nodes":[],"join":{"phase":"joining","waiting":"no join address answered"}}`
	out, err := runCLI(t, addr, "nodes")
	if err != nil || out != "n9 is in no cluster yet: joining: no join address answered\n" {
		t.Errorf("nodes of a joining node: %q %v", out, err)
	}
	out, err = runCLI(t, addr, "cluster")
	if err != nil || !regexp.MustCompile(`(?m)^leader\s+none known$`).MatchString(out) || !regexp.MustCompile(`(?m)^join\s+joining: no join address answered$`).MatchString(out) {
		t.Errorf("cluster of a joining node: %v\n%s", err, out)
	}

	plain := startServer(t, nil)
	for _, cmd := range [][]string{{"nodes"}, {"vbmap"}, {"cluster"}, {"nodes", "remove", "x"}} {
		_, err := runCLI(t, plain, cmd...)
		if !errors.Is(err, client.ErrUnsupported) || !strings.Contains(err.Error(), plain+" is in no cluster: it is a standby") {
			t.Errorf("%v on a node without cluster requests: %v", cmd, err)
		}
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {1500 * time.Millisecond, "1s"}, {3*time.Minute + 12*time.Second, "3m12s"},
		{5*time.Hour + 2*time.Minute + 9*time.Second, "5h2m"}, {76 * time.Hour, "3d4h"}, {-time.Minute, "0s"},
	} {
		if got := age(now, now.Add(-c.ago)); got != c.want {
			t.Errorf("age(%v) = %q, want %q", c.ago, got, c.want)
		}
	}
	if age(now, time.Time{}) != "-" {
		t.Error("age of the zero time")
	}
}

// TestStatusVBucketsOfACluster: `status --vbuckets` on a cluster member
// lists every vBucket and engine with its active's high seqno (a cluster
// of one has no replica to compare), as text and JSON; --no-route talks
// to the node alone.
func TestStatusVBucketsOfACluster(t *testing.T) {
	addr := startNode(t)
	c := dialT(t, addr)
	for i := range 10 {
		if _, err := c.Put(t.Context(), "kv", fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	key0 := ""
	for i := 0; key0 == ""; i++ {
		if k := fmt.Sprintf("k%d", i); vbucket.Of([]byte(k), 1024) == 0 {
			key0 = k
		}
	}
	if _, err := c.Put(t.Context(), "kv", []byte(key0), []byte("v")); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runShoal(t, "--addr", addr, "status", "--vbuckets")
	if code != 0 {
		t.Fatalf("status --vbuckets: %d %s", code, errOut)
	}
	m := c.RoutingMap()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1+1+3*1024+1 || !strings.HasPrefix(lines[0], fmt.Sprintf("map revision %d: 1024 vbuckets, 1 members", m.Revision)) ||
		lines[len(lines)-1] != "0 of 0 replica copies differ from their active" {
		t.Fatalf("status --vbuckets: %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	if !regexp.MustCompile(`(?m)^0\s+kv\s+` + regexp.QuoteMeta(m.Nodes[0].ID) + `\s+[1-9][0-9]*\s+-$`).MatchString(out) {
		t.Fatalf("no kv line of vbucket 0 with a seqno:\n%.600s", out)
	}
	out, errOut, code = runShoal(t, "--addr", addr, "status", "--vbuckets", "--json")
	var doc copiesDoc
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Revision != m.Revision || len(doc.VBuckets) != 1024 || doc.Copies != 0 {
		t.Fatalf("status --vbuckets --json: %d %s %.300s", code, errOut, out)
	}
	if a := doc.VBuckets[0].Engines["kv"].Active; a.Node != m.Nodes[0].ID || a.Seqno == nil || *a.Seqno == 0 {
		t.Fatalf("vbucket 0's kv active: %+v", a)
	}
	// --no-route: the node's own status document and its high seqnos.
	out, errOut, code = runShoal(t, "--no-route", "--addr", addr, "status", "--vbuckets")
	if code != 0 || !strings.Contains(out, "\nvbucket\tkv\tlog\tqueue\n") {
		t.Fatalf("--no-route status --vbuckets: %d %s %.300s", code, errOut, out)
	}
}
