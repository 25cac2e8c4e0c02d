package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"shoal/internal/node"
	"shoal/internal/testproc"
	"shoal/internal/vbucket"
)

// The figures of docs/performance.md, "Cluster metadata": real processes
// at the default (LAN) raft timeouts. Not part of the CI run:
//
//	go test ./internal/e2e -run TestClusterFigures -cluster-figures -v
//
// (without -race: the figures are the node's, not the race detector's).
var clusterFigures = flag.Bool("cluster-figures", false, "measure the cluster figures of docs/performance.md (TestClusterFigures; run without -race)")

// figureRuns overrides the run counts (SHOAL_FIGURE_RUNS=formation,failover,channels).
func figureRuns() (formation, failover, channels int) {
	formation, failover, channels = 5, 10, 200
	if v := os.Getenv("SHOAL_FIGURE_RUNS"); v != "" {
		fmt.Sscanf(v, "%d,%d,%d", &formation, &failover, &channels)
	}
	return
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// spread is min / median / max of ds, and the mean and p99 when asked.
func spread(ds []time.Duration) (lo, med, hi, mean, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return s[0], s[len(s)/2], s[len(s)-1], sum / time.Duration(len(s)), s[min(len(s)-1, len(s)*99/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func TestClusterFigures(t *testing.T) {
	if !*clusterFigures {
		t.Skip("measures the figures of docs/performance.md: go test ./internal/e2e -run TestClusterFigures -cluster-figures -v")
	}
	formationRuns, failoverRuns, channels := figureRuns()
	testproc.Build(t) // not in the first run's time
	t.Logf("load average at the start: %s", loadavg())

	// 1. Three cold starts to a map committed and applied on all three:
	// the three processes are launched together; the clock stops when
	// every node's /status shows the same cluster with its map (polled
	// every 10 ms).
	var served, formedAt []time.Duration
	for i := range formationRuns {
		t.Run(fmt.Sprintf("formation-%d", i), func(t *testing.T) {
			addrs, https := testproc.FreePorts(t, 3), testproc.FreePorts(t, 3)
			nodes := make([]*testproc.Node, 3)
			var wg sync.WaitGroup
			start := time.Now()
			for j := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					nodes[j] = testproc.Start(t, clusterArgs(addrs[j], addrs, 3, "--http", https[j])...)
				}()
			}
			var up time.Duration
			for {
				if time.Since(start) > formTimeout {
					t.Fatal("no cluster")
				}
				docs := make([]*node.ClusterStatus, 0, 3)
				for _, h := range https {
					var cs *node.ClusterStatus
					st, err := httpStatus(h)
					if err == nil {
						cs = st.Cluster
					}
					if cs != nil {
						docs = append(docs, cs)
					}
				}
				if len(docs) == 3 && up == 0 {
					up = time.Since(start)
				}
				if len(docs) == 3 && docs[0].ClusterID != "" && docs[0].Revision != 0 &&
					docs[1].ClusterID == docs[0].ClusterID && docs[2].ClusterID == docs[0].ClusterID &&
					docs[1].Revision == docs[0].Revision && docs[2].Revision == docs[0].Revision {
					formedAt = append(formedAt, time.Since(start))
					served = append(served, up)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			wg.Wait()
			t.Logf("run %d: all three serving /status after %v, map on all three after %v (load %s)", i, up, formedAt[len(formedAt)-1], loadavg())
		})
	}
	if len(formedAt) > 0 {
		lo, med, hi, _, _ := spread(formedAt)
		slo, smed, shi, _, _ := spread(served)
		t.Logf("FIGURE cold start to a map on all three, %d runs: min %s, median %s, max %s (of which the processes serving /status: %s / %s / %s)",
			len(formedAt), ms(lo), ms(med), ms(hi), ms(slo), ms(smed), ms(shi))
	}

	// 2. Failover: kill -9 of the leader; the survivors' /status polled
	// every 10 ms: when one of them is leader, and when both name it. The
	// killed node is restarted and the cluster waited for between runs.
	t.Run("failover", func(t *testing.T) {
		nodes, docs := startCluster(t, 3)
		var elected, agreed []time.Duration
		for run := range failoverRuns {
			leader, followers := leaderOf(t, nodes, docs)
			old := ""
			for i, n := range nodes {
				if n == leader {
					old = docs[i].Self
				}
			}
			killed := time.Now()
			leader.Kill()
			var e time.Duration
			for {
				if time.Since(killed) > 60*time.Second {
					t.Fatal("no new leader")
				}
				var names []string
				for _, f := range followers {
					cs, err := clusterStatus(f)
					if err != nil {
						continue
					}
					if cs.RaftState == "leader" && e == 0 {
						e = time.Since(killed)
					}
					names = append(names, cs.Leader)
				}
				if e != 0 && len(names) == 2 && names[0] == names[1] && names[0] != old && names[0] != "" {
					elected, agreed = append(elected, e), append(agreed, time.Since(killed))
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("run %d: a survivor leads after %v, both name it after %v (load %s)", run, e, agreed[len(agreed)-1], loadavg())
			for i, n := range nodes {
				if n == leader {
					nodes[i] = restart(t, leader)
				}
			}
			docs = waitCluster(t, nodes, 60*time.Second)
		}
		lo, med, hi, _, _ := spread(elected)
		alo, amed, ahi, _, _ := spread(agreed)
		t.Logf("FIGURE failover, %d runs: kill -9 of the leader to a survivor in raft state leader: min %s, median %s, max %s; to both survivors naming it: %s / %s / %s",
			len(elected), ms(lo), ms(med), ms(hi), ms(alo), ms(amed), ms(ahi))
	})

	// 2b. Manual failover: kill -9 of a follower, then Failover through the
	// leader at once (it waits out the killed node's lease, up to the
	// failover timeout), then writes to a key of a failed-over vBucket on its
	// new active until one succeeds. A fresh cluster each run.
	t.Run("manual-failover", func(t *testing.T) {
		var calls, writes []time.Duration
		for run := range 3 {
			nodes, docs := startCluster(t, 3)
			leader, followers := leaderOf(t, nodes, docs)
			victim := followers[0]
			var vid string
			addrOf := map[string]string{}
			for i, n := range nodes {
				addrOf[docs[i].Self] = n.Addr
				if n == victim {
					vid = docs[i].Self
				}
			}
			_, m := clusterMap(t, leader.Addr)
			key := ""
			for i := 0; key == ""; i++ {
				if k := fmt.Sprintf("k%d", i); m.Active(vbucket.Of([]byte(k), clusterVBuckets)) == vid {
					key = k
				}
			}
			lc := dialShort(t, leader.Addr)
			victim.Kill()
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := lc.Failover(ctx, vid, false)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			called := time.Since(start)
			_, after := clusterMap(t, leader.Addr)
			nc := dialShort(t, addrOf[after.Active(vbucket.Of([]byte(key), clusterVBuckets))])
			for {
				if _, err := nc.Put(context.Background(), "fo", []byte(key), []byte("v")); err == nil {
					break
				}
				if time.Since(start) > 30*time.Second {
					t.Fatal("no write to the failed-over vbucket within 30 s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			wrote := time.Since(start)
			calls, writes = append(calls, called), append(writes, wrote)
			t.Logf("run %d: failover answered after %v (%d vbuckets promoted), first write after %v (load %s)", run, called, res.Promoted, wrote, loadavg())
			for _, n := range nodes {
				if n != victim {
					n.Stop()
				}
			}
		}
		lo, med, hi, _, _ := spread(calls)
		wlo, wmed, whi, _, _ := spread(writes)
		t.Logf("FIGURE manual failover right after kill -9 of a follower, %d runs: failover answered min %s, median %s, max %s (it waits out the node's lease, the 5 s failover timeout); first write to a failed-over vbucket %s / %s / %s",
			len(calls), ms(lo), ms(med), ms(hi), ms(wlo), ms(wmed), ms(whi))
	})

	// 3. One metadata commit: new queue channels created one after another
	// by a first push, through a follower and through the leader; pushes
	// to an existing channel for comparison.
	t.Run("commit", func(t *testing.T) {
		nodes, docs := startCluster(t, 3)
		leader, followers := leaderOf(t, nodes, docs)
		for _, path := range []struct {
			name string
			n    *testproc.Node
		}{{"leader", leader}, {"follower", followers[0]}} {
			c := dialNode(t, path.n.Addr)
			ctx := context.Background()
			measure := func(channel func(i int) string) []time.Duration {
				ds := make([]time.Duration, channels)
				for i := range channels {
					s := time.Now()
					if err := c.Push(ctx, []string{channel(i)}, []byte("x")); err != nil {
						t.Fatal(err)
					}
					ds[i] = time.Since(s)
				}
				return ds
			}
			created := measure(func(i int) string { return fmt.Sprintf("%s-%d", path.name, i) })
			existing := measure(func(int) string { return path.name + "-1" })
			_, med, hi, mean, p99 := spread(created)
			_, emed, _, emean, ep99 := spread(existing)
			t.Logf("FIGURE %d new channels through the %s: mean %s, median %s, p99 %s, max %s; a push to an existing channel: mean %s, median %s, p99 %s (load %s)",
				channels, path.name, ms(mean), ms(med), ms(p99), ms(hi), ms(emean), ms(emed), ms(ep99), loadavg())
		}
		st, err := nodeStatus(dialNode(t, leader.Addr), false)
		if err == nil {
			t.Logf("the leader's cluster index after the creations: %d", st.Cluster.Index)
		}
	})
	t.Logf("load average at the end: %s", loadavg())
}
