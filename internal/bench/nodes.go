package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"
)

// NodeCounter is a Target made of nodes that count what they answer (a
// shoal cluster). Run reads the counters when the measured time starts and
// when it ends, and reports each node's share.
type NodeCounter interface {
	// NodeCounts returns every node's counters, keyed by its address.
	NodeCounts(ctx context.Context) (map[string]NodeCount, error)
}

// NodeCount is what one node has done since it started.
type NodeCount struct {
	Requests   uint64  // requests answered, every kind
	CPUSeconds float64 // user and system CPU time of its process
}

// NodeResult is one node's part of a run: every request it answered in the
// measured time (its own traffic included: the cluster's metadata, other
// clients) and the CPU time its process used meanwhile.
type NodeResult struct {
	Addr      string  `json:"addr"`
	Requests  int64   `json:"requests"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// CPUMicrosPerRequest is the node's CPU time over the requests it
	// answered; 0 when the node does not report its CPU time.
	CPUMicrosPerRequest float64 `json:"cpu_us_per_request"`
}

// nodeCountTimeout bounds each reading of the nodes' counters.
const nodeCountTimeout = 5 * time.Second

// readNodeCounts reads the counters of t when it has them; nil otherwise or
// on error (a run's figures do not depend on them).
func readNodeCounts(ctx context.Context, t Target) map[string]NodeCount {
	nc, ok := t.(NodeCounter)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, nodeCountTimeout)
	defer cancel()
	m, err := nc.NodeCounts(ctx)
	if err != nil {
		return nil
	}
	return m
}

// nodeResults is every node's share between the readings before and after
// (nodes seen in both), by address.
func nodeResults(before, after map[string]NodeCount, seconds float64) []NodeResult {
	var out []NodeResult
	for addr, a := range after {
		b, ok := before[addr]
		if !ok || a.Requests < b.Requests {
			continue
		}
		n := NodeResult{Addr: addr, Requests: int64(a.Requests - b.Requests)}
		if seconds > 0 {
			n.OpsPerSec = float64(n.Requests) / seconds
		}
		if n.Requests > 0 && a.CPUSeconds > b.CPUSeconds {
			n.CPUMicrosPerRequest = (a.CPUSeconds - b.CPUSeconds) * 1e6 / float64(n.Requests)
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// writeNodes writes one line per node for people.
func writeNodes(w io.Writer, nodes []NodeResult) error {
	for _, n := range nodes {
		cpu := "CPU n/a"
		if n.CPUMicrosPerRequest > 0 {
			cpu = fmt.Sprintf("CPU %.2f µs/request", n.CPUMicrosPerRequest)
		}
		if _, err := fmt.Fprintf(w, "node      %s: %s ops/s (%d requests), %s\n", n.Addr, thousands(int64(n.OpsPerSec)), n.Requests, cpu); err != nil {
			return err
		}
	}
	return nil
}
