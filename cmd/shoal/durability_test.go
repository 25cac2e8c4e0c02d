package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"shoal/client"
	"shoal/internal/wire"
)

// TestDurabilityFlag: --durability majority makes writes durable (on a lone
// node the chain is the node: answered at once), persist-majority is
// refused for kv, a bad level is a usage error.
func TestDurabilityFlag(t *testing.T) {
	addr := startNode(t)
	if _, stderr, code := runShoal(t, "--addr", addr, "--durability", "majority", "put", "users", "bob", "1"); code != 0 {
		t.Fatalf("majority put: %d %s", code, stderr)
	}
	if stdout, stderr, code := runShoal(t, "--addr", addr, "get", "users", "bob"); code != 0 || strings.TrimSpace(stdout) != "1" {
		t.Fatalf("get: %d %q %s", code, stdout, stderr)
	}
	if _, stderr, code := runShoal(t, "--addr", addr, "--durability", "persist-majority", "put", "users", "bob", "2"); code != exitOther || !strings.Contains(stderr, "persist-majority") {
		t.Fatalf("persist-majority put: %d %s", code, stderr)
	}
	if _, _, code := runShoal(t, "--addr", addr, "--durability", "all", "put", "users", "bob", "3"); code != exitUsage {
		t.Fatalf("bad level: %d", code)
	}
}

// TestExitAmbiguous: an ambiguous durable write exits with its own status,
// whether the node said so or the client concluded it (a broken
// connection or an expired timeout after the request went out), never
// with the cluster's.
func TestExitAmbiguous(t *testing.T) {
	for _, err := range []error{
		&client.Error{Status: uint16(wire.StatusAmbiguous), Message: "applied by the active, not acknowledged"},
		fmt.Errorf("%w: %w", client.ErrAmbiguous, client.ErrDisconnected),
		fmt.Errorf("%w: %w", client.ErrAmbiguous, context.DeadlineExceeded),
	} {
		if got := exitCode(err); got != exitAmbiguous {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, exitAmbiguous)
		}
	}
	if got := exitCode(client.ErrDisconnected); got != exitCluster {
		t.Errorf("a plain disconnection: %d", got)
	}
	if stdout, _, code := runShoal(t, "--help"); code != 0 || !strings.Contains(stdout, "5  ambiguous") {
		t.Fatalf("--help does not list status 5: %d %s", code, stdout)
	}
}
