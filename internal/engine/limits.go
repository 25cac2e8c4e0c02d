package engine

// Limits of the data model, shared by every engine, by the files the
// engines write and by the protocol (internal/wire defines its limits from
// these). They are part of the engines' file formats: changing one changes
// what a file may hold, so they are never derived from the protocol's frame
// size.
const (
	// MaxKeyLen is the longest key (kv keys, routing keys); keys are
	// 1..MaxKeyLen bytes.
	MaxKeyLen = 250
	// MaxChannelLen is the longest channel name; names are 1..MaxChannelLen
	// bytes of [A-Za-z0-9_-] (see ValidChannel).
	MaxChannelLen = 255
	// MaxValueLen is the largest value one record may hold: 64 MiB less
	// 1 KiB, so that a record with its key and fields fits in one frame of
	// the protocol (wire checks that at compile time). A node's configured
	// --max-value-size may be smaller, never larger.
	MaxValueLen = 64<<20 - 1024
	// MaxPushChannels is the most channels one queue push may name (a
	// journal entry counts them in one byte).
	MaxPushChannels = 255
)

// ValidChannel reports whether name is a legal channel name: 1..255 bytes
// of [A-Za-z0-9_-].
func ValidChannel(name []byte) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for _, c := range name {
		if !channelByte(c) {
			return false
		}
	}
	return true
}

// ValidChannelString is ValidChannel for a string.
func ValidChannelString(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !channelByte(name[i]) {
			return false
		}
	}
	return true
}

// channelByte reports whether c may appear in a channel name.
func channelByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		return true
	}
	return false
}
