package node

import (
	"testing"
	"time"
)

func TestLeaderUnasked(t *testing.T) {
	now := time.Unix(1000, 0)
	lease := time.Second
	voters := []string{"a", "b", "c"}
	held := map[string]time.Time{"b": now.Add(time.Millisecond)}
	none := map[string]time.Time{"b": now.Add(-time.Millisecond), "c": now}
	long := now.Add(-3 * lease)
	for _, c := range []struct {
		name           string
		since, lastTry time.Time
		voters         []string
		grants         map[string]time.Time
		want           bool
	}{
		{"a majority holds leases", long, time.Time{}, voters, held, false},
		{"nobody asked for a lease", long, time.Time{}, voters, none, true},
		{"not leader for three leases yet", now.Add(-3*lease + time.Millisecond), time.Time{}, voters, none, false},
		{"handed over lately", long, now.Add(-lease), voters, none, false},
		{"the only voter", long, time.Time{}, []string{"a"}, nil, false},
		{"never the leader", time.Time{}, time.Time{}, voters, none, false},
		{"two of five", long, time.Time{}, []string{"a", "b", "c", "d", "e"}, held, true},
	} {
		if got := leaderUnasked(now, c.since, c.lastTry, lease, "a", c.voters, c.grants); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestOneWayPartitionOfTheLeader: the metadata leader can send but not
// receive (faultnet holds everything sent to it). raft still confirms it
// (it dials its followers, whose answers come back on its connections),
// but no member can reach it for a lease: it hands the leadership over,
// a new leader is elected by the two others, and the old one, now fenced
// and unreachable, is failed over; its vBuckets take writes again.
func TestOneWayPartitionOfTheLeader(t *testing.T) {
	pc := startPartitionCaseOf(t, true, "--auto-failover")
	x, iso, key, nodes, proxies := pc.x, pc.iso, pc.key, pc.nodes, pc.proxies
	proxies[x].FreezeToTarget()
	defer proxies[x].Thaw()
	start := time.Now()
	other := nodes[(x+1)%3]
	waitFor(t, 30*time.Second, "the partitioned leader handed over and failed over", func() (bool, string) {
		cs := other.clusterStatus()
		for _, m := range cs.Nodes {
			if m.ID == iso.cfg.NodeID {
				return m.State == "failed" && cs.Leader != iso.cfg.NodeID, "leader " + cs.Leader + ", " + m.State
			}
		}
		return false, "not listed"
	})
	t.Logf("the one-way partitioned leader was replaced and failed over %v after the partition", time.Since(start).Round(time.Millisecond))
	writeThrough(t, other, key)
}
