package resp

import (
	"crypto/subtle"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"shoal/internal/auth"
	"shoal/internal/vbmap"
	"shoal/internal/wire"
)

// The connection and server commands.

// redisVersion is the Redis version shoal answers HELLO and INFO with:
// clients pick features by it.
const redisVersion = "7.2.0"

func lowerName(cmd *command) string { return strings.ToLower(cmd.name) }

func cmdPing(x *exec, args [][]byte) {
	switch len(args) {
	case 1:
		x.out = append(x.out, "+PONG\r\n"...)
	case 2:
		x.bulk(args[1])
	default:
		x.errorf("ERR wrong number of arguments for 'ping' command")
	}
}

func cmdEcho(x *exec, args [][]byte) { x.bulk(args[1]) }

// authenticate checks name and a hex secret against the credentials.
func (x *exec) authenticate(name, secret []byte) bool {
	s := x.s
	if s.cfg.Credentials == nil {
		x.err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		return false
	}
	if s.cfg.RequireTLS && !x.sess.tls {
		x.err("ERR AUTH over plain TCP is refused: connect with TLS (--resp-require-tls)")
		return false
	}
	want, known := s.cfg.Credentials[string(name)]
	got, err := auth.ParseSecret(string(secret))
	if !known || err != nil || subtle.ConstantTimeCompare(want, got) != 1 {
		s.cfg.Logger.Warn("RESP authentication failed", "remote", x.sess.remote, "name", string(clip(name)))
		x.err(errWrongPass)
		return false
	}
	x.sess.authed, x.sess.user = true, string(name)
	x.sess.admin = x.sess.user == auth.Admin
	return true
}

func cmdAuth(x *exec, args [][]byte) {
	if len(args) == 2 {
		// AUTH password: the default user, which shoal does not have.
		if x.s.cfg.Credentials == nil {
			x.authenticate(nil, nil)
			return
		}
		x.err("WRONGPASS shoal needs AUTH name hex-secret (a credential of --credentials)")
		return
	}
	if len(args) != 3 {
		x.err(errSyntax)
		return
	}
	if x.authenticate(args[1], args[2]) {
		x.ok()
	}
}

