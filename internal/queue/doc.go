// Package queue is the queue engine: swarm's queue node made strictly
// FIFO. A Store holds named channels of records; each channel queue is a
// fixed-size memory ring that overflows to disk; channels have subscriber
// queues; records survive restarts by a save at shutdown (memory mode) or
// an fsynced journal (journal mode). The Store is also an engine.Engine, so
// replication streams a vBucket's records and pops.
//
// # Queues
//
// A channel without subscribers has one queue: Push appends, Pop takes the
// oldest record. The first Subscribe, whatever its subscriber name, turns
// that queue into the subscriber's, backlog included; every further name
// gets a new, empty queue; a push goes to every queue of its channel;
// consumers sharing a name split one queue; Pop on a channel with
// subscribers fails with ErrSubscribed.
//
// A queue is a memory ring of RingSize bytes (each record costs a 16-byte
// header plus its value) followed by an overflow on disk. While the
// overflow is empty a push goes to the ring when it fits; otherwise, and as
// long as the overflow holds anything, to the overflow. A pop takes the
// ring's head (the overflow's when the ring is empty) and then refills the
// ring from the overflow's head. So the ring always holds the oldest
// records and order is strictly FIFO across memory and disk. A record
// larger than the ring goes straight to the overflow; one larger than
// MaxValueSize is refused with ErrValueTooBig. A push to several channels
// is stored in all of them or, on error (ErrNoSpace on a full disk), in
// none.
//
// Every record carries a vBucket (round-robin, or from a routing key) and
// that vBucket's seqno. A pop is a mutation of the popped record's vBucket
// that references the push seqno.
//
// Pop and consumers take only records of Active vBuckets: a queue also
// holds the copies of the vBuckets this node is a replica of (applied from
// their active's stream), which only their active's pops remove; popping
// one here would make the copy diverge. They are stepped over, in the ring
// and in the overflow, so order among the records taken stays FIFO (a
// queue whose head holds many copies costs a pop a scan past them).
// RemoveChannel likewise removes only the records of Active vBuckets, one
// seqno each; a channel still holding copies stays for them (its consumers
// end) until the replicated removals of their vBuckets arrive.
//
// # Durability
//
// Memory mode: Close saves every ring and the overflow index in the state
// file, Open restores them, order included. The index (not the rings) is
// also written every IndexInterval and whenever queues appear or go. After
// a crash the rings are lost and the overflow comes back as its last index
// says: records popped since then come back, records overflowed since then
// are kept.
//
// Journal mode: every push, pop, subscription and removal is appended to
// the journal before it is acknowledged; with FsyncInterval 0 the
// acknowledgement waits for an fsync that covers it (group commit: one
// fsync covers every writer waiting at the time). After kill -9 nothing
// acknowledged is lost and nothing popped comes back; a pop that reached
// the disk but whose answer died with the process counts as done. When the
// journal
// exceeds JournalSize (or twice the bytes held in rings) a checkpoint
// writes the rings and overflow positions to the state file and starts a
// new journal segment; recovery loads the state file, cuts the overflow
// back to the checkpoint, and replays the journal.
//
// # Files
//
//	<Dir>/state                          the state file, replaced atomically
//	<Dir>/overflow/<queue id>/<n>.seg    overflow segments of one queue
//	<Dir>/journal/<n>.jnl                journal segments
//
// Queue ids and segment numbers are 16 lower-case hex digits. Segments a
// queue has read past, and those of removed channels, are deleted after the
// next state file no longer refers to them.
//
// # Frames
//
// Every file starts with an 8-byte magic and continues with frames:
//
//	+---------+---------+------+------------------+
//	| crc u32 | len u32 | type | body (len-1)     |
//	+---------+---------+------+------------------+
//
// Integers are little-endian. crc is CRC-32C (Castagnoli) of len, type and
// body; len is 1..MaxValueLen+128 KiB and counts type and body. A reader
// allocates at most 1 MiB beyond the bytes really present, whatever len
// claims. str8 is a u8 length and that many bytes. A file that ends inside
// a frame, or a frame whose crc fails, ends the valid part of a journal or
// overflow segment (a crash's torn tail, cut off at recovery); in the state
// file it makes the file corrupt (Open fails with ErrCorrupt).
//
// Overflow segment, magic "SHQOVF01", one frame per record, type 'P':
//
//	+--------+-----------+---------+
//	| vb u16 | seqno u64 | value   |
//	+--------+-----------+---------+
//
// Journal segment, magic "SHQJNL02" ("SHQJNL01", written before entry
// 'Z', is still read), one frame per entry:
//
//	'P' push            | vb u16 | n u8 | n × (str8 channel, seqno u64) | value |
//	'O' pop             | str8 channel | subscribed u8 | str8 subscriber | n u32 | n × (vb u16, ref u64, seqno u64) |
//	'A' replicated pop  | str8 channel | str8 key | vb u16 | seqno u64 | ref u64 |
//	'S' subscribe       | str8 channel | str8 subscriber |
//	'X' remove channel in every vBucket (version 1 only) | str8 channel |
//	'Y' replicated removal of a channel in one vBucket | str8 channel | vb u16 | seqno u64 |
//	'Z' remove channel in some vBuckets | str8 channel | n u32 | n × (vb u16, seqno u64) |
//	'D' drop vBucket    | vb u16 |
//
// A push stores value in every channel listed, each copy with its own
// seqno in vBucket vb. A pop lists the records it took (vBucket and push
// seqno ref) with the seqno of each pop. Removing a channel takes one seqno
// in every Active vBucket that held a record of it ('Z' lists them with
// their seqnos, in ascending vBucket order; 'X' meant every vBucket).
//
// State file, magic "SHQSTA01":
//
//	'H' header   | version u32 (1) | vbuckets u32 | next queue id u64 | first journal segment u64 (0: memory mode) | flags u8 (1: rings present) |
//	'V' vBucket  | vb u16 | seqno u64 | last pop or removal seqno u64 |
//	'C' channel  | str8 name | subscribed u8 | u32 len | vBuckets that held its records, a bitmap of u64 words |
//	'Q' queue    | str8 subscriber | id u64 | last segment u64 | head segment u64 | head offset u64 | tail segment u64 | tail offset u64 | records u64 | bytes u64 |
//	'K' skip     | segment u64 | offset u64 |
//	'R' ring record | vb u16 | seqno u64 | value |
//	'E' end      | number of frames before it u64 |
//
// The header comes first; 'V' frames for vBuckets with a non-zero seqno;
// each channel's 'C' frame is followed by its queues, subscription order
// first; each 'Q' by its skips (overflow records removed out of order by
// replication) and, when the header says so, its ring records oldest first.
package queue
