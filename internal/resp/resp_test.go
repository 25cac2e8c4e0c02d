package resp

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"shoal/internal/stats"
)

func TestStrings(t *testing.T) {
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			n := startNode(t, Config{})
			c := n.client(t, &redis.Options{Protocol: proto})
			ctx := ctxT(t)

			eq(t, "SET", must(c.Set(ctx, "k", "v", 0).Result()), "OK")
			eq(t, "GET", must(c.Get(ctx, "k").Result()), "v")
			if _, err := c.Get(ctx, "absent").Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("GET absent: %v", err)
			}
			eq(t, "SETNX existing", must(c.SetNX(ctx, "k", "w", 0).Result()), false)
			eq(t, "SETNX new", must(c.Do(ctx, "SETNX", "k2", "w").Int()), 1)
			eq(t, "APPEND", must(c.Append(ctx, "k", "xyz").Result()), int64(4))
			eq(t, "STRLEN", must(c.StrLen(ctx, "k").Result()), int64(4))
			eq(t, "STRLEN absent", must(c.StrLen(ctx, "nope").Result()), int64(0))
			eq(t, "TYPE", must(c.Type(ctx, "k").Result()), "string")
			eq(t, "TYPE none", must(c.Type(ctx, "nope").Result()), "none")
			eq(t, "GETDEL", must(c.GetDel(ctx, "k2").Result()), "w")
			eq(t, "EXISTS after GETDEL", must(c.Exists(ctx, "k2").Result()), int64(0))
			if _, err := c.GetDel(ctx, "k2").Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("GETDEL absent: %v", err)
			}

			// MSET, MGET, EXISTS (duplicates count), DEL, UNLINK.
			eq(t, "MSET", must(c.MSet(ctx, "a", "1", "b", "2", "c", "3").Result()), "OK")
			vals := must(c.MGet(ctx, "a", "nope", "c").Result())
			if len(vals) != 3 || vals[0] != "1" || vals[1] != nil || vals[2] != "3" {
				t.Fatalf("MGET %v", vals)
			}
			eq(t, "EXISTS", must(c.Exists(ctx, "a", "b", "a", "nope").Result()), int64(3))
			eq(t, "DEL", must(c.Del(ctx, "a", "nope").Result()), int64(1))
			eq(t, "UNLINK", must(c.Unlink(ctx, "b", "c").Result()), int64(2))
			wantErr(t, "MSET odd", c.Do(ctx, "MSET", "a", "1", "b").Err(), "ERR wrong number of arguments for 'mset'")

			// Counters.
			eq(t, "INCR new", must(c.Incr(ctx, "n").Result()), int64(1))
			eq(t, "INCRBY", must(c.IncrBy(ctx, "n", 41).Result()), int64(42))
			eq(t, "DECR", must(c.Decr(ctx, "n").Result()), int64(41))
			eq(t, "DECRBY", must(c.DecrBy(ctx, "n", 50).Result()), int64(-9))
			eq(t, "GET counter", must(c.Get(ctx, "n").Result()), "-9")
			c.Set(ctx, "s", "abc", 0)
			wantErr(t, "INCR of a string", c.Incr(ctx, "s").Err(), "ERR value is not an integer")
			wantErr(t, "INCRBY not a number", c.Do(ctx, "INCRBY", "n", "x").Err(), "ERR value is not an integer")
			c.Set(ctx, "big", "9223372036854775807", 0)
			wantErr(t, "INCR overflow", c.Incr(ctx, "big").Err(), "ERR increment or decrement would overflow")

			// Expiry.
			eq(t, "TTL no expiry", must(c.TTL(ctx, "n").Result()), time.Duration(-1))
			eq(t, "TTL absent", must(c.Do(ctx, "TTL", "nope").Int()), -2)
			eq(t, "EXPIRE", must(c.Expire(ctx, "n", 100*time.Second).Result()), true)
			if ttl := must(c.TTL(ctx, "n").Result()); ttl < 99*time.Second || ttl > 101*time.Second {
				t.Fatalf("TTL %v", ttl)
			}
			if pttl := must(c.PTTL(ctx, "n").Result()); pttl < 98*time.Second || pttl > 101*time.Second {
				t.Fatalf("PTTL %v", pttl)
			}
			eq(t, "INCR keeps the ttl", must(c.Incr(ctx, "n").Result()), int64(-8))
			if ttl := must(c.TTL(ctx, "n").Result()); ttl < 98*time.Second {
				t.Fatalf("TTL after INCR %v", ttl)
			}
			eq(t, "EXPIRE NX with a ttl", must(c.ExpireNX(ctx, "n", time.Hour).Result()), false)
			eq(t, "EXPIRE GT", must(c.ExpireGT(ctx, "n", time.Hour).Result()), true)
			eq(t, "EXPIRE LT longer", must(c.ExpireLT(ctx, "n", 2*time.Hour).Result()), false)
			eq(t, "PERSIST", must(c.Persist(ctx, "n").Result()), true)
			eq(t, "PERSIST again", must(c.Persist(ctx, "n").Result()), false)
			eq(t, "EXPIRE absent", must(c.Expire(ctx, "nope", time.Second).Result()), false)
			eq(t, "PEXPIRE", must(c.PExpire(ctx, "n", 50*time.Second).Result()), true)
			if ttl := must(c.TTL(ctx, "n").Result()); ttl < 49*time.Second || ttl > 51*time.Second {
				t.Fatalf("TTL after PEXPIRE %v", ttl)
			}
			eq(t, "EXPIRE 0 deletes", must(c.Expire(ctx, "n", 0).Result()), true)
			eq(t, "gone", must(c.Exists(ctx, "n").Result()), int64(0))

			// SET options.
			eq(t, "SET EX", must(c.Set(ctx, "e", "1", 10*time.Second).Result()), "OK")
			if ttl := must(c.TTL(ctx, "e").Result()); ttl < 9*time.Second || ttl > 11*time.Second {
				t.Fatalf("SET EX ttl %v", ttl)
			}
			eq(t, "SET PX", must(c.Do(ctx, "SET", "e", "2", "PX", "20000").Text()), "OK")
			if ttl := must(c.TTL(ctx, "e").Result()); ttl < 19*time.Second || ttl > 21*time.Second {
				t.Fatalf("SET PX ttl %v", ttl)
			}
			at := time.Now().Add(time.Hour).Unix()
			c.Do(ctx, "SET", "e", "3", "EXAT", at)
			if ttl := must(c.TTL(ctx, "e").Result()); ttl < 59*time.Minute || ttl > 61*time.Minute {
				t.Fatalf("SET EXAT ttl %v", ttl)
			}
			eq(t, "SET KEEPTTL", must(c.SetArgs(ctx, "e", "4", redis.SetArgs{KeepTTL: true}).Result()), "OK")
			if ttl := must(c.TTL(ctx, "e").Result()); ttl < 59*time.Minute {
				t.Fatalf("KEEPTTL lost the ttl: %v", ttl)
			}
			eq(t, "SET plain clears the ttl", must(c.Set(ctx, "e", "5", 0).Result()), "OK")
			eq(t, "TTL cleared", must(c.TTL(ctx, "e").Result()), time.Duration(-1))
			if _, err := c.SetArgs(ctx, "e", "6", redis.SetArgs{Mode: "NX"}).Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("SET NX existing: %v", err)
			}
			eq(t, "SET XX", must(c.SetArgs(ctx, "e", "7", redis.SetArgs{Mode: "XX"}).Result()), "OK")
			if _, err := c.SetArgs(ctx, "nope", "x", redis.SetArgs{Mode: "XX"}).Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("SET XX absent: %v", err)
			}
			eq(t, "SET GET", must(c.SetArgs(ctx, "e", "8", redis.SetArgs{Get: true}).Result()), "7")
			eq(t, "SET NX GET existing", must(c.Do(ctx, "SET", "e", "9", "NX", "GET").Text()), "8")
			eq(t, "value kept", must(c.Get(ctx, "e").Result()), "8")
			wantErr(t, "SET bad option", c.Do(ctx, "SET", "e", "1", "BOGUS").Err(), "ERR syntax error")
			wantErr(t, "SET NX XX", c.Do(ctx, "SET", "e", "1", "NX", "XX").Err(), "ERR syntax error")
			wantErr(t, "SET EX 0", c.Do(ctx, "SET", "e", "1", "EX", "0").Err(), "ERR invalid expire time in 'set' command")
			wantErr(t, "SET EX x", c.Do(ctx, "SET", "e", "1", "EX", "x").Err(), "ERR value is not an integer")

			// GETEX.
			eq(t, "GETEX", must(c.GetEx(ctx, "e", 30*time.Second).Result()), "8")
			if ttl := must(c.TTL(ctx, "e").Result()); ttl < 29*time.Second || ttl > 31*time.Second {
				t.Fatalf("GETEX ttl %v", ttl)
			}
			eq(t, "GETEX PERSIST", must(c.Do(ctx, "GETEX", "e", "PERSIST").Text()), "8")
			eq(t, "TTL after PERSIST", must(c.TTL(ctx, "e").Result()), time.Duration(-1))
			eq(t, "GETEX plain", must(c.Do(ctx, "GETEX", "e").Text()), "8")
			if _, err := c.GetEx(ctx, "nope", time.Second).Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("GETEX absent: %v", err)
			}

			// A key that expires.
			c.Set(ctx, "short", "x", time.Second)
			deadline := time.Now().Add(5 * time.Second)
			for c.Exists(ctx, "short").Val() == 1 {
				if time.Now().After(deadline) {
					t.Fatal("a key of 1s still exists after 5s")
				}
				time.Sleep(100 * time.Millisecond)
			}

			// Wrong arguments, unknown commands: the connection stays.
			wantErr(t, "GET arity", c.Do(ctx, "GET").Err(), "ERR wrong number of arguments for 'get' command")
			wantErr(t, "unknown", c.Do(ctx, "FROBNICATE", "a").Err(), "ERR unknown command 'FROBNICATE', with args beginning with: 'a'")
			wantErr(t, "empty key", c.Set(ctx, "", "v", 0).Err(), "ERR empty keys")
			wantErr(t, "long key", c.Set(ctx, strings.Repeat("k", 251), "v", 0).Err(), "ERR key of 251 bytes")
			eq(t, "still connected", must(c.Ping(ctx).Result()), "PONG")
		})
	}
}

