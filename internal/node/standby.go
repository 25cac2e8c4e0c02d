package node

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"shoal/internal/auth"
	"shoal/internal/repl"
	"shoal/internal/server"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

// promotedFile, under DATA/repl, marks a node promoted from standby to
// active: it then refuses to start as a standby (its data has moved on
// from the old active's).
const promotedFile = "promoted"

// standby is what a node started with --replica-of remembers: a standby
// applies a two-node map whose first node is the active (named by its
// address: a standby does not know the active's id) and whose second is
// itself, holding every vBucket as a replica. Promotion applies the next
// revision, in which the node is active for every vBucket.
type standby struct {
	replicaOf    string // the active's address while a standby
	promotedFrom string // the active it followed, after a promotion
}

// standbyMap is the map of a standby of the node at addr: every chain is
// [addr, self].
func standbyMap(self, addr string, vbuckets int) *vbmap.Map {
	chains := make([][]string, vbuckets)
	for vb := range chains {
		chains[vb] = []string{addr, self}
	}
	return (*vbmap.Map)(nil).Next(1, 1, chains)
}

// setupStandby makes the node a standby replica of cfg.ReplicaOf: it
// applies the standby map, whose feeds (one Replicator per engine over
// every vBucket) start with Run.
func (n *Node) setupStandby() error {
	rp := n.rep
	marker := filepath.Join(rp.dir, promotedFile)
	if _, err := os.Stat(marker); err == nil {
		return fmt.Errorf("this node was promoted from standby to active (%s exists): start it without --replica-of, or delete that file to make it a replica again (its data is then replaced by the active's)", marker)
	}
	var secret []byte
	if n.cfg.ReplicaUser != "" {
		var err error
		if secret, err = auth.LoadSecret(n.cfg.ReplicaSecretFile); err != nil {
			return fmt.Errorf("replica-secret-file: %w", err)
		}
	}
	hook, err := repl.ApplyFailpoint(os.Getenv(repl.FailpointsEnv))
	if err != nil {
		return err
	}
	if hook != nil {
		n.log.Warn("test failpoint armed", "env", repl.FailpointsEnv, "value", os.Getenv(repl.FailpointsEnv))
	}
	handshake := repl.Handshake(n.cfg.NodeID, n.cfg.ReplicaUser, secret, n.cfg.VBuckets)
	rp.newReplicator = func(b repl.Bucket, addr string, vbs []uint16, o repl.Options) (*repl.Replicator, error) {
		return repl.New(repl.Config{
			Name: n.cfg.NodeID, Addr: addr, Bucket: b.Name, Engine: cataloged{b.Engine, n.cat}, Logs: b.Logs, VBuckets: vbs,
			Options: o, Handshake: handshake, Spy: rp.spy, ApplyHook: hook, Logger: n.replLogger(),
		})
	}
	n.standby = standby{replicaOf: n.cfg.ReplicaOf}
	addr := n.cfg.ReplicaOf
	return n.applyMap(standbyMap(n.cfg.NodeID, addr, n.cfg.VBuckets), map[string]string{addr: addr})
}

// promote turns a standby into an active node by applying the next map
// revision, in which it is active for every vBucket: replication stops,
// every vBucket of every engine starts a new history at its high seqno,
// the kv engine expires records again, and writes are accepted. It is
// all or nothing: when a step fails the node stays a standby and
// replicates on.
func (n *Node) promote() error {
	n.promoting.Lock()
	defer n.promoting.Unlock()
	sb := n.standbyState()
	if sb.replicaOf == "" {
		return server.ErrNotStandby
	}
	marker := filepath.Join(n.rep.dir, promotedFile)
	text := fmt.Sprintf("promoted at %s; was a replica of %s\n", time.Now().UTC().Format(time.RFC3339), sb.replicaOf)
	if err := vfs.WriteFileAtomic(vfs.Default, marker, []byte(text), 0o644); err != nil {
		return fmt.Errorf("cannot write the promotion marker: %w", err)
	}
	cur := n.table().Map()
	next := cur.Next(cur.Revision+1, cur.Replicas, vbmap.Solo(n.cfg.NodeID, n.cfg.VBuckets).Chains())
	if err := n.applyMap(next, nil); err != nil {
		if rerr := os.Remove(marker); rerr != nil {
			n.log.Error("cannot remove the promotion marker after a failed promotion: delete it before restarting as a standby", "file", marker, "err", rerr)
		}
		return fmt.Errorf("promotion failed, still a standby of %s: %w", sb.replicaOf, err)
	}
	n.standbyMu.Lock()
	n.standby = standby{promotedFrom: sb.replicaOf}
	n.standbyMu.Unlock()
	n.log.Warn("promoted: this node is now active and accepts writes", "was_replica_of", sb.replicaOf)
	return nil
}

func (n *Node) standbyState() standby {
	n.standbyMu.Lock()
	defer n.standbyMu.Unlock()
	return n.standby
}

// standbyStatus is the standby part of the replication status.
func (n *Node) standbyStatus() ReplicationStatus {
	sb := n.standbyState()
	st := ReplicationStatus{Role: "active", ReplicaOf: sb.replicaOf, PromotedFrom: sb.promotedFrom}
	if sb.replicaOf != "" {
		st.Role = "replica"
	}
	return st
}
