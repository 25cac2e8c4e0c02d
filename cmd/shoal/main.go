// Command shoal is the command-line client and operator tool of shoal
// nodes: kv get/put/..., streams (getall, mirror), queues (push, pop,
// consume, queues), log put/range, channel management, node information,
// a node's status and a standby's replication (status, promote, replica),
// the cluster (nodes, nodes remove, vbmap, cluster), discovery and
// wait-ready, the kv dumps (dump --now, the external dumper dump --out, dump inspect,
// restore) and the offline check of a node's log files. Run `shoal --help`
// for the commands.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"shoal/client"
	"shoal/internal/auth"
)

// globals are the flags every command takes.
type globals struct {
	addr        string
	user        string
	secretFile  string
	tls         bool
	tlsCA       string
	tlsInsecure bool
	timeout     time.Duration
	noRoute     bool
}

// exitError carries an exit status other than 1.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	g := &globals{}
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Command-line client of shoal nodes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", envOr("SHOAL_ADDR", "127.0.0.1:7400"), "node address(es), comma-separated: seeds of the cluster, any member will do (env SHOAL_ADDR)")
	pf.StringVar(&g.user, "user", os.Getenv("SHOAL_USER"), "credential name to authenticate as (env SHOAL_USER)")
	pf.StringVar(&g.secretFile, "secret-file", os.Getenv("SHOAL_SECRET_FILE"), "file holding the hex secret of --user (env SHOAL_SECRET_FILE)")
	pf.BoolVar(&g.tls, "tls", false, "connect with TLS")
	pf.StringVar(&g.tlsCA, "tls-ca", "", "PEM file of the CA that signed the node's certificate (implies --tls)")
	pf.BoolVar(&g.tlsInsecure, "tls-insecure", false, "do not verify the node's certificate (implies --tls)")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "timeout of each request")
	pf.BoolVar(&g.noRoute, "no-route", false, "send every request to the --addr node(s) as given, without routing by the cluster's vBucket map")
	root.AddCommand(kvCommands(g)...)
	root.AddCommand(queueCommands(g)...)
	root.AddCommand(channelCommands(g)...)
	root.AddCommand(replCommands(g)...)
	root.AddCommand(logCommand(g), checkCommand())
	root.AddCommand(dumpCommands(g)...)
	root.AddCommand(clusterCommands(g)...)
	root.AddCommand(failoverCommands(g)...)
	root.AddCommand(discoveryCommands(g)...)
	root.AddCommand(benchCommand(g))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if isUsage(err) {
			code = 2
		}
		fmt.Fprintln(os.Stderr, "shoal:", err)
		os.Exit(code)
	}
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ error }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// dial connects with the global flags.
func (g *globals) dial(ctx context.Context) (*client.Client, error) {
	opts := []client.Option{client.WithClientName("shoal-cli"), client.WithTimeout(g.timeout)}
	if g.noRoute {
		opts = append(opts, client.WithNoRouting())
	}
	if g.user != "" || g.secretFile != "" {
		if g.user == "" || g.secretFile == "" {
			return nil, usageError{errors.New("--user and --secret-file go together")}
		}
		secret, err := auth.LoadSecret(g.secretFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithAuth(g.user, secret))
	}
	if g.tls || g.tlsCA != "" || g.tlsInsecure {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: g.tlsInsecure}
		if g.tlsCA != "" {
			pem, err := os.ReadFile(g.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("cannot read --tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", g.tlsCA)
			}
			cfg.RootCAs = pool
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	dctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	c, err := client.Dial(dctx, g.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %w", g.addr, err)
	}
	return c, nil
}

// run wraps a command body that needs a client.
func (g *globals) run(fn func(ctx context.Context, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(cmd.Context(), c, args)
	}
}
