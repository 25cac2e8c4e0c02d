package repl

import (
	"context"
	"fmt"
	"io"
	"net"

	"shoal/internal/auth"
	"shoal/internal/wire"
)

// maxHandshakeReply bounds the body of a HELLO or AUTH answer.
const maxHandshakeReply = 4096

// Handshake returns the function a Replicator runs on each fresh
// connection before opening the stream: HELLO as client name, then AUTH
// as user with secret when user is not empty. When the producer has
// credentials, user must be the admin credential (stream connections are
// an operator's business). A producer whose vBucket count is not vbuckets
// is refused (0: not checked): its keys would map to other vBuckets.
func Handshake(name, user string, secret []byte, vbuckets int) func(ctx context.Context, conn net.Conn) error {
	return func(_ context.Context, conn net.Conn) error {
		b := wire.AppendStr8(nil, name)
		b = wire.AppendU16(b, wire.Version)
		b = wire.AppendU32(b, 0)
		reply, err := roundTrip(conn, wire.OpHello, 1, b)
		if err != nil {
			return err
		}
		d := wire.NewDecoder(reply)
		d.Bytes8() // node id
		d.Bytes8() // version
		theirs := int(d.U16())
		d.U32() // features
		required := d.U8() == 1
		nonce := d.Rest()
		if d.Err() != nil || len(nonce) != wire.NonceLen {
			return fmt.Errorf("%w: malformed HELLO answer", wire.ErrMalformed)
		}
		if vbuckets != 0 && theirs != vbuckets {
			return fmt.Errorf("the producer has %d vbuckets, this node %d: they cannot replicate each other", theirs, vbuckets)
		}
		if user == "" {
			if required {
				return fmt.Errorf("the producer requires authentication: give the replica a user and secret")
			}
			return nil
		}
		b = wire.AppendStr8(nil, user)
		b = append(b, auth.Proof(secret, nonce, user)...)
		_, err = roundTrip(conn, wire.OpAuth, 2, b)
		return err
	}
}

// roundTrip sends one request and reads its answer; a status other than
// ok is an error carrying the node's message.
func roundTrip(conn net.Conn, op wire.Opcode, id uint32, body []byte) ([]byte, error) {
	frame := wire.AppendHeader(nil, wire.Header{
		Magic: wire.MagicRequest, Version: wire.Version, Opcode: op, ID: id, BodyLen: uint32(len(body)),
	})
	if _, err := conn.Write(append(frame, body...)); err != nil {
		return nil, fmt.Errorf("cannot send %s: %w", op, err)
	}
	var hb [wire.HeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil, fmt.Errorf("cannot read the %s answer: %w", op, err)
	}
	h, err := wire.ParseHeader(hb[:])
	if err != nil {
		return nil, fmt.Errorf("%s answer: %w", op, err)
	}
	if h.Magic != wire.MagicResponse || h.Opcode != op || h.ID != id || h.BodyLen > maxHandshakeReply {
		return nil, fmt.Errorf("%w: unexpected %s answer %v", wire.ErrMalformed, op, h)
	}
	reply := make([]byte, h.BodyLen)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return nil, fmt.Errorf("cannot read the %s answer: %w", op, err)
	}
	if h.Status != wire.StatusOK {
		return nil, fmt.Errorf("%s refused: %s: %s", op, h.Status, reply)
	}
	return reply, nil
}
