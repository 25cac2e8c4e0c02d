package chaos

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/repl"
)

// TestChaosCatchesPlantedBug: a checker that cannot fail is worth nothing.
// With the durability-skip-wait failpoint every node answers majority
// writes without waiting for its replicas, and the replicas apply slowly
// (repl-apply-delay), so a kill -9 of a node and the failover that follows
// lose acknowledged writes: the set check must report them.
//
// The same scenario without the planted bug is the control: the replicas
// are as slow, the writes wait for them, and nothing is lost.
func TestChaosCatchesPlantedBug(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos harness starts processes")
	}
	t.Run("planted", func(t *testing.T) {
		set := killDuringWrites(t, "durability-skip-wait,repl-apply-delay=20ms")
		if len(set.Lost) == 0 {
			t.Fatal("the checker found no lost write with the ack wait disabled")
		}
	})
	t.Run("control", func(t *testing.T) {
		set := killDuringWrites(t, "repl-apply-delay=20ms")
		if len(set.Lost) != 0 || set.Acknowledged == 0 {
			t.Fatalf("majority writes: %d acknowledged, %d lost", set.Acknowledged, len(set.Lost))
		}
	})
}

// killDuringWrites runs three set writers with majority durability on a
// cluster started with the failpoints, kills a node that is not the
// leader while they write, waits for its failover and reads every
// acknowledged key back from the survivors.
func killDuringWrites(t *testing.T, failpoints string) SetResult {
	t.Setenv(repl.FailpointsEnv, failpoints)
	tl := NewTimeline(time.Now(), os.Stdout)
	tl.Add("%s=%s", repl.FailpointsEnv, failpoints)
	c := startCluster(t, tl, 3, 1)
	r := &run{hist: NewHistory(), tl: tl, stats: map[string]int{}}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i := range 3 {
		cl, err := client.Dial(t.Context(), c.seeds(), client.WithDefaultDurability(client.Majority, durTimeout), client.WithTimeout(opTimeout))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		wg.Add(1)
		go func() { defer wg.Done(); r.setClient(ctx, i, cl) }()
	}
	time.Sleep(2 * time.Second)
	victim := (c.leader() + 1) % len(c.nodes)
	tl.Add("kill -9 %s (acknowledged writes it has not replicated yet)", c.ids[victim])
	c.kill(victim)
	if !c.waitFailedOver(victim, 30*time.Second) {
		t.Fatalf("%s not failed over\n%s", c.ids[victim], tl)
	}
	tl.Add("%s failed over", c.ids[victim])
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	fc, err := client.Dial(t.Context(), c.seeds(), client.WithTimeout(opTimeout))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	present := map[string]bool{}
	for _, key := range r.acked {
		for attempt := 0; ; attempt++ {
			_, err := fc.Get(t.Context(), "set", []byte(key))
			if err == nil {
				present[key] = true
				break
			}
			if errors.Is(err, client.ErrNotFound) {
				break
			}
			if attempt == 40 {
				t.Fatalf("final read of %s: %v", key, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	set := CheckSet(r.acked, r.unk, present)
	t.Logf("%s: %d acknowledged, %d lost (e.g. %v); %d indeterminate", failpoints, set.Acknowledged, len(set.Lost), firstN(set.Lost, 5), set.Unknown)
	return set
}
