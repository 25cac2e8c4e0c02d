package node

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"shoal/internal/failover"
	"shoal/internal/meta"
	"shoal/internal/server"
	"shoal/internal/wire"
)

// FailoverResult is the answer of `shoal failover` and `shoal recover`.
type FailoverResult struct {
	// Node is the node failed over (or recovered) and Revision the map's
	// revision that did it.
	Node     string `json:"node"`
	Revision uint64 `json:"revision"`
	// Promoted counts the vBuckets whose active moved to a survivor.
	Promoted int `json:"promoted,omitempty"`
	// Lost are the vBuckets that had no surviving copy (only with force):
	// they start empty on a survivor.
	Lost []uint16 `json:"lost,omitempty"`
	// Survivors answered with their seqnos; Unanswered did not (their
	// copies were not candidates).
	Survivors  []string `json:"survivors,omitempty"`
	Unanswered []string `json:"unanswered,omitempty"`
	// Replicas counts the chains the recovered node now completes.
	Replicas int `json:"replicas,omitempty"`
	// Note says what comes next.
	Note string `json:"note"`
}

// member resolves a node named by id or data address.
func member(st *meta.State, ref string) (meta.Node, error) {
	if m, ok := st.Node(ref); ok {
		return m, nil
	}
	for _, m := range st.Nodes {
		if m.Addr == ref {
			return m, nil
		}
	}
	return meta.Node{}, fmt.Errorf("%w: %q is neither the id nor the address of a member", meta.ErrUnknownNode, ref)
}

// engineOrder is the order of the engines' seqnos handed to the plan.
var engineOrder = []string{"kv", "queue", "log"}

// failoverNode fails a member over (shoal failover): every survivor is
// asked for its copies' high seqnos, failover.Plan picks the new actives,
// and one raft command, whose premise the FSM checks again, commits the
// map and marks the node failed.
func (n *Node) failoverNode(ref string, force, auto bool) (*FailoverResult, error) {
	c := n.cluster
	st := c.known()
	if !st.Initialized() {
		return nil, fmt.Errorf("%w: this node is not in a cluster yet", meta.ErrNotInitialized)
	}
	target, err := member(st, ref)
	if err != nil {
		return nil, err
	}
	if target.ID == n.cfg.NodeID {
		return nil, fmt.Errorf("%w: %s is this node; run the failover against another member", meta.ErrBadCommand, target.ID)
	}
	if target.State == meta.Failed {
		return nil, fmt.Errorf("%w: %s is failed over already", meta.ErrBadCommand, target.ID)
	}
	var survivors []string
	for _, m := range st.Nodes {
		if m.ID != target.ID && m.State == meta.Active {
			survivors = append(survivors, m.ID)
		}
	}
	seqnos := n.survivorSeqnos(st, survivors)
	res := &FailoverResult{Node: target.ID}
	for _, id := range survivors {
		if _, ok := seqnos[id]; ok {
			res.Survivors = append(res.Survivors, id)
		} else {
			res.Unanswered = append(res.Unanswered, id)
		}
	}
	plan, err := failover.Plan(st.Map, target.ID, res.Survivors, func(node string, vb uint16) ([]uint64, bool) {
		per, ok := seqnos[node]
		if !ok {
			return nil, false
		}
		out := make([]uint64, len(engineOrder))
		for i, e := range engineOrder {
			if s := per[e]; int(vb) < len(s) {
				out[i] = s[vb]
			}
		}
		return out, true
	}, force)
	if err != nil {
		return nil, &forwardedError{sentinel: meta.ErrRefused, msg: err.Error()} // the plan's words, answered refused
	}
	// The leader first waits out the node's last lease (at most the failover
	// timeout): until then it may still be serving.
	ctx, cancel := context.WithTimeout(context.Background(), n.failoverTimeout()+proposeTimeout)
	defer cancel()
	idx, err := n.propose(ctx, &meta.Command{Op: meta.OpFailover, NodeID: target.ID, ExpectRevision: st.Map.Revision, Chains: plan.Chains, Auto: auto})
	if err != nil {
		return nil, err
	}
	res.Revision, res.Promoted, res.Lost = idx, len(plan.Promoted), plan.Lost
	res.Note = "its vBuckets have fewer copies until a rebalance places new replicas; if it comes back it serves nothing until `shoal recover` or a rebalance"
	n.log.Warn("node failed over", "node", target.ID, "revision", idx, "promoted", len(plan.Promoted), "lost", len(plan.Lost), "unanswered", res.Unanswered)
	return res, nil
}

