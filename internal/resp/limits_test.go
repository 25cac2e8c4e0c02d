package resp

import (
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"shoal/internal/testproc"
)

// readAll reads until the server closes the connection (or the deadline).
func readAll(nc net.Conn) (string, error) {
	b, err := io.ReadAll(nc)
	return string(b), err
}

func TestBadInputClosesWithAnError(t *testing.T) {
	n := startNode(t, Config{MaxValueSize: 1 << 10})
	for _, tc := range []struct {
		name, in, want string
	}{
		{"bulk over max-value-size", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"multibulk count over the limit", fmt.Sprintf("*%d\r\n", MaxArgs+1), "-ERR Protocol error: invalid multibulk length\r\n"},
		{"huge claimed count", "*999999999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"inline over 64 KiB", "GET " + strings.Repeat("k", MaxInline), "-ERR Protocol error: too big inline request\r\n"},
		{"not a bulk string", "*1\r\n:12\r\n", "-ERR Protocol error: expected '$'\r\n"},
		{"garbage after a bulk", "*1\r\n$4\r\nPINGPONG", "-ERR Protocol error: expected CRLF after a bulk string\r\n"},
		{"unbalanced quotes", "SET k \"v\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := n.raw(t)
			go nc.Write([]byte("PING\r\n" + tc.in))
			got, _ := readAll(nc)
			eq(t, "answer", got, "+PONG\r\n"+tc.want)
		})
	}
	// The node is fine afterwards.
	c := n.client(t, nil)
	eq(t, "PING", must(c.Ping(ctxT(t)).Result()), "PONG")
	// A value at the limit is stored; one over it closes (above).
	eq(t, "SET at the limit", must(c.Set(ctxT(t), "k", strings.Repeat("v", 1<<10), 0).Result()), "OK")
	wantErr(t, "APPEND over", c.Append(ctxT(t), "k", "x").Err(), "ERR string exceeds maximum allowed size")
}

// A client that sends and never reads is dropped after WriteTimeout; the
// node's memory for it stays bounded by MaxPendingOut and the kernel's
// buffers.
func TestClientThatNeverReads(t *testing.T) {
	n := startNode(t, Config{WriteTimeout: 300 * time.Millisecond, MaxPendingOut: 64 << 10})
	c := n.client(t, nil)
	ctx := ctxT(t)
	c.Set(ctx, "big", strings.Repeat("v", 64<<10), 0)
	nc, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	req := []byte(strings.Repeat("GET big\r\n", 100))
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	deadline := time.Now().Add(10 * time.Second)
	var werr error
	for time.Now().Before(deadline) {
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		if _, werr = nc.Write(req); werr != nil {
			break
		}
	}
	if werr == nil {
		t.Fatal("the node kept reading from a client that reads nothing")
	}
	// The server dropped it; others are served.
	for time.Now().Before(deadline) && n.s.NumConnections() > 1 {
		time.Sleep(20 * time.Millisecond)
	}
	eq(t, "connections", n.s.NumConnections(), int64(1))
	eq(t, "PING", must(c.Ping(ctx).Result()), "PONG")
}

func TestAuth(t *testing.T) {
	secret := strings.Repeat("ab", 16)
	key, _ := hex.DecodeString(secret)
	admin, _ := hex.DecodeString(strings.Repeat("cd", 16))
	dir := t.TempDir()
	certFile, keyFile := testproc.WriteCert(t, dir)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string][]byte{"app": key, "admin": admin}
	n := startNode(t, Config{Credentials: creds, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	ctx := ctxT(t)

	anon := n.client(t, &redis.Options{Protocol: 2})
	wantErr(t, "GET before AUTH", anon.Get(ctx, "k").Err(), "NOAUTH")
	eq(t, "PING before AUTH", must(anon.Ping(ctx).Result()), "PONG")
	wantErr(t, "AUTH bad", anon.Do(ctx, "AUTH", "app", strings.Repeat("00", 16)).Err(), "WRONGPASS")
	wantErr(t, "AUTH unknown", anon.Do(ctx, "AUTH", "nobody", secret).Err(), "WRONGPASS")
	wantErr(t, "AUTH password only", anon.Do(ctx, "AUTH", secret).Err(), "WRONGPASS")

	app := n.client(t, &redis.Options{Username: "app", Password: secret})
	eq(t, "SET as app", must(app.Set(ctx, "k", "v", 0).Result()), "OK")
	eq(t, "GET as app", must(app.Get(ctx, "k").Result()), "v")
	wantErr(t, "FLUSHDB as app", app.FlushDB(ctx).Err(), "NOPERM")
	app2 := n.client(t, &redis.Options{Username: "app", Password: secret, Protocol: 2})
	eq(t, "RESP2 AUTH", must(app2.Get(ctx, "k").Result()), "v")

	// Over TLS on the same port.
	adm := n.client(t, &redis.Options{Username: "admin", Password: strings.Repeat("cd", 16), TLSConfig: tlsClient(t)})
	eq(t, "GET over TLS", must(adm.Get(ctx, "k").Result()), "v")
	eq(t, "FLUSHDB as admin", must(adm.FlushDB(ctx).Result()), "OK")

	// --resp-require-tls: AUTH over plain TCP is refused, over TLS it works.
	m := startNode(t, Config{Credentials: creds, RequireTLS: true, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	plain := redis.NewClient(&redis.Options{Addr: m.addr, Protocol: 2})
	defer plain.Close()
	wantErr(t, "AUTH without TLS", plain.Do(ctx, "AUTH", "app", secret).Err(), "ERR AUTH over plain TCP is refused")
	sec := m.client(t, &redis.Options{Username: "app", Password: secret, TLSConfig: tlsClient(t)})
	eq(t, "SET with TLS", must(sec.Set(ctx, "k", "v", 0).Result()), "OK")

	// Without credentials, AUTH says there is nothing to authenticate.
	o := startNode(t, Config{})
	wantErr(t, "AUTH without credentials", o.client(t, nil).Do(ctx, "AUTH", "a", "b").Err(), "ERR AUTH <password> called without")
}