func TestLists(t *testing.T) {
	n := startNode(t, Config{})
	c := n.client(t, nil)
	ctx := ctxT(t)
	eq(t, "RPUSH", must(c.RPush(ctx, "jobs", "a", "b").Result()), int64(2))
	eq(t, "LPUSH", must(c.LPush(ctx, "jobs", "c").Result()), int64(3))
	eq(t, "LLEN", must(c.LLen(ctx, "jobs").Result()), int64(3))
	eq(t, "TYPE", must(c.Type(ctx, "jobs").Result()), "list")
	eq(t, "LPOP", must(c.LPop(ctx, "jobs").Result()), "a") // FIFO: the oldest first
	eq(t, "RPOP", must(c.RPop(ctx, "jobs").Result()), "b")
	c.RPush(ctx, "jobs", "d", "e")
	got := must(c.LPopCount(ctx, "jobs", 5).Result())
	if !slices.Equal(got, []string{"c", "d", "e"}) {
		t.Fatalf("LPOP count: %v", got)
	}
	if _, err := c.LPop(ctx, "jobs").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("LPOP empty: %v", err)
	}
	if _, err := c.RPopCount(ctx, "jobs", 2).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("RPOP count empty: %v", err)
	}
	eq(t, "LLEN unknown", must(c.LLen(ctx, "nolist").Result()), int64(0))

	// Kinds do not mix: a kv key's channel and a list are different
	// channels, but a list named like the kv channel is WRONGTYPE.
	c.Set(ctx, "k", "v", 0) // claims the kv channel "default"
	wantErr(t, "RPUSH to the kv channel", c.RPush(ctx, "default", "x").Err(), "WRONGTYPE")
	c.RPush(ctx, "q1", "x")
	wantErr(t, "SELECT a queue channel, GET", func() error {
		c2 := n.client(t, &redis.Options{Protocol: 2})
		if err := c2.Do(ctx, "SELECT", "q1").Err(); err != nil {
			return err
		}
		return c2.Get(ctx, "k").Err()
	}(), "WRONGTYPE")
	wantErr(t, "list key not a channel name", c.RPush(ctx, "a:b", "x").Err(), "ERR a list key is a queue channel name")

	// BLPOP: times out with nil; wakes for a push.
	start := time.Now()
	if _, err := c.BLPop(ctx, 200*time.Millisecond, "empty1", "empty2").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("BLPOP timeout: %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 3*time.Second {
		t.Fatalf("BLPOP waited %v", d)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		n.client(t, nil).RPush(ctx, "empty2", "late")
	}()
	kv := must(c.BLPop(ctx, 5*time.Second, "empty1", "empty2").Result())
	if !slices.Equal(kv, []string{"empty2", "late"}) {
		t.Fatalf("BLPOP: %v", kv)
	}
	c.RPush(ctx, "ready", "now")
	eq(t, "BRPOP ready", must(c.BRPop(ctx, 0, "ready").Result())[1], "now")
	wantErr(t, "BLPOP bad timeout", c.Do(ctx, "BLPOP", "a", "x").Err(), "ERR timeout is not a float")
}

