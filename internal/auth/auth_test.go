package auth

import (
	"strings"
	"testing"
)

func TestProofVerify(t *testing.T) {
	creds, err := ParseCredentials(strings.NewReader("# team\n\nadmin:00112233445566778899aabbccddeeff\napp : ffeeddccbbaa99887766554433221100ff\n"))
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("0123456789abcdef0123456789abcdef")
	p := Proof(creds["app"], nonce, "app")
	if !Verify(creds, nonce, "app", p) {
		t.Fatal("good proof refused")
	}
	if Verify(creds, nonce, "admin", p) {
		t.Fatal("proof accepted for another name")
	}
	if Verify(creds, []byte("another nonce...another nonce..."), "app", p) {
		t.Fatal("proof accepted for another nonce")
	}
	if Verify(creds, nonce, "nobody", Proof(make([]byte, 16), nonce, "nobody")) {
		t.Fatal("unknown name accepted")
	}
}

func TestParseCredentialsErrors(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		_, err := ParseCredentials(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ParseCredentials(%q) err = %v, want %q", in, err, want)
		}
	}
	f("admin", "line 1")
	f("admin:zz", "not hex")
	f("admin:0011", "at least 16")
	f("a:00112233445566778899aabbccddeeff\na:00112233445566778899aabbccddeeff", "twice")
	f("", "no credentials")
}
