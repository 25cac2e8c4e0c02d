package stream

import (
	"errors"
	"fmt"
	"time"

	"shoal/internal/engine"
	"shoal/internal/wire"
)

// Packet framing. See the package comment for the diagrams.
const (
	// HeaderLen is the length of a packet header.
	HeaderLen = 8
	// MaxPacket bounds the decoded payload of one packet: a producer cuts a
	// batch once it reaches its batch size (at most MaxBatchSize), so a
	// batch is below that plus one message, and one message is below
	// wire.MaxBody.
	MaxPacket = wire.MaxBody + MaxBatchSize
	// MaxBatchSize is the largest batch size a producer may be configured with.
	MaxBatchSize = 1 << 20

	packetMagic  = 0xD5
	kindMessages = 1
	kindNoop     = 2
	flagS2       = 0x01
)

// Message types. 0x0_ travel from the producer to the consumer, 0x1_ from
// the consumer to the producer.
const (
	msgStart    = 0x01
	msgSnapshot = 0x02
	msgMutation = 0x03
	msgEnd      = 0x04
	msgSeqno    = 0x05
	msgRequest  = 0x10
	msgClose    = 0x11
	msgAck      = 0x12
	msgApplied  = 0x13
)

// Bits of a mutation message's fields byte: which optional u64 follow.
const (
	fieldExpiry    = 0x01
	fieldTimestamp = 0x02
	fieldRef       = 0x04
	fieldsKnown    = fieldExpiry | fieldTimestamp | fieldRef
)

// MaxFailoverLog is the most failover-log entries a stream start carries.
const MaxFailoverLog = 1024

// Features a consumer may ask for in its open message.
const (
	// FeatureS2 lets the producer s2-compress message packets.
	FeatureS2 uint32 = 1 << 0
	// FeatureSeqnos asks the producer to announce, for every open stream
	// whose figures changed, its engine's high seqno of the vBucket and the
	// bytes of the vBucket's messages the consumer has not acknowledged yet
	// (a seqno message every ProducerConfig.SeqnoInterval at most), so that
	// the consumer knows how far behind it is.
	FeatureSeqnos uint32 = 1 << 1
	// FeatureStandby says the consumer is a whole-node standby rather than
	// a member of the producer's vBucket chains. The library only carries
	// it to the producer's Accept hook (ConsumerInfo.Features), which
	// decides what a standby may stream.
	FeatureStandby uint32 = 1 << 2
	// FeatureAcks asks the consumer to acknowledge, per vBucket, the
	// highest seqno its handler has applied (and, when it knows, made
	// durable on disk) with applied messages after every packet it handled
	// that moved one (acks.go). Durable writes wait for these.
	FeatureAcks uint32 = 1 << 3

	knownFeatures = FeatureS2 | FeatureSeqnos | FeatureStandby | FeatureAcks
)

// Limits of the open message.
const (
	openVersion     = 1
	MaxConnections  = 64
	MinNoopInterval = time.Millisecond
	MaxNoopInterval = time.Hour
	maxReplyBody    = 1024
)

// Reason says why a vBucket stream ended.
type Reason uint8

// Stream end reasons. Values up to ReasonError travel on the wire;
// ReasonHandler is only ever produced by the consumer itself.
const (
	ReasonDone     Reason = 0 // the engine ended the stream: no more mutations will come
	ReasonClosed   Reason = 1 // the consumer closed the stream
	ReasonShutdown Reason = 2 // the producer is shutting down
	ReasonRollback Reason = 3 // the consumer is ahead of the producer's history: roll back to End.Seqno, then ask again
	ReasonRefused  Reason = 4 // the producer refused the request; End.Message says why
	ReasonError    Reason = 5 // the producer's engine failed while streaming; End.Message says why
	ReasonHandler  Reason = 6 // the consumer's Handler failed; End.Err is its error

	maxWireReason = ReasonError
)

var reasonNames = [...]string{"done", "closed", "shutdown", "rollback", "refused", "error", "handler failed"}

// String names the reason.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// FailoverEntry is one entry of a vBucket's failover log: the history
// identified by UUID began at Seqno. Replication keeps the log; the stream
// library only carries it.
type FailoverEntry struct {
	UUID  uint64
	Seqno uint64
}

// Request asks a producer for one vBucket's mutations after Start.
type Request struct {
	VBucket uint16
	// Start is the last seqno the consumer holds; the stream resumes after it.
	Start uint64
	// UUID names the history the consumer's data belongs to (0 with Start 0:
	// from the beginning).
	UUID uint64
	// SnapStart and SnapEnd are the snapshot the consumer was in when it
	// stopped; SnapStart <= Start <= SnapEnd. Both zero means {Start, Start}.
	SnapStart, SnapEnd uint64
}

