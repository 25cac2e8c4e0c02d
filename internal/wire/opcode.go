package wire

import "fmt"

// Opcode names the request a frame carries. Opcodes are grouped by range:
// 0x0_ connection and channel-generic, 0x1_ kv, 0x2_ queue, 0x3_ log,
// 0x4_ replication streams, 0x5_ operator requests, 0x6_ cluster.
type Opcode uint8

// Connection and channel-generic requests.
const (
	OpHello             Opcode = 0x01 // client name, version, features -> node info and auth nonce
	OpAuth              Opcode = 0x02 // name, HMAC-SHA256(secret, nonce) -> ok / auth failed
	OpNoop              Opcode = 0x03 // empty -> empty; keeps a connection alive
	OpInfo              Opcode = 0x04 // empty -> node info
	OpGetNumConnections Opcode = 0x05 // empty -> u64 open client connections
	OpStreamControl     Opcode = 0x06 // control a stream running under this request id
	OpGetChannels       Opcode = 0x07 // empty -> stream of (kind, name)
	OpGetChannelSize    Opcode = 0x08 // channel -> kind, records, bytes
	OpGetSize           Opcode = 0x09 // empty -> records, bytes over all channels
	OpRemoveChannel     Opcode = 0x0A // channel -> empty; needs the admin credential when auth is on
)

// kv requests.
const (
	OpPut      Opcode = 0x10 // channel, key, ttl, value -> cas
	OpGet      Opcode = 0x11 // channel, key -> cas, value
	OpExists   Opcode = 0x12 // channel, key -> u8 bool
	OpRemove   Opcode = 0x13 // channel, key -> u8 removed
	OpUpdate   Opcode = 0x14 // channel, key, cas, ttl, value -> cas; compare-and-swap
	OpPutBatch Opcode = 0x15 // channel, records -> u32 stored
	OpGetAll   Opcode = 0x16 // channel, options -> stream of record batches
	OpMirror   Opcode = 0x17 // channel, options -> stream of changes
	// OpGetReplica reads a key from an active or a replica copy (which
	// may be stale): channel, key -> cas, source (1 active, 2 replica), value.
	OpGetReplica Opcode = 0x18
	OpExpire     Opcode = 0x19 // channel, key, u32 ttl (0 = never) -> cas; sets or clears the expiry
	OpTTL        Opcode = 0x1A // channel, key -> cas, u64 expiry unix seconds (0 = never), u32 seconds left
)

// queue requests.
const (
	OpPush    Opcode = 0x20 // channels, value -> empty
	OpPop     Opcode = 0x21 // channel -> value, or status empty
	OpConsume Opcode = 0x22 // channel, subscriber -> stream of value batches
	OpProduce Opcode = 0x23 // channels, then a client stream of value batches -> u64 stored
	OpQueues  Opcode = 0x24 // empty -> stream of queue channel stats
	// OpSubscribers lists a channel's subscribers: channel -> u32 n, n x
	// (subscriber, records, bytes, consumers, idle ms).
	OpSubscribers Opcode = 0x25
	OpUnsubscribe Opcode = 0x26 // channel, subscriber -> u8 removed; admin
)

// log requests.
const (
	OpLogPut      Opcode = 0x30 // channel, timestamp, value -> empty
	OpLogPutBatch Opcode = 0x31 // channel, records -> u32 stored
	OpLogRange    Opcode = 0x32 // channel, from, to, filter -> stream of record batches
)

// Replication: a connection that sends OpStreamOpen becomes a mutation
// stream connection (see internal/stream and docs/protocol.md); one that
// sends OpRaftOpen carries the metadata group's raft traffic.
const (
	OpStreamOpen Opcode = 0x40
	OpRaftOpen   Opcode = 0x41 // empty -> empty; then raft's own bytes
)

