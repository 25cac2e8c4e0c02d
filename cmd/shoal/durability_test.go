package main

import (
	"strings"
	"testing"
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
