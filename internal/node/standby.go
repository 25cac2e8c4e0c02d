package node

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
// every vBucket) start with Run. They dial the active as every peer
// connection does (TLS when the node has a certificate) and authenticate
// as --replica-user when it is given, else as the peer credential; they
// tell the active they are a standby, which it serves every vBucket it is
// active for although the standby is in none of its chains.
func (n *Node) setupStandby() error {
	rp := n.rep
	marker := filepath.Join(rp.dir, promotedFile)
	if _, err := os.Stat(marker); err == nil {
		return fmt.Errorf("this node was promoted from standby to active (%s exists): start it without --replica-of, or delete that file to make it a replica again (its data is then replaced by the active's)", marker)
	}
	if n.cfg.ReplicaUser != "" {
		secret, err := auth.LoadSecret(n.cfg.ReplicaSecretFile)
		if err != nil {
			return fmt.Errorf("replica-secret-file: %w", err)
		}
		rp.user, rp.secret = n.cfg.ReplicaUser, secret
	}
	rp.standby = true
	n.standby = standby{replicaOf: n.cfg.ReplicaOf}
	addr := n.cfg.ReplicaOf
	return n.applyMap(standbyMap(n.cfg.NodeID, addr, n.cfg.VBuckets), map[string]string{addr: addr})
}

// ErrActiveAlive refuses the promotion of a standby whose active still
// streams to it.
var ErrActiveAlive = fmt.Errorf("%w: the active is alive", server.ErrPromoteRefused)

// ErrStandbyBehind refuses the promotion of a standby that does not hold
// everything its active announced.
var ErrStandbyBehind = fmt.Errorf("%w: this standby is behind its active", server.ErrPromoteRefused)

// promote turns a standby into an active node by applying the next map
// revision, in which it is active for every vBucket: replication stops,
// every vBucket of every engine starts a new history at its high seqno,
// the kv engine expires records again, and writes are accepted. It is
// all or nothing: when a step fails the node stays a standby and
// replicates on.
//
// It is refused while the active still streams to the standby: both
// would then take writes, and a standby cannot fence its active (stop
// the active first; a network partition that hides a live active is not
// seen). It is refused while the standby is behind (a vBucket inside a
// snapshot, below its active's last announced high seqno, or never
// streamed since the standby started), naming the lag, unless force is
// set: the promoted node then lacks those mutations for good.
func (n *Node) promote(force bool) error {
	n.promoting.Lock()
	defer n.promoting.Unlock()
	sb := n.standbyState()
	if sb.replicaOf == "" {
		return server.ErrNotStandby
	}
	for _, r := range n.rep.replicators() {
		if st := r.Status(false); st.State == repl.StateStreaming {
			return fmt.Errorf("%w: %s streams to this standby (its %s engine): stop it before promoting, or both nodes take writes for every vbucket (a standby cannot fence its active)",
				ErrActiveAlive, sb.replicaOf, st.Bucket)
		}
	}
	if lag := n.rep.replicaLag(); lag != nil && lag.VBuckets > 0 {
		msg := lagText(lag)
		if !force {
			return fmt.Errorf("%w: %s; promoting now loses them (shoal promote --force accepts that)", ErrStandbyBehind, msg)
		}
		n.log.Warn("promoting a standby that is behind its active: these mutations are lost", "lag", msg)
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

// lagText describes a lag for people: per engine, the vBuckets behind,
// the seqnos and bytes missing, and those never streamed.
func lagText(l *ReplicaLag) string {
	var parts []string
	for _, b := range slices.Sorted(maps.Keys(l.PerEngine)) {
		e := l.PerEngine[b]
		p := fmt.Sprintf("%s: %d vbuckets behind by %d seqnos", b, e.VBuckets, e.Seqnos)
		if e.Bytes > 0 {
			p += fmt.Sprintf(" (%d bytes sent and not yet acknowledged)", e.Bytes)
		}
		if e.Unknown > 0 {
			p += fmt.Sprintf(", %d of them never streamed since the standby started", e.Unknown)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
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
