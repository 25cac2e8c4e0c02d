package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/node"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// The cluster tests run real shoald processes that form a cluster through
// --join and --bootstrap-expect. A node's --join names every node's data
// address, so the addresses are reserved before the nodes start
// (testproc.FreePorts), and each node is started with its own --listen.

// clusterVBuckets keeps maps and status documents small.
const clusterVBuckets = 64

// formTimeout bounds the formation of a cluster of fresh nodes: the
// discovery rounds (200 ms doubling), the first election (0.5–1 s at the
// default timeouts) and the init commit, on a loaded machine under -race.
const formTimeout = 60 * time.Second

// slowArgs are the timeouts of the test clusters that do not test failover
// timing: 5 s leases and raft's timeouts of 500/500/250 ms rather than the
// defaults (1 s, 200/200/100 ms), which the automatic failover tests use
// (autoArgs comes last and sets them back).
var slowArgs = []string{"--failover-timeout", "5s",
	"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms", "--raft-leader-lease-timeout", "250ms"}

// clusterArgs are the flags of one node of a new cluster at addr whose
// --join lists join.
func clusterArgs(addr string, join []string, expect int, extra ...string) []string {
	// Automatic failover off unless a test asks for it (extra comes last):
	// the tests that stop, kill or freeze nodes expect them back as they
	// were. slowArgs: a loaded CI machine starving a node for a moment must
	// not fence it or move the leadership in a test of something else.
	args := append([]string{"--listen", addr, "--vbuckets", strconv.Itoa(clusterVBuckets), "--join", strings.Join(join, ","), "--auto-failover=false"}, slowArgs...)
	if expect > 0 {
		args = append(args, "--bootstrap-expect", strconv.Itoa(expect))
	}
	return append(args, extra...)
}

// startCluster starts n fresh nodes, each with --join of all n addresses
// and --bootstrap-expect n (and extra), and waits until they formed one
// cluster (waitCluster).
func startCluster(t *testing.T, n int, extra ...string) ([]*testproc.Node, []*node.ClusterStatus) {
	t.Helper()
	nodes := startNodes(t, testproc.FreePorts(t, n), n, extra...)
	return nodes, waitCluster(t, nodes, formTimeout)
}

// startNodes starts a node at each of addrs with --join of all of them and
// --bootstrap-expect expect, without waiting for a cluster.
func startNodes(t *testing.T, addrs []string, expect int, extra ...string) []*testproc.Node {
	t.Helper()
	nodes := make([]*testproc.Node, len(addrs))
	for i, a := range addrs {
		nodes[i] = testproc.Start(t, clusterArgs(a, addrs, expect, extra...)...)
	}
	return nodes
}

// restart starts a node again on its data directory with its flags
// (among them its --listen: the same address).
func restart(t *testing.T, n *testproc.Node) *testproc.Node {
	t.Helper()
	return testproc.StartIn(t, n.Dir, n.Args[7:]...) // after the seven testproc puts first
}

// httpStatus reads the /status of the node whose HTTP address is addr,
// within 2 s.
func httpStatus(addr string) (node.Status, error) {
	var st node.Status
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("/status: %s: %s", resp.Status, b)
	}
	err = json.Unmarshal(b, &st)
	return st, err
}

// clusterStatus reads the cluster section of a node's /status.
func clusterStatus(n *testproc.Node) (*node.ClusterStatus, error) {
	st, err := httpStatus(n.HTTP)
	if err != nil {
		return nil, err
	}
	if st.Cluster == nil {
		return nil, errors.New("no cluster section in /status")
	}
	return st.Cluster, nil
}

// cliCluster reads the cluster section of `shoal status --json`.
func cliCluster(t *testing.T, addr string, args ...string) *node.ClusterStatus {
	t.Helper()
	r := testproc.CLI(t, addr, "", append(args, "status", "--json")...)
	if r.Code != 0 {
		t.Fatalf("shoal status --json at %s: %d %s", addr, r.Code, r.Stderr)
	}
	var st node.Status
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.Cluster == nil {
		t.Fatalf("shoal status --json at %s: %v %q", addr, err, r.Stdout)
	}
	return st.Cluster
}

