package node

import (
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"shoal/internal/auth"
	"shoal/internal/stats"
)

// consoleFiles are the console page: plain HTML, CSS and a script, no
// build step, nothing loaded from elsewhere.
//
//go:embed console
var consoleFiles embed.FS

// httpHandler serves the HTTP port: /metrics, /healthz and /readyz (open
// unless --http-auth=all), /status, the console and, with --pprof,
// /debug/pprof (behind basic auth with --http-auth).
func (n *Node) httpHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(stats.NewCollector(n.stats))
	reg.MustRegister(collectors.NewGoCollector())
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	// open pages are for scrapers and orchestrators.
	handle := func(pattern string, open bool, h http.Handler) {
		if n.cfg.HTTPAuth.Covers(open) {
			h = n.basicAuth(h)
		}
		mux.Handle(pattern, h)
	}
	handle("GET /metrics", true, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	handle("GET /healthz", true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	}))
	handle("GET /readyz", true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rd := n.nodeReadiness()
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:")
			for _, m := range rd.Missing {
				fmt.Fprintln(w, "- "+m)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	}))
	handle("GET /status", false, http.HandlerFunc(n.serveStatus))
	if n.cfg.Pprof {
		handle("/debug/pprof/", false, http.HandlerFunc(pprof.Index))
		handle("/debug/pprof/cmdline", false, http.HandlerFunc(pprof.Cmdline))
		handle("/debug/pprof/profile", false, http.HandlerFunc(pprof.Profile))
		handle("/debug/pprof/symbol", false, http.HandlerFunc(pprof.Symbol))
		handle("/debug/pprof/trace", false, http.HandlerFunc(pprof.Trace))
	}
	files, _ := fs.Sub(consoleFiles, "console")
	static := consoleHeaders(http.FileServerFS(files))
	handle("GET /{$}", false, static)
	handle("GET /console/", false, http.StripPrefix("/console/", static))
	return mux
}

// consoleCSP lets the console load and fetch from its own node only.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleHeaders adds the console's security headers.
func consoleHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", consoleCSP)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// serveStatus answers /status; ?map=1 adds the vBucket map, ?copies=1
// every member's high seqnos (for the console's map).
func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := n.Status()
	q := r.URL.Query()
	if on, _ := strconv.ParseBool(q.Get("map")); on {
		st.Map = n.mapStatus()
	}
	if on, _ := strconv.ParseBool(q.Get("copies")); on {
		n.fillCopies(r.Context(), &st)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(st)
}

// basicAuth lets through requests with HTTP basic auth whose user is a
// name of the credentials file and whose password is its hex secret.
func (n *Node) basicAuth(h http.Handler) http.Handler {
	realm := fmt.Sprintf(`Basic realm="shoal %s", charset="UTF-8"`, n.cfg.NodeID)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, pass, ok := r.BasicAuth()
		if ok && n.checkHTTPCredential(name, pass) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", realm)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, "this page needs a credential of the node's --credentials file: the name as user, the hex secret as password")
	})
}

// checkHTTPCredential compares in constant time; an unknown name costs
// the same as a known one.
func (n *Node) checkHTTPCredential(name, pass string) bool {
	secret, known := n.creds[name]
	if !known {
		secret = make([]byte, auth.MinSecretLen)
	}
	got, err := hex.DecodeString(pass)
	if err != nil {
		got = nil
	}
	return subtle.ConstantTimeCompare(got, secret) == 1 && known
}
