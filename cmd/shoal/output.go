package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// text is a key or value in --json output: a JSON string when it is
// valid UTF-8, otherwise {"base64": "..."} (the bytes in standard base64),
// so that any bytes survive the trip.
type text []byte

// MarshalJSON implements json.Marshaler.
func (t text) MarshalJSON() ([]byte, error) {
	if utf8.Valid(t) {
		return json.Marshal(string(t))
	}
	return json.Marshal(struct {
		Base64 string `json:"base64"`
	}{base64.StdEncoding.EncodeToString(t)})
}

// writeJSON writes v as one JSON document on a line: a command's whole
// answer, or one record of a stream (JSON lines).
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// writeValue writes a value as it is, adding a newline when w is a
// terminal and the value does not end with one, so that the shell prompt
// does not land on the value's last line. Piped or redirected, the bytes
// are exactly the value's.
func writeValue(w io.Writer, v []byte) error {
	_, err := w.Write(v)
	if err == nil && isTerminal(w) && (len(v) == 0 || v[len(v)-1] != '\n') {
		_, err = w.Write([]byte{'\n'})
	}
	return err
}

// isTerminal reports whether w is a terminal; a variable for tests.
var isTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