func cmdHello(x *exec, args [][]byte) {
	proto := x.sess.proto
	if len(args) > 1 {
		v, err := parseInt(args[1])
		if err != nil {
			x.err("ERR Protocol version is not an integer or out of range")
			return
		}
		if v != 2 && v != 3 {
			x.err("NOPROTO unsupported protocol version")
			return
		}
		proto = int(v)
	}
	var name []byte
	setName := false
	for i := 2; i < len(args); i++ {
		switch upper(args[i]) {
		case "AUTH":
			if i+2 >= len(args) {
				x.err(errSyntax)
				return
			}
			if !x.authenticate(args[i+1], args[i+2]) {
				return
			}
			i += 2
		case "SETNAME":
			if i+1 >= len(args) {
				x.err(errSyntax)
				return
			}
			name, setName = args[i+1], true
			i++
		default:
			x.errorf("ERR Syntax error in HELLO option '%s'", clip(args[i]))
			return
		}
	}
	if !x.sess.authed {
		x.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if setName {
		if !validClientName(name) {
			x.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		x.sess.name = string(name)
	}
	x.sess.proto = proto
	p := proto
	x.out = AppendMap(x.out, 7, p)
	x.out = AppendBulkString(x.out, "server")
	x.out = AppendBulkString(x.out, "redis")
	x.out = AppendBulkString(x.out, "version")
	x.out = AppendBulkString(x.out, redisVersion)
	x.out = AppendBulkString(x.out, "proto")
	x.int(int64(p))
	x.out = AppendBulkString(x.out, "id")
	x.int(x.sess.id)
	x.out = AppendBulkString(x.out, "mode")
	x.out = AppendBulkString(x.out, "standalone")
	x.out = AppendBulkString(x.out, "role")
	x.out = AppendBulkString(x.out, "master")
	x.out = AppendBulkString(x.out, "modules")
	x.out = AppendArray(x.out, 0)
}

func validClientName(b []byte) bool {
	for _, c := range b {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

func cmdSelect(x *exec, args [][]byte) {
	name := string(args[1])
	if n, err := strconv.ParseUint(name, 10, 16); err == nil && n == 0 {
		name = x.s.cfg.Channel // SELECT 0 is the connection's default channel
	}
	if !wire.ValidChannel([]byte(name)) {
		x.err("ERR DB index is out of range: SELECT takes a channel name (1-255 of A-Z a-z 0-9 _ -) or a number")
		return
	}
	x.sess.setChannel(name)
	x.ok()
}

func cmdQuit(x *exec, args [][]byte) {
	x.ok()
	if x.c != nil {
		x.c.quit = true
	}
}

func cmdReset(x *exec, args [][]byte) {
	x.sess.proto = 2
	x.sess.setChannel(x.s.cfg.Channel)
	x.sess.name = ""
	if x.s.cfg.Credentials != nil {
		x.sess.authed, x.sess.admin, x.sess.user = false, false, ""
	}
	x.out = AppendSimple(x.out, "RESET")
}

func cmdClient(x *exec, args [][]byte) {
	switch upper(args[1]) {
	case "SETNAME":
		if len(args) != 3 {
			x.errorf("ERR wrong number of arguments for 'client|setname' command")
			return
		}
		if !validClientName(args[2]) {
			x.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		x.sess.name = string(args[2])
		x.ok()
	case "GETNAME":
		if x.sess.name == "" {
			x.null()
			return
		}
		x.out = AppendBulkString(x.out, x.sess.name)
	case "ID":
		x.int(x.sess.id)
	case "INFO":
		x.out = AppendVerbatim(x.out, x.clientInfo()+"\n", x.sess.proto)
	case "SETINFO":
		if len(args) != 4 {
			x.errorf("ERR wrong number of arguments for 'client|setinfo' command")
			return
		}
		x.ok()
	default:
		x.errorf("ERR unknown subcommand '%s'. Try CLIENT HELP.", clip(args[1]))
	}
}

func (x *exec) clientInfo() string {
	s := x.sess
	return fmt.Sprintf("id=%d addr=%s laddr= fd=0 name=%s age=%d idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s user=%s redir=-1 resp=%d channel=%s",
		s.id, s.remote, s.name, int64(time.Since(s.since).Seconds()), strings.ToLower(s.lastCmd), userName(s.user), s.proto, s.channel)
}

func userName(u string) string {
	if u == "" {
		return "default"
	}
	return u
}

func cmdConfig(x *exec, args [][]byte) {
	switch upper(args[1]) {
	case "GET":
		if len(args) < 3 {
			x.errorf("ERR wrong number of arguments for 'config|get' command")
			return
		}
		settings := x.s.settings()
		var keys []string
		for k := range settings {
			for _, p := range args[2:] {
				if globMatch([]byte(strings.ToLower(string(p))), []byte(k)) {
					keys = append(keys, k)
					break
				}
			}
		}
		sort.Strings(keys)
		x.out = AppendMap(x.out, len(keys), x.sess.proto)
		for _, k := range keys {
			x.out = AppendBulkString(x.out, k)
			x.out = AppendBulkString(x.out, settings[k])
		}
	case "SET", "RESETSTAT", "REWRITE":
		x.err("ERR CONFIG " + upper(args[1]) + " is not supported: shoal's settings are its flags and config file")
	default:
		x.errorf("ERR unknown subcommand '%s'. Try CONFIG HELP.", clip(args[1]))
	}
}

// settings are CONFIG GET's values.
func (s *Server) settings() map[string]string {
	m := map[string]string{
		"maxclients":         strconv.Itoa(s.cfg.MaxConnections),
		"proto-max-bulk-len": strconv.Itoa(s.cfg.MaxValueSize),
		"databases":          "1",
		"save":               "",
		"appendonly":         "no",
		"maxmemory":          "0",
		"timeout":            "0",
	}
	for k, v := range s.cfg.Settings {
		m[k] = v
	}
	return m
}

func cmdInfo(x *exec, args [][]byte) {
	all := len(args) == 1
	want := map[string]bool{}
	for _, a := range args[1:] {
		sec := strings.ToLower(string(a))
		if sec == "all" || sec == "everything" || sec == "default" {
			all = true
		}
		want[sec] = true
	}
	s := x.s
	var b strings.Builder
	section := func(name string, lines ...string) {
		if !all && !want[strings.ToLower(name)] {
			return
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + name + "\r\n")
		for _, l := range lines {
			b.WriteString(l + "\r\n")
		}
	}
	up := time.Since(s.start)
	port := ""
	s.mu.Lock()
	if len(s.ln) > 0 {
		_, port, _ = net.SplitHostPort(s.ln[0].Addr().String())
	}
	s.mu.Unlock()
	section("Server",
		"redis_version:"+redisVersion,
		"redis_mode:standalone",
		"shoal_version:"+s.cfg.Version,
		"shoal_node_id:"+s.cfg.NodeID,
		"os:"+runtime.GOOS,
		"arch_bits:64",
		"go_version:"+runtime.Version(),
		"process_id:"+strconv.Itoa(os.Getpid()),
		"tcp_port:"+port,
		"uptime_in_seconds:"+strconv.FormatInt(int64(up.Seconds()), 10),
		"uptime_in_days:"+strconv.FormatInt(int64(up.Hours()/24), 10),
	)
	section("Clients",
		"connected_clients:"+strconv.FormatInt(s.nconns.Load(), 10),
		"maxclients:"+strconv.Itoa(s.cfg.MaxConnections),
		"blocked_clients:0",
	)
	if all || want["memory"] {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		kvMem := s.eng.KV.MemoryUsage()
		section("Memory",
			"used_memory:"+strconv.FormatInt(kvMem, 10),
			"used_memory_human:"+humanBytes(kvMem),
			"used_memory_rss:"+strconv.FormatUint(ms.Sys, 10),
			"maxmemory:"+s.settings()["maxmemory"],
			"maxmemory_policy:noeviction",
		)
	}
	section("Stats",
		"total_connections_received:"+strconv.FormatUint(s.accepted.Load(), 10),
		"rejected_connections:"+strconv.FormatUint(s.refused.Load(), 10),
		"total_net_input_bytes:"+strconv.FormatUint(s.bytesIn.Load(), 10),
		"total_net_output_bytes:"+strconv.FormatUint(s.bytesOut.Load(), 10),
		"shoal_forwarded_commands:"+strconv.FormatUint(s.forwarded.Load(), 10),
	)
	if all || want["replication"] {
		lines := []string{"role:master", "connected_slaves:0"}
		if t := s.eng.Data.Table(); t != nil {
			active, replica := 0, 0
			for vb := 0; vb < t.Map().Len(); vb++ {
				switch t.State(uint16(vb)) {
				case vbmap.Active:
					active++
				case vbmap.Replica:
					replica++
				}
			}
			lines = append(lines,
				"shoal_map_revision:"+strconv.FormatUint(t.Map().Revision, 10),
				"shoal_active_vbuckets:"+strconv.Itoa(active),
				"shoal_replica_vbuckets:"+strconv.Itoa(replica))
		}
		section("Replication", lines...)
	}
	if all || want["keyspace"] {
		n := x.dbsizeHere()
		section("Keyspace", fmt.Sprintf("db0:keys=%d,expires=0,avg_ttl=0,channel=%s,node_keys_only=1", n, x.sess.channel))
	}
	x.out = AppendVerbatim(x.out, b.String(), x.sess.proto)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2fK", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10) + "B"
}

// COMMAND: enough of Redis 7's answers for clients and redis-cli's hints.

func (x *exec) commandEntry(c *command) {
	p := x.sess.proto
	x.out = AppendArray(x.out, 10)
	x.out = AppendBulkString(x.out, strings.ToLower(c.name))
	x.int(int64(c.arity))
	var flags []string
	if c.flags&flagWrite != 0 {
		flags = append(flags, "write")
	} else {
		flags = append(flags, "readonly")
	}
	if c.flags&flagOpen != 0 {
		flags = append(flags, "no-auth")
	}
	if c.flags&flagBlocking != 0 {
		flags = append(flags, "blocking")
	}
	x.out = AppendSet(x.out, len(flags), p)
	for _, f := range flags {
		x.out = AppendSimple(x.out, f)
	}
	x.int(int64(c.first))
	x.int(int64(c.last))
	x.int(int64(c.step))
	x.out = AppendSet(x.out, 0, p) // ACL categories
	x.out = AppendSet(x.out, 0, p) // tips
	x.out = AppendArray(x.out, 0)  // key specifications
	x.out = AppendArray(x.out, 0)  // subcommands
}

func (x *exec) commandDocs(c *command) {
	p := x.sess.proto
	x.out = AppendBulkString(x.out, strings.ToLower(c.name))
	x.out = AppendMap(x.out, 3, p)
	x.out = AppendBulkString(x.out, "summary")
	x.out = AppendBulkString(x.out, c.summary)
	x.out = AppendBulkString(x.out, "since")
	x.out = AppendBulkString(x.out, "1.0.0")
	x.out = AppendBulkString(x.out, "group")
	x.out = AppendBulkString(x.out, c.group)
}

func cmdCommand(x *exec, args [][]byte) {
	if len(args) == 1 {
		x.out = AppendArray(x.out, len(commandList))
		for _, c := range commandList {
			x.commandEntry(c)
		}
		return
	}
	switch upper(args[1]) {
	case "COUNT":
		x.int(int64(len(commandList)))
	case "INFO":
		if len(args) == 2 {
			x.out = AppendArray(x.out, len(commandList))
			for _, c := range commandList {
				x.commandEntry(c)
			}
			return
		}
		x.out = AppendArray(x.out, len(args)-2)
		for _, n := range args[2:] {
			if c := lookup(n); c != nil {
				x.commandEntry(c)
			} else {
				x.out = AppendNullArray(x.out, x.sess.proto)
			}
		}
	case "DOCS":
		var list []*command
		if len(args) == 2 {
			list = commandList
		} else {
			for _, n := range args[2:] {
				if c := lookup(n); c != nil {
					list = append(list, c)
				}
			}
		}
		x.out = AppendMap(x.out, len(list), x.sess.proto)
		for _, c := range list {
			x.commandDocs(c)
		}
	case "LIST":
		x.out = AppendArray(x.out, len(commandList))
		for _, c := range commandList {
			x.out = AppendBulkString(x.out, strings.ToLower(c.name))
		}
	default:
		x.errorf("ERR unknown subcommand '%s'. Try COMMAND HELP.", clip(args[1]))
	}
}