func (r *Request) normalize() {
	if r.SnapStart == 0 && r.SnapEnd == 0 {
		r.SnapStart, r.SnapEnd = r.Start, r.Start
	}
}

func (r Request) valid() bool { return r.SnapStart <= r.Start && r.Start <= r.SnapEnd }

// message is one decoded message; only the fields of its type are set.
type message struct {
	typ    byte
	vb     uint16
	seqno  uint64 // end: rollback target or last seqno sent
	start  uint64 // snapshot
	end    uint64 // snapshot
	reason Reason
	high   uint64 // seqno: the producer's high seqno
	behind uint64 // seqno: the vBucket's bytes not acknowledged yet
	text   []byte // end: message for people
	log    []FailoverEntry
	req    Request
	ack    uint32
	mut    engine.Mutation
	// applied: the consumer's highest applied and persisted seqnos of vb.
	applied, persisted uint64
}

// errMalformed is wrapped by every decoding error.
var errMalformed = fmt.Errorf("%w: malformed message", ErrProtocol)

// appendStart appends a stream-start message. len(log) <= MaxFailoverLog.
func appendStart(b []byte, vb uint16, log []FailoverEntry) []byte {
	b = append(b, msgStart)
	b = wire.AppendU16(b, vb)
	b = wire.AppendU16(b, uint16(len(log)))
	for _, e := range log {
		b = wire.AppendU64(b, e.UUID)
		b = wire.AppendU64(b, e.Seqno)
	}
	return b
}

func appendSnapshot(b []byte, vb uint16, start, end uint64) []byte {
	b = append(b, msgSnapshot)
	b = wire.AppendU16(b, vb)
	b = wire.AppendU64(b, start)
	return wire.AppendU64(b, end)
}

// checkMutation reports why m cannot be encoded, or nil. The channel name
// is checked apart (checkChannel), as senders cache its validity.
func checkMutation(m *engine.Mutation) error {
	switch {
	case len(m.Key) > wire.MaxKeyLen:
		return fmt.Errorf("key of %d bytes over %d", len(m.Key), wire.MaxKeyLen)
	case len(m.Value) > wire.MaxValueLen:
		return fmt.Errorf("value of %d bytes over %d", len(m.Value), wire.MaxValueLen)
	case m.Op < engine.OpSet || m.Op > engine.OpRemoveChannel:
		return fmt.Errorf("unknown op %d", m.Op)
	}
	return nil
}

func checkChannel(name string) error {
	if !wire.ValidChannelString(name) {
		return fmt.Errorf("bad channel name %q", name)
	}
	return nil
}

// appendMutation appends a mutation message; m must pass checkMutation
// and checkChannel.
func appendMutation(b []byte, m *engine.Mutation) []byte {
	var fields byte
	if m.Expiry != 0 {
		fields |= fieldExpiry
	}
	if m.Timestamp != 0 {
		fields |= fieldTimestamp
	}
	if m.Ref != 0 {
		fields |= fieldRef
	}
	b = append(b, msgMutation)
	b = wire.AppendU16(b, m.VBucket)
	b = wire.AppendU64(b, m.Seqno)
	b = append(b, byte(m.Op), fields)
	b = wire.AppendStr8(b, m.Channel)
	b = wire.AppendBytes8(b, m.Key)
	b = wire.AppendBytes32(b, m.Value)
	if fields&fieldExpiry != 0 {
		b = wire.AppendU64(b, uint64(m.Expiry))
	}
	if fields&fieldTimestamp != 0 {
		b = wire.AppendU64(b, m.Timestamp)
	}
	if fields&fieldRef != 0 {
		b = wire.AppendU64(b, m.Ref)
	}
	return b
}

func appendEnd(b []byte, vb uint16, reason Reason, seqno uint64, text string) []byte {
	b = append(b, msgEnd)
	b = wire.AppendU16(b, vb)
	b = append(b, byte(reason))
	b = wire.AppendU64(b, seqno)
	return wire.AppendStr8(b, text)
}

// appendSeqno appends a seqno message: vb's high seqno on the producer and
// the bytes of vb's messages not acknowledged yet.
func appendSeqno(b []byte, vb uint16, high, behind uint64) []byte {
	b = append(b, msgSeqno)
	b = wire.AppendU16(b, vb)
	b = wire.AppendU64(b, high)
	return wire.AppendU64(b, behind)
}

