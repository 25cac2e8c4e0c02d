package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/node"
	"shoal/internal/repl"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
	"shoal/internal/wire"
)

// The chain tests run clusters of three real nodes with replicas: each
// node replicates, per producer node and engine, the vBuckets the map
// makes it a replica of. Writes go to every engine on every node (kv keys
// routed by hand to their active with the cluster map; queue pushes and
// log appends without a routing key land in the node's own active
// vBuckets), then every replica vBucket must hold its active's seqno for
// all three engines, and the records must match.

// chainCluster is a cluster under test.
type chainCluster struct {
	t       *testing.T
	nodes   []*testproc.Node
	ids     []string // by node
	m       *client.ClusterMap
	clients map[string]*client.Client // by node id
	opts    []client.Option
	cli     []string // the CLI's TLS and credential flags
}

// startChains forms a cluster of three nodes with --replicas replicas.
func startChains(t *testing.T, replicas int, opts []client.Option, cli []string, extra ...string) *chainCluster {
	t.Helper()
	args := append([]string{"--replicas", fmt.Sprint(replicas), "--replica-noop-interval", "250ms"}, extra...)
	nodes, docs := startCluster(t, 3, args...)
	c := &chainCluster{t: t, nodes: nodes, opts: opts, cli: cli}
	for _, d := range docs {
		c.ids = append(c.ids, d.Self)
	}
	c.connect()
	return c
}

// connect waits until every node serves (a restarted node is fenced
// until its first lease), dials a client per node and reads the map.
func (c *chainCluster) connect() {
	c.t.Helper()
	poll(c.t, 20*time.Second, "every node serving (not fenced)", func() (bool, string) {
		for _, n := range c.nodes {
			cs, err := clusterStatus(n)
			if err != nil || cs.Fenced != "" {
				return false, fmt.Sprintf("%s: %v %+v", n.Addr, err, cs)
			}
		}
		return true, ""
	})
	c.clients = map[string]*client.Client{}
	for i, n := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := client.Dial(ctx, n.Addr, append([]client.Option{client.WithTimeout(10 * time.Second), client.WithNoRouting()}, c.opts...)...)
		cancel()
		if err != nil {
			c.t.Fatalf("dial %s: %v", n.Addr, err)
		}
		c.t.Cleanup(func() { cl.Close() })
		c.clients[c.ids[i]] = cl
	}
	m, err := c.clients[c.ids[0]].ClusterMap(c.t.Context())
	if err != nil {
		c.t.Fatal(err)
	}
	c.m = m
}

// status reads node i's status document with every vBucket.
func (c *chainCluster) status(i int) node.Status {
	c.t.Helper()
	st, err := nodeStatus(c.clients[c.ids[i]], true)
	if err != nil {
		c.t.Fatalf("status of %s: %v", c.ids[i], err)
	}
	return st
}

// written is what a round of writes put in the cluster.
type written struct {
	kv     map[string]uint64 // key -> CAS its active answered
	pushes int
	logs   int
}

// write puts n kv keys (each at its vBucket's active), and n queue pushes
// and n log appends on every node, with prefix p.
func (c *chainCluster) write(p string, n int, w *written) {
	c.t.Helper()
	ctx := c.t.Context()
	if w.kv == nil {
		w.kv = map[string]uint64{}
	}
	for i := range n {
		key := fmt.Sprintf("%s-key-%d", p, i)
		active := c.m.VBuckets[vbucket.Of([]byte(key), len(c.m.VBuckets))].Active()
		var cas uint64
		err := retryNMVB(func() (err error) {
			cas, err = c.clients[active].Put(ctx, "kv", []byte(key), []byte("value of "+key))
			return err
		})
		if err != nil {
			c.t.Fatalf("put %s at %s: %v", key, active, err)
		}
		w.kv[key] = cas
	}
	for _, id := range c.ids {
		cl := c.clients[id]
		for i := range n {
			if err := retryNMVB(func() error { return cl.Push(ctx, []string{"q"}, fmt.Appendf(nil, "%s-%s-%d", p, id, i)) }); err != nil {
				c.t.Fatalf("push on %s: %v", id, err)
			}
			if err := retryNMVB(func() error {
				return cl.LogPut(ctx, "events", uint64(1_700_000_000+i), fmt.Appendf(nil, "%s-%s-%d", p, id, i))
			}); err != nil {
				c.t.Fatalf("log append on %s: %v", id, err)
			}
		}
		w.pushes += n
		w.logs += n
	}
}

