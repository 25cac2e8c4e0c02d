// Package node wires one shoald process together: configuration, data
// directory, logs, engines, the data port, the HTTP port and stats.
package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"shoal/internal/auth"
	"shoal/internal/catalog"
	"shoal/internal/config"
	"shoal/internal/datadir"
	"shoal/internal/discovery"
	"shoal/internal/dump"
	"shoal/internal/engine"
	"shoal/internal/kv"
	"shoal/internal/logstore"
	"shoal/internal/meta"
	"shoal/internal/queue"
	"shoal/internal/raftstore"
	"shoal/internal/resp"
	"shoal/internal/server"
	"shoal/internal/stats"
	"shoal/internal/vbmap"
	"shoal/internal/vfs"
)

// Node is one running shoald.
type Node struct {
	cfg     config.Config
	version string
	log     *slog.Logger
	logFile *os.File
	lock    *os.File
	started time.Time

	cat    *catalog.Catalog
	kv     *kv.Store
	queue  *queue.Store
	srv    *server.Server
	stats  *stats.Registry
	statsW *stats.LogWriter // keeps the previous counters, for deltas

	rep     *replication      // replication and liveness (repl.go)
	routing routing           // the applied vBucket map (routing.go)
	replFS  vfs.FS            // of the failover logs; nil: the OS
	cluster *cluster          // the metadata group and membership (cluster.go); nil on a standby
	disco   *discovery.Runner // --discovery (discovery.go); nil without

	promoting sync.Mutex // serialises promotions (standby.go)
	standbyMu sync.Mutex
	standby   standby         // under standbyMu
	logStore  *logstore.Store // the log engine (log.go)
	dumps     dumper          // the kv dumps (dump.go)
	auto      autoFailover    // heartbeats and the automatic failover (autofailover.go)
	rb        rebalancer      // the rebalance this node runs as the leader (rebalance.go)
	hist      histograms      // of /metrics (observe.go)
	events    eventLog        // recent failovers and refusals, for the console (observe.go)

	ln     net.Listener
	httpLn net.Listener
	resp   *resp.Server // the RESP port (resp.go)
	respLn net.Listener // nil without --resp
	httpS  *http.Server
	creds  map[string][]byte // of --credentials; nil without

	// onShutdown runs after the data port is closed, before the engines
	// are (the dump on shutdown hooks in here).
	onShutdown []func(ctx context.Context)

	closeOnce sync.Once
}

// New prepares a node: it creates the data and log directories, takes the
// data directory's lock, opens the logs and the engines, loads the kv
// dumps and binds the ports. Run serves.
func New(cfg config.Config, version string, opts ...Option) (_ *Node, err error) {
	n := &Node{cfg: cfg, version: version, started: time.Now(), cat: catalog.New(), stats: &stats.Registry{}, statsW: stats.NewLogWriter(nil)}
	for _, o := range opts {
		o(n)
	}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create data directory: %w", err)
	}
	if err := n.lockData(); err != nil {
		return nil, err
	}
	if err := n.openLogs(); err != nil {
		return nil, err
	}
	if n.cfg.NodeID == "" {
		id, err := nodeID(cfg.Data)
		if err != nil {
			return nil, err
		}
		n.cfg.NodeID = id
	}
	n.kv, err = kv.New(kv.Config{
		VBuckets:     cfg.VBuckets,
		MaxValueSize: int(cfg.MaxValueSize),
		MemoryLimit:  int64(cfg.MemoryLimit),
		Logger:       n.log.With("engine", "kv"),
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start the kv engine: %w", err)
	}
	if err := n.loadDumps(); err != nil {
		return nil, n.damaged(err)
	}
	for _, cs := range n.kv.Channels() {
		n.cat.Claim([]byte(cs.Name), engine.KindKV)
	}
	if err := n.openQueue(); err != nil {
		return nil, n.damaged(err)
	}
	if err := n.openLog(); err != nil {
		return nil, n.damaged(err)
	}
	scfg := server.Config{
		NodeID:         n.cfg.NodeID,
		Version:        version,
		VBuckets:       cfg.VBuckets,
		MaxValueSize:   int(cfg.MaxValueSize),
		MaxConnections: cfg.MaxConnections,
		NoEventLoop:    !cfg.EventLoop,
		Logger:         n.log.With("part", "server"),
		Info:           n.info,
		Dumps:          n.dumps.mgr,
		ChannelRemoved: n.channelRemoved,
	}
	if cfg.ReplicaOf == "" {
		scfg.Channels = clusterChannels{n}
	}
	if cfg.Credentials != "" {
		if scfg.Credentials, err = auth.LoadCredentials(cfg.Credentials); err != nil {
			return nil, err
		}
		n.creds = scfg.Credentials // also the HTTP port's users (--http-auth)
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("cannot load TLS certificate: %w", err)
		}
		scfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	n.srv = server.New(scfg, server.Engines{Catalog: n.cat, KV: n.kv, Queue: n.queue, Log: n.logStore})
	n.stats.Add(n.srv)
	n.stats.Add(stats.Process{})
	n.stats.Add(stats.Uptime(n.started))
	n.stats.Add(stats.SourceFunc(n.reportKV))
	n.stats.Add(stats.SourceFunc(n.reportQueue))
	n.stats.Add(stats.SourceFunc(n.reportDumps))
	if err := n.setupRepl(); err != nil {
		return nil, err
	}

	if n.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("cannot listen on the data port: %w", err)
	}
	if cfg.HTTP != "" && cfg.HTTP != "off" {
		if n.httpLn, err = net.Listen("tcp", cfg.HTTP); err != nil {
			return nil, fmt.Errorf("cannot listen on the HTTP port: %w", err)
		}
		n.httpLn = &dataPortHint{Listener: n.httpLn, dataAddr: n.dataPortAddr()}
	}
	if cfg.ReplicaOf != "" {
		err = n.setupStandby()
	} else {
		err = n.setupCluster()
	}
	if err == nil {
		err = n.setupDiscovery()
	}
	if err == nil {
		err = n.setupRESP()
	}
	if err == nil && n.table() == nil { // a new node of its own: it serves at once
		err = n.applyMap(vbmap.Solo(n.cfg.NodeID, cfg.VBuckets), nil)
	}
	if err != nil {
		return nil, n.damaged(err)
	}
	return n, nil
}

