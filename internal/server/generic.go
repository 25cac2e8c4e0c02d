package server

import (
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"shoal/internal/auth"
	"shoal/internal/engine"
	"shoal/internal/wire"
)

// Feature bits of HELLO.
const (
	FeatureKV          = 1 << 0
	FeatureQueue       = 1 << 1
	FeatureLog         = 1 << 2
	FeatureReplication = 1 << 3
	FeatureDurable     = 1 << 4 // durable writes (durability.go)
)

func (s *Server) features() uint32 {
	var f uint32
	if s.eng.KV != nil {
		f |= FeatureKV
	}
	if s.eng.Queue != nil {
		f |= FeatureQueue
	}
	if s.eng.Log != nil {
		f |= FeatureLog
	}
	if _, ok := s.takeover[wire.OpStreamOpen]; ok {
		f |= FeatureReplication
	}
	f |= FeatureDurable
	return f
}

func (s *Server) registerGeneric() {
	s.handle(wire.OpHello, handler{fn: (*conn).hello, open: true})
	s.handle(wire.OpAuth, handler{fn: (*conn).auth, open: true})
	s.handle(wire.OpNoop, handler{loop: true, fn: func(c *conn, h wire.Header, _ []byte) { c.reply(h, wire.StatusOK, nil) }, open: true})
	s.handle(wire.OpInfo, handler{fn: (*conn).info})
	s.handle(wire.OpGetNumConnections, handler{fn: func(c *conn, h wire.Header, _ []byte) {
		b, off := c.begin(h, wire.StatusOK, 0)
		c.end(wire.AppendU64(b, uint64(c.s.nconns.Load())), off)
	}})
	s.handle(wire.OpStreamControl, handler{fn: (*conn).control})
	s.handle(wire.OpGetChannels, handler{fn: (*conn).getChannels})
	s.handle(wire.OpGetChannelSize, handler{fn: (*conn).getChannelSize})
	s.handle(wire.OpGetSize, handler{fn: (*conn).getSize})
	s.handle(wire.OpRemoveChannel, handler{fn: (*conn).removeChannel, admin: true})
}

