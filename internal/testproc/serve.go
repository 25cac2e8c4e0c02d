package testproc

import (
	"context"
	"net"
	"testing"
	"time"

	"shoal/internal/server"
)

// Serve serves s on a new 127.0.0.1 port until the end of the test, when
// it shuts s down, and returns the address.
func Serve(t testing.TB, s *server.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}