func appendRequest(b []byte, r Request) []byte {
	b = append(b, msgRequest)
	b = wire.AppendU16(b, r.VBucket)
	b = wire.AppendU32(b, 0) // flags, reserved
	b = wire.AppendU64(b, r.Start)
	b = wire.AppendU64(b, r.UUID)
	b = wire.AppendU64(b, r.SnapStart)
	return wire.AppendU64(b, r.SnapEnd)
}

func appendClose(b []byte, vb uint16) []byte {
	return wire.AppendU16(append(b, msgClose), vb)
}

func appendAck(b []byte, n uint32) []byte {
	return wire.AppendU32(append(b, msgAck), n)
}

// appendApplied appends an applied message: the consumer holds every
// mutation of vb up to applied, and has made those up to persisted durable
// (0: does not say). persisted <= applied.
func appendApplied(b []byte, vb uint16, applied, persisted uint64) []byte {
	b = wire.AppendU16(append(b, msgApplied), vb)
	b = wire.AppendU64(b, applied)
	return wire.AppendU64(b, persisted)
}

// decoder reads the messages of one packet payload. It never panics and
// never allocates a size read from its input: byte fields alias the payload
// and the failover log is bounded by MaxFailoverLog. Channel names are
// interned so that a stream of mutations to a few channels allocates no
// strings.
type decoder struct {
	d     wire.Decoder
	names map[string]string
	log   []FailoverEntry
}

// maxInterned bounds the interned channel names of one connection.
const maxInterned = 4096

func (dc *decoder) reset(payload []byte) { dc.d = wire.NewDecoder(payload) }

func (dc *decoder) more() bool { return dc.d.Len() > 0 }

// next decodes the next message into m.
func (dc *decoder) next(m *message) error {
	d := &dc.d
	m.typ = d.U8()
	m.vb = 0
	switch m.typ {
	case msgStart:
		m.vb = d.U16()
		n := int(d.U16())
		if n > MaxFailoverLog || n*16 > d.Len() {
			return fmt.Errorf("%w: failover log of %d entries", errMalformed, n)
		}
		dc.log = dc.log[:0]
		for range n {
			dc.log = append(dc.log, FailoverEntry{UUID: d.U64(), Seqno: d.U64()})
		}
		m.log = dc.log
	case msgSnapshot:
		m.vb = d.U16()
		m.start, m.end = d.U64(), d.U64()
		if d.Err() == nil && m.start > m.end {
			return fmt.Errorf("%w: snapshot [%d, %d]", errMalformed, m.start, m.end)
		}
	case msgMutation:
		if err := dc.mutation(m); err != nil {
			return err
		}
		m.vb = m.mut.VBucket
	case msgEnd:
		m.vb = d.U16()
		m.reason = Reason(d.U8())
		m.seqno = d.U64()
		m.text = d.Bytes8()
		if d.Err() == nil && m.reason > maxWireReason {
			return fmt.Errorf("%w: end reason %d", errMalformed, m.reason)
		}
	case msgSeqno:
		m.vb = d.U16()
		m.high, m.behind = d.U64(), d.U64()
	case msgRequest:
		m.vb = d.U16()
		if flags := d.U32(); flags != 0 && d.Err() == nil {
			return fmt.Errorf("%w: request flags %#x", errMalformed, flags)
		}
		m.req = Request{VBucket: m.vb, Start: d.U64(), UUID: d.U64(), SnapStart: d.U64(), SnapEnd: d.U64()}
	case msgClose:
		m.vb = d.U16()
	case msgAck:
		m.ack = d.U32()
	case msgApplied:
		m.vb = d.U16()
		m.applied, m.persisted = d.U64(), d.U64()
		if d.Err() == nil && m.persisted > m.applied {
			return fmt.Errorf("%w: vbucket %d persisted %d above applied %d", errMalformed, m.vb, m.persisted, m.applied)
		}
	default:
		if d.Err() == nil {
			return fmt.Errorf("%w: unknown message type %#x", errMalformed, m.typ)
		}
	}
	if err := d.Err(); err != nil {
		return fmt.Errorf("%w: message type %#x truncated", errMalformed, m.typ)
	}
	return nil
}

