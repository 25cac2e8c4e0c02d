// Package resp serves the Redis protocol (RESP2 and RESP3) on a port of its
// own: Redis clients, redis-cli and redis-benchmark work against shoal.
// Commands on keys of vBuckets the node is active for run on the node's
// engines; the others are forwarded to their active over the cluster's
// connections (forward.go) and answered as if local.
//
// proto.go is the wire format: a hand-written parser of commands (arrays
// of bulk strings, and inline commands) that never allocates what a client
// claims, and the append functions of the answers.
package resp

import (
	"errors"
	"strconv"
)

// Limits of the parser.
const (
	// MaxArgs is the most arguments a command may have.
	MaxArgs = 1 << 20
	// MaxInline is the longest inline command, its CRLF excluded.
	MaxInline = 64 << 10
	// maxLenDigits bounds the digits of a length (a 64-bit length is 19).
	maxLenDigits = 19
)

// Parse errors. Every one leaves the stream unusable: the server answers
// it and closes the connection.
var (
	ErrProtocol     = errors.New("Protocol error")
	errBadCount     = errors.New("Protocol error: invalid multibulk length")
	errBadBulkLen   = errors.New("Protocol error: invalid bulk length")
	errExpectedBulk = errors.New("Protocol error: expected '$'")
	errBadCRLF      = errors.New("Protocol error: expected CRLF after a bulk string")
	errInlineTooBig = errors.New("Protocol error: too big inline request")
	errCmdTooBig    = errors.New("Protocol error: command too big")
	errUnbalanced   = errors.New("Protocol error: unbalanced quotes in request")
)

// Parser parses commands out of a buffer. The zero value is not usable:
// set MaxBulk and MaxCommand.
type Parser struct {
	// MaxBulk is the largest bulk string (a key or a value) accepted.
	MaxBulk int
	// MaxCommand is the largest command, in bytes of the stream.
	MaxCommand int
}

// Parse parses one command at the start of b into args (reused), whose
// elements alias b. It returns the arguments and the bytes consumed. When
// b holds only part of a command, n is 0, err nil, and need (when known)
// the total bytes the command needs so far, so that the caller can grow
// its buffer; an empty command (a blank inline line, "*0") has n > 0 and no
// arguments. Any err means the stream cannot be trusted any more.
func (p *Parser) Parse(b []byte, args [][]byte) (out [][]byte, n, need int, err error) {
	args = args[:0]
	if len(b) == 0 {
		return args, 0, 0, nil
	}
	if b[0] != '*' {
		return p.parseInline(b, args)
	}
	count, pos, err := parseLen(b, 1)
	if err != nil {
		return args, 0, 0, errBadCount
	}
	if pos == 0 {
		return args, 0, 0, nil
	}
	if count > MaxArgs {
		return args, 0, 0, errBadCount
	}
	if count <= 0 { // *0 and *-1: nothing to do
		return args, pos, 0, nil
	}
	for i := int64(0); i < count; i++ {
		if pos >= len(b) {
			return args[:0], 0, pos + 1, nil
		}
		if b[pos] != '$' {
			return args, 0, 0, errExpectedBulk
		}
		l, next, err := parseLen(b, pos+1)
		if err != nil {
			return args, 0, 0, errBadBulkLen
		}
		if next == 0 {
			if len(b)-pos > maxLenDigits+3 {
				return args, 0, 0, errBadBulkLen
			}
			return args[:0], 0, len(b) + 1, nil
		}
		if l < 0 || l > int64(p.MaxBulk) {
			return args, 0, 0, errBadBulkLen
		}
		end := next + int(l)
		if end+2 > p.MaxCommand {
			return args, 0, 0, errCmdTooBig
		}
		if end+2 > len(b) {
			return args[:0], 0, end + 2, nil
		}
		if b[end] != '\r' || b[end+1] != '\n' {
			return args, 0, 0, errBadCRLF
		}
		args = append(args, b[next:end:end])
		pos = end + 2
	}
	return args, pos, 0, nil
}

// parseLen parses a decimal length (optionally -1) ending in CRLF at
// b[i:]. It returns the value and the index after the CRLF, or 0 when the
// CRLF has not arrived yet.
func parseLen(b []byte, i int) (int64, int, error) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	var v int64
	digits := 0
	for ; i < len(b); i++ {
		c := b[i]
		if c == '\r' {
			if i+1 >= len(b) {
				return 0, 0, nil
			}
			if b[i+1] != '\n' || digits == 0 {
				return 0, 0, ErrProtocol
			}
			if neg {
				if v != 1 {
					return 0, 0, ErrProtocol
				}
				return -1, i + 2, nil
			}
			return v, i + 2, nil
		}
		if c < '0' || c > '9' || digits >= maxLenDigits-1 {
			return 0, 0, ErrProtocol
		}
		v = v*10 + int64(c-'0')
		digits++
	}
	return 0, 0, nil
}

