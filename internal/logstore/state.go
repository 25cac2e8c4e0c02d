package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"

	"shoal/internal/engine"
	"shoal/internal/logstore/segment"
	"shoal/internal/vfs"
)

// The state file, Dir/vbuckets.state, keeps what the segments alone cannot
// tell after a restart: a floor under every vBucket's seqno (so that seqnos
// never go back after a channel removal or a vBucket drop) and the
// channel-removal tombstones that replication still has to stream and that
// hide older records.
//
//	+----------+---------+----------+--------+-------------+--------+
//	|  magic   | version | reserved |   V    | V x floor   | ntombs |
//	| 8 bytes  | uint16  | uint16   | uint32 | uint64 each | uint32 |
//	+----------+---------+----------+--------+-------------+--------+
//	then ntombs x
//	+--------+--------------+---------+--------+
//	| namelen| channel name | vBucket | seqno  |
//	| uint8  | namelen B    | uint16  | uint64 |
//	+--------+--------------+---------+--------+
//	then
//	+--------+
//	|  CRC   |  masked CRC-32C of every byte before it
//	| uint32 |
//	+--------+
//
// It is replaced atomically (vfs.WriteFileAtomic): written to
// vbuckets.state.tmp, fsynced, renamed over the old one, directory fsynced.
const (
	stateName    = "vbuckets.state"
	stateMagic   = "SHOALVBS"
	stateVersion = 1
	// maxStateSize bounds the state file (room for every vBucket's floor
	// and about 250,000 tombstones of the longest channel name).
	maxStateSize = 64 << 20
)

// ErrBadState means the state file is damaged: Open refuses the
// directory; `shoal check --repair` moves the file aside so that the next
// Open rebuilds it from the segments.
var ErrBadState = errors.New("logstore: damaged vbuckets.state")

// tombs are channel-removal tombstones: channel -> vBucket -> the seqno
// of the removal. Records of that channel and vBucket at or below it are
// hidden.
type tombs map[string]map[uint16]uint64

// set records a tombstone.
func (t tombs) set(ch string, vb uint16, seqno uint64) {
	m := t[ch]
	if m == nil {
		m = map[uint16]uint64{}
		t[ch] = m
	}
	m[vb] = seqno
}

// state is the content of the state file.
type state struct {
	floors []uint64
	tombs  tombs
}

func (st *state) encode() []byte {
	b := make([]byte, 0, 24+8*len(st.floors))
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint16(b, stateVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(st.floors)))
	for _, f := range st.floors {
		b = binary.LittleEndian.AppendUint64(b, f)
	}
	names := slices.Sorted(maps.Keys(st.tombs))
	n := 0
	for _, m := range st.tombs {
		n += len(m)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	for _, name := range names {
		for _, vb := range slices.Sorted(maps.Keys(st.tombs[name])) {
			b = append(b, byte(len(name)))
			b = append(b, name...)
			b = binary.LittleEndian.AppendUint16(b, vb)
			b = binary.LittleEndian.AppendUint64(b, st.tombs[name][vb])
		}
	}
	return binary.LittleEndian.AppendUint32(b, segment.Checksum(b))
}

func decodeState(b []byte) (*state, error) {
	if len(b) < 24 || string(b[:8]) != stateMagic {
		return nil, fmt.Errorf("%w: bad magic or short file", ErrBadState)
	}
	body := b[:len(b)-4]
	if binary.LittleEndian.Uint32(b[len(b)-4:]) != segment.Checksum(body) {
		return nil, fmt.Errorf("%w: CRC mismatch", ErrBadState)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != stateVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadState, v)
	}
	nvb := binary.LittleEndian.Uint32(b[12:])
	p := body[16:]
	if nvb == 0 || uint64(nvb)*8+4 > uint64(len(p)) {
		return nil, fmt.Errorf("%w: %d vbuckets in %d bytes", ErrBadState, nvb, len(p))
	}
	st := &state{floors: make([]uint64, nvb), tombs: tombs{}}
	for i := range st.floors {
		st.floors[i] = binary.LittleEndian.Uint64(p[8*i:])
	}
	p = p[8*nvb:]
	n := binary.LittleEndian.Uint32(p)
	p = p[4:]
	for range n {
		if len(p) < 1 || len(p) < 1+int(p[0])+10 {
			return nil, fmt.Errorf("%w: truncated tombstone", ErrBadState)
		}
		name := string(p[1 : 1+p[0]])
		p = p[1+int(p[0]):]
		vb := binary.LittleEndian.Uint16(p)
		if !engine.ValidChannelString(name) || uint32(vb) >= nvb {
			return nil, fmt.Errorf("%w: bad tombstone %q/%d", ErrBadState, name, vb)
		}
		st.tombs.set(name, vb, binary.LittleEndian.Uint64(p[2:]))
		p = p[10:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadState, len(p))
	}
	return st, nil
}

// readState reads dir's state file; it returns (nil, nil) when there is
// none.
func readState(fsys vfs.FS, dir string) (*state, error) {
	f, err := fsys.Open(filepath.Join(dir, stateName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open state file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot stat state file: %w", err)
	}
	if fi.Size() > maxStateSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadState, fi.Size())
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("cannot read state file: %w", err)
	}
	return decodeState(b)
}

// writeState replaces dir's state file with st (vfs.WriteFileAtomic).
func writeState(fsys vfs.FS, dir string, st *state) error {
	if err := vfs.WriteFileAtomic(fsys, filepath.Join(dir, stateName), st.encode(), 0o644); err != nil {
		return fmt.Errorf("cannot write state file: %w", noSpace(err))
	}
	return nil
}
