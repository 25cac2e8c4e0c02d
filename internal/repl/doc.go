// Package repl is replication on top of internal/stream, DCP-like and per
// vBucket: a Producer serves a node's engines to replicas, a Replicator
// keeps a replica of some vBuckets of one engine of a producer, and Logs
// are the per-vBucket failover logs both sides consult. Nothing here is a
// whole-node copy: a node runs one Replicator per producer node and
// engine over the vBuckets the map makes it a replica of (the standby
// replica of internal/node is one per engine over every vBucket), and
// changes their vBuckets with SetVBuckets when the map changes.
//
// # Chains
//
// A Producer given the node's map (ProducerConfig.Table) accepts a stream
// request only for a vBucket the node is active for, from a consumer in
// that vBucket's chain or from a standby (CheckChain); a refusal names the
// map revision and epoch, and the consumer asks again on the same session
// after a backoff of its own per vBucket (BackoffMin doubling to
// BackoffMax, reset when the vBucket starts): when a map commits, the
// nodes apply it one after the other, and a producer still applying the
// map that makes it the active refuses the new replica for a moment. The consumer's name is the one its open message gives:
// every node shares the peer credential, so the check keeps maps
// consistent, it does not authenticate nodes.
//
// # Lag
//
// Both sides know per vBucket how far the replica is behind. The producer
// tracks what it handed to each stream and what the consumer acknowledged
// (Producer.Status: high, sent, acked, lag in seqnos and unacknowledged
// bytes). The Replicator asks for the stream library's seqno messages and
// keeps the producer's high seqno as last announced, with its
// unacknowledged bytes (Status, Behind); its figures are as fresh as the
// last message its handler read.
//
// # Failover logs and rollback
//
// Every vBucket of every engine has a failover log: (uuid, seqno)
// entries, newest first, at most MaxLogEntries. An entry says "the history
// named uuid began at seqno". A vBucket starts a new history when it has
// none, when it is promoted from replica to active (Branch), and when the
// node starts on data that may not be what its consumers last saw: after
// a crash, or a clean stop whose recorded high seqno differs from the one
// the engine has after the restart (the kv engine restarted without a dump,
// or from an older one). A producer accepts a stream request (start seqno,
// uuid, snapshot range) or answers a rollback by Decide (couchbase.md
// §2.8). A consumer replaces its copy of the log with the producer's when
// a stream starts, and presents the newest uuid when it resumes.
//
// None of the engines can undo mutations back to a seqno, so a consumer
// told to roll back drops the vBucket (engine.DropVBucket) and copies it
// again from 0. The kv and log engines send snapshots in seqno order, so a
// stream broken inside a snapshot resumes from the last seqno applied,
// presenting the snapshot's range; the queue engine does not (its
// snapshot follows queue order), so a queue vBucket broken inside a
// snapshot, or found holding data when a Replicator is created, is copied
// again from 0. The queue engine also answers a rollback whenever a pop
// happened after the requested seqno (it keeps no pop history): queue
// replicas are recopied after most reconnects.
//
// # Producer
//
// The node's takeover handler gives every StreamOpen connection to
// Producer.Serve, which picks the bucket's stream.Producer. Its Accept hook
// applies Decide to the vBucket's failover log. Each engine is wrapped so
// that snapshot markers ascend as the stream protocol requires, and so
// that the producer knows what each stream has been handed: at a clean
// shutdown the node calls Drain once nothing writes any more, and ends the
// streams only when every one has its engine's latest mutation, so that
// replicas resume after the restart instead of rolling back.
//
// # The failover log file
//
// One file per engine (the node keeps DATA/repl/failover-kv,
// failover-queue, failover-log). It is replaced atomically (temp file,
// fsync, rename, directory fsync): at start, after OpenLogs has decided
// which vBuckets start a new history (marked unclean); whenever a history
// is branched (promotion: at once); on Save when a consumer's copy changed
// (the node saves every liveness tick: a stale copy only makes a resume
// roll back); and with SaveClean at a clean shutdown, once the engines no
// longer change. All integers are little-endian:
//
//	 0       1       2       3       4       5       6       7
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|  'S'  |  'H'  |  'F'  |  'L'  |version| flags |   vbuckets    |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	then, for each vBucket 0 .. vbuckets-1:
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|                      high seqno (u64)                         |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|   n   |  n x (uuid u64, seqno u64), newest first              |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	then:
//	+-------+-------+-------+-------+
//	|  CRC-32C of all bytes before  |
//	+-------+-------+-------+-------+
//
// version is 1. flags bit 0 (clean) says the high seqnos are the engine's
// at a clean shutdown (zero otherwise); no other bit may be set. vbuckets
// must equal the node's vBucket count; n is at most MaxLogEntries and no
// uuid is 0. A file that breaks any rule (or is longer than the most these
// counts allow) is reported and replaced by fresh histories: consumers
// then roll back, which is safe.
//
// # Replicator
//
// A Replicator runs one loop: open a session (stream.Dial with the
// handshake of Handshake), request every vBucket, apply what arrives with
// engine.Apply, and when the session ends for any reason (the producer
// shut down or closed the connection, nothing received for two NOOP
// intervals or the idle timeout, an apply error, new options) close it,
// wait a backoff (BackoffMin doubling to BackoffMax, ±20% jitter; reset
// after a session that started a stream) and open the next, resuming each
// vBucket from its applied seqno. A stream the producer ends on its own
// (an engine error, a refusal) is asked again on the same session after
// that vBucket's own backoff (BackoffMin doubling to BackoffMax). Stop, Start and Set (connections, NOOP interval, idle timeout,
// buffer, compression) work while it runs, without touching the data;
// SetVBuckets adds and removes vBuckets of the open session without
// touching the other streams. A vBucket is caught up when its stream is
// open, it is not inside a snapshot and it holds the producer's last
// announced high seqno.
package repl