func TestScanKeysDBSize(t *testing.T) {
	n := startNode(t, Config{})
	c := n.client(t, nil)
	ctx := ctxT(t)
	want := map[string]bool{}
	for i := range 500 {
		k := fmt.Sprintf("user:%d", i)
		want[k] = true
		c.Set(ctx, k, "x", 0)
	}
	c.Set(ctx, "other", "x", 0)
	eq(t, "DBSIZE", must(c.DBSize(ctx).Result()), int64(501))

	got := map[string]bool{}
	var cursor uint64
	calls := 0
	for {
		keys, next, err := c.Scan(ctx, cursor, "user:*", 50).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			got[k] = true
		}
		calls++
		if next == 0 {
			break
		}
		cursor = next
		if calls > 1000 {
			t.Fatal("SCAN does not end")
		}
	}
	if len(got) != len(want) || calls < 5 {
		t.Fatalf("SCAN found %d of %d keys in %d calls", len(got), len(want), calls)
	}
	// The iterator of go-redis, default COUNT.
	seen := 0
	it := c.Scan(ctx, 0, "", 0).Iterator()
	for it.Next(ctx) {
		seen++
	}
	if it.Err() != nil || seen != 501 {
		t.Fatalf("SCAN iterator: %d keys, %v", seen, it.Err())
	}
	keys := must(c.Keys(ctx, "user:1?").Result())
	if len(keys) != 10 {
		t.Fatalf("KEYS user:1? = %v", keys)
	}
	wantErr(t, "SCAN bad cursor", c.Do(ctx, "SCAN", "x").Err(), "ERR invalid cursor")
	wantErr(t, "SCAN bad option", c.Do(ctx, "SCAN", "0", "BOGUS", "1").Err(), "ERR syntax error")

	// SELECT: channels do not share keys.
	c2 := n.client(t, &redis.Options{DB: 7})
	eq(t, "DBSIZE of channel 7", must(c2.DBSize(ctx).Result()), int64(0))
	c2.Set(ctx, "other", "in 7", 0)
	eq(t, "GET in 7", must(c2.Get(ctx, "other").Result()), "in 7")
	eq(t, "GET in default", must(c.Get(ctx, "other").Result()), "x")
	eq(t, "SELECT name", must(c2.Do(ctx, "SELECT", "users").Text()), "OK")
	wantErr(t, "SELECT bad", c2.Do(ctx, "SELECT", "a:b").Err(), "ERR DB index is out of range")

	eq(t, "FLUSHDB", must(c.FlushDB(ctx).Result()), "OK")
	eq(t, "DBSIZE after FLUSHDB", must(c.DBSize(ctx).Result()), int64(0))
	eq(t, "channel 7 kept", must(c.Do(ctx, "SELECT", "7").Text()), "OK")
	eq(t, "key of 7", must(c.Get(ctx, "other").Result()), "in 7")
}