// parseInline splits an inline command (a line of words) as Redis does:
// spaces separate arguments, "double" and 'single' quotes group them,
// with \n, \r, \t, \\, \", \xHH escapes inside double quotes. The
// arguments alias b except when quotes need unescaping: then they are
// rewritten in place (an escape is never shorter than its result).
func (p *Parser) parseInline(b []byte, args [][]byte) ([][]byte, int, int, error) {
	end := -1
	for i, c := range b {
		if c == '\n' {
			end = i
			break
		}
		if i >= MaxInline {
			return args, 0, 0, errInlineTooBig
		}
	}
	if end < 0 {
		if len(b) > MaxInline {
			return args, 0, 0, errInlineTooBig
		}
		return args, 0, 0, nil
	}
	line := b[:end]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	i := 0
	for i < len(line) {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i >= len(line) {
			break
		}
		if len(args) >= MaxArgs {
			return args, 0, 0, errBadCount
		}
		start := i
		w := i // write index for unescaped bytes
		switch line[i] {
		case '"':
			i++
			for {
				if i >= len(line) {
					return args, 0, 0, errUnbalanced
				}
				c := line[i]
				if c == '"' {
					i++
					break
				}
				if c == '\\' && i+1 < len(line) {
					i++
					c = line[i]
					switch c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					case 'x':
						if i+2 < len(line) && isHex(line[i+1]) && isHex(line[i+2]) {
							c = unhex(line[i+1])<<4 | unhex(line[i+2])
							i += 2
						}
					}
				}
				line[w] = c
				w++
				i++
			}
		case '\'':
			i++
			for {
				if i >= len(line) {
					return args, 0, 0, errUnbalanced
				}
				c := line[i]
				if c == '\'' {
					i++
					break
				}
				if c == '\\' && i+1 < len(line) && line[i+1] == '\'' {
					i++
					c = '\''
				}
				line[w] = c
				w++
				i++
			}
		default:
			for i < len(line) && !isSpace(line[i]) {
				i++
			}
			w = i
		}
		if i < len(line) && !isSpace(line[i]) && w != i {
			// A closing quote must be followed by a space or the end.
			return args, 0, 0, errUnbalanced
		}
		args = append(args, line[start:w:w])
	}
	return args, end + 1, 0, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// Answers. proto is 2 or 3 where the encodings differ.

// AppendSimple appends a simple string (+OK).
func AppendSimple(b []byte, s string) []byte {
	b = append(b, '+')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// AppendError appends an error; msg must start with its code (ERR,
// WRONGTYPE, ...) and hold no CR or LF.
func AppendError(b []byte, msg string) []byte {
	b = append(b, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, '\r', '\n')
}

// AppendInt appends an integer.
func AppendInt(b []byte, v int64) []byte {
	b = append(b, ':')
	b = strconv.AppendInt(b, v, 10)
	return append(b, '\r', '\n')
}

// AppendBulk appends a bulk string.
func AppendBulk(b, v []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, '\r', '\n')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

// AppendBulkString appends a bulk string.
func AppendBulkString(b []byte, v string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, '\r', '\n')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

// AppendNull appends the null answer: $-1 in RESP2, _ in RESP3.
func AppendNull(b []byte, proto int) []byte {
	if proto >= 3 {
		return append(b, '_', '\r', '\n')
	}
	return append(b, '$', '-', '1', '\r', '\n')
}

// AppendNullArray appends a null array: *-1 in RESP2, _ in RESP3.
func AppendNullArray(b []byte, proto int) []byte {
	if proto >= 3 {
		return append(b, '_', '\r', '\n')
	}
	return append(b, '*', '-', '1', '\r', '\n')
}

// AppendArray appends the header of an array of n elements.
func AppendArray(b []byte, n int) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

// AppendMap appends the header of a map of n pairs: %n in RESP3, an array
// of 2n elements in RESP2.
func AppendMap(b []byte, n int, proto int) []byte {
	if proto < 3 {
		return AppendArray(b, 2*n)
	}
	b = append(b, '%')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

// AppendSet appends the header of a set of n elements: ~n in RESP3, an
// array in RESP2.
func AppendSet(b []byte, n int, proto int) []byte {
	if proto < 3 {
		return AppendArray(b, n)
	}
	b = append(b, '~')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

// AppendVerbatim appends a text answer: a verbatim string (=, txt) in
// RESP3, a bulk string in RESP2 (INFO, CLIENT INFO).
func AppendVerbatim(b []byte, s string, proto int) []byte {
	if proto < 3 {
		return AppendBulkString(b, s)
	}
	b = append(b, '=')
	b = strconv.AppendInt(b, int64(len(s)+4), 10)
	b = append(b, "\r\ntxt:"...)
	b = append(b, s...)
	return append(b, '\r', '\n')
}
