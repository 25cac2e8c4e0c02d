// Package wire is shoal's binary protocol, version 1: the frame header, the
// opcodes, the status codes, the protocol limits and the append-style
// encoders and bounds-checked decoders of frame bodies.
//
// Every frame is a fixed 16-byte header followed by a body of BodyLen bytes.
// All integers are little-endian.
//
//	 0       1       2       3       4       5       6       7
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	| magic |version|opcode | flags |    status     |    vbucket    |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|          request id           |          body length          |
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//
// magic is MagicRequest (0x53, 'S') on frames a client sends and
// MagicResponse (0x73, 's') on frames a node sends. version is 1. status is
// zero in requests. The request id is chosen by the client and echoed in every
// frame of the answer, so many requests can be in flight on one connection.
//
// docs/protocol.md is the full specification of every body; this package is
// its executable form.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"shoal/internal/engine"
)

// Magic bytes and the protocol version.
const (
	MagicRequest  = 0x53 // 'S': a frame sent by a client (or a peer acting as one)
	MagicResponse = 0x73 // 's': a frame sent by a node in answer
	Version       = 1
)

// Protocol limits. They are part of the protocol: a frame outside them is
// refused with a status, never allocated. The limits of keys, values and
// channel names are the data model's (internal/engine), which the protocol
// carries; the frame and body sizes are the protocol's own.
const (
	HeaderLen = 16
	// MaxBody is the largest body a frame may claim. A header claiming more
	// cannot be trusted to delimit the stream: the node answers
	// StatusFrameTooBig and closes the connection.
	MaxBody = 64 << 20
	// MaxKeyLen is the longest key; keys are 1..MaxKeyLen bytes.
	MaxKeyLen = engine.MaxKeyLen
	// MaxChannelLen is the longest channel name; names are 1..255 bytes of
	// [A-Za-z0-9_-].
	MaxChannelLen = engine.MaxChannelLen
	// MaxValueLen is the largest value one record may hold, which the
	// protocol carries in one frame. A node's configured --max-value-size
	// may be smaller, never larger.
	MaxValueLen = engine.MaxValueLen
	// MaxPushChannels is the most channels one Push may name.
	MaxPushChannels = engine.MaxPushChannels
	// MaxClientName is the longest client name in HELLO and AUTH.
	MaxClientName = 100
	// NonceLen is the length of the server nonce used by AUTH.
	NonceLen = 32
	// MacLen is the length of an HMAC-SHA256 proof.
	MacLen = 32
)

// The largest value, with a key and 1 KiB of other fields, must fit in one
// body: this constant does not compile (a negative uint) if a change to the
// engine's limits or to MaxBody breaks that.
const _ = uint(MaxBody - MaxValueLen - 1024)

// Flags in the header.
const (
	// FlagMore marks a frame of a stream after which more frames with the
	// same request id follow. The last frame of a stream has it clear.
	FlagMore = 0x01
	// FlagVBucket, on a Push, Produce, LogPut or LogPutBatch without a
	// routing key, says that the header's vBucket is where the records
	// go (a routing client spreads its writes over every vBucket); without
	// it the node picks among its active vBuckets.
	FlagVBucket = 0x02
)

// Header is a decoded frame header.
type Header struct {
	Magic   byte
	Version byte
	Opcode  Opcode
	Flags   byte
	Status  Status
	VBucket uint16
	ID      uint32
	BodyLen uint32
}

// Errors returned by ParseHeader. Both mean the byte stream cannot be
// trusted: the reader answers with a status and closes the connection.
var (
	ErrBadMagic     = errors.New("wire: bad magic byte")
	ErrBadVersion   = errors.New("wire: unsupported protocol version")
	ErrFrameTooBig  = errors.New("wire: frame body over the protocol limit")
	ErrShortBuffer  = errors.New("wire: short buffer")
	ErrMalformed    = errors.New("wire: malformed body")
	ErrTrailingData = errors.New("wire: trailing bytes after body fields")
)

