package stream

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/s2"
	"pgregory.net/rapid"

	"shoal/internal/engine"
	"shoal/internal/wire"
)

// decodeAll decodes every message of payload into copies.
func decodeAll(payload []byte) ([]message, error) {
	var dc decoder
	dc.reset(payload)
	var out []message
	for dc.more() {
		var m message
		if err := dc.next(&m); err != nil {
			return out, err
		}
		m.log = append([]FailoverEntry(nil), m.log...)
		m.text = bytes.Clone(m.text)
		m.mut.Key = bytes.Clone(m.mut.Key)
		m.mut.Value = bytes.Clone(m.mut.Value)
		out = append(out, m)
	}
	return out, nil
}

// encode appends m in its wire form.
func encode(b []byte, m *message) []byte {
	switch m.typ {
	case msgStart:
		return appendStart(b, m.vb, m.log)
	case msgSnapshot:
		return appendSnapshot(b, m.vb, m.start, m.end)
	case msgMutation:
		return appendMutation(b, &m.mut)
	case msgEnd:
		return appendEnd(b, m.vb, m.reason, m.seqno, string(m.text))
	case msgRequest:
		return appendRequest(b, m.req)
	case msgClose:
		return appendClose(b, m.vb)
	case msgAck:
		return appendAck(b, m.ack)
	case msgSeqno:
		return appendSeqno(b, m.vb, m.high, m.behind)
	case msgApplied:
		return appendApplied(b, m.vb, m.applied, m.persisted)
	}
	panic("unknown message type")
}

func genMessage(t *rapid.T) message {
	vb := rapid.Uint16().Draw(t, "vb")
	switch rapid.IntRange(0, 8).Draw(t, "type") {
	case 0:
		n := rapid.IntRange(0, 5).Draw(t, "n")
		log := make([]FailoverEntry, n)
		for i := range log {
			log[i] = FailoverEntry{rapid.Uint64().Draw(t, "uuid"), rapid.Uint64().Draw(t, "seqno")}
		}
		return message{typ: msgStart, vb: vb, log: log}
	case 1:
		start := rapid.Uint64().Draw(t, "start")
		return message{typ: msgSnapshot, vb: vb, start: start, end: rapid.Uint64Min(start).Draw(t, "end")}
	case 2:
		mut := engine.Mutation{
			VBucket:   vb,
			Seqno:     rapid.Uint64().Draw(t, "seqno"),
			Op:        engine.Op(rapid.IntRange(int(engine.OpSet), int(engine.OpRemoveChannel)).Draw(t, "op")),
			Channel:   rapid.StringMatching(`[A-Za-z0-9_-]{1,20}`).Draw(t, "channel"),
			Key:       rapid.SliceOfN(rapid.Byte(), 0, wire.MaxKeyLen).Draw(t, "key"),
			Value:     rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "value"),
			Expiry:    rapid.Int64().Draw(t, "expiry"),
			Timestamp: rapid.Uint64().Draw(t, "ts"),
			Ref:       rapid.Uint64().Draw(t, "ref"),
		}
		return message{typ: msgMutation, vb: vb, mut: mut}
	case 3:
		return message{typ: msgEnd, vb: vb, reason: Reason(rapid.IntRange(0, int(maxWireReason)).Draw(t, "reason")),
			seqno: rapid.Uint64().Draw(t, "seqno"), text: []byte(rapid.StringN(0, 100, 255).Draw(t, "text"))}
	case 4:
		start := rapid.Uint64().Draw(t, "start")
		return message{typ: msgRequest, vb: vb, req: Request{VBucket: vb, Start: start, UUID: rapid.Uint64().Draw(t, "uuid"),
			SnapStart: rapid.Uint64Max(start).Draw(t, "snapStart"), SnapEnd: rapid.Uint64Min(start).Draw(t, "snapEnd")}}
	case 5:
		return message{typ: msgClose, vb: vb}
	case 6:
		return message{typ: msgSeqno, vb: vb, high: rapid.Uint64().Draw(t, "high"), behind: rapid.Uint64().Draw(t, "behind")}
	case 7:
		applied := rapid.Uint64().Draw(t, "applied")
		return message{typ: msgApplied, vb: vb, applied: applied, persisted: rapid.Uint64Max(applied).Draw(t, "persisted")}
	}
	return message{typ: msgAck, ack: rapid.Uint32().Draw(t, "ack")}
}