// retryNMVB runs a write to one particular node again while it answers
// not my vbucket naming itself, for at most 5 s: a node just restarted
// serves its active vBuckets once it holds a lease.
func retryNMVB(write func() error) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := write()
		var ce *client.Error
		if !errors.As(err, &ce) || !errors.Is(err, client.ErrNotMyVBucket) || ce.Active != ce.Node || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// engines are the replicated engines.
var engines = []string{"kv", "queue", "log"}

// caughtUp reports whether every replica vBucket of every engine holds its
// active's high seqno, nodes outside a chain hold nothing of it, every
// replicator is streaming and reports nothing lagging, and every producer
// has seen its consumers acknowledge everything.
func (c *chainCluster) caughtUp() (bool, string) {
	sts := make([]node.Status, len(c.nodes))
	for i := range c.nodes {
		sts[i] = c.status(i)
	}
	idx := map[string]int{}
	for i, id := range c.ids {
		idx[id] = i
	}
	for vb, v := range c.m.VBuckets {
		for _, e := range engines {
			high := sts[idx[v.Active()]].Replication.HighSeqnos[e][vb]
			for i := range c.nodes {
				got := sts[i].Replication.HighSeqnos[e][vb]
				switch in := slices.Contains(v.Chain, c.ids[i]); {
				case in && got != high:
					return false, fmt.Sprintf("%s vbucket %d: %s at %d, its active %s at %d", e, vb, c.ids[i], got, v.Active(), high)
				case !in && got != 0:
					return false, fmt.Sprintf("%s vbucket %d: %s is in no chain of it and holds seqno %d", e, vb, c.ids[i], got)
				}
			}
		}
	}
	for i, st := range sts {
		_, replica := c.m.Counts(c.ids[i])
		var vbs int
		for _, e := range st.Replication.Engines {
			if e.State != repl.StateStreaming || e.Lagging != 0 || e.LagSeqnos != 0 || e.LagBytes != 0 {
				return false, fmt.Sprintf("%s's %s feed from %s: %s, %d lagging, %d seqnos %d bytes behind, last error %q",
					c.ids[i], e.Bucket, e.ProducerNode, e.State, e.Lagging, e.LagSeqnos, e.LagBytes, e.LastError)
			}
			vbs += e.VBuckets
		}
		if vbs != 3*replica {
			return false, fmt.Sprintf("%s replicates %d (vbucket, engine) pairs, the map makes it a replica of %d vbuckets", c.ids[i], vbs, replica)
		}
		for _, s := range st.Replication.Serving {
			if s.LagSeqnos != 0 || s.LagBytes != 0 || s.CaughtUp != s.Streams {
				return false, fmt.Sprintf("%s serving %s's %s: %d of %d caught up, %d seqnos %d bytes unacknowledged",
					c.ids[i], s.Consumer, s.Bucket, s.CaughtUp, s.Streams, s.LagSeqnos, s.LagBytes)
			}
		}
		if st.Replication.Lag != nil && st.Replication.Lag.VBuckets != 0 {
			return false, fmt.Sprintf("%s lags: %+v", c.ids[i], st.Replication.Lag)
		}
	}
	return true, ""
}

// waitCaughtUp waits until caughtUp holds.
func (c *chainCluster) waitCaughtUp(d time.Duration) {
	c.t.Helper()
	start := time.Now()
	poll(c.t, d, "every replica caught up", c.caughtUp)
	c.t.Logf("every replica caught up %v after the writes", time.Since(start).Round(time.Millisecond))
}