// formed reports whether the documents show one cluster of them all: the
// same cluster id, revision and leader, every node a member in the same
// member list, all active, and min(len, 3) voters.
func formed(docs []*node.ClusterStatus) (bool, string) {
	first := docs[0]
	for i, d := range docs {
		switch {
		case d.ClusterID == "" || d.Revision == 0:
			return false, fmt.Sprintf("node %d (%s): no cluster yet: %s (%s)", i, d.Self, d.Join.Phase, d.Join.Waiting)
		case d.ClusterID != first.ClusterID || d.Revision != first.Revision || d.Leader != first.Leader:
			return false, fmt.Sprintf("node %d (%s) sees cluster %s rev %d leader %q; node 0 %s rev %d leader %q",
				i, d.Self, d.ClusterID, d.Revision, d.Leader, first.ClusterID, first.Revision, first.Leader)
		case d.Leader == "":
			return false, fmt.Sprintf("node %d (%s): no leader", i, d.Self)
		case d.Join.Phase != "member":
			return false, fmt.Sprintf("node %d (%s): phase %s (%s)", i, d.Self, d.Join.Phase, d.Join.Waiting)
		case len(d.Nodes) != len(docs):
			return false, fmt.Sprintf("node %d (%s): %d members", i, d.Self, len(d.Nodes))
		case len(d.Voters) != min(len(docs), 3):
			return false, fmt.Sprintf("node %d (%s): voters %v", i, d.Self, d.Voters)
		case d.Fenced != "":
			return false, fmt.Sprintf("node %d (%s): fenced: %s", i, d.Self, d.Fenced)
		}
		for _, m := range d.Nodes {
			if m.State != "active" {
				return false, fmt.Sprintf("node %d (%s): member %s is %s", i, d.Self, m.ID, m.State)
			}
			if !slices.ContainsFunc(docs, func(o *node.ClusterStatus) bool { return o.Self == m.ID }) {
				return false, fmt.Sprintf("node %d (%s): member %s is none of the nodes", i, d.Self, m.ID)
			}
		}
	}
	return true, ""
}

// waitCluster waits until nodes form one cluster (formed) and returns
// their cluster documents, in the order of nodes.
func waitCluster(t *testing.T, nodes []*testproc.Node, d time.Duration) []*node.ClusterStatus {
	t.Helper()
	var docs []*node.ClusterStatus
	poll(t, d, "one cluster of every node", func() (bool, string) {
		docs = docs[:0]
		for _, n := range nodes {
			cs, err := clusterStatus(n)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.Addr, err)
			}
			docs = append(docs, cs)
		}
		return formed(docs)
	})
	return docs
}

// leaderOf returns the node of nodes the documents name the leader.
func leaderOf(t *testing.T, nodes []*testproc.Node, docs []*node.ClusterStatus) (leader *testproc.Node, followers []*testproc.Node) {
	t.Helper()
	for i, n := range nodes {
		if docs[i].Self == docs[i].Leader {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}
	if leader == nil {
		t.Fatalf("no node is the leader: %+v", docs)
	}
	return leader, followers
}

// rawConn is a connection speaking frames directly (requests the client
// has no method for yet, and hostile ones).
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	id uint32
}

func dialRawConn(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// call sends one request and reads its answer (within 10 s).
func (r *rawConn) call(op wire.Opcode, body []byte) (wire.Header, []byte) {
	r.t.Helper()
	r.id++
	f := wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, ID: r.id, BodyLen: uint32(len(body))})
	r.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.nc.Write(append(f, body...)); err != nil {
		r.t.Fatalf("sending %s: %v", op, err)
	}
	h, b, err := r.read()
	if err != nil {
		r.t.Fatalf("the %s answer: %v", op, err)
	}
	if h.ID != r.id || h.Opcode != op {
		r.t.Fatalf("answer %v to request %d (%s)", h, r.id, op)
	}
	return h, b
}

