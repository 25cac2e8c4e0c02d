// Package logstore is the log engine (swarm's logfiles node, rebuilt crash
// safe): per channel, records (timestamp, value), several per timestamp,
// kept on disk in time-bucketed segment files.
//
// Layout. Dir/vbuckets.state holds the per-vBucket seqno floors and the
// channel-removal tombstones. Each channel is a directory
// Dir/CHANNEL holding segment files named START-GEN.seg (plain) or
// START-GEN.segz (zstd-compressed): START is the first timestamp of the
// file's time bucket (16 hex digits), GEN a generation number (8 hex
// digits) that grows when a bucket's files are rewritten. The file format
// is specified in package segment and in docs/design.md §6.
//
// Writes. Append hands its records to one committer goroutine, which takes
// everything queued at once (group commit): it gives each record a
// vBucket (round-robin, or from the routing key) and that vBucket's next
// seqno, writes each file's frames with one write, and in Fsync-always
// mode fsyncs every file it touched once before acknowledging the whole
// batch. In interval mode the batch is acknowledged once written, and a
// ticker fsyncs. A failed batch (a full disk) is cut back from every file:
// nothing is half-stored and the store keeps serving.
//
// Reads. An in-memory index keeps every segment's time bounds, so a range
// read opens only the segments that can hold the range, one group of
// overlapping segments at a time. Files are append-ordered; a file whose
// records are not in timestamp order is indexed (24 bytes a record),
// sorted stably and read in that order, so equal timestamps keep their
// append order. Iterators return batches and resume from a Position.
//
// Recovery. Open reads every file: a damaged tail (an append cut short by a
// crash) is cut and logged with its file, offset and length; damage in the
// middle of a file is counted, logged and skipped by every read. Check
// does the same offline and repairs.
//
// Retention. Maintain compresses (and sorts) the buckets that ended
// CompressAfter ago and deletes those that ended Retention ago, comparing
// record timestamps (unix seconds) with Config.Now.
//
// Replication. The Store implements engine.Engine: HighSeqno, Apply
// (idempotent: a replayed seqno is ignored), Stream (a seqno-ordered
// snapshot read from the files, then live mutations) and DropVBucket.
package logstore
