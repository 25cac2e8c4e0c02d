package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/chromedp"

	"shoal/client"
)

// TestConsoleAssetsAreSelfContained: the console page, its style and its
// script are served from the binary and load nothing from elsewhere (it
// must work with no internet).
func TestConsoleAssetsAreSelfContained(t *testing.T) {
	nd := startBare(t)
	// Links to the other members' consoles are fine; loading is not.
	external := regexp.MustCompile(`(?i)<[^>]+\b(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//|fetch\(\s*["'](https?:)?//|\bimport\s*\(|XMLHttpRequest`)
	for path, want := range map[string]string{
		"/":                    `<script src="/console/console.js">`,
		"/console/console.css": "#vbmap",
		"/console/console.js":  `fetch("/status?map=1&copies=1"`,
	} {
		code, body := httpAuthGet(t, nd, path, "", "")
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("%s answers %d: %.200s", path, code, body)
		}
		if csp := consoleHeader(t, nd, path, "Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("%s has the content security policy %q", path, csp)
		}
		if m := external.FindString(body); m != "" {
			t.Errorf("%s loads something from elsewhere: %q", path, m)
		}
	}
	if code, _ := httpAuthGet(t, nd, "/console/nothing.js", "", ""); code != http.StatusNotFound {
		t.Errorf("a missing asset answers %d", code)
	}
}

// consoleHeader returns a header of the answer to path.
func consoleHeader(t *testing.T, nd *Node, path, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + nd.HTTPAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get(name)
}

// TestEventMessagesAreBounded: the event log keeps the last maxEvents
// events, newest first, and cuts long messages on a rune boundary.
func TestEventMessagesAreBounded(t *testing.T) {
	var l eventLog
	for i := range maxEvents + 5 {
		l.add("failover refused", fmt.Sprint(i), strings.Repeat("é", maxEventMessage))
	}
	ev := l.list()
	if len(ev) != maxEvents || ev[0].Node != fmt.Sprint(maxEvents+4) || ev[maxEvents-1].Node != "5" {
		t.Fatalf("%d events, first %s, last %s", len(ev), ev[0].Node, ev[len(ev)-1].Node)
	}
	if m := ev[0].Message; len(m) > maxEventMessage+len("…") || !utf8.ValidString(m) || !strings.HasSuffix(m, "é…") {
		t.Fatalf("message of %d bytes, valid %v: %q", len(m), utf8.ValidString(m), m[len(m)-10:])
	}
}

// TestStatusMapAndCopies: /status?map=1&copies=1 of a cluster member has
// the vBucket map and every member's seqnos, which the console's grid and
// its hover read; plain /status has neither.
func TestStatusMapAndCopies(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	var st Status
	var body string
	// The leader's liveness report comes with its first tick.
	for deadline := time.Now().Add(10 * time.Second); st.LeaderLiveness == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st = Status{}
		_, body = httpAuthGet(t, nodes[0], "/status?map=1&copies=1", "", "")
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
	}
	if st.Map == nil || len(st.Map.VBuckets) != 64 || st.Map.Revision == 0 {
		t.Fatalf("map: %+v", st.Map)
	}
	ids := map[string]bool{}
	for _, nd := range nodes {
		ids[nd.cfg.NodeID] = true
	}
	for vb, v := range st.Map.VBuckets {
		if len(v.Chain) != 2 || !ids[v.Chain[0]] || !ids[v.Chain[1]] || v.Epoch == 0 {
			t.Fatalf("vBucket %d: %+v", vb, v)
		}
	}
	if len(st.Copies) != 3 || st.CopiesErrors != nil || st.LeaderLiveness == nil {
		t.Fatalf("copies of %d nodes, errors %v, leader liveness %v", len(st.Copies), st.CopiesErrors, st.LeaderLiveness)
	}
	for id, per := range st.Copies {
		if !ids[id] || len(per["kv"]) != 64 || len(per["queue"]) != 64 || len(per["log"]) != 64 {
			t.Fatalf("copies of %s: %v", id, per)
		}
	}
	_, body = httpAuthGet(t, nodes[0], "/status", "", "")
	if strings.Contains(body, `"map"`) || strings.Contains(body, `"copies"`) {
		t.Error("plain /status carries the map or the copies")
	}
}

