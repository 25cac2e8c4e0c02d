// Package e2e tests the real shoald and shoal binaries on 127.0.0.1.
package e2e

import (
	"os"
	"testing"

	"shoal/internal/testproc"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testproc.Cleanup()
	os.Exit(code)
}