// normalized blanks the fields decoding fills that encoding does not read.
func normalized(ms []message) []message {
	out := make([]message, len(ms))
	for i, m := range ms {
		if m.typ == msgMutation {
			m.vb = m.mut.VBucket
		}
		if len(m.log) == 0 {
			m.log = nil
		}
		if len(m.text) == 0 {
			m.text = nil
		}
		if len(m.mut.Key) == 0 {
			m.mut.Key = nil
		}
		if len(m.mut.Value) == 0 {
			m.mut.Value = nil
		}
		out[i] = m
	}
	return out
}

func TestMessagesRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msgs := rapid.SliceOfN(rapid.Custom(genMessage), 1, 20).Draw(t, "msgs")
		var payload []byte
		for i := range msgs {
			payload = encode(payload, &msgs[i])
		}
		got, err := decodeAll(payload)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		opt := cmp.AllowUnexported(message{})
		if d := cmp.Diff(normalized(msgs), normalized(got), opt); d != "" {
			t.Fatalf("round trip (-sent +decoded):\n%s", d)
		}
	})
}

func TestDecodeRejects(t *testing.T) {
	mut := engine.Mutation{VBucket: 1, Seqno: 2, Op: engine.OpSet, Channel: "c", Key: []byte("k"), Value: []byte("v")}
	good := appendMutation(nil, &mut)
	tests := []struct {
		name    string
		payload []byte
	}{
		{"unknown type", []byte{0x7f}},
		{"truncated mutation", good[:len(good)-1]},
		{"bad op", func() []byte { b := bytes.Clone(good); b[11] = 99; return b }()},
		{"unknown field bit", func() []byte { b := bytes.Clone(good); b[12] = 0x80; return b }()},
		{"bad channel", appendMutation(nil, &engine.Mutation{Op: engine.OpSet, Channel: "a b"})},
		{"empty channel", appendMutation(nil, &engine.Mutation{Op: engine.OpSet})},
		{"key too long", appendMutation(nil, &engine.Mutation{Op: engine.OpSet, Channel: "c", Key: make([]byte, 251)})},
		{"snapshot start above end", appendSnapshot(nil, 1, 5, 4)},
		{"end reason out of range", appendEnd(nil, 1, ReasonHandler, 0, "")},
		{"request flags", func() []byte { b := appendRequest(nil, Request{}); b[3] = 1; return b }()},
		{"failover log over the limit", wire.AppendU16(wire.AppendU16([]byte{msgStart}, 1), MaxFailoverLog+1)},
		{"failover log longer than the payload", wire.AppendU16(wire.AppendU16([]byte{msgStart}, 1), 3)},
		{"value length past the end", append(good[:len(good)-5], 0xff, 0xff, 0xff, 0x7f)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeAll(tt.payload)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode = %v, want ErrProtocol", err)
			}
		})
	}
}

