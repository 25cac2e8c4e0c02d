package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"shoal/client"
	"shoal/internal/testproc"
)

var (
	chaosDuration = flag.Duration("chaos.duration", 15*time.Second, "how long the clients run under faults (the CI pass is the default)")
	chaosSeed     = flag.Uint64("chaos.seed", 1, "seed of the fault schedule and the clients' choices")
	chaosLevel    = flag.String("chaos.durability", "majority", "durability of the clients' writes: majority (loss fails the run) or none (loss is counted)")
	chaosReport   = flag.String("chaos.report", "", "directory for the report (default: a temporary one, kept on a violation)")
	chaosNodes    = flag.Int("chaos.nodes", 3, "shoald processes in the cluster")
	chaosReplicas = flag.Int("chaos.replicas", 1, "replicas of every vBucket (--replicas), below -chaos.nodes")
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	testproc.Cleanup()
	os.Exit(code)
}

// Workload sizes: few keys, so that operations collide.
const (
	kvClients  = 4
	setClients = 2
	kvKeys     = 5
	opTimeout  = 4 * time.Second
	durTimeout = 2 * time.Second
)

// run is one harness run's records.
type run struct {
	hist  *History
	tl    *Timeline
	mu    sync.Mutex
	acked []string // set keys acknowledged
	unk   []string // set keys with no definite answer
	stats map[string]int
}

func (r *run) count(what string) {
	r.mu.Lock()
	r.stats[what]++
	r.mu.Unlock()
}

// outcome classifies a write's error: ok, a definite refusal (not applied:
// dropped from the history) or indeterminate.
func outcome(err error) (out int, definite bool) {
	switch {
	case err == nil:
		return OutOK, true
	case errors.Is(err, client.ErrExists):
		return OutMismatch, true
	case errors.Is(err, client.ErrNotFound):
		return OutNotFound, true
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrNotMyVBucket),
		errors.Is(err, client.ErrSyncWriteInProgress), errors.Is(err, client.ErrBadRequest), errors.Is(err, client.ErrUnsupported):
		return -1, true // refused: not applied
	}
	return OutUnknown, false
}

// kvClient runs put/get/CAS on the shared keys until ctx ends.
func (r *run) kvClient(ctx context.Context, id int, c *client.Client, rng *rand.Rand) {
	n := 0
	for ctx.Err() == nil {
		key := fmt.Sprintf("k%d", rng.IntN(kvKeys))
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		switch p := rng.IntN(10); {
		case p < 4:
			n++
			v := fmt.Sprintf("c%d-%d", id, n)
			call := r.hist.Now()
			_, err := c.Put(octx, "reg", []byte(key), []byte(v))
			r.record(id, Input{Kind: OpPut, Key: key, Value: v}, call, err, "")
		default:
			call := r.hist.Now()
			got, cas, err := c.Gets(octx, "reg", []byte(key))
			ret := r.hist.Now()
			switch {
			case err == nil:
				r.hist.Add(Op{Client: id, In: Input{Kind: OpGet, Key: key}, Out: Output{Outcome: OutOK, Value: string(got)}, Call: call, Return: ret})
			case errors.Is(err, client.ErrNotFound):
				r.hist.Add(Op{Client: id, In: Input{Kind: OpGet, Key: key}, Out: Output{Outcome: OutNotFound}, Call: call, Return: ret})
			default:
				r.count("get failed")
			}
			r.count("get")
			if err != nil || p < 7 {
				break
			}
			n++
			v := fmt.Sprintf("c%d-%d", id, n)
			call = r.hist.Now()
			_, err = c.Update(octx, "reg", []byte(key), []byte(v), cas)
			r.record(id, Input{Kind: OpCAS, Key: key, Value: v, Expect: string(got)}, call, err, "")
		}
		cancel()
	}
}

// record adds a write to the history by its error.
func (r *run) record(id int, in Input, call int64, err error, _ string) {
	out, definite := outcome(err)
	kind := [...]string{"put", "get", "cas"}[in.Kind]
	switch {
	case out == -1:
		r.count(kind + " refused")
		return
	case !definite:
		r.count(kind + " indeterminate")
	default:
		r.count(kind)
	}
	r.hist.Add(Op{Client: id, In: in, Out: Output{Outcome: out}, Call: call, Return: r.hist.Now()})
}

// setClient writes keys once each (Jepsen's set) until ctx ends.
func (r *run) setClient(ctx context.Context, id int, c *client.Client) {
	for n := 0; ctx.Err() == nil; n++ {
		key := fmt.Sprintf("s%d-%d", id, n)
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := c.Put(octx, "set", []byte(key), []byte("x"))
		cancel()
		out, definite := outcome(err)
		r.mu.Lock()
		switch {
		case out == OutOK:
			r.acked = append(r.acked, key)
		case !definite:
			r.unk = append(r.unk, key)
		}
		r.mu.Unlock()
	}
}

// fault is one kind of the schedule.
type fault struct {
	name string
	do   func(ctx context.Context, c *cluster, rng *rand.Rand)
}