// hello: str8 client name, u16 version, u32 features ->
// str8 node id, str8 server version, u16 vbuckets, u32 features, u8 auth required, nonce[32].
func (c *conn) hello(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	name := d.Bytes8()
	version := d.U16()
	d.U32()
	if err := d.Err(); err != nil || len(name) > wire.MaxClientName {
		c.replyf(h, wire.StatusBadRequest, "malformed HELLO")
		return
	}
	if version != wire.Version {
		c.replyf(h, wire.StatusUnsupported, "protocol version %d is not supported; this node speaks %d", version, wire.Version)
		return
	}
	if c.nonce == nil {
		c.nonce = newNonce()
	}
	var authRequired uint8
	if c.s.cfg.Credentials != nil {
		authRequired = 1
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	b = wire.AppendStr8(b, c.s.cfg.NodeID)
	b = wire.AppendStr8(b, c.s.cfg.Version)
	b = wire.AppendU16(b, uint16(c.s.cfg.VBuckets))
	b = wire.AppendU32(b, c.s.features())
	b = wire.AppendU8(b, authRequired)
	b = append(b, c.nonce...)
	c.end(b, off)
}

// auth: str8 name, mac[32]. A failure closes the connection.
func (c *conn) auth(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	name := d.Bytes8()
	proof := d.Rest()
	if d.Err() != nil || len(proof) != wire.MacLen {
		c.replyf(h, wire.StatusBadRequest, "malformed AUTH")
		return
	}
	if c.s.cfg.Credentials == nil {
		c.reply(h, wire.StatusOK, nil)
		return
	}
	if c.nonce == nil {
		c.replyf(h, wire.StatusBadRequest, "send HELLO before AUTH: it carries the nonce")
		return
	}
	if !auth.Verify(c.s.cfg.Credentials, c.nonce, string(name), proof) {
		c.s.cfg.Logger.Warn("authentication failed", "remote", c.nc.RemoteAddr(), "name", string(name))
		c.replyf(h, wire.StatusAuthFailed, "authentication failed for %q", name)
		c.flush()
		c.nc.Close()
		return
	}
	c.nonce = newNonce() // a proof is good once
	c.user, c.authed, c.admin = string(name), true, string(name) == auth.Admin
	c.peer = c.admin || c.user == auth.Peer
	c.reply(h, wire.StatusOK, nil)
}

func (c *conn) info(h wire.Header, _ []byte) {
	m := map[string]any{
		"node_id":        c.s.cfg.NodeID,
		"version":        c.s.cfg.Version,
		"go":             runtime.Version(),
		"vbuckets":       c.s.cfg.VBuckets,
		"uptime_seconds": int64(time.Since(c.s.start).Seconds()),
		"connections":    c.s.nconns.Load(),
		"max_value_size": c.s.cfg.MaxValueSize,
		"auth":           c.s.cfg.Credentials != nil,
		"tls":            c.s.cfg.TLS != nil,
		"requests":       c.s.Requests(),
	}
	if c.s.cfg.Info != nil {
		for k, v := range c.s.cfg.Info() {
			m[k] = v
		}
	}
	js, err := json.Marshal(m)
	if err != nil {
		c.replyf(h, wire.StatusInternal, "cannot encode info: %v", err)
		return
	}
	c.reply(h, wire.StatusOK, js)
}

// ChannelSize is the size of one channel as the generic requests report it.
type ChannelSize struct {
	Name    string
	Kind    engine.Kind
	Records int64
	Bytes   int64
}

// channelSizes lists every channel of every engine: kv records of the
// vBuckets the node is active for; queue and log records the node holds,
// of every vBucket (those engines keep no per-vBucket counts).
func (s *Server) channelSizes() []ChannelSize {
	var out []ChannelSize
	if s.eng.KV != nil {
		for _, cs := range s.eng.KV.ChannelsIn(s.activeFilter()) {
			out = append(out, ChannelSize{Name: cs.Name, Kind: engine.KindKV, Records: cs.Records, Bytes: cs.Bytes})
		}
	}
	if s.eng.Queue != nil {
		out = append(out, queueChannelSizes(s.eng.Queue.Channels())...)
	}
	return s.logChannelSizes(out)
}

// getChannels: -> u32 count, then (u8 kind, str8 name) per channel, from
// the catalog: in a cluster every channel of the cluster, sorted by name.
func (c *conn) getChannels(h wire.Header, _ []byte) {
	list := c.s.eng.Catalog.List()
	b, off := c.begin(h, wire.StatusOK, 0)
	b = wire.AppendU32(b, uint32(len(list)))
	for _, cs := range list {
		b = wire.AppendU8(b, uint8(cs.Kind))
		b = wire.AppendStr8(b, cs.Name)
	}
	c.end(b, off)
}

// getChannelSize: str8 channel -> u8 kind, u64 records, u64 bytes. An
// unknown channel is empty (kind 0).
func (c *conn) getChannelSize(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch := d.Bytes8()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed GetChannelSize")
		return
	}
	if !wire.ValidChannel(ch) {
		c.replyf(h, wire.StatusBadChannelName, "bad channel name %q", ch)
		return
	}
	var cs ChannelSize
	if name, kind, ok := c.s.eng.Catalog.Lookup(ch); ok {
		cs.Kind = kind
		switch kind {
		case engine.KindKV:
			if c.s.eng.KV != nil {
				st := c.s.eng.KV.ChannelSizeIn(name, c.s.activeFilter())
				cs.Records, cs.Bytes = st.Records, st.Bytes
			}
		case engine.KindQueue:
			if c.s.eng.Queue != nil {
				cs.Records, cs.Bytes = queueChannelSize(c.s.eng.Queue, name)
			}
		case engine.KindLog:
			cs.Records, cs.Bytes = c.s.logChannelSize(name)
		}
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	b = wire.AppendU8(b, uint8(cs.Kind))
	b = wire.AppendU64(b, uint64(cs.Records))
	b = wire.AppendU64(b, uint64(cs.Bytes))
	c.end(b, off)
}

// getSize: -> u64 records, u64 bytes over every channel.
func (c *conn) getSize(h wire.Header, _ []byte) {
	var recs, bytes int64
	for _, cs := range c.s.channelSizes() {
		recs += cs.Records
		bytes += cs.Bytes
	}
	b, off := c.begin(h, wire.StatusOK, 0)
	b = wire.AppendU64(b, uint64(recs))
	b = wire.AppendU64(b, uint64(bytes))
	c.end(b, off)
}

// removeChannel: str8 channel -> empty. Removing an unknown channel is not
// an error.
func (c *conn) removeChannel(h wire.Header, body []byte) {
	d := wire.NewDecoder(body)
	ch := d.Bytes8()
	if d.Finish() != nil {
		c.replyf(h, wire.StatusBadRequest, "malformed RemoveChannel")
		return
	}
	if !wire.ValidChannel(ch) {
		c.replyf(h, wire.StatusBadChannelName, "bad channel name %q", ch)
		return
	}
	if !c.checkServing(h) { // a standby refuses it
		return
	}
	if dir := c.s.cfg.Channels; dir != nil {
		if err := dir.Remove(string(ch)); err != nil {
			c.clusterAnswer(h, nil, fmt.Errorf("cannot remove channel %q: %w", ch, err))
			return
		}
		c.s.cfg.Logger.Info("channel removed", "channel", string(ch), "by", c.user, "remote", c.nc.RemoteAddr())
		c.reply(h, wire.StatusOK, nil)
		return
	}
	name, kind, ok := c.s.eng.Catalog.Lookup(ch)
	if !ok {
		c.reply(h, wire.StatusOK, nil)
		return
	}
	switch kind {
	case engine.KindKV:
		if c.s.eng.KV != nil {
			c.s.eng.KV.RemoveChannel(name)
		}
	case engine.KindQueue:
		if c.s.eng.Queue != nil {
			if _, err := c.s.eng.Queue.RemoveChannel(name); err != nil {
				c.queueFail(h, err)
				return
			}
		}
	case engine.KindLog:
		if !c.removeLogChannel(h, name) {
			return
		}
	}
	c.s.eng.Catalog.Drop(name)
	c.s.cfg.Logger.Info("channel removed", "channel", name, "kind", kind.String(), "by", c.user, "remote", c.nc.RemoteAddr())
	if fn := c.s.cfg.ChannelRemoved; fn != nil {
		if err := fn(name, kind); err != nil {
			c.replyf(h, wire.StatusInternal, "channel %q removed, but: %v", name, err)
			return
		}
	}
	c.reply(h, wire.StatusOK, nil)
}

func appendf(b []byte, format string, args ...any) []byte {
	return fmt.Appendf(b, format, args...)
}
