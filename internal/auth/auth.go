// Package auth is shoal's challenge–response authentication: the
// credentials file and the proof a client computes over the node's nonce.
//
// The node sends a random 32-byte nonce in its HELLO answer. The client
// answers with AUTH(name, proof) where
//
//	proof = HMAC-SHA256(secret, "shoal-auth-v1" || 0x00 || nonce || name)
//
// The secret never crosses the network and a proof is useless on another
// connection, whose nonce differs.
package auth

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// Admin is the credential name that may remove channels and run operator
// requests when authentication is on.
const Admin = "admin"

// Peer is the credential name other nodes of the cluster authenticate as:
// it may open raft and replication connections and make the requests
// nodes make of each other, but it is not an operator (no RemoveChannel,
// no DumpNow). The admin credential may do all of that too.
const Peer = "node"

// MinSecretLen is the shortest secret accepted, in bytes (128 bits).
const MinSecretLen = 16

const domain = "shoal-auth-v1\x00"

// Proof computes the client's answer to nonce for name with secret.
func Proof(secret, nonce []byte, name string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(domain))
	m.Write(nonce)
	m.Write([]byte(name))
	return m.Sum(nil)
}

// Verify reports whether proof is the right answer to nonce for name.
func Verify(creds map[string][]byte, nonce []byte, name string, proof []byte) bool {
	secret, ok := creds[name]
	if !ok {
		// Spend the same time as a known name, so names cannot be probed by timing.
		secret = make([]byte, MinSecretLen)
	}
	good := hmac.Equal(Proof(secret, nonce, name), proof)
	return ok && good
}

// ParseSecret decodes a hex secret, as found after the colon of a
// credentials line or alone in a client's secret file.
func ParseSecret(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("secret is not hex: %w", err)
	}
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("secret is %d bytes; at least %d are needed (%d hex digits)", len(b), MinSecretLen, 2*MinSecretLen)
	}
	return b, nil
}

// ParseCredentials reads `name:hex-secret` lines. Blank lines and lines
// starting with # are ignored.
func ParseCredentials(r io.Reader) (map[string][]byte, error) {
	creds := map[string][]byte{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		name, hexSecret, ok := strings.Cut(t, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("line %d: want name:hex-secret", line)
		}
		if len(name) > 100 {
			return nil, fmt.Errorf("line %d: name longer than 100 bytes", line)
		}
		secret, err := ParseSecret(hexSecret)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", line, name, err)
		}
		if _, dup := creds[name]; dup {
			return nil, fmt.Errorf("line %d: %s is listed twice", line, name)
		}
		creds[name] = secret
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("no credentials")
	}
	return creds, nil
}

// LoadCredentials reads a credentials file.
func LoadCredentials(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open credentials: %w", err)
	}
	defer f.Close()
	c, err := ParseCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return c, nil
}

// LoadSecret reads a file holding one hex secret.
func LoadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read secret file: %w", err)
	}
	s, err := ParseSecret(string(b))
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	return s, nil
}