var faults = []fault{
	{"kill -9 and restart", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		i := rng.IntN(len(c.nodes))
		c.tl.Add("kill -9 %s", c.ids[i])
		c.kill(i)
		if c.waitFailedOver(i, 20*time.Second) {
			c.tl.Add("%s failed over", c.ids[i])
		} else {
			c.tl.Add("%s NOT failed over within 20s", c.ids[i])
		}
	}},
	{"kill -9 and restart at once", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		// Back before a failover, with its last dump's kv: it must hand
		// the vBuckets its replicas hold more of to them, not serve them.
		i := rng.IntN(len(c.nodes))
		c.tl.Add("kill -9 %s and restart it at once", c.ids[i])
		c.kill(i)
		c.restart(i)
		c.tl.Add("restarted %s", c.ids[i])
	}},
	{"kill -9 the leader", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		i := c.leader()
		if i < 0 {
			i = rng.IntN(len(c.nodes))
		}
		c.tl.Add("kill -9 the leader %s", c.ids[i])
		c.kill(i)
		if c.waitFailedOver(i, 20*time.Second) {
			c.tl.Add("%s failed over", c.ids[i])
		} else {
			c.tl.Add("%s NOT failed over within 20s", c.ids[i])
		}
	}},
	{"SIGSTOP, SIGCONT", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		i := rng.IntN(len(c.nodes))
		d := []time.Duration{500 * time.Millisecond, 2500 * time.Millisecond}[rng.IntN(2)]
		c.tl.Add("SIGSTOP %s for %v", c.ids[i], d)
		c.stop(i)
		time.Sleep(d)
		c.cont(i)
		c.tl.Add("SIGCONT %s", c.ids[i])
	}},
	{"partition (inbound frozen)", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		i := rng.IntN(len(c.nodes))
		c.tl.Add("freeze every link into %s (peers and clients cannot reach it; it can reach them)", c.ids[i])
		c.proxies[i].Freeze()
		time.Sleep(2 * time.Second)
		c.proxies[i].Thaw()
		c.tl.Add("thaw %s", c.ids[i])
	}},
	{"slow links", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		i := rng.IntN(len(c.nodes))
		d := time.Duration(20+rng.IntN(80)) * time.Millisecond
		c.tl.Add("slow links into %s: %v each way for 3s", c.ids[i], d)
		c.proxies[i].SetLatency(d)
		time.Sleep(3 * time.Second)
		c.proxies[i].SetLatency(0)
		c.tl.Add("links into %s fast again", c.ids[i])
	}},
	{"one-way partition", func(ctx context.Context, c *cluster, rng *rand.Rand) {
		i := rng.IntN(len(c.nodes))
		c.tl.Add("one-way: nothing sent to %s arrives, its answers do", c.ids[i])
		c.proxies[i].FreezeToTarget()
		time.Sleep(2 * time.Second)
		c.proxies[i].Thaw()
		c.tl.Add("thaw %s", c.ids[i])
	}},
}