func TestDecodeInternsChannels(t *testing.T) {
	var payload []byte
	for i := range 3 {
		payload = appendMutation(payload, &engine.Mutation{Seqno: uint64(i), Op: engine.OpSet, Channel: "orders"})
	}
	var dc decoder
	dc.reset(payload)
	var m message
	allocs := testing.AllocsPerRun(10, func() {
		dc.reset(payload)
		for dc.more() {
			if err := dc.next(&m); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 || m.mut.Channel != "orders" {
		t.Fatalf("decoding known channels: %v allocs, channel %q", allocs, m.mut.Channel)
	}
}

func validOpen() open {
	return open{consumer: "node-b", bucket: "kv", conn: 1, conns: 4, features: FeatureS2, noop: 250 * time.Millisecond, buffer: 1 << 20}
}

func TestParseOpen(t *testing.T) {
	o := validOpen()
	got, err := parseOpen(appendOpen(nil, o))
	if err != nil || got != o {
		t.Fatalf("parseOpen(appendOpen(%+v)) = %+v, %v", o, got, err)
	}
	bad := map[string]func(o *open){
		"empty consumer":    func(o *open) { o.consumer = "" },
		"long consumer":     func(o *open) { o.consumer = strings.Repeat("n", 101) },
		"bad bucket":        func(o *open) { o.bucket = "k v" },
		"conn out of range": func(o *open) { o.conn = 4 },
		"no conns":          func(o *open) { o.conn, o.conns = 0, 0 },
		"too many conns":    func(o *open) { o.conns = MaxConnections + 1 },
		"zero noop":         func(o *open) { o.noop = 0 },
		"noop too long":     func(o *open) { o.noop = MaxNoopInterval + time.Millisecond },
		"zero buffer":       func(o *open) { o.buffer = 0 },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			o := validOpen()
			mutate(&o)
			if _, err := parseOpen(appendOpen(nil, o)); !errors.Is(err, errBadOpen) {
				t.Fatalf("parseOpen = %v, want errBadOpen", err)
			}
		})
	}
	body := appendOpen(nil, validOpen())
	for _, b := range [][]byte{nil, body[:len(body)-1], append(bytes.Clone(body), 0), append([]byte{2}, body[1:]...)} {
		if _, err := parseOpen(b); !errors.Is(err, errBadOpen) {
			t.Errorf("parseOpen(% x) = %v, want errBadOpen", b, err)
		}
	}
}

// packetConn is a net.Conn whose reads come from a byte slice.
type packetConn struct {
	net.Conn
	r *bytes.Reader
}

func (c packetConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c packetConn) SetReadDeadline(time.Time) error { return nil }
func (c packetConn) RemoteAddr() net.Addr            { return &net.TCPAddr{} }

func packet(kind, flags byte, payload []byte) []byte {
	b := make([]byte, HeaderLen, HeaderLen+len(payload))
	putHeader(b, kind, flags, len(payload))
	return append(b, payload...)
}

func TestReceiverPackets(t *testing.T) {
	msgs := appendClose(appendAck(nil, 7), 3)
	big := bytes.Repeat(appendAck(nil, 1), 400)
	tests := []struct {
		name  string
		in    []byte
		s2    bool
		want  []byte
		noop  bool
		errIs error
	}{
		{name: "messages", in: packet(kindMessages, 0, msgs), want: msgs},
		{name: "noop", in: packet(kindNoop, 0, nil), noop: true},
		{name: "compressed", in: packet(kindMessages, flagS2, s2.Encode(nil, big)), s2: true, want: big},
		{name: "compressed not granted", in: packet(kindMessages, flagS2, s2.Encode(nil, big)), errIs: ErrProtocol},
		{name: "corrupt s2", in: packet(kindMessages, flagS2, []byte{0x10, 0xff, 0xff}), s2: true, errIs: ErrProtocol},
		{name: "s2 claiming too much", in: packet(kindMessages, flagS2, []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0}), s2: true, errIs: ErrProtocol},
		{name: "bad magic", in: append([]byte{0}, packet(kindNoop, 0, nil)[1:]...), errIs: ErrProtocol},
		{name: "unknown kind", in: packet(9, 0, msgs), errIs: ErrProtocol},
		{name: "noop with payload", in: packet(kindNoop, 0, msgs), errIs: ErrProtocol},
		{name: "unknown flag", in: packet(kindMessages, 0x02, msgs), errIs: ErrProtocol},
		{name: "empty messages", in: packet(kindMessages, 0, nil), errIs: ErrProtocol},
		{name: "too long", in: func() []byte { b := packet(kindMessages, 0, nil); b[7] = 0xff; return b }(), errIs: ErrProtocol},
		{name: "truncated payload", in: packet(kindMessages, 0, msgs)[:HeaderLen+2], errIs: ErrPeerClosed},
		{name: "clean end", in: nil, errIs: ErrPeerClosed},
		{name: "claims 50 MB, sends 10 bytes", in: func() []byte {
			b := packet(kindMessages, 0, make([]byte, 10))
			putHeader(b, kindMessages, 0, 50<<20)
			return b
		}(), errIs: ErrPeerClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(packetConn{r: bytes.NewReader(tt.in)}, time.Second, ErrSilent)
			r.s2 = tt.s2
			got, err := r.next()
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("next = %v, want %v", err, tt.errIs)
				}
				return
			}
			if err != nil || (got == nil) != tt.noop || !bytes.Equal(got, tt.want) {
				t.Fatalf("next = % x, %v; want % x", got, err, tt.want)
			}
		})
	}
}

