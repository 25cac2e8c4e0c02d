package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"shoal/client"
	"shoal/internal/testproc"
	"shoal/internal/vbmap"
	"shoal/internal/vbucket"
)

// TestRESPCluster: three nodes with --resp; a Redis client of one node's
// RESP port reads and writes keys of every node's vBuckets (forwarded to
// their active and answered as if local), multi-key commands spanning the
// nodes, SCAN and DBSIZE over the cluster, lists on other nodes, and the
// native client sees the same records.
func TestRESPCluster(t *testing.T) {
	nodes, _ := startCluster(t, 3, "--resp", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	owner := func(key string) int {
		vb := vbucket.OfString(key, 64)
		for i, nd := range nodes {
			if nd.table().State(vb) == vbmap.Active {
				return i
			}
		}
		t.Fatalf("no active for %q", key)
		return -1
	}
	rc := make([]*redis.Client, 3)
	for i, nd := range nodes {
		rc[i] = redis.NewClient(&redis.Options{Addr: nd.RESPAddr().String(), DialTimeout: 5 * time.Second})
		defer rc[i].Close()
	}
	c := rc[0]

	const n = 300
	perNode := [3]int{}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%d", i)
		perNode[owner(keys[i])]++
		if err := c.Set(ctx, keys[i], fmt.Sprintf("v%d", i), 0).Err(); err != nil {
			t.Fatalf("SET %s (node %d): %v", keys[i], owner(keys[i]), err)
		}
	}
	for i, cnt := range perNode {
		if cnt == 0 {
			t.Fatalf("no key of node %d among %d: %v", i, n, perNode)
		}
	}
	// Every node's port reads every key.
	for j, r := range rc {
		for i, k := range keys {
			v, err := r.Get(ctx, k).Result()
			if err != nil || v != fmt.Sprintf("v%d", i) {
				t.Fatalf("GET %s through node %d (active node %d): %q %v", k, j, owner(k), v, err)
			}
		}
	}
	// The native client, routing by the map, sees the same records.
	nc, err := client.Dial(ctx, nodes[1].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, k := range keys[:30] {
		if _, err := nc.Get(ctx, "default", []byte(k)); err != nil {
			t.Fatalf("native Get %s: %v", k, err)
		}
	}
	if _, err := nc.Put(ctx, "default", []byte("native"), []byte("yes")); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, "native").Val(); v != "yes" {
		t.Fatalf("GET of a native Put: %q", v)
	}

	// Read-modify-writes and expiries on other nodes.
	var remote string
	for _, k := range keys {
		if owner(k) != 0 {
			remote = k
			break
		}
	}
	c.Set(ctx, "ctr", 0, 0)
	for range 10 {
		c.Incr(ctx, "ctr")
	}
	if v := rc[2].Get(ctx, "ctr").Val(); v != "10" {
		t.Fatalf("counter %q", v)
	}
	if !c.Expire(ctx, remote, time.Hour).Val() {
		t.Fatal("EXPIRE of a remote key")
	}
	if ttl := c.TTL(ctx, remote).Val(); ttl < 59*time.Minute {
		t.Fatalf("TTL of a remote key: %v", ttl)
	}
	if ok, err := c.SetNX(ctx, remote, "x", 0).Result(); ok || err != nil {
		t.Fatalf("SETNX of an existing remote key: %v %v", ok, err)
	}

	// Multi-key commands spanning the nodes.
	vals, err := c.MGet(ctx, keys[:50]...).Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if v != fmt.Sprintf("v%d", i) {
			t.Fatalf("MGET[%d] = %v", i, v)
		}
	}
	pairs := []any{}
	for i := range 40 {
		pairs = append(pairs, fmt.Sprintf("m:%d", i), i)
	}
	if err := c.MSet(ctx, pairs...).Err(); err != nil {
		t.Fatal(err)
	}
	mkeys := []string{}
	for i := range 40 {
		mkeys = append(mkeys, fmt.Sprintf("m:%d", i))
	}
	if got := rc[1].Exists(ctx, mkeys...).Val(); got != 40 {
		t.Fatalf("EXISTS of 40 keys: %d", got)
	}
	if got := rc[2].Del(ctx, mkeys...).Val(); got != 40 {
		t.Fatalf("DEL of 40 keys: %d", got)
	}

	// A pipeline of keys of every node keeps its order.
	p := c.Pipeline()
	for i := range 200 {
		k := fmt.Sprintf("p:%d", i%20)
		p.Set(ctx, k, i, 0)
		p.Get(ctx, k)
	}
	cmds, err := p.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if v := cmds[2*i+1].(*redis.StringCmd).Val(); v != fmt.Sprint(i) {
			t.Fatalf("pipeline: GET after SET %d = %q", i, v)
		}
	}
	for i := range 20 {
		c.Del(ctx, fmt.Sprintf("p:%d", i))
	}

	// SCAN and DBSIZE cover the cluster, from any node.
	want := append(slices.Clone(keys), "ctr", "native")
	sort.Strings(want)
	for j, r := range rc {
		var got []string
		it := r.Scan(ctx, 0, "", 25).Iterator()
		for it.Next(ctx) {
			got = append(got, it.Val())
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
		sort.Strings(got)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			t.Fatalf("SCAN through node %d: %d keys, want %d", j, len(got), len(want))
		}
		if sz := r.DBSize(ctx).Val(); sz != int64(len(want)) {
			t.Fatalf("DBSIZE through node %d: %d, want %d", j, sz, len(want))
		}
	}
	if ks := c.Keys(ctx, "key:1?").Val(); len(ks) != 10 {
		t.Fatalf("KEYS: %v", ks)
	}

	// Lists live on the active of their key's vBucket.
	lists := map[int]string{}
	for i := 0; len(lists) < 3; i++ {
		l := fmt.Sprintf("jobs%d", i)
		if _, ok := lists[owner(l)]; !ok {
			lists[owner(l)] = l
		}
	}
	for _, l := range lists {
		if got := c.RPush(ctx, l, "a", "b", "c").Val(); got != 3 {
			t.Fatalf("RPUSH %s: %d", l, got)
		}
		if got := rc[1].LLen(ctx, l).Val(); got != 3 {
			t.Fatalf("LLEN %s: %d", l, got)
		}
		if v := rc[2].LPop(ctx, l).Val(); v != "a" {
			t.Fatalf("LPOP %s: %q", l, v)
		}
		if v := c.RPopCount(ctx, l, 5).Val(); !slices.Equal(v, []string{"b", "c"}) {
			t.Fatalf("RPOP count %s: %v", l, v)
		}
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		rc[2].RPush(ctx, lists[1], "late")
	}()
	if v, err := c.BLPop(ctx, 10*time.Second, lists[2], lists[1]).Result(); err != nil || v[1] != "late" {
		t.Fatalf("BLPOP across nodes: %v %v", v, err)
	}
	if _, err := c.BLPop(ctx, 100*time.Millisecond, lists[1]).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("BLPOP timeout: %v", err)
	}

	// FLUSHDB removes the channel everywhere.
	if err := rc[1].FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.DBSize(ctx).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("DBSIZE after FLUSHDB: %d", c.DBSize(ctx).Val())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every node counted forwarded commands.
	if f := c.Info(ctx, "stats").Val(); !containsLine(f, "shoal_forwarded_commands:") {
		t.Fatalf("INFO stats: %q", f)
	}
}

