package config

import (
	"flag"
	"fmt"
	"net"

	"shoal/internal/engine"
)

// RESP holds the settings of the Redis protocol port (embedded in Config;
// the keys are top-level like the others).
type RESP struct {
	// Resp is the address of the RESP port; "" (the default) or "off"
	// disables it.
	Resp string `toml:"resp"`
	// RespChannel is the kv channel of a new RESP connection.
	RespChannel string `toml:"resp_channel"`
	// RespRequireTLS refuses AUTH (and, with credentials, every data
	// command) on RESP connections without TLS.
	RespRequireTLS bool `toml:"resp_require_tls"`
}

func defaultRESP() RESP { return RESP{RespChannel: "default"} }

func bindRESP(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Resp, "resp", c.Resp, `address of the RESP (Redis protocol) port, e.g. 127.0.0.1:6380 ("" or "off": none)`)
	fs.StringVar(&c.RespChannel, "resp-channel", c.RespChannel, "kv channel of a new RESP connection (SELECT changes it)")
	fs.BoolVar(&c.RespRequireTLS, "resp-require-tls", c.RespRequireTLS, "refuse AUTH and data commands on RESP connections without TLS")
}

// RESPEnabled reports whether the RESP port is on.
func (c *Config) RESPEnabled() bool { return c.Resp != "" && c.Resp != "off" }

func (c *Config) validateRESP() []error {
	var errs []error
	if c.RESPEnabled() {
		if _, _, err := net.SplitHostPort(c.Resp); err != nil {
			errs = append(errs, fmt.Errorf("resp %q: %w", c.Resp, err))
		}
	}
	if !engine.ValidChannelString(c.RespChannel) {
		errs = append(errs, fmt.Errorf("resp-channel %q: want 1-255 of A-Z a-z 0-9 _ -", c.RespChannel))
	}
	if c.RespRequireTLS && c.TLSCert == "" {
		errs = append(errs, fmt.Errorf("resp-require-tls needs tls-cert and tls-key"))
	}
	return errs
}