// damaged adds to an error about a damaged file, which names the file,
// the command that checks the whole data directory and repairs what can
// be repaired.
func (n *Node) damaged(err error) error {
	for _, corrupt := range []error{queue.ErrCorrupt, dump.ErrCorrupt, raftstore.ErrCorrupt, meta.ErrCorrupt, logstore.ErrBadState} {
		if errors.Is(err, corrupt) {
			return fmt.Errorf("%w\nwith the node stopped, `shoal check --repair %s` checks every file it reads at start, repairs what can be repaired safely and says what to do with the rest", err, n.cfg.Data)
		}
	}
	return err
}

// dataPortAddr is the data port's address as clients should dial it: the
// advertised one, else the listener's.
func (n *Node) dataPortAddr() string {
	if n.cfg.Advertise != "" {
		return n.cfg.Advertise
	}
	return n.ln.Addr().String()
}

// Addr is the data port's address.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// HTTPAddr is the HTTP port's address, nil when disabled.
func (n *Node) HTTPAddr() net.Addr {
	if n.httpLn == nil {
		return nil
	}
	return n.httpLn.Addr()
}

// Logger is the node's root logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// OnShutdown registers fn to run during shutdown, after the data port is
// closed and before the engines are.
func (n *Node) OnShutdown(fn func(ctx context.Context)) { n.onShutdown = append(n.onShutdown, fn) }

