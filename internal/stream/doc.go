// Package stream carries ordered vBucket mutations from a producer node to
// a consumer node over one or more TCP connections: the transport under
// replication (DCP-like, after Couchbase's GSI dataport, seed 003).
//
// A consumer (Dial) opens a session of N connections to one producer and
// requests vBuckets from (seqno, vBucket uuid). vBucket vb always travels on
// connection vb % N, so its order holds whatever N is. For each request the
// producer answers with a start (carrying the failover log its Accept hook
// returned) followed by the engine's snapshot markers and mutations, or with
// an end (rollback, refused); every stream finishes with one end and its
// reason. Mutations reach the consumer's Handler as engine.Mutation. When a
// connection dies every stream of the session is reported lost, grouped per
// connection in a *ConnError that names the vBuckets; nothing is dropped
// silently. Reconnecting is the caller's business (internal/repl).
//
// The producer (Producer.Serve) takes a connection the node's server has
// accepted, authenticated and read one wire.OpStreamOpen frame from. It
// batches messages (a batch goes when it reaches the batch size or 1 ms
// after its first message), s2-compresses batches if the consumer asked,
// and obeys credit: it stops sending once the consumer's buffer size of
// bytes is unacknowledged. Each side sends a NOOP when it has sent nothing
// for the NOOP interval and declares the connection dead after two
// intervals with nothing received (or the idle timeout, if shorter); NOOPs
// need no credit. Every received packet marks the peer alive for liveness
// (Spy), at most once per 100 ms per connection.
//
// # Opening
//
// The consumer sends one ordinary wire frame (magic 'S', opcode
// OpStreamOpen, request id 1) whose body is, little-endian:
//
//	+---------+---------------+-------------+------+-------+----------+------------+--------+
//	| version | consumer name | bucket      | conn | conns | features | noop (ms)  | buffer |
//	| u8 = 1  | str8, 1..100  | str8, chan. | u16  | u16   | u32      | u32        | u32    |
//	+---------+---------------+-------------+------+-------+----------+------------+--------+
//
// conn < conns <= 64; features bit 0 asks for s2 compression, bit 1 for
// seqno messages, bit 2 says the consumer is a standby (FeatureStandby);
// noop is 1..3600000; buffer (the credit window, bytes) is at least 1. The producer
// answers with a wire frame (magic 's', same opcode and id): status OK and
//
//	+---------------+----------+
//	| producer name | features |
//	| str8          | u32      |
//	+---------------+----------+
//
// (the features it grants, a subset of those asked), or status BadRequest
// or NotFound (unknown bucket) with a message, and closes. From then on both
// sides speak packets.
//
// # Packets
//
//	 0       1       2       3       4       5       6       7
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	| magic | kind  | flags |   0   |     payload length (u32)      |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|                     payload ...                               |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//
// magic is 0xD5. kind 1 carries messages; kind 2 is a NOOP (flags 0,
// length 0). flags bit 0: the payload is one s2 block (only from a producer
// that granted FeatureS2); no other bit may be set. The payload length is
// 1..MaxPacket, and a compressed payload decodes to 1..MaxPacket bytes.
// A packet of messages costs the consumer HeaderLen plus its decoded
// payload length in credit; the consumer acknowledges that many bytes once
// its handler has processed them.
//
// # Messages
//
// A payload is one or more messages back to back, each starting with its
// type byte; all integers little-endian, str8 = u8 length + bytes,
// bytes32 = u32 length + bytes. Producer to consumer:
//
//	start     0x01  vb u16, n u16 (<= 1024), n x (uuid u64, seqno u64)
//	snapshot  0x02  vb u16, start u64, end u64               (start <= end)
//	mutation  0x03  vb u16, seqno u64, op u8, fields u8, channel str8,
//	                key str8 (<= 250), value bytes32,
//	                [expiry u64 if fields&1], [timestamp u64 if fields&2],
//	                [ref u64 if fields&4]
//	end       0x04  vb u16, reason u8 (0..5), seqno u64, message str8
//	seqno     0x05  vb u16, high u64, behind u64   (only with FeatureSeqnos)
//
// Consumer to producer:
//
//	request   0x10  vb u16, flags u32 (0), start u64, uuid u64,
//	                snap start u64, snap end u64
//	close     0x11  vb u16
//	ack       0x12  bytes u32
//
// Per vBucket the producer sends start, then snapshot markers each followed
// by mutations whose seqnos lie in the marker's range, markers ascending
// (each start above the previous end), then end; or end alone. Between
// start and end, when the consumer asked for FeatureSeqnos, seqno messages
// may come anywhere: high is the producer engine's high seqno of vb when
// it was sent (mutations up to it may still be on their way), behind the
// bytes of vb's messages the producer has queued or sent and the consumer
// has not acknowledged. The
// consumer sends at most one request per vBucket until that vBucket's end
// arrives. Anything else is a protocol error and closes the connection.
package stream
