package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// HTTP port settings (Config.HTTPAuth, Pprof).

// HTTPAuth says which pages of the HTTP port need HTTP basic auth with a
// credential of the --credentials file (the name as user, the hex secret
// as password).
type HTTPAuth string

// The HTTPAuth modes.
const (
	// HTTPAuthOff: every page is open (the default).
	HTTPAuthOff HTTPAuth = "off"
	// HTTPAuthOn: the console, /status and /debug/pprof need a credential;
	// /metrics, /healthz and /readyz stay open for scrapers and
	// orchestrators.
	HTTPAuthOn HTTPAuth = "on"
	// HTTPAuthAll: every page needs a credential.
	HTTPAuthAll HTTPAuth = "all"
)

// String implements flag.Value.
func (a HTTPAuth) String() string {
	if a == "" {
		return string(HTTPAuthOff)
	}
	return string(a)
}

// Set implements flag.Value: off (or false), on (or true), all.
func (a *HTTPAuth) Set(v string) error {
	switch strings.TrimSpace(v) {
	case "off", "false":
		*a = HTTPAuthOff
	case "on", "true":
		*a = HTTPAuthOn
	case "all":
		*a = HTTPAuthAll
	default:
		return fmt.Errorf("bad http-auth %q: want off, on (the console, /status and pprof) or all (every page)", v)
	}
	return nil
}

// IsBoolFlag lets --http-auth stand alone for --http-auth=on.
func (a *HTTPAuth) IsBoolFlag() bool { return true }

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings).
func (a *HTTPAuth) UnmarshalText(b []byte) error { return a.Set(string(b)) }

// Covers reports whether a page needs a credential: open pages are those
// for scrapers and orchestrators (/metrics, /healthz, /readyz).
func (a HTTPAuth) Covers(open bool) bool {
	switch a {
	case HTTPAuthAll:
		return true
	case HTTPAuthOn:
		return !open
	}
	return false
}

func bindHTTP(fs *flag.FlagSet, c *Config) {
	fs.Var(&c.HTTPAuth, "http-auth", "HTTP basic auth with a --credentials credential (user: its name, password: its hex secret): off (default), on (--http-auth alone: the console, /status, pprof) or all (/metrics, /healthz, /readyz too)")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve /debug/pprof on the HTTP port (profiles expose memory contents: keep it off, or with --http-auth)")
}

func (c *Config) validateHTTP() []error {
	var errs []error
	if c.HTTPAuth.Covers(false) && c.Credentials == "" {
		errs = append(errs, errors.New("http-auth needs --credentials (its names and secrets are the HTTP users and passwords)"))
	}
	return errs
}