// Run serves until ctx is done, then shuts down: it stops accepting,
// finishes the requests in flight, runs the shutdown hooks and closes the
// engines. It returns nil after a clean shutdown.
func (n *Node) Run(ctx context.Context) error {
	n.log.Info("shoald started", "node_id", n.cfg.NodeID, "version", n.version, "listen", n.ln.Addr().String(),
		"http", addrString(n.HTTPAddr()), "data", n.cfg.Data, "vbuckets", n.cfg.VBuckets,
		"max_value_size", n.cfg.MaxValueSize.String(), "memory_limit", n.cfg.MemoryLimit.String(),
		"queue_durability", n.cfg.QueueDurability, "queue_fsync_interval", n.cfg.QueueFsyncInterval.String(),
		"auth", n.cfg.Credentials != "", "tls", n.cfg.TLSCert != "", "resp", addrString(n.RESPAddr()))
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	serveErr := make(chan error, 3)
	wg.Add(1)
	go func() { defer wg.Done(); n.serveRESP(serveErr) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, server.ErrClosed) {
			serveErr <- err
		}
	}()
	if n.httpLn != nil {
		n.httpS = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.httpS.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("HTTP server: %w", err)
			}
		}()
	}
	if n.cfg.StatsInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); n.statsLoop(bg) }()
	}
	n.startDumps()
	n.startRepl(bg, &wg)
	fatal := make(chan error, 1)
	var left <-chan struct{}
	if n.cluster != nil {
		left = n.cluster.left
		wg.Add(2)
		go func() { defer wg.Done(); n.clusterLoop(bg, fatal) }()
		go func() { defer wg.Done(); n.leaseLoop(bg) }()
		wg.Add(1)
		go func() { defer wg.Done(); n.autoFailoverLoop(bg) }()
	}
	if n.disco != nil {
		wg.Add(1)
		go func() { defer wg.Done(); n.disco.Run(bg) }()
	}
	if n.cfg.Console && isTerminal(os.Stdout) {
		wg.Add(1)
		go func() { defer wg.Done(); n.consoleLoop(bg, os.Stdout) }()
	}
	var runErr error
	select {
	case <-ctx.Done():
		n.log.Info("shutting down")
	case runErr = <-serveErr:
		n.log.Error("a listener failed; shutting down", "err", runErr)
	case runErr = <-fatal:
		n.log.Error("this node cannot be in the cluster; shutting down", "err", runErr)
	case <-left:
		n.log.Info("this node was removed from the cluster (it holds no vbucket); shutting down. Its data directory belongs to that cluster: empty it before starting the node again")
	}
	drained := n.stopRepl()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.stopRESP(sctx)
	if err := n.srv.Shutdown(sctx); err != nil {
		n.log.Warn("connections did not finish in time; closed them", "err", err)
	}
	if n.httpS != nil {
		n.httpS.Shutdown(sctx)
	}
	for _, fn := range n.onShutdown {
		fn(sctx)
	}
	<-drained
	n.saveFailoverLogs()
	stopBG()
	wg.Wait()
	if n.cfg.StatsInterval > 0 {
		n.writeStats() // a last line with the final counters
	}
	n.log.Info("shoald stopped", "uptime", time.Since(n.started).Round(time.Millisecond).String())
	n.close()
	return runErr
}

// close releases what New acquired.
func (n *Node) close() {
	n.closeOnce.Do(func() {
		if n.ln != nil {
			n.ln.Close()
		}
		if n.httpLn != nil {
			n.httpLn.Close()
		}
		if n.respLn != nil {
			n.respLn.Close()
		}
		if n.cluster != nil && n.cluster.meta != nil {
			if err := n.cluster.meta.Close(); err != nil {
				n.log.Warn("the metadata group did not stop cleanly", "err", err)
			}
		}
		if n.kv != nil {
			n.kv.Close()
		}
		if n.queue != nil {
			if err := n.queue.Close(); err != nil {
				n.log.Error("cannot save the queues", "err", err)
			}
		}
		if n.logStore != nil {
			if err := n.logStore.Close(); err != nil {
				n.log.Error("cannot close the log engine", "err", err)
			}
		}
		if n.logFile != nil {
			n.logFile.Close()
		}
		if n.lock != nil {
			n.lock.Close()
		}
	})
}

// lockData takes an exclusive lock on DATA/LOCK so that two nodes never
// share a data directory; the error names the PID holding it.
func (n *Node) lockData() error {
	f, err := datadir.Lock(n.cfg.Data)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", n.cfg.Data, err)
	}
	n.lock = f
	return nil
}

// openLogs opens root.log; log lines also go to stderr.
func (n *Node) openLogs() error {
	if err := os.MkdirAll(n.cfg.LogDir, 0o755); err != nil {
		return fmt.Errorf("cannot create log directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(n.cfg.LogDir, "root.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot open root.log: %w", err)
	}
	n.logFile = f
	var level slog.Level
	level.UnmarshalText([]byte(n.cfg.LogLevel))
	hopts := &slog.HandlerOptions{Level: level}
	newHandler := func(w io.Writer) slog.Handler {
		if n.cfg.LogFormat == "json" {
			return slog.NewJSONHandler(w, hopts)
		}
		return slog.NewTextHandler(w, hopts)
	}
	n.log = slog.New(slog.NewMultiHandler(newHandler(f), newHandler(os.Stderr)))
	return nil
}

// nodeID reads DATA/node-id, creating it with a random id the first time.
func nodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			if !vbmap.ValidNodeID(id) {
				return "", fmt.Errorf("%s holds %q, not a node id (1..%d of A-Z a-z 0-9 . _ -): the file is damaged; `shoal check %s` looks at the rest of the directory, and --node-id ID starts the node with the id it had (the cluster knows it)", path, id, vbmap.MaxNodeIDLen, dir)
			}
			return id, nil
		}
	}
	var r [4]byte
	rand.Read(r[:])
	id := "node-" + hex.EncodeToString(r[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("cannot write %s: %w", path, err)
	}
	return id, nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
