// Package e2e tests the real shoald and shoal binaries on 127.0.0.1.
package e2e

import (
	"os"
	"testing"
	"time"

	"shoal/client"
	"shoal/internal/testproc"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testproc.Cleanup()
	os.Exit(code)
}

// dialNode connects a Go client to a node started by the test.
func dialNode(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), addr, client.WithTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
