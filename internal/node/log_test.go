package node

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"shoal/internal/config"
	"shoal/internal/engine"
	"shoal/internal/logstore"
)

// TestLogWiring opens a node twice on one data directory: the log engine
// keeps its files in DATA/log-data, its channels are in the catalog after
// a restart, and stats and /status report them.
func TestLogWiring(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	cfg, err := config.Load([]string{"--data", dir, "--listen", "127.0.0.1:0", "--http", "off", "--log-fsync", "always"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.logStore.Append(context.Background(), "events", []logstore.Rec{{Timestamp: 1, Value: []byte("v1")}}, nil); err != nil {
		t.Fatal(err)
	}
	n.close()
	if _, err := os.Stat(filepath.Join(dir, "log-data", "events")); err != nil {
		t.Fatalf("log data not under DATA/log-data: %v", err)
	}

	n, err = New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	if _, kind, ok := n.cat.Lookup([]byte("events")); !ok || kind != engine.KindLog {
		t.Fatalf("catalog after restart: %v %v", kind, ok)
	}
	st := n.Status()
	if st.Log == nil || st.Log.Fsync != "always" || st.Log.Records != 1 || len(st.Channels) != 1 || st.Channels[0].Kind != "log" {
		t.Fatalf("status: %+v %+v", st.Log, st.Channels)
	}
	var keys []string
	for _, f := range n.stats.Collect() {
		keys = append(keys, f.Key)
	}
	all := strings.Join(keys, " ")
	for _, k := range []string{"channel/events/records", "log/records", "action/appended/records", "log/fsyncs", "log/fsync_1_ms", "log/tails_cut"} {
		if !strings.Contains(all, k) {
			t.Errorf("stats lack %s", k)
		}
	}
}