func TestConnectionCommands(t *testing.T) {
	n := startNode(t, Config{Settings: map[string]string{"shoal-x": "1"}})
	ctx := ctxT(t)
	c3 := n.client(t, &redis.Options{Protocol: 3})
	hello := must(c3.Do(ctx, "HELLO", "3").Result()).(map[any]any)
	if hello["proto"] != int64(3) || hello["server"] != "redis" {
		t.Fatalf("HELLO 3: %v", hello)
	}
	c2 := n.client(t, &redis.Options{Protocol: 2})
	h2 := must(c2.Do(ctx, "HELLO", "2").Slice())
	if len(h2) != 14 || h2[0] != "server" {
		t.Fatalf("HELLO 2: %v", h2)
	}
	wantErr(t, "HELLO 4", c2.Do(ctx, "HELLO", "4").Err(), "NOPROTO")
	eq(t, "PING", must(c2.Ping(ctx).Result()), "PONG")
	eq(t, "PING msg", must(c2.Do(ctx, "PING", "hi").Text()), "hi")
	eq(t, "ECHO", must(c2.Echo(ctx, "hello").Result()), "hello")

	// CLIENT: one connection.
	conn := c2.Conn()
	defer conn.Close()
	eq(t, "SETNAME", must(conn.ClientSetName(ctx, "worker-1").Result()), true)
	eq(t, "GETNAME", must(conn.ClientGetName(ctx).Result()), "worker-1")
	id := must(conn.ClientID(ctx).Result())
	if id <= 0 {
		t.Fatalf("CLIENT ID %d", id)
	}
	info := must(conn.Do(ctx, "CLIENT", "INFO").Text())
	if !strings.Contains(info, "name=worker-1") || !strings.Contains(info, fmt.Sprintf("id=%d ", id)) {
		t.Fatalf("CLIENT INFO %q", info)
	}
	wantErr(t, "CLIENT bogus", conn.Do(ctx, "CLIENT", "BOGUS").Err(), "ERR unknown subcommand")
	eq(t, "RESET", must(conn.Do(ctx, "RESET").Text()), "RESET")
	if _, err := conn.ClientGetName(ctx).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GETNAME after RESET: %v", err)
	}

	// CONFIG GET (a map in RESP3, pairs in RESP2), SET refused.
	cfg := must(c3.ConfigGet(ctx, "max*").Result())
	if cfg["maxclients"] != "5000" || cfg["maxmemory"] != "0" {
		t.Fatalf("CONFIG GET max*: %v", cfg)
	}
	cfg2 := must(c2.ConfigGet(ctx, "shoal-*").Result())
	if cfg2["shoal-x"] != "1" {
		t.Fatalf("CONFIG GET shoal-*: %v", cfg2)
	}
	wantErr(t, "CONFIG SET", c2.ConfigSet(ctx, "maxmemory", "1").Err(), "ERR CONFIG SET is not supported")

	// COMMAND.
	count := must(c2.Do(ctx, "COMMAND", "COUNT").Int())
	if count != len(commandList) {
		t.Fatalf("COMMAND COUNT %d", count)
	}
	cmds := must(c2.Command(ctx).Result())
	if g := cmds["get"]; g == nil || g.Arity != 2 || g.FirstKeyPos != 1 || !g.ReadOnly {
		t.Fatalf("COMMAND get: %+v", g)
	}
	docs := must(c3.Do(ctx, "COMMAND", "DOCS", "set").Result()).(map[any]any)
	if _, ok := docs["set"]; !ok {
		t.Fatalf("COMMAND DOCS set: %v", docs)
	}
	must(c2.Do(ctx, "COMMAND", "INFO", "get", "nope").Slice())

	// INFO sections.
	c2.Set(ctx, "k", "v", 0)
	all := must(c2.Info(ctx).Result())
	for _, s := range []string{"# Server", "redis_version:", "# Clients", "connected_clients:", "# Memory", "used_memory:", "# Replication", "role:master", "# Keyspace", "db0:keys=1"} {
		if !strings.Contains(all, s) {
			t.Fatalf("INFO lacks %q:\n%s", s, all)
		}
	}
	ks := must(c3.Info(ctx, "keyspace").Result())
	if strings.Contains(ks, "# Server") || !strings.Contains(ks, "# Keyspace") {
		t.Fatalf("INFO keyspace: %q", ks)
	}

	// QUIT closes after answering.
	nc := n.raw(t)
	nc.Write([]byte("PING\r\nQUIT\r\nPING\r\n"))
	b, _ := readAll(nc)
	eq(t, "QUIT", b, "+PONG\r\n+OK\r\n")
}