// checkRecords compares the records: every node holds, per engine, as many
// records as the chains it is in make it hold; every kv copy of a key has
// the value and CAS its active answered, on every node that has it.
func (c *chainCluster) checkRecords(w *written) {
	c.t.Helper()
	c.checkCounts(map[string]int64{"kv": int64(len(w.kv)), "queue": int64(w.pushes), "log": int64(w.logs)})
	seen := map[string]int{}
	for _, id := range c.ids {
		for r, err := range c.clients[id].GetAll(c.t.Context(), "kv", client.WithReplicaCopies()).All() {
			if err != nil {
				c.t.Fatalf("GetAll at %s: %v", id, err)
			}
			key := string(r.Key)
			cas, ok := w.kv[key]
			if !ok || r.CAS != cas || string(r.Value) != "value of "+key {
				c.t.Fatalf("%s holds %s = %q CAS %d; its active answered CAS %d", id, key, r.Value, r.CAS, cas)
			}
			chain := c.m.VBuckets[vbucket.Of(r.Key, len(c.m.VBuckets))].Chain
			if !slices.Contains(chain, id) {
				c.t.Fatalf("%s holds %s, whose chain is %v", id, key, chain)
			}
			seen[key]++
		}
	}
	for key := range w.kv {
		if seen[key] == 0 {
			c.t.Fatalf("no node holds %s", key)
		}
	}
}

// checkCounts checks that the nodes hold, per engine, 1+replicas copies
// of the records written (written: per engine, how many).
func (c *chainCluster) checkCounts(written map[string]int64) {
	c.t.Helper()
	copies := int64(1 + c.m.Replicas)
	counts := map[string]int64{}
	for i := range c.nodes {
		for _, ch := range c.status(i).Channels {
			counts[ch.Kind] += ch.Records
		}
	}
	for k, n := range written {
		if counts[k] != copies*n {
			c.t.Fatalf("%s records on the three nodes: %d, want %d (%d copies of each of %d)", k, counts[k], copies*n, copies, n)
		}
	}
}

// feedCounters sums a field of node i's replicators.
func (c *chainCluster) feedCounters(i int, f func(repl.Status) uint64) uint64 {
	return sum(c.status(i), f)
}

// TestChainsReplicas1: three nodes, one replica of every vBucket. Writes
// on every engine of every node reach the replicas; a node stopped cleanly
// and restarted resumes its feeds and is resumed by its replicas without
// a rollback (the kv from its shutdown dump).
func TestChainsReplicas1(t *testing.T) {
	c := startChains(t, 1, nil, nil)
	var w written
	c.write("a", 120, &w)
	c.waitCaughtUp(30 * time.Second)
	c.checkRecords(&w)
	for i := range c.nodes {
		// One session per producer node and engine: two producers.
		if st := c.status(i); len(st.Replication.Engines) != 6 || sum(st, rollbacks) != 0 {
			t.Fatalf("%s: %d replicators, %d rollbacks", c.ids[i], len(st.Replication.Engines), sum(st, rollbacks))
		}
	}

	// Node 2 stops cleanly; writes go on at the others; it comes back.
	stopped := c.nodes[2]
	stopped.Stop()
	c.nodes[2] = restart(t, stopped)
	waitCluster(t, c.nodes, formTimeout)
	c.connect()
	c.write("b", 60, &w)
	c.waitCaughtUp(30 * time.Second)
	c.checkRecords(&w)
	for i := range c.nodes {
		if n := c.feedCounters(i, rollbacks); n != 0 {
			t.Fatalf("%s rolled back %d vbuckets after a clean restart", c.ids[i], n)
		}
	}
}