// ParseHeader decodes the first HeaderLen bytes of b. It checks the magic
// (either direction is accepted; callers check the one they expect), the
// version and the body length limit.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShortBuffer
	}
	h := Header{
		Magic:   b[0],
		Version: b[1],
		Opcode:  Opcode(b[2]),
		Flags:   b[3],
		Status:  Status(binary.LittleEndian.Uint16(b[4:])),
		VBucket: binary.LittleEndian.Uint16(b[6:]),
		ID:      binary.LittleEndian.Uint32(b[8:]),
		BodyLen: binary.LittleEndian.Uint32(b[12:]),
	}
	if h.Magic != MagicRequest && h.Magic != MagicResponse {
		return h, ErrBadMagic
	}
	if h.Version != Version {
		return h, ErrBadVersion
	}
	if h.BodyLen > MaxBody {
		return h, ErrFrameTooBig
	}
	return h, nil
}

// AppendHeader appends the encoded header to dst.
func AppendHeader(dst []byte, h Header) []byte {
	return append(dst,
		h.Magic, h.Version, byte(h.Opcode), h.Flags,
		byte(h.Status), byte(h.Status>>8),
		byte(h.VBucket), byte(h.VBucket>>8),
		byte(h.ID), byte(h.ID>>8), byte(h.ID>>16), byte(h.ID>>24),
		byte(h.BodyLen), byte(h.BodyLen>>8), byte(h.BodyLen>>16), byte(h.BodyLen>>24))
}

// BeginFrame appends a header with a zero body length and returns the
// extended buffer and the offset of the header, for EndFrame to patch once
// the body has been appended.
func BeginFrame(dst []byte, h Header) ([]byte, int) {
	off := len(dst)
	h.BodyLen = 0
	return AppendHeader(dst, h), off
}

// EndFrame writes the body length of the frame begun at off.
func EndFrame(dst []byte, off int) []byte {
	n := len(dst) - off - HeaderLen
	binary.LittleEndian.PutUint32(dst[off+12:], uint32(n))
	return dst
}

// String renders a header for logs and errors.
func (h Header) String() string {
	return fmt.Sprintf("magic=%#x v=%d op=%s flags=%#x status=%s vb=%d id=%d len=%d",
		h.Magic, h.Version, h.Opcode, h.Flags, h.Status, h.VBucket, h.ID, h.BodyLen)
}

// PatchStatus rewrites the status of the frame begun at off.
func PatchStatus(dst []byte, off int, st Status) {
	binary.LittleEndian.PutUint16(dst[off+4:], uint16(st))
}

// StatusError is an answer with a status other than ok to a request sent
// with RoundTrip.
type StatusError struct {
	Op      Opcode
	Status  Status
	Message string // the answer's body
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: %s", e.Op, e.Status)
	}
	return fmt.Sprintf("%s: %s: %s", e.Op, e.Status, e.Message)
}

// RoundTrip sends one request on conn and reads its answer, for the
// request/answer exchanges nodes make of each other on a connection of
// their own (handshakes, joins). An answer body over maxAnswer bytes is
// refused unread; a status other than ok is a *StatusError.
func RoundTrip(conn io.ReadWriter, op Opcode, id uint32, body []byte, maxAnswer int) ([]byte, error) {
	frame := AppendHeader(nil, Header{Magic: MagicRequest, Version: Version, Opcode: op, ID: id, BodyLen: uint32(len(body))})
	if _, err := conn.Write(append(frame, body...)); err != nil {
		return nil, fmt.Errorf("cannot send %s: %w", op, err)
	}
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil, fmt.Errorf("cannot read the %s answer: %w", op, err)
	}
	h, err := ParseHeader(hb[:])
	if err != nil {
		return nil, fmt.Errorf("%s answer: %w", op, err)
	}
	if h.Magic != MagicResponse || h.Opcode != op || h.ID != id || int64(h.BodyLen) > int64(maxAnswer) {
		return nil, fmt.Errorf("%w: unexpected %s answer %v", ErrMalformed, op, h)
	}
	reply := make([]byte, h.BodyLen)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return nil, fmt.Errorf("cannot read the %s answer: %w", op, err)
	}
	if h.Status != StatusOK {
		return nil, &StatusError{Op: op, Status: h.Status, Message: string(reply)}
	}
	return reply, nil
}