// chromium returns the path of a Chromium (or Chrome) on the machine, ""
// if there is none.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestConsoleInABrowser loads the console of a 3-node cluster in headless
// Chromium: the node table has the three members, the map grid one cell
// per vBucket coloured by its active as many times as the table says,
// hovering a cell shows its chain, epoch and each copy's seqnos; the page
// is saved as console.png in the test's artifact directory (go test
// -artifacts keeps it; SHOAL_CONSOLE_SCREENSHOT names another copy).
func TestConsoleInABrowser(t *testing.T) {
	browser := chromium()
	if browser == "" {
		t.Skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it): the console's browser test is skipped")
	}
	nodes, _ := startCluster(t, 3)
	addrs := make([]string, len(nodes))
	for i, nd := range nodes {
		addrs[i] = nd.Addr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, strings.Join(addrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		if _, err := c.Put(ctx, "users", []byte(fmt.Sprintf("user-%d", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for range 6 {
		if err := c.Push(ctx, []string{"jobs"}, []byte("j1")); err != nil {
			t.Fatal(err)
		}
		if err := c.LogPut(ctx, "events", uint64(time.Now().UnixNano()), []byte("e1")); err != nil {
			t.Fatal(err)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1600), chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	type row struct {
		Node, State, Role, Liveness string
		Active                      int
	}
	url := "http://" + nodes[0].HTTPAddr().String() + "/"
	err = chromedp.Do(bctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#vbmap .cell`)),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#nodes tbody tr[data-node]").length === 3 &&
			[...document.querySelectorAll("#nodes tbody tr[data-node]")].some(tr => tr.cells[3].textContent === "leader") && /every copy caught up|behind its active/.test(document.getElementById("map-line").textContent)`,
			chromedp.WithPollingTimeout(20*time.Second)),
	)
	if err != nil {
		t.Fatalf("the console in Chromium: %v", err)
	}
	eval := func(expr string, v any) {
		t.Helper()
		b, err := chromedp.Run(bctx, chromedp.Evaluate[json.RawMessage](expr))
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil {
			t.Fatalf("evaluating %.60q in the page: %v", expr, err)
		}
	}
	var rows []row
	eval(`[...document.querySelectorAll("#nodes tbody tr[data-node]")].map(tr => ({
		Node: tr.dataset.node, State: tr.cells[2].textContent, Role: tr.cells[3].textContent, Liveness: tr.cells[4].textContent,
		Active: Number(tr.cells[5].textContent.replace(/,/g, ""))}))`, &rows)
	var cells map[string]int
	eval(`(() => { const m = {}; for (const c of document.querySelectorAll("#vbmap .cell")) m[c.dataset.active] = (m[c.dataset.active] || 0) + 1; return m; })()`, &cells)
	var total, coloured int
	eval(`document.querySelectorAll("#vbmap .cell").length`, &total)
	eval(`new Set([...document.querySelectorAll("#vbmap .cell")].map(c => c.style.backgroundColor).filter(Boolean)).size`, &coloured)
	// Every section was drawn (a script error stops the drawing midway)
	// and the last refresh worked.
	var drawn map[string]string
	eval(`({problem: document.getElementById("problem").hidden ? "" : document.getElementById("problem").textContent,
		cluster: document.getElementById("cluster-line").textContent, repl: document.getElementById("repl-line").textContent,
		events: document.querySelector("#events tbody").textContent, engines: document.getElementById("engines-line").textContent,
		dumps: document.getElementById("dumps-line").textContent, title: document.title})`, &drawn)
	for k, v := range drawn {
		if (k == "problem") != (v == "") {
			t.Errorf("console %s: %q", k, v)
		}
	}
	var channels [][]string
	eval(`[...document.querySelectorAll("#channels tbody tr")].map(tr => [...tr.cells].map(td => td.textContent))`, &channels)
	var tip string
	eval(`(() => { const c = document.querySelector('#vbmap .cell[data-vb="5"]'); const r = c.getBoundingClientRect();
		c.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: r.x + 5, clientY: r.y + 5}));
		const t = document.getElementById("tip"); return t.hidden ? "" : t.innerText; })()`, &tip)
	ids := map[string]*Node{}
	for _, nd := range nodes {
		ids[nd.cfg.NodeID] = nd
	}
	leaders := 0
	for _, r := range rows {
		if ids[r.Node] == nil || r.State != "active" || r.Liveness == "" || r.Liveness == "-" {
			t.Errorf("node row %+v", r)
		}
		if r.Role == "leader" {
			leaders++
		}
		if cells[r.Node] != r.Active || r.Active == 0 {
			t.Errorf("node %s: active for %d in the table, %d cells in the grid", r.Node, r.Active, cells[r.Node])
		}
	}
	if len(rows) != 3 || leaders != 1 {
		t.Errorf("node table: %+v", rows)
	}
	if total != 64 || coloured != 3 {
		t.Errorf("the grid has %d cells in %d colours, want 64 in 3", total, coloured)
	}
	// Every channel of the node is in the channels table with its kind,
	// records and a readable size.
	want := map[string]bool{}
	for _, ch := range nodes[0].Status().Channels {
		want[fmt.Sprintf("%s %s %d %d B", ch.Name, ch.Kind, ch.Records, ch.Bytes)] = true
	}
	got := map[string]bool{}
	for _, r := range channels {
		got[strings.Join(r, " ")] = true
	}
	if len(want) == 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("channels table %v, want %v", got, want)
	}
	v := nodes[0].mapStatus().VBuckets[5]
	for _, want := range []string{"vBucket 5", fmt.Sprintf("epoch %d", v.Epoch), "chain " + strings.Join(v.Chain, " → "), v.Chain[0] + " (active)",
		v.Chain[1] + " (replica 1)", "kv seqno"} {
		if !strings.Contains(tip, want) {
			t.Errorf("hover of vBucket 5 has no %q: %q", want, tip)
		}
	}

	// Leave the tooltip up for the picture.
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), "console.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := os.Getenv("SHOAL_CONSOLE_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot of %s: %s (%d bytes)", url, path, len(png))
}

// TestFailoverEvents: a failover refused and one done through the admin
// request are the console's recent events (newest first) on the leader,
// and the done one is observed by the failover decision histogram.
func TestFailoverEvents(t *testing.T) {
	nodes, stop := startCluster(t, 3, "--failover-timeout", "1s")
	leaderID := nodes[0].clusterStatus().Leader
	var leader *Node
	victim := -1
	for i, nd := range nodes {
		if nd.cfg.NodeID == leaderID {
			leader = nd
		} else if victim < 0 {
			victim = i
		}
	}
	victimID := nodes[victim].cfg.NodeID
	c, err := client.Dial(t.Context(), leader.Addr().String(), client.WithNoRouting())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Failover(t.Context(), leaderID, false); err == nil {
		t.Fatal("the leader failed itself over")
	}
	stop(victim)
	if _, err := c.Failover(t.Context(), victimID, false); err != nil {
		t.Fatal(err)
	}
	var st Status
	_, body := httpAuthGet(t, leader, "/status?copies=1", "", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Events) != 2 || st.Events[0].Kind != "failover" || st.Events[0].Node != victimID || !strings.Contains(st.Events[0].Message, "promoted") ||
		st.Events[1].Kind != "failover refused" || st.Events[1].Node != leaderID || !strings.Contains(st.Events[1].Message, "is this node") ||
		time.Since(st.Events[0].Time) > time.Minute {
		t.Fatalf("events: %+v", st.Events)
	}
	// The stopped node's copies are missing, and the console is told why.
	if _, ok := st.Copies[victimID]; ok || st.CopiesErrors[victimID] == "" || len(st.Copies) != 2 {
		t.Fatalf("copies of %d nodes, errors %v", len(st.Copies), st.CopiesErrors)
	}
	_, metrics := httpAuthGet(t, leader, "/metrics", "", "")
	for _, want := range []string{"shoal_failover_decision_duration_seconds_count 1\n", "shoal_failovers_total{reason=\"manual\"} 1\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics of the leader has no %q", want)
		}
	}
}
