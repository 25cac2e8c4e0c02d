package server

import (
	"reflect"
	"testing"

	"shoal/internal/wire"
)

// TestHeartbeatCodec: a heartbeat round-trips; malformed bodies (short,
// unknown flags, an empty node id, too many nodes, trailing bytes) are
// refused.
func TestHeartbeatCodec(t *testing.T) {
	hb := Heartbeat{From: "node-a", NotReady: true, Why: "disk: stalled", Inactive: []string{"node-b", "node-c"}, Revision: 42}
	got, ok := decodeHeartbeat(AppendHeartbeat(nil, hb))
	if !ok || !reflect.DeepEqual(got, hb) {
		t.Fatalf("round trip: %+v %v", got, ok)
	}
	good := AppendHeartbeat(nil, hb)
	bad := map[string][]byte{
		"empty":          nil,
		"short":          good[:len(good)-1],
		"trailing":       append(append([]byte{}, good...), 0),
		"unknown flags":  append(wire.AppendStr8(nil, "n"), 2, 0, 0, 0),
		"no node id":     AppendHeartbeat(nil, Heartbeat{Revision: 1}),
		"empty inactive": wire.AppendU64(wire.AppendStr8(wire.AppendU16(append(wire.AppendStr8(nil, "n"), 0, 0), 1), ""), 1),
		"too many nodes": wire.AppendU16(append(wire.AppendStr8(nil, "n"), 0, 0), maxHeartbeatNodes+1),
	}
	for name, b := range bad {
		if _, ok := decodeHeartbeat(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