// FuzzDecode feeds arbitrary payloads to the message decoder and checks
// that whatever it accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	mut := engine.Mutation{VBucket: 9, Seqno: 3, Op: engine.OpAppend, Channel: "log-1", Key: []byte("k"), Value: []byte("value"), Timestamp: 77}
	f.Add(appendMutation(nil, &mut))
	f.Add(appendStart(appendSnapshot(nil, 1, 2, 3), 4, []FailoverEntry{{1, 2}}))
	f.Add(appendEnd(appendRequest(nil, Request{VBucket: 5, Start: 1, SnapStart: 1, SnapEnd: 1}), 5, ReasonRollback, 4, "why"))
	f.Add(appendAck(appendClose(nil, 3), 100))
	f.Add(appendSeqno(nil, 7, 1000, 64))
	f.Add(appendApplied(appendApplied(nil, 7, 1000, 900), 8, 5, 0))
	f.Fuzz(func(t *testing.T, payload []byte) {
		msgs, err := decodeAll(payload)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode error %v does not wrap ErrProtocol", err)
			}
			return
		}
		var again []byte
		for i := range msgs {
			again = encode(again, &msgs[i])
		}
		if !bytes.Equal(again, payload) {
			t.Fatalf("re-encoding differs:\n in  % x\n out % x", payload, again)
		}
	})
}

// FuzzReceiver feeds arbitrary bytes to the packet reader and message
// decoder, as a hostile peer would.
func FuzzReceiver(f *testing.F) {
	f.Add(packet(kindMessages, 0, appendAck(nil, 1)), false)
	f.Add(packet(kindNoop, 0, nil), false)
	f.Add(packet(kindMessages, flagS2, s2.Encode(nil, bytes.Repeat(appendClose(nil, 1), 300))), true)
	f.Fuzz(func(t *testing.T, in []byte, compressed bool) {
		r := newReceiver(packetConn{r: bytes.NewReader(in)}, time.Second, ErrSilent)
		r.s2 = compressed
		for {
			p, err := r.next()
			if err != nil {
				if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrPeerClosed) {
					t.Fatalf("next: unexpected error %v", err)
				}
				return
			}
			if _, err := decodeAll(p); err != nil && !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode: unexpected error %v", err)
			}
		}
	})
}

// FuzzParseOpen checks that the open parser never panics and accepts only
// what it can re-encode.
func FuzzParseOpen(f *testing.F) {
	f.Add(appendOpen(nil, validOpen()))
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := parseOpen(body)
		if err != nil {
			return
		}
		if again := appendOpen(nil, o); !bytes.Equal(again, body) {
			t.Fatalf("re-encoding differs:\n in  % x\n out % x", body, again)
		}
	})
}
