package repl

import (
	"context"
	"fmt"
	"net"

	"shoal/internal/auth"
	"shoal/internal/wire"
)

// maxHandshakeReply bounds the body of a HELLO or AUTH answer.
const maxHandshakeReply = 4096

// Handshake returns the function a Replicator runs on each fresh
// connection before opening the stream: HELLO as client name, then AUTH
// as user with secret when user is not empty. When the producer has
// credentials, user must be the peer credential (auth.Peer) or the admin
// one. A producer whose vBucket count is not vbuckets
// is refused (0: not checked): its keys would map to other vBuckets.
func Handshake(name, user string, secret []byte, vbuckets int) func(ctx context.Context, conn net.Conn) error {
	return func(_ context.Context, conn net.Conn) error {
		b := wire.AppendStr8(nil, name)
		b = wire.AppendU16(b, wire.Version)
		b = wire.AppendU32(b, 0)
		reply, err := wire.RoundTrip(conn, wire.OpHello, 1, b, maxHandshakeReply)
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
				return fmt.Errorf("the producer requires authentication: give this node the secret of the %q credential (--peer-secret-file; a standby: --replica-user and --replica-secret-file)", auth.Peer)
			}
			return nil
		}
		b = wire.AppendStr8(nil, user)
		b = append(b, auth.Proof(secret, nonce, user)...)
		_, err = wire.RoundTrip(conn, wire.OpAuth, 2, b, maxHandshakeReply)
		return err
	}
}
