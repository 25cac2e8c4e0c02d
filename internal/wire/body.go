package wire

import (
	"encoding/binary"
	"math"

	"shoal/internal/engine"
)

// Body encoders append to dst and return the extended slice, in the style
// of strconv.Append*. Field encodings (docs/protocol.md §Fields):
//
//	u8, u16, u32, u64   little-endian integers
//	str8                u8 length, then that many bytes (channel names, keys, client names)
//	bytes32             u32 length, then that many bytes (values)

// AppendU8 appends one byte.
func AppendU8(dst []byte, v uint8) []byte { return append(dst, v) }

// AppendU16 appends a little-endian u16.
func AppendU16(dst []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(dst, v) }

// AppendU32 appends a little-endian u32.
func AppendU32(dst []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(dst, v) }

// AppendU64 appends a little-endian u64.
func AppendU64(dst []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(dst, v) }

// AppendStr8 appends a u8 length and s. s must be at most 255 bytes; longer
// strings are cut (callers validate first).
func AppendStr8(dst []byte, s string) []byte {
	if len(s) > math.MaxUint8 {
		s = s[:math.MaxUint8]
	}
	return append(append(dst, byte(len(s))), s...)
}

// AppendBytes8 is AppendStr8 for a byte slice.
func AppendBytes8(dst []byte, b []byte) []byte {
	if len(b) > math.MaxUint8 {
		b = b[:math.MaxUint8]
	}
	return append(append(dst, byte(len(b))), b...)
}

// AppendBytes32 appends a u32 length and b.
func AppendBytes32(dst []byte, b []byte) []byte {
	return append(AppendU32(dst, uint32(len(b))), b...)
}

// Decoder reads fields from a body. It never panics and never allocates: a
// read past the end sets a sticky error and returns zero values, and byte
// fields alias the body. Check Err (or Finish) once after reading.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder returns a decoder over body.
func NewDecoder(body []byte) Decoder { return Decoder{b: body} }

// Err returns ErrMalformed if any read ran past the end of the body.
func (d *Decoder) Err() error { return d.err }

// Len returns the number of unread bytes.
func (d *Decoder) Len() int { return len(d.b) }

// Finish returns the sticky error, or ErrTrailingData if bytes are left.
func (d *Decoder) Finish() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return ErrTrailingData
	}
	return nil
}

func (d *Decoder) take(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.err = ErrMalformed
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// U8 reads one byte.
func (d *Decoder) U8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

// U16 reads a little-endian u16.
func (d *Decoder) U16() uint16 {
	if b := d.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

// U32 reads a little-endian u32.
func (d *Decoder) U32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// U64 reads a little-endian u64.
func (d *Decoder) U64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Bytes8 reads a str8 field as bytes aliasing the body.
func (d *Decoder) Bytes8() []byte {
	n := int(d.U8())
	if d.err != nil {
		return nil
	}
	return d.take(n)
}

// Bytes32 reads a bytes32 field aliasing the body.
func (d *Decoder) Bytes32() []byte {
	n := d.U32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.b)) {
		d.err = ErrMalformed
		return nil
	}
	return d.take(int(n))
}

// Rest returns all unread bytes.
func (d *Decoder) Rest() []byte {
	v := d.b
	d.b = nil
	return v
}

// ValidChannel reports whether name is a legal channel name: 1..255 bytes
// of [A-Za-z0-9_-] (engine.ValidChannel).
func ValidChannel(name []byte) bool { return engine.ValidChannel(name) }

// ValidChannelString is ValidChannel for a string.
func ValidChannelString(name string) bool { return engine.ValidChannelString(name) }
