package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHTTPAuthAndPprof: pprof is off and every page open by default;
// --http-auth alone means on, =all covers every page, and either needs
// --credentials.
func TestHTTPAuthAndPprof(t *testing.T) {
	c, err := Load(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pprof || c.HTTPAuth.Covers(false) || c.HTTPAuth.Covers(true) {
		t.Fatalf("defaults: pprof %v, http-auth %s", c.Pprof, c.HTTPAuth)
	}
	creds := filepath.Join(t.TempDir(), "creds")
	os.WriteFile(creds, []byte("admin:00112233445566778899aabbccddeeff\n"), 0o600)
	for _, tc := range []struct {
		args         []string
		want         HTTPAuth
		console, obs bool // covered: the console and /status; /metrics, /healthz, /readyz
	}{
		{[]string{"--http-auth"}, HTTPAuthOn, true, false},
		{[]string{"--http-auth=on"}, HTTPAuthOn, true, false},
		{[]string{"--http-auth=all"}, HTTPAuthAll, true, true},
		{[]string{"--http-auth=off"}, HTTPAuthOff, false, false},
	} {
		c, err := Load(append([]string{"--credentials", creds, "--pprof"}, tc.args...), io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.HTTPAuth != tc.want || c.HTTPAuth.Covers(false) != tc.console || c.HTTPAuth.Covers(true) != tc.obs || !c.Pprof {
			t.Errorf("%v: %s (covers console %v, metrics %v), pprof %v", tc.args, c.HTTPAuth, c.HTTPAuth.Covers(false), c.HTTPAuth.Covers(true), c.Pprof)
		}
	}
	if _, err := Load([]string{"--http-auth"}, io.Discard); err == nil || !strings.Contains(err.Error(), "http-auth needs --credentials") {
		t.Errorf("--http-auth without --credentials: %v", err)
	}
	if _, err := Load([]string{"--http-auth=some"}, io.Discard); err == nil || !strings.Contains(err.Error(), "want off, on") {
		t.Errorf("--http-auth=some: %v", err)
	}
	path := filepath.Join(t.TempDir(), "shoal.toml")
	os.WriteFile(path, []byte("http_auth = \"all\"\npprof = true\ncredentials = \""+creds+"\"\n"), 0o644)
	if c, err := Load([]string{"--config", path}, io.Discard); err != nil || c.HTTPAuth != HTTPAuthAll || !c.Pprof {
		t.Errorf("from the file: %v %s %v", err, c.HTTPAuth, c.Pprof)
	}
}