func (r *rawConn) read() (wire.Header, []byte, error) {
	var hb [wire.HeaderLen]byte
	if _, err := io.ReadFull(r.br, hb[:]); err != nil {
		return wire.Header{}, nil, err
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil {
		return h, nil, err
	}
	b := make([]byte, h.BodyLen)
	_, err = io.ReadFull(r.br, b)
	return h, b, err
}

// mapMember is a member in the GetClusterMap answer.
type mapMember struct {
	ID, Addr, HTTP, Zone string
	State                uint8
}

// clusterMap asks addr for the cluster's map (GetClusterMap, decoded as
// docs/protocol.md §4.8 lays it out: the members, then the map).
func clusterMap(t *testing.T, addr string) ([]mapMember, *vbmap.Map) {
	t.Helper()
	h, body := dialRawConn(t, addr).call(wire.OpGetClusterMap, nil)
	if h.Status != wire.StatusOK {
		t.Fatalf("GetClusterMap at %s: %s %s", addr, h.Status, body)
	}
	d := wire.NewDecoder(body)
	members := make([]mapMember, d.U16())
	for i := range members {
		m := &members[i]
		m.ID, m.Addr, m.HTTP = string(d.Bytes8()), string(d.Bytes8()), string(d.Bytes8())
		m.State = d.U8()
		m.Zone = string(d.Bytes8())
	}
	if d.Err() != nil {
		t.Fatalf("GetClusterMap at %s: the members: %v", addr, d.Err())
	}
	rest := d.Rest()
	m, n, err := vbmap.DecodeMap(rest)
	if err != nil || n != len(rest) {
		t.Fatalf("GetClusterMap at %s: the map: %v (%d of %d bytes)", addr, err, n, len(rest))
	}
	return members, m
}

// router writes to the node that is active for each key: it starts at
// one node and follows `not my vbucket` to the active it names.
type router struct {
	t       *testing.T
	clients map[string]*client.Client
}

func newRouter(t *testing.T) *router { return &router{t: t, clients: map[string]*client.Client{}} }

func (r *router) client(addr string) *client.Client {
	if c, ok := r.clients[addr]; ok {
		return c
	}
	c := dialShort(r.t, addr)
	r.clients[addr] = c
	return c
}

// put stores key in channel starting at addr and returns the address of
// the node that took it.
func (r *router) put(ctx context.Context, addr, channel, key, value string) (string, error) {
	for range 3 {
		_, err := r.client(addr).Put(ctx, channel, []byte(key), []byte(value))
		var ce *client.Error
		if errors.As(err, &ce) && errors.Is(err, client.ErrNotMyVBucket) && ce.Active != "" && ce.Active != addr {
			addr = ce.Active
			continue
		}
		return addr, err
	}
	return addr, fmt.Errorf("put %s/%s: more than 3 hops", channel, key)
}

// createQueue creates a queue channel with a first push at addr (that
// node only) through a client of its own, and returns how long the push
// took and its error.
func createQueue(t *testing.T, addr, channel string) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.WithNoRouting(), client.WithTimeout(20*time.Second), client.WithDialTimeout(2*time.Second))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	err = c.Push(ctx, []string{channel}, []byte("first"))
	return time.Since(start), err
}

// channelsOf lists a node's channels with `shoal channels` (name → kind).
func channelsOf(t *testing.T, addr string, args ...string) map[string]string {
	t.Helper()
	r := testproc.CLI(t, addr, "", append(args, "channels")...)
	if r.Code != 0 {
		t.Fatalf("shoal channels at %s: %d %s", addr, r.Code, r.Stderr)
	}
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if name, kind, ok := strings.Cut(l, "\t"); ok {
			out[name] = kind
		}
	}
	return out
}

// rootLog returns the node's root.log (DATA/log/root.log).
func rootLog(t *testing.T, n *testproc.Node) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "log", "root.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logLines returns the lines of log that contain every one of subs.
func logLines(log string, subs ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// runShoald runs shoald with args until it exits (within timeout) and
// returns its exit code and output: for nodes that must refuse to start.
func runShoald(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testproc.Build(t), "shoald"), args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("shoald %v still running after %v:\n%s", args, timeout, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("shoald %v: %v", args, err)
	}
	return 0, string(out)
}

// copyDir copies the regular files of src into dst (a running node's
// data directory: the copy is what an operator's cp would make).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// knownBug skips a test that reproduces a bug of the node, reported and
// not fixed yet; SHOAL_E2E_BUGS=1 runs it (to check a fix).
func knownBug(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("SHOAL_E2E_BUGS") == "" {
		t.Skip("BUG: " + what + " (SHOAL_E2E_BUGS=1 runs the test)")
	}
}