func TestPipeline(t *testing.T) {
	n := startNode(t, Config{})
	ctx := ctxT(t)
	for _, proto := range []int{2, 3} {
		c := n.client(t, &redis.Options{Protocol: proto})
		p := c.Pipeline()
		for i := range 1000 {
			p.Set(ctx, fmt.Sprintf("p%d", i), i, 0)
			p.Incr(ctx, fmt.Sprintf("p%d", i))
			p.Get(ctx, fmt.Sprintf("p%d", i))
		}
		p.Get(ctx, "absent")
		cmds, err := p.Exec(ctx)
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		for i := range 1000 {
			if v := cmds[3*i+2].(*redis.StringCmd).Val(); v != fmt.Sprint(i+1) {
				t.Fatalf("RESP%d pipeline: p%d = %q", proto, i, v)
			}
		}
		if !errors.Is(cmds[3000].Err(), redis.Nil) {
			t.Fatalf("absent: %v", cmds[3000].Err())
		}
	}
	// A raw pipeline in one write, inline and multibulk mixed.
	nc := n.raw(t)
	var req strings.Builder
	for i := range 100 {
		fmt.Fprintf(&req, "*3\r\n$3\r\nSET\r\n$2\r\nr%d\r\n$1\r\nx\r\nGET r%d\r\n", i%10, i%10)
	}
	req.WriteString("QUIT\r\n")
	nc.Write([]byte(req.String()))
	b, _ := readAll(nc)
	eq(t, "raw pipeline", b, strings.Repeat("+OK\r\n$1\r\nx\r\n", 100)+"+OK\r\n")
}

func TestStatsCountCommands(t *testing.T) {
	n := startNode(t, Config{})
	c := n.client(t, nil)
	ctx := ctxT(t)
	c.Set(ctx, "k", "v", 0)
	c.Get(ctx, "k")
	c.Get(ctx, "k")
	c.Incr(ctx, "k") // an error
	var f stats.Fields
	n.s.Report(&f)
	vals := map[string]float64{}
	for _, fl := range f.List() {
		vals[fl.Key] = fl.Value
	}
	if vals["request/RESP.GET/handled"] != 2 || vals["request/RESP.SET/handled"] != 1 || vals["request/RESP.INCR/errors"] != 1 {
		t.Fatalf("stats: GET %v SET %v INCR errors %v", vals["request/RESP.GET/handled"], vals["request/RESP.SET/handled"], vals["request/RESP.INCR/errors"])
	}
	if vals["resp/connections"] < 1 {
		t.Fatalf("connections %v", vals["resp/connections"])
	}
}
