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
	"strings"
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
	durability  string // durability.go
}

// exitError carries an exit status and the message for stderr ("" for
// none).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// quietExit ends the command with code and nothing on stderr: its output
// said it all (exists printing false).
func quietExit(code int) error { return &exitError{code: code} }

// notFound is the negative answer of a key that has no record.
func notFound(channel, key string) error {
	return &exitError{code: exitNegative, msg: fmt.Sprintf("not found: no key %q in channel %q", key, channel)}
}

// Exit statuses, for scripts (shoal --help and the README list them).
const (
	exitOK       = 0 // success
	exitNegative = 1 // a negative answer: not found, empty, exists false, CAS mismatch, problems found
	exitUsage    = 2 // a mistake in the command line
	exitCluster  = 3 // the cluster cannot be reached, or it refused (auth, no quorum, unavailable)
	exitOther    = 4 // any other error: the node's (bad request, out of memory, internal) or a local one
	// exitAmbiguous: a durable write (--durability) may or may not have
	// been applied: read it back to know.
	exitAmbiguous = 5
)

// exitHelp is the part of `shoal --help` about exit statuses.
const exitHelp = `Exit status:
  0  success
  1  a negative answer: not found, empty queue, exists false, CAS mismatch,
     a missing channel, check or wait-ready problems
  2  usage error (unknown command or flag, wrong arguments)
  3  the cluster cannot be reached, or it refused: connection refused or
     timed out, authentication, no quorum, unavailable, not my vbucket
  4  any other error: one the node answered with (bad request, out of
     memory, internal error, ...) or a local one (a file that cannot be read)
  5  ambiguous: a durable write (--durability) was applied by the active
     but not acknowledged by a majority in time, or its connection broke
     or --timeout passed before the answer: it may or may not have been
     applied (read it back to know)`

func main() {
	root := rootCommand(&globals{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		if err.Error() != "" {
			for _, line := range errorLines(err) {
				fmt.Fprintln(os.Stderr, "shoal:", line)
			}
		}
		os.Exit(exitCode(err))
	}
}

// rootCommand builds the command tree. The errors cobra finds before a
// command's body runs (unknown command or flag, wrong arguments, a
// required flag missing) are usage errors.
func rootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Command-line client of shoal nodes",
		Long:          "Command-line client and operator tool of shoal nodes.\n\n" + exitHelp,
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
	pf.StringVar(&g.durability, "durability", "", "durability of kv writes (put, update, rm, expire, persist): none, majority (held by a majority of the vBucket's chain before the answer) or persist-majority")
	root.AddCommand(kvCommands(g)...)
	root.AddCommand(queueCommands(g)...)
	root.AddCommand(channelCommands(g)...)
	root.AddCommand(replCommands(g)...)
	root.AddCommand(logCommand(g), checkCommand())
	root.AddCommand(dumpCommands(g)...)
	root.AddCommand(clusterCommands(g)...)
	root.AddCommand(failoverCommands(g)...)
	root.AddCommand(rebalanceCommand(g), removeCommand(g))
	root.AddCommand(discoveryCommands(g)...)
	root.AddCommand(benchCommand(g))
	root.AddCommand(versionCommand())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	markUsage(root)
	return root
}

// markUsage makes the argument checks of every command return
// usageErrors (the flag errors are, by the root's FlagErrorFunc).
func markUsage(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.RunE == nil && cmd.Run == nil && cmd.HasParent() {
		// A group (log, queue, ...): its help, or a usage error for a
		// subcommand it does not have.
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", a[0], c.CommandPath())}
			}
			return c.Help()
		}
	}
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		markUsage(sub)
	}
}

// exitCode is the exit status for err.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case isUsage(err), isCobraUsage(err):
		return exitUsage
	case errors.Is(err, client.ErrAmbiguous): // before the cluster's: it may wrap a broken connection or a timeout
		return exitAmbiguous
	case errors.Is(err, client.ErrNotFound), errors.Is(err, client.ErrEmpty), errors.Is(err, client.ErrExists):
		return exitNegative
	case errors.Is(err, client.ErrDisconnected), errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrNotMyVBucket),
		errors.Is(err, client.ErrAuthRequired), errors.Is(err, client.ErrAuthFailed), errors.Is(err, client.ErrNotPermitted),
		errors.Is(err, client.ErrNoQuorum), errors.Is(err, client.ErrRefused), errors.Is(err, client.ErrTooManyConnections),
		errors.Is(err, client.ErrShuttingDown), errors.Is(err, client.ErrBusy), errors.Is(err, client.ErrProtocol),
		errors.Is(err, context.DeadlineExceeded):
		return exitCluster
	}
	return exitOther
}

// isCobraUsage recognises the usage errors cobra makes on its own (an
// unknown command, a required flag or a flag group), which carry no type.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command ", "required flag(s) ", "if any flags in the group ", "at least one of the flags in the group "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// errorLines formats err for stderr, one line per error, each as
// "ADDR: what happened" when a node is concerned.
func errorLines(err error) []string {
	var ce *connectError
	if errors.As(err, &ce) {
		return ce.lines()
	}
	return []string{err.Error()}
}

// connectError is a failed Dial: one cause per seed address.
type connectError struct {
	addrs []string
	err   error
}

func (e *connectError) Error() string { return strings.Join(e.lines(), "; ") }
func (e *connectError) Unwrap() error { return e.err }

// lines are "ADDR: cannot connect: why", one per seed that failed.
func (e *connectError) lines() []string {
	var causes []error
	if j, ok := e.err.(interface{ Unwrap() []error }); ok {
		causes = j.Unwrap()
	} else {
		causes = []error{e.err}
	}
	var out []string
	for _, c := range causes {
		msg := c.Error()
		for _, sentinel := range []error{client.ErrDisconnected, client.ErrProtocol} {
			msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
		}
		addr := strings.Join(e.addrs, ",")
		for _, a := range e.addrs {
			if strings.HasPrefix(msg, a+": ") {
				addr, msg = a, strings.TrimPrefix(msg, a+": ")
				break
			}
		}
		out = append(out, addr+": cannot connect: "+msg)
	}
	return out
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

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
	if g.durability != "" {
		d, err := client.ParseDurability(g.durability)
		if err != nil {
			return nil, usageError{err}
		}
		opts = append(opts, client.WithDefaultDurability(d, 0))
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
		return nil, &connectError{addrs: strings.Split(g.addr, ","), err: err}
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
