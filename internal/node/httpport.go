package node

import (
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"shoal/internal/wire"
)

// dataPortHint wraps the HTTP listener so that a shoal client pointed at
// the HTTP port by mistake is told at once where the data port is, instead
// of waiting for the HTTP server's header timeout: a connection whose first
// byte is the protocol's request magic (never the first byte of an HTTP
// request) gets a 400 answer naming the data port, and is closed.
type dataPortHint struct {
	net.Listener
	dataAddr string
}

// Accept implements net.Listener.
func (l *dataPortHint) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &hintConn{Conn: nc, dataAddr: l.dataAddr}, nil
}

// hintConn looks at the first bytes read from it.
type hintConn struct {
	net.Conn
	dataAddr string
	once     sync.Once
	shoal    bool
}

// Read implements net.Conn.
func (c *hintConn) Read(p []byte) (int, error) {
	if c.shoal {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	c.once.Do(func() {
		if n > 0 && p[0] == wire.MagicRequest {
			c.shoal = true
		}
	})
	if !c.shoal {
		return n, err
	}
	body := fmt.Sprintf("this is shoal's HTTP port; the data port is %s\n", c.dataAddr)
	c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c.Conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return 0, io.EOF
}
