package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/vbmap"
)

// twoNodeMap is the map of a and b (Place's, 64 vBuckets, one replica)
// with c a member that holds nothing yet.
func twoNodeMap(t *testing.T) *client.ClusterMap {
	t.Helper()
	chains, err := vbmap.Place([]vbmap.Node{{ID: "a"}, {ID: "b"}}, 64, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := &client.ClusterMap{Revision: 7, Replicas: 1}
	for _, id := range []string{"a", "b", "c"} {
		m.Nodes = append(m.Nodes, client.ClusterNode{ID: id, Addr: "127.0.0.1:1", State: client.NodeActive})
	}
	for _, c := range chains {
		m.VBuckets = append(m.VBuckets, client.VBucketChain{Epoch: 1, Chain: c})
	}
	return m
}

func TestRebalancePlanOfAJoin(t *testing.T) {
	doc, err := planRebalance(twoNodeMap(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// c takes a third of the 128 copies and of the 64 actives.
	if doc.Built != 42 || doc.MinBuilt != 42 || doc.Takeovers != 21 || doc.MinTake != 21 {
		t.Fatalf("built %d (min %d), takeovers %d (min %d)", doc.Built, doc.MinBuilt, doc.Takeovers, doc.MinTake)
	}
	for _, n := range doc.Nodes {
		total := n.After.Active + n.After.Replica
		if total < 42 || total > 43 || n.After.Active < 21 || n.After.Active > 22 {
			t.Errorf("node %s after: %+v", n.ID, n.After)
		}
	}
	var out bytes.Buffer
	printRebalancePlan(&out, doc)
	for _, want := range []string{"plan from map revision 7: 64 vbuckets, 1 replica", "42 vbuckets move: 42 copies to build (at least 42), 21 takeovers (at least 21)", "nothing was changed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRebalancePlanWithout(t *testing.T) {
	m := twoNodeMap(t)
	doc, err := planRebalance(m, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range doc.Nodes {
		if n.ID == "a" && (n.Holds || n.After != (vbmap.Counts{})) {
			t.Fatalf("a after: %+v", n)
		}
	}
	if _, err := planRebalance(m, []string{"zz"}); err == nil {
		t.Fatal("--without an unknown member: no error")
	}
	if _, err := planRebalance(m, []string{"a", "b", "c"}); !errors.Is(err, errNoDataNodes) {
		t.Fatalf("--without every member: %v", err)
	}
}

// runRebalanceCLI runs `shoal --addr addr rebalance args...` in this
// process.
func runRebalanceCLI(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	g := &globals{addr: addr, timeout: 5 * time.Second}
	root := &cobra.Command{Use: "shoal", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(rebalanceCommand(g))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"rebalance"}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func TestRebalancePlanOnOneNode(t *testing.T) {
	addr := startNode(t)
	out, err := runRebalanceCLI(t, addr, "plan")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "nothing to move: the map is balanced") {
		t.Fatalf("output:\n%s", out)
	}
	out, err = runRebalanceCLI(t, addr, "plan", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var doc rebalancePlanDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Moves != 0 || len(doc.Nodes) != 1 {
		t.Fatalf("json %v: %s", err, out)
	}
	if _, err := runRebalanceCLI(t, addr, "plan", "--without", doc.Nodes[0].ID); !errors.Is(err, errNoDataNodes) {
		t.Fatalf("plan without the only node: %v", err)
	}
	var ee *exitError
	if out, err := runRebalanceCLI(t, addr, "--wait"); err != nil || !strings.Contains(out, "rebalance done") || !strings.Contains(out, "0/0 vbuckets") {
		t.Fatalf("rebalance --wait of a balanced map: %v\n%s", err, out)
	}
	if out, err := runRebalanceCLI(t, addr, "--status", "--json"); err != nil || !strings.Contains(out, `"state": "done"`) {
		t.Fatalf("rebalance --status --json: %v\n%s", err, out)
	}
	if _, err := runRebalanceCLI(t, addr, "--status", "--stop"); !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("--status --stop: %v", err)
	}
	if _, err := runRebalanceCLI(t, addr, "plan", "--without", "nobody"); !errors.As(err, &ee) || ee.code != exitNegative {
		t.Fatalf("plan --without nobody: %v", err)
	}
}
