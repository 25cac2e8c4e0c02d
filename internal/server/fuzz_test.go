package server

import (
	"io"
	"net"
	"testing"
	"time"

	"shoal/internal/wire"
)

// FuzzConnection feeds arbitrary bytes to a connection of a real server and
// checks that the node answers or closes without panicking, and keeps
// serving other connections.
func FuzzConnection(f *testing.F) {
	f.Add(frame(wire.OpPut, vbOf("k"), 1, putBody("c", "k", "v", 0)))
	f.Add(frame(wire.OpGetAll, 0, 2, append(wire.AppendStr8(nil, "c"), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)))
	f.Add(frame(wire.OpMirror, 0, 3, append(wire.AppendStr8(nil, "c"), 1, 0, 0, 0, 0)))
	f.Add(frame(wire.OpPutBatch, 0, 4, []byte{1, 'c', 255, 255, 255, 255}))
	f.Add(frame(wire.OpHello, 0, 5, []byte{4, 't', 'e', 's', 't', 1, 0, 0, 0, 0, 0}))
	f.Add(frame(wire.OpPush, 0, 6, pushBody([]string{"q", "r"}, "key", "value")))
	f.Add(frame(wire.OpPop, 0, 7, wire.AppendStr8(nil, "q")))
	f.Add(frame(wire.OpConsume, 0, 8, consumeBody("q", "sub", 10)))
	f.Add(append(frame(wire.OpProduce, 0, 9, append([]byte{1, 1, 'q'}, valuesBody("a", "b")...)), frame(wire.OpQueues, 0, 10, nil)...))
	f.Add(frame(wire.OpGetReplica, vbOf("k"), 11, keyBody("c", "k")))
	f.Add(frame(wire.OpGetClusterMap, 0, 12, wire.AppendU64(nil, 3)))
	f.Add(frame(wire.OpHeartbeat, 0, 13, AppendHeartbeat(nil, Heartbeat{From: "n", Inactive: []string{"m"}, Revision: 3})))
	f.Add(frame(wire.OpMapNotify, 0, 13, nil))
	f.Add(wire.AppendHeader(nil, wire.Header{Magic: wire.MagicRequest, Version: wire.Version, Opcode: wire.OpPush, Flags: wire.FlagVBucket, VBucket: 70, ID: 14, BodyLen: 5}))
	f.Add([]byte("garbage garbage garbage"))
	ts := startServer(f, Config{FrameTimeout: 200 * time.Millisecond, MaxValueSize: 4096})
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(data)
		nc.(*net.TCPConn).CloseWrite()
		// Drain what the node answers until it closes: it must, since the
		// input ended (within FrameTimeout if a frame was cut).
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("node did not close the connection after input %q: %v", data, err)
		}
		nc.Close()
		r := dialRaw(t, ts.addr)
		if st := r.put("alive", "k", "v"); st != wire.StatusOK {
			t.Fatalf("node not serving after input %q: %v", data, st)
		}
		r.nc.Close()
	})
}
