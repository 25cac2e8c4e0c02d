// Package dump writes and reads dump files: the on-disk copy of the
// in-memory kv channels that survives a restart (swarm's .tcm files), and
// schedules the dumps of a node.
//
// # Files
//
// A data directory holds, for a channel ch:
//
//	ch.dump          the latest complete dump
//	ch.dump.backup   the dump before it
//	ch.dump.tmp      a dump being written (a leftover one is ignored at load)
//	deleted/         the files of removed channels (Manager.RemoveChannel)
//
// WriteFile writes ch.dump.tmp, fsyncs it, renames ch.dump to ch.dump.backup,
// renames ch.dump.tmp to ch.dump and fsyncs the directory, so a crash or a
// failed write at any step leaves the previous dump loadable. Load reads
// every channel of a directory in parallel and applies the OnCorrupt policy
// to a file that does not verify. A Manager makes a node's dumps:
// periodic, on demand and final.
//
// # Format, version 2
//
// All integers are little-endian. A file is a header, record blocks, one
// seqno trailer and a footer:
//
//	+--------+---------+-----+---------+---------+--------+
//	| header | block 0 | ... | block n | trailer | footer |
//	+--------+---------+-----+---------+---------+--------+
//
// The header (25 + len(channel) bytes):
//
//	 0               8       10      12              20     21               21+n
//	+---------------+-------+-------+---------------+------+----------------+---------+
//	| magic         |version|  vbs  | created       | n    | channel        | CRC     |
//	| "SHOALDMP"    | u16=2 |  u16  | i64 unix ns   | u8   | n bytes        | u32     |
//	+---------------+-------+-------+---------------+------+----------------+---------+
//
// vbs is the node's vBucket count (1..65535); a file whose count differs from
// the loading node's is refused, because every record's vBucket depends on
// it. channel is a legal channel name. CRC is the masked CRC32C of the bytes
// before it.
//
// Blocks and the trailer are chunks: an 18-byte chunk header and a
// compressed payload.
//
//	 0      1       2          6          10         14         18
//	+------+-------+----------+----------+----------+----------+--------------------+
//	| type | codec | raw len  | comp len | records  | CRC      | payload (comp len) |
//	| u8   | u8    | u32      | u32      | u32      | u32      |                    |
//	+------+-------+----------+----------+----------+----------+--------------------+
//
// codec says how the payload is compressed: 1 is one zstd frame, 2 is one s2
// block (klauspost/compress/s2, block format). A writer uses one codec for
// a whole file (zstd by default); a reader takes each chunk's word for it.
// CRC is the masked CRC32C of bytes 0..14 and the payload. raw len is the
// length of the payload decompressed (at most MaxBlockRaw); records is the
// number of records in it. Type 1 is a record block; type 2 is the trailer,
// which is the last chunk, has records = 0 and decompresses to vbs u64
// seqnos: the seqno of every vBucket at its snapshot, 0 for a vBucket that
// held no record of the channel (its seqno is not recorded). The seqnos are
// in a trailer rather than in the header because a vBucket's seqno is known
// only once its records are copied; a trailer keeps the writer append-only
// (it can write to a pipe) and the header never claims a state the body does
// not hold.
//
// A record block decompresses to runs, each the records of one vBucket:
//
//	run:    | vb u16 | seqno u64 | count u32 | record x count |
//	record: | key len uvarint | value len uvarint | seqno uvarint |
//	        | expiry varint | key | value |
//
// A run's seqno is its vBucket's seqno at the snapshot (equal to the
// trailer's entry; a vBucket may have runs in several blocks). A record's
// seqno is the vBucket seqno that last changed it, never above the run's;
// expiry is unix seconds, 0 for never; the key (1..250 bytes) hashes to the
// run's vBucket; a record never spans blocks, so a block holding one large
// value can exceed BlockSize, up to MaxBlockRaw.
//
// The footer (32 bytes):
//
//	 0          8          16       20         24                    32
//	+----------+----------+--------+----------+---------------------+
//	| records  | bytes    | chunks | file CRC | end magic           |
//	| u64      | u64      | u32    | u32      | "SHOALEND"          |
//	+----------+----------+--------+----------+---------------------+
//
// records and bytes (key plus value bytes) are the totals of all blocks,
// chunks counts the blocks and the trailer, and file CRC is the masked
// CRC32C of every byte of the file before it. Nothing may follow the footer.
//
// CRCs are masked as pebble does (rotate right 15, add 0xa282ead8) because
// the file CRC covers bytes that embed CRCs. A reader rejects any file that
// does not verify with a *CorruptError naming the file and the offset.
package dump
