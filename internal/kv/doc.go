// Package kv is the in-memory key-value engine (swarm's DHT node): channels
// of records spread over vBuckets, packed so that a record costs about 30
// bytes beyond its key and value, and memory is given back after removals.
//
// # Layout
//
// Each vBucket (a partition) has its own lock, seqno, purge seqno and one
// table per channel. A table is an arena of chunks (pointer-free []byte
// slabs) holding encoded records back to back, plus an open-addressing
// index of uint64 slots (linear probing, backward-shift deletion, load at
// most 4/5, grown by half when full, shrunk by the sweeper when under 1/5).
// No record is a Go object: the garbage collector sees a few slices per
// table.
//
// A record, live or tombstone, is encoded as:
//
//	0               8       9      10          10+klen
//	+---------------+-------+------+-----------+---------+---------+---------+
//	|     seqno     | flags | klen |    key    |  vlen   |  stamp  |  value  |
//	|    u64 LE     |  u8   |  u8  |  klen B   | uvarint | u32 LE  |  vlen B |
//	+---------------+-------+------+-----------+---------+---------+---------+
//
// flags: bit 0 tombstone (then no vlen and no value), bit 1 tombstone left
// by expiry rather than removal, bit 2 stamp present. The stamp counts
// seconds since 2020-01-01 UTC: the expiry of a live record (absent when it
// never expires), the removal time of a tombstone. A 16-byte key with a
// 100-byte value takes 11 + 116 = 127 bytes; its tombstone 14 + 16.
//
// An index slot is:
//
//	 63  62             41 40            16 15           0
//	+---+-----------------+----------------+--------------+
//	| 1 |    hash hint    |  chunk index   |    offset    |
//	+---+-----------------+----------------+--------------+
//
// 0 is an empty slot. The hint is the top 22 bits of mix(xxhash64(key)):
// it filters probes without touching the arena and, for indexes of up to
// 2^22 slots, gives an entry's home slot, so deleting and resizing never
// rehash keys. Shared chunks are at most 16 KiB (offsets have 16 bits); a
// record above 8 KiB gets a chunk of its own, at offset 0.
//
// # Memory
//
// Overwriting a record with one of the same encoded size happens in place;
// otherwise the new version is appended to the table's tail chunk and the
// old one becomes garbage. A chunk that is more than a quarter garbage is
// evacuated: its live records are copied to the tail and it is freed. The
// sweeper also evacuates a tail that is mostly garbage, shrinks sparse
// indexes, drops empty tables and compacts chunk descriptors, so memory
// goes back to the Go heap after mass removals. Small tables use chunks of
// 256 B to 4 KiB; past 32 KiB a table uses 8 KiB chunks, which Go places in
// spans of their own, so freeing one frees its span. MemoryUsage counts
// chunk capacity, index slots, chunk descriptors, a fixed cost per table
// and stream change logs; MemoryLimit is checked against it before a write
// allocates.
//
// # Seqnos, expiry and tombstones
//
// Every put, update, removal of a live record, expiry and channel removal
// (one per vBucket that held the channel) takes the vBucket's next seqno,
// which becomes the record's CAS. An expired record is invisible at once;
// the sweeper (a few thousand slots per tick, one vBucket lock at a time)
// turns it into a tombstone with an OpExpire mutation, except on replica
// vBuckets (fed by Apply), which wait for the active's expiry. Removals and
// expiries leave tombstones, and channel removals a per-vBucket record, for
// TombstoneTTL; purging them raises the purge seqno. The tombstone of a
// vBucket's latest mutation is never purged, so a snapshot always ends with
// a mutation at its end seqno and a consumer's seqno reaches the
// producer's. The exception is a vBucket loaded from a dump: Load raises
// its seqno and purge seqno to the dump's, above every record it holds, so
// until its next mutation a consumer that resumes from its own seqno is
// rolled back to 0.
//
// # Streams and watchers
//
// Stream sends a snapshot (everything with a seqno above the start, copied
// under one read lock and sorted by seqno), then live changes. While a
// vBucket is streamed it keeps a ring of recent changes (keys and seqnos,
// no values); a stream reads the current record of each key and skips
// changes superseded since, and a stream that falls off the ring takes a
// new snapshot. Writers never wait for streams. A Watcher keeps a bounded
// set of changed keys; values are read when it is drained.
package kv