// TestChainsReplicas2TLS: three nodes, two replicas, TLS and credentials:
// the nodes replicate over TLS as the peer credential, a stream open
// without it is refused, and after kill -9 of a node and its restart
// every chain converges again and nothing is lost: the killed node's kv
// comes back empty (it had no dump), so before serving it hands the
// vBuckets whose replicas hold more to them and becomes their replica;
// its log and journal queue resume.
func TestChainsReplicas2TLS(t *testing.T) {
	creds, nodeSecret, appSecret := writeCredentials(t)
	certFile, keyFile := testproc.WriteCert(t, t.TempDir())
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tlsCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	adminSecret := filepath.Join(t.TempDir(), "admin.secret")
	os.WriteFile(adminSecret, []byte("00112233445566778899aabbccddeeff\n"), 0o600)
	c := startChains(t, 2, []client.Option{client.WithTLS(tlsCfg), client.WithAuth("admin", mustHex(t, "00112233445566778899aabbccddeeff"))},
		[]string{"--tls-ca", certFile, "--user", "admin", "--secret-file", adminSecret},
		"--credentials", creds, "--peer-user", "node", "--peer-secret-file", nodeSecret,
		"--tls-cert", certFile, "--tls-key", keyFile, "--queue-durability", "journal")
	var w written
	c.write("a", 100, &w)
	c.waitCaughtUp(30 * time.Second)
	c.checkRecords(&w)
	for i := range c.nodes {
		st := c.status(i)
		if len(st.Replication.Serving) != 6 { // two consumers × three engines
			t.Fatalf("%s serves %d stream connections: %+v", c.ids[i], len(st.Replication.Serving), st.Replication.Serving)
		}
	}

	// A stream open without the peer credential: refused before any
	// stream, without credentials and as an application.
	for _, user := range []string{"", "app"} {
		h, body := tlsStreamOpen(t, c.nodes[0].Addr, tlsCfg, user, appSecret)
		if h.Status != wire.StatusNotPermitted {
			t.Fatalf("StreamOpen as %q: %s %q", user, h.Status, body)
		}
	}

	// kill -9 of node 1, restarted on its data and address.
	killed := 1
	logsBefore := c.status(killed).Replication.HighSeqnos["log"]
	c.nodes[killed].Kill()
	c.nodes[killed] = restart(t, c.nodes[killed])
	activeBefore, _ := c.m.Counts(c.ids[killed])
	waitCluster(t, c.nodes, formTimeout)
	c.connect()
	// Its kv lost what it held (no dump yet), its replicas did not: every
	// vBucket of it that had kv records is now active on a replica.
	for key := range w.kv {
		if vb := vbucket.Of([]byte(key), len(c.m.VBuckets)); c.m.VBuckets[vb].Active() == c.ids[killed] {
			t.Fatalf("%s still active for vbucket %d, which holds %q, after coming back with an empty kv", c.ids[killed], vb, key)
		}
	}
	activeAfter, _ := c.m.Counts(c.ids[killed])
	t.Logf("after kill -9 and a restart, %s handed %d of its %d active vbuckets to replicas that held more", c.ids[killed], activeBefore-activeAfter, activeBefore)
	c.write("b", 50, &w)
	c.waitCaughtUp(30 * time.Second)
	c.checkRecords(&w)
	logsAfter := c.status(killed).Replication.HighSeqnos["log"]
	for vb, s := range logsBefore {
		if logsAfter[vb] < s {
			t.Fatalf("log vbucket %d went back from %d after kill -9 (the log is fsynced)", vb, s)
		}
	}
	var kvRollbacks uint64
	for i := range c.nodes {
		if i != killed {
			for _, e := range c.status(i).Replication.Engines {
				if e.Bucket == "kv" && e.ProducerNode == c.ids[killed] {
					kvRollbacks += e.Rollbacks
				}
			}
		}
	}
	t.Logf("after kill -9 of %s: its kv replicas rolled back %d vbuckets (of those it kept, which held no kv record)", c.ids[killed], kvRollbacks)
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tlsStreamOpen opens a TLS connection, says HELLO, authenticates as user
// (none when empty) and sends a StreamOpen; it returns the answer.
func tlsStreamOpen(t *testing.T, addr string, cfg *tls.Config, user, secretFile string) (wire.Header, []byte) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	hs := repl.Handshake("intruder", "", nil, 0)
	if user != "" {
		secret, err := os.ReadFile(secretFile)
		if err != nil {
			t.Fatal(err)
		}
		hs = repl.Handshake("intruder", user, mustHex(t, strings.TrimSpace(string(secret))), 0)
	}
	if err := hs(context.Background(), conn); err != nil && !strings.Contains(err.Error(), "requires authentication") {
		t.Fatalf("handshake as %q: %v", user, err)
	}
	body := []byte{1}
	body = wire.AppendStr8(body, "intruder")
	body = wire.AppendStr8(body, "kv")
	body = wire.AppendU16(body, 0)
	body = wire.AppendU16(body, 1)
	body = wire.AppendU32(body, 0)
	body = wire.AppendU32(body, 1000)
	body = wire.AppendU32(body, 1<<20)
	ans, err := wire.RoundTrip(conn, wire.OpStreamOpen, 9, body, 4096)
	var se *wire.StatusError
	if errors.As(err, &se) {
		return wire.Header{Status: se.Status}, []byte(se.Message)
	}
	if err != nil {
		t.Fatalf("StreamOpen as %q: %v", user, err)
	}
	return wire.Header{Status: wire.StatusOK}, ans
}
