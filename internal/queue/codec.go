package queue

import (
	"encoding/binary"
	"errors"
	"math"
)

// The byte codec of the queue's files (the bodies of journal entries,
// state frames and overflow records; see the package comment). It is the
// queue's own, not the protocol's, so that no change to the protocol can
// change a file format. Integers are little-endian; str8 is a u8 length and
// that many bytes; bytes32 is a u32 length and that many bytes.

// Errors of a fieldDecoder.
var (
	errShortBody    = errors.New("queue: frame body ends inside a field")
	errTrailingData = errors.New("queue: bytes left after the frame body's fields")
)

func appendU8(dst []byte, v uint8) []byte   { return append(dst, v) }
func appendU16(dst []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(dst, v) }
func appendU32(dst []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(dst, v) }
func appendU64(dst []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(dst, v) }

// appendStr8 appends a u8 length and s. Callers validate names first (at
// most 255 bytes); a longer s is cut to 255.
func appendStr8(dst []byte, s string) []byte {
	if len(s) > math.MaxUint8 {
		s = s[:math.MaxUint8]
	}
	return append(append(dst, byte(len(s))), s...)
}

// fieldDecoder reads the fields of a frame body. It never panics and never
// allocates: a read past the end sets a sticky error (errShortBody) and
// returns zero values, and byte fields alias the body. Check err (or
// finish) once after reading.
type fieldDecoder struct {
	b   []byte
	err error
}

func newFieldDecoder(body []byte) fieldDecoder { return fieldDecoder{b: body} }

// len returns the number of unread bytes.
func (d *fieldDecoder) len() int { return len(d.b) }

// finish returns the sticky error, or errTrailingData if bytes are left.
func (d *fieldDecoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return errTrailingData
	}
	return nil
}

func (d *fieldDecoder) take(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.err = errShortBody
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *fieldDecoder) u8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *fieldDecoder) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *fieldDecoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *fieldDecoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// bytes8 reads a str8 field as bytes aliasing the body.
func (d *fieldDecoder) bytes8() []byte {
	n := int(d.u8())
	if d.err != nil {
		return nil
	}
	return d.take(n)
}

// bytes32 reads a bytes32 field aliasing the body.
func (d *fieldDecoder) bytes32() []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.b)) {
		d.err = errShortBody
		return nil
	}
	return d.take(int(n))
}

// rest returns all unread bytes.
func (d *fieldDecoder) rest() []byte {
	v := d.b
	d.b = nil
	return v
}