// harness runs the workload under the seeded schedule for d and checks
// the history; it returns the verdicts' summary and whether they hold.
func harness(t *testing.T, d time.Duration, seed uint64, level client.Durability, report string) (summary string, lost int, illegal bool) {
	start := time.Now()
	r := &run{hist: NewHistory(), stats: map[string]int{}}
	r.tl = NewTimeline(start, os.Stdout)
	r.tl.Add("seed %d, durability %v, duration %v, %d nodes, %d replicas, report %s", seed, level, d, *chaosNodes, *chaosReplicas, report)
	if *chaosNodes < 2 || *chaosReplicas < 1 || *chaosReplicas >= *chaosNodes {
		t.Fatalf("-chaos.nodes %d -chaos.replicas %d: want at least 2 nodes and 1 to nodes-1 replicas", *chaosNodes, *chaosReplicas)
	}
	c := startCluster(t, r.tl, *chaosNodes, *chaosReplicas)
	rng := rand.New(rand.NewPCG(seed, 0xc4a05))
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i := range kvClients + setClients {
		cl, err := client.Dial(t.Context(), c.seeds(), client.WithDefaultDurability(level, durTimeout), client.WithTimeout(opTimeout))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		crng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i < kvClients {
				r.kvClient(ctx, i, cl, crng)
			} else {
				r.setClient(ctx, i, cl)
			}
		}()
	}
	ql := newQueueLog()
	qc, err := client.Dial(t.Context(), c.seeds(), client.WithTimeout(opTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	for _, fn := range []func(){
		func() { ql.pusher(ctx, 0, qc, level) },
		func() { ql.popper(ctx, qc, level) },
		func() { ql.appender(ctx, 0, qc, level) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	byKind := map[string]int{}
	deadline := start.Add(d)
	// Every kind once per round, in an order the seed shuffles, so that
	// even the short pass sees kills, stops and partitions.
	order := rng.Perm(len(faults))
	for k := 0; time.Now().Before(deadline); k++ {
		time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
		f := faults[order[k%len(order)]]
		byKind[f.name]++
		f.do(ctx, c, rng)
		c.heal(t.Context())
	}
	stop()
	wg.Wait()
	r.tl.Add("clients stopped")
	c.heal(t.Context())

	// Final reads: every register once more, every set key.
	fc, err := client.Dial(t.Context(), c.seeds(), client.WithTimeout(opTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	for k := range kvKeys {
		key := fmt.Sprintf("k%d", k)
		for attempt := 0; ; attempt++ {
			call := r.hist.Now()
			got, err := fc.Get(t.Context(), "reg", []byte(key))
			ret := r.hist.Now()
			if err == nil || errors.Is(err, client.ErrNotFound) {
				o := Output{Outcome: OutOK, Value: string(got)}
				if err != nil {
					o = Output{Outcome: OutNotFound}
				}
				r.hist.Add(Op{Client: kvClients + setClients, In: Input{Kind: OpGet, Key: key}, Out: o, Call: call, Return: ret})
				break
			}
			if attempt == 20 {
				t.Fatalf("final read of %s: %v", key, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	present := map[string]bool{}
	for _, key := range append(append([]string(nil), r.acked...), r.unk...) {
		for attempt := 0; ; attempt++ {
			_, err := fc.Get(t.Context(), "set", []byte(key))
			if err == nil {
				present[key] = true
				break
			}
			if errors.Is(err, client.ErrNotFound) {
				break
			}
			if attempt == 20 {
				t.Fatalf("final read of %s: %v", key, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	set := CheckSet(r.acked, r.unk, present)
	push, app, dup := ql.finish(t, fc)
	ops := r.hist.Ops()
	html := filepath.Join(report, "linearizability.html")
	if err := os.MkdirAll(report, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := Linearizable(ops, 2*time.Minute, html)
	if err != nil {
		t.Error(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, durability %v, %d nodes, %d replicas, ran %v of faults (%v in all)\n", seed, level, *chaosNodes, *chaosReplicas, d, time.Since(start).Round(time.Second))
	fmt.Fprintf(&b, "faults injected: %v\n", byKind)
	fmt.Fprintf(&b, "failovers (nodes failed over, then recovered): %d\n", c.failovers)
	fmt.Fprintf(&b, "kv operations checked: %d (%v)\n", len(ops), r.stats)
	fmt.Fprintf(&b, "linearizability per key: %v\n", res)
	fmt.Fprintf(&b, "set: %d acknowledged, %d found, %d lost %v; %d indeterminate, %d of them found\n",
		set.Acknowledged, set.Found, len(set.Lost), firstN(set.Lost, 10), set.Unknown, set.UnknownFound)
	// Each durable pop whose answer was lost may have taken one of the
	// missing records: only what is missing beyond them is lost.
	pushLost := max(len(push.Lost)-ql.popsGone, 0)
	fmt.Fprintf(&b, "queue: %d pushes acknowledged, %d missing %v, %d indeterminate (%d of them popped); %d durable pops lost their answer (each may have taken a record: %d missing pushes left unexplained); %d records popped more than once, %d of them after an acknowledged durable pop %v; %d pops ambiguous with their value, %d failed (first: %s)\n",
		push.Acknowledged, len(push.Lost), firstN(push.Lost, 10), push.Unknown, push.UnknownFound, ql.popsGone, pushLost, dup, len(ql.repopped), firstN(ql.repopped, 10), ql.popsUnk, ql.popsFailed, ql.popErr)
	fmt.Fprintf(&b, "log: %d appends acknowledged, %d lost %v, %d indeterminate (%d of them found)\n",
		app.Acknowledged, len(app.Lost), firstN(app.Lost, 10), app.Unknown, app.UnknownFound)
	if set.Acknowledged > 0 {
		fmt.Fprintf(&b, "loss rate of acknowledged writes: %.4f%%\n", 100*float64(len(set.Lost))/float64(set.Acknowledged))
	}
	summary = b.String()
	if err := WriteReport(report, summary, r.tl); err != nil {
		t.Error(err)
	}
	// A record popped again after an acknowledged durable pop counts as a
	// lost write: the pop was.
	return summary, len(set.Lost) + pushLost + len(app.Lost) + len(ql.repopped), res == porcupine.Illegal
}

func firstN(s []string, n int) []string { return s[:min(n, len(s))] }

func reportDir(t *testing.T) string {
	if *chaosReport != "" {
		return *chaosReport
	}
	dir, err := os.MkdirTemp("", "shoal-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestChaos: the harness on the real code. With majority no acknowledged
// write may be lost and every key's history must be linearizable; with
// none the loss is counted and reported.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos harness starts processes")
	}
	level, err := client.ParseDurability(*chaosLevel)
	if err != nil {
		t.Fatal(err)
	}
	report := reportDir(t)
	summary, lost, illegal := harness(t, *chaosDuration, *chaosSeed, level, report)
	t.Logf("verdicts:\n%s", summary)
	if level == client.None {
		t.Logf("durability none: %d acknowledged writes lost (counted, not a failure); report in %s", lost, report)
		return
	}
	if lost > 0 || illegal {
		t.Fatalf("violation (lost %d, linearizable %v): report in %s", lost, !illegal, report)
	}
	if *chaosReport == "" {
		os.RemoveAll(report)
	}
}