// survivorSeqnos asks every survivor, in parallel and each within 2 s,
// for its high seqnos per engine and vBucket (this node answers from its
// own engines). Nodes that do not answer are absent.
func (n *Node) survivorSeqnos(st *meta.State, survivors []string) map[string]map[string][]uint64 {
	out := map[string]map[string][]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range survivors {
		if id == n.cfg.NodeID {
			doc := n.statusDoc(true)
			mu.Lock() // the answers of the survivors asked before may be arriving
			out[id] = doc.Replication.HighSeqnos
			mu.Unlock()
			continue
		}
		m, _ := st.Node(id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			b, err := n.cluster.peers.call(ctx, m.Addr, wire.OpStatus, []byte{1})
			if err != nil {
				n.log.Warn("a survivor did not answer the failover's seqno question", "node", id, "err", err)
				return
			}
			var doc struct {
				Replication struct {
					HighSeqnos map[string][]uint64 `json:"high_seqnos"`
				} `json:"replication"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				n.log.Warn("a survivor's status does not decode", "node", id, "err", err)
				return
			}
			mu.Lock()
			out[id] = doc.Replication.HighSeqnos
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// recoverNode makes a failed member active again (shoal recover): it
// becomes the last replica of the chains that are short of copies, and
// fills them by replication (rolling back what the new actives' histories
// do not hold first). It gets actives only from a rebalance.
func (n *Node) recoverNode(ref string) (*FailoverResult, error) {
	c := n.cluster
	st := c.known()
	if !st.Initialized() {
		return nil, fmt.Errorf("%w: this node is not in a cluster yet", meta.ErrNotInitialized)
	}
	target, err := member(st, ref)
	if err != nil {
		return nil, err
	}
	if target.State != meta.Failed {
		return nil, fmt.Errorf("%w: %s is %s; only a failed node is recovered", meta.ErrBadCommand, target.ID, target.State)
	}
	chains := failover.Recover(st.Map, target.ID)
	added := 0
	for vb, ch := range chains {
		if slices.Contains(ch, target.ID) && !slices.Contains(st.Map.VBuckets[vb].Chain, target.ID) {
			added++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), proposeTimeout)
	defer cancel()
	idx, err := n.propose(ctx, &meta.Command{Op: meta.OpRecover, NodeID: target.ID, ExpectRevision: st.Map.Revision, Chains: chains})
	if err != nil {
		return nil, err
	}
	n.log.Warn("node recovered", "node", target.ID, "revision", idx, "replica_vbuckets", added)
	return &FailoverResult{Node: target.ID, Revision: idx, Replicas: added,
		Note: "it is a replica of the vBuckets short of copies and catches up by replication; a rebalance gives it actives"}, nil
}

// failoverAdmin serves OpFailover and OpRecover (server.Failover).
type failoverAdmin struct{ n *Node }

// Failover implements server.Failover.
func (a failoverAdmin) Failover(node string, force bool) ([]byte, error) {
	start := time.Now()
	res, err := a.n.failoverNode(node, force, false)
	if err != nil {
		a.n.events.add("failover refused", node, err.Error())
		return nil, err
	}
	a.n.hist.failover.Observe(time.Since(start))
	a.n.auto.countManual()
	a.n.events.add("failover", res.Node, fmt.Sprintf("revision %d: %d vBuckets promoted, %d lost; %s", res.Revision, res.Promoted, len(res.Lost), res.Note))
	return json.Marshal(res)
}

// Heartbeat implements server.Failover.
func (a failoverAdmin) Heartbeat(hb server.Heartbeat) { a.n.receiveHeartbeat(hb) }

// FailoverSettings implements server.Failover.
func (a failoverAdmin) FailoverSettings(change []byte) ([]byte, error) {
	st, err := a.n.failoverSettings(change)
	if err != nil {
		return nil, err
	}
	return json.Marshal(st)
}

// RenewLease implements server.Failover.
func (a failoverAdmin) RenewLease(node string) (uint64, time.Duration, error) {
	return a.n.grantLease(node)
}

// Recover implements server.Failover.
func (a failoverAdmin) Recover(node string) ([]byte, error) {
	res, err := a.n.recoverNode(node)
	if err != nil {
		a.n.events.add("recover refused", node, err.Error())
		return nil, err
	}
	a.n.events.add("recover", res.Node, fmt.Sprintf("revision %d: replica of %d vBuckets", res.Revision, res.Replicas))
	return json.Marshal(res)
}