func containsLine(s, prefix string) bool {
	for i := 0; i+len(prefix) <= len(s); i++ {
		if s[i:i+len(prefix)] == prefix {
			return true
		}
	}
	return false
}

// TestRESPClusterWithTLSAndCredentials: with credentials and TLS, a
// client authenticates over TLS on one node's RESP port and reaches the
// keys of every node: the node forwards as the peer credential, over TLS.
func TestRESPClusterWithTLSAndCredentials(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := testproc.WriteCert(t, dir)
	admin, peer := "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte("admin:"+admin+"\nnode:"+peer+"\n"), 0o600)
	peerFile := filepath.Join(dir, "peer-secret")
	os.WriteFile(peerFile, []byte(peer+"\n"), 0o600)
	nodes, _ := startCluster(t, 3, "--tls-cert", certFile, "--tls-key", keyFile, "--credentials", creds,
		"--peer-secret-file", peerFile, "--resp", "127.0.0.1:0", "--resp-require-tls")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	plain := redis.NewClient(&redis.Options{Addr: nodes[0].RESPAddr().String(), Username: "admin", Password: admin, MaxRetries: -1})
	defer plain.Close()
	if err := plain.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("AUTH over plain TCP was accepted with --resp-require-tls")
	}
	c := redis.NewClient(&redis.Options{Addr: nodes[0].RESPAddr().String(), Username: "admin", Password: admin,
		TLSConfig: &tls.Config{InsecureSkipVerify: true}}) // the test's own certificate
	defer c.Close()
	seen := map[int]bool{}
	for i := 0; len(seen) < 3 || i < 30; i++ {
		if i == 1000 {
			t.Fatalf("1000 keys and not one of every node: %v", seen)
		}
		k := fmt.Sprintf("k%d", i)
		vb := vbucket.OfString(k, 64)
		for j, nd := range nodes {
			if nd.table().State(vb) == vbmap.Active {
				seen[j] = true
			}
		}
		if err := c.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		if v := c.Get(ctx, k).Val(); v != fmt.Sprint(i) {
			t.Fatalf("GET %s = %q", k, v)
		}
	}
	if n := c.DBSize(ctx).Val(); n < 30 {
		t.Fatalf("DBSIZE %d", n)
	}
}