func (dc *decoder) mutation(m *message) error {
	d := &dc.d
	mu := &m.mut
	mu.VBucket = d.U16()
	mu.Seqno = d.U64()
	mu.Op = engine.Op(d.U8())
	fields := d.U8()
	channel := d.Bytes8()
	mu.Key = d.Bytes8()
	mu.Value = d.Bytes32()
	mu.Expiry, mu.Timestamp, mu.Ref = 0, 0, 0
	if fields&fieldExpiry != 0 {
		mu.Expiry = int64(d.U64())
	}
	if fields&fieldTimestamp != 0 {
		mu.Timestamp = d.U64()
	}
	if fields&fieldRef != 0 {
		mu.Ref = d.U64()
	}
	if d.Err() != nil {
		return fmt.Errorf("%w: mutation truncated", errMalformed)
	}
	switch {
	case fields&^fieldsKnown != 0:
		return fmt.Errorf("%w: mutation fields %#x", errMalformed, fields)
	case fields&fieldExpiry != 0 && mu.Expiry == 0, fields&fieldTimestamp != 0 && mu.Timestamp == 0,
		fields&fieldRef != 0 && mu.Ref == 0:
		return fmt.Errorf("%w: mutation carries a zero optional field", errMalformed)
	case mu.Op < engine.OpSet || mu.Op > engine.OpRemoveChannel:
		return fmt.Errorf("%w: mutation op %d", errMalformed, mu.Op)
	case len(mu.Key) > wire.MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes", errMalformed, len(mu.Key))
	case len(mu.Value) > wire.MaxValueLen:
		return fmt.Errorf("%w: value of %d bytes", errMalformed, len(mu.Value))
	}
	name, ok := dc.names[string(channel)]
	if !ok {
		if !wire.ValidChannel(channel) {
			return fmt.Errorf("%w: bad channel name %q", errMalformed, channel)
		}
		if dc.names == nil || len(dc.names) >= maxInterned {
			dc.names = make(map[string]string)
		}
		name = string(channel)
		dc.names[name] = name
	}
	mu.Channel = name
	return nil
}

// open is the body of the OpStreamOpen frame a consumer sends.
type open struct {
	consumer string
	bucket   string
	conn     uint16
	conns    uint16
	features uint32
	noop     time.Duration
	buffer   uint32
}

func appendOpen(b []byte, o open) []byte {
	b = append(b, openVersion)
	b = wire.AppendStr8(b, o.consumer)
	b = wire.AppendStr8(b, o.bucket)
	b = wire.AppendU16(b, o.conn)
	b = wire.AppendU16(b, o.conns)
	b = wire.AppendU32(b, o.features)
	b = wire.AppendU32(b, uint32(o.noop/time.Millisecond))
	return wire.AppendU32(b, o.buffer)
}

// errBadOpen is wrapped by every open-message validation error.
var errBadOpen = errors.New("stream: bad open message")

func parseOpen(body []byte) (open, error) {
	d := wire.NewDecoder(body)
	version := d.U8()
	consumer := d.Bytes8()
	bucket := d.Bytes8()
	o := open{conn: d.U16(), conns: d.U16(), features: d.U32()}
	noopMS := d.U32()
	o.buffer = d.U32()
	if err := d.Finish(); err != nil {
		return open{}, fmt.Errorf("%w: %w", errBadOpen, err)
	}
	o.noop = time.Duration(noopMS) * time.Millisecond
	switch {
	case version != openVersion:
		return open{}, fmt.Errorf("%w: version %d", errBadOpen, version)
	case len(consumer) == 0 || len(consumer) > wire.MaxClientName:
		return open{}, fmt.Errorf("%w: consumer name of %d bytes", errBadOpen, len(consumer))
	case !wire.ValidChannel(bucket):
		return open{}, fmt.Errorf("%w: bucket %q", errBadOpen, bucket)
	case o.conns == 0 || o.conns > MaxConnections || o.conn >= o.conns:
		return open{}, fmt.Errorf("%w: connection %d of %d", errBadOpen, o.conn, o.conns)
	case o.noop < MinNoopInterval || o.noop > MaxNoopInterval:
		return open{}, fmt.Errorf("%w: noop interval %d ms", errBadOpen, noopMS)
	case o.buffer == 0:
		return open{}, fmt.Errorf("%w: zero buffer size", errBadOpen)
	}
	o.consumer, o.bucket = string(consumer), string(bucket)
	return o, nil
}

// appendOpenReply appends the body of the producer's OK answer.
func appendOpenReply(b []byte, producer string, features uint32) []byte {
	return wire.AppendU32(wire.AppendStr8(b, producer), features)
}

func parseOpenReply(body []byte) (producer string, features uint32, err error) {
	d := wire.NewDecoder(body)
	name := d.Bytes8()
	features = d.U32()
	if err := d.Finish(); err != nil {
		return "", 0, fmt.Errorf("%w: open reply: %w", ErrProtocol, err)
	}
	if len(name) == 0 {
		return "", 0, fmt.Errorf("%w: open reply without a producer name", ErrProtocol)
	}
	return string(name), features, nil
}