// Cluster requests (0x6_).
const (
	OpGetClusterMap    Opcode = 0x60 // empty -> node table and vBucket map (binary)
	OpCluster          Opcode = 0x61 // empty -> JSON cluster document
	OpJoin             Opcode = 0x62 // JSON join request -> JSON answer (between nodes)
	OpMetaPropose      Opcode = 0x63 // JSON metadata command -> u64 raft index (to the leader, between nodes)
	OpNodeRemove       Opcode = 0x64 // str8 node id -> empty; admin
	OpRecover          Opcode = 0x66 // str8 node -> JSON; admin: a failed node becomes a replica again
	OpLeaseRenew       Opcode = 0x67 // str8 node id -> u64 commit index, u64 lease ms (to the leader, between nodes)
	OpHeartbeat        Opcode = 0x68 // str8 node id, u8 flags, str8 why, u16 n, n x str8 inactive node -> empty (between nodes, every tick)
	OpFailoverSettings Opcode = 0x69 // JSON settings change -> JSON settings; admin
	OpMapNotify        Opcode = 0x65 // empty -> stream of u64 map revisions, one at once and one per map applied
	OpRebalance        Opcode = 0x6A // JSON rebalance request -> JSON rebalance status; admin or peer (forwarded to the leader)
	OpMoveStatus       Opcode = 0x6B // JSON vbuckets and copies -> JSON seqnos (from the leader to a moving vbucket's active, between nodes)
)

// OpRESPForward carries a RESP command from the node a Redis client is
// connected to, to the active of the command's keys (between nodes; the
// peer credential): u8 RESP version, str8 kv channel, the command as a
// RESP array -> the RESP answer; `not my vbucket` when the node is not
// the keys' active.
const OpRESPForward Opcode = 0x70

// Operator requests.
const (
	OpDumpNow  Opcode = 0x50 // empty -> stream of per-channel dump results
	OpReplica  Opcode = 0x51 // u8 action (stop/start/set), settings -> empty
	OpPromote  Opcode = 0x52 // empty -> empty; a standby becomes active
	OpStatus   Opcode = 0x53 // empty -> JSON status document
	OpFailover Opcode = 0x54 // str8 node, u8 flags (bit 0 force) -> JSON; admin
)

var opNames = map[Opcode]string{
	OpHello: "Hello", OpAuth: "Auth", OpNoop: "Noop", OpInfo: "Info",
	OpGetNumConnections: "GetNumConnections", OpStreamControl: "StreamControl",
	OpGetChannels: "GetChannels", OpGetChannelSize: "GetChannelSize", OpGetSize: "GetSize",
	OpRemoveChannel: "RemoveChannel",
	OpPut:           "Put", OpGet: "Get", OpExists: "Exists", OpRemove: "Remove", OpUpdate: "Update",
	OpPutBatch: "PutBatch", OpGetAll: "GetAll", OpMirror: "Mirror", OpGetReplica: "GetReplica", OpExpire: "Expire", OpTTL: "TTL",
	OpPush: "Push", OpPop: "Pop", OpConsume: "Consume", OpProduce: "Produce", OpQueues: "Queues", OpSubscribers: "Subscribers", OpUnsubscribe: "Unsubscribe",
	OpLogPut: "LogPut", OpLogPutBatch: "LogPutBatch", OpLogRange: "LogRange",
	OpStreamOpen: "StreamOpen", OpRaftOpen: "RaftOpen",
	OpGetClusterMap: "GetClusterMap", OpCluster: "Cluster", OpJoin: "Join", OpMetaPropose: "MetaPropose", OpNodeRemove: "NodeRemove", OpRecover: "Recover", OpLeaseRenew: "LeaseRenew", OpHeartbeat: "Heartbeat", OpFailoverSettings: "FailoverSettings", OpRebalance: "Rebalance", OpMoveStatus: "MoveStatus",
	OpMapNotify: "MapNotify",
	OpDumpNow:   "DumpNow", OpReplica: "Replica", OpPromote: "Promote", OpStatus: "Status",
	OpFailover: "Failover", OpRESPForward: "RESPForward",
}

// Known reports whether op is an opcode of protocol version 1.
func (op Opcode) Known() bool { _, ok := opNames[op]; return ok }

// String returns the request name, e.g. "Put".
func (op Opcode) String() string {
	if s, ok := opNames[op]; ok {
		return s
	}
	return fmt.Sprintf("Opcode(%#02x)", uint8(op))
}

// Stream control actions, the first body byte of OpStreamControl.
const (
	StreamCredit  = 1 // u32 bytes: the receiver grants this many more body bytes
	StreamSuspend = 2 // the sender stops sending until StreamResume
	StreamResume  = 3
	StreamStop    = 4 // the sender ends the stream with StatusStopped
)

// Sources of a GetReplica answer: the copy the node read.
const (
	SourceActive  = 1
	SourceReplica = 2
)

// Channel kinds, as carried in GetChannels and GetChannelSize answers.
const (
	KindKV    = 1
	KindQueue = 2
	KindLog   = 3
)
