package stream

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// seqnoRecorder is a recorder that keeps the seqno messages too.
type seqnoRecorder struct {
	*recorder
	smu    sync.Mutex
	high   map[uint16]uint64
	behind map[uint16]uint64
	count  int
}

func newSeqnoRecorder() *seqnoRecorder {
	return &seqnoRecorder{recorder: newRecorder(), high: map[uint16]uint64{}, behind: map[uint16]uint64{}}
}

func (r *seqnoRecorder) Seqno(vb uint16, high, behind uint64) {
	r.smu.Lock()
	defer r.smu.Unlock()
	r.high[vb], r.behind[vb] = high, behind
	r.count++
}

func (r *seqnoRecorder) seqno(vb uint16) (high, behind uint64, n int) {
	r.smu.Lock()
	defer r.smu.Unlock()
	return r.high[vb], r.behind[vb], r.count
}

// streamOf returns the producer's view of vb's stream on the only
// connection, if it is listed.
func streamOf(p *Producer, vb uint16) (StreamStatus, ConnStatus, bool) {
	for _, cs := range p.Status() {
		for _, st := range cs.Streams {
			if st.VBucket == vb {
				return st, cs, true
			}
		}
	}
	return StreamStatus{}, ConnStatus{}, false
}

// TestProgressAndSeqnos: the producer knows per vBucket what it sent and
// what the consumer acknowledged, even at rest (the consumer sends the
// acknowledgement it owes when it would send a NOOP, though it is far
// below a fifth of the window), and it announces each stream's high seqno
// and unacknowledged bytes to a consumer that asked.
func TestProgressAndSeqnos(t *testing.T) {
	srv := newServer(t, ProducerConfig{SeqnoInterval: 10 * time.Millisecond})
	srv.eng.fill(2, 20, 100)
	rec := newSeqnoRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec, Seqnos: true, NoopInterval: 50 * time.Millisecond})
	for vb := range uint16(2) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both vbuckets copied", func() bool { return rec.last(0) == 20 && rec.last(1) == 20 })
	waitFor(t, "acknowledged at rest", func() bool {
		st, _, ok := streamOf(srv.prod, 1)
		return ok && st.Acked == 20 && st.UnackedBytes == 0
	})
	st, cs, _ := streamOf(srv.prod, 1)
	if st.Sent != 20 || cs.Consumer != "node-b" || cs.Bucket != "kv" || cs.Features&FeatureSeqnos == 0 || cs.UnackedBytes != 0 {
		t.Fatalf("producer's view: %+v of %+v", st, cs)
	}
	waitFor(t, "the consumer told it is not behind", func() bool {
		high, behind, _ := rec.seqno(1)
		return high == 20 && behind == 0
	})
	// Live: the announcement follows the engine.
	srv.eng.put(1, "k", []byte("v"))
	waitFor(t, "announced 21", func() bool { high, _, _ := rec.seqno(1); return high == 21 })
	waitFor(t, "acknowledged 21", func() bool { st, _, _ := streamOf(srv.prod, 1); return st.Acked == 21 })
	// Nothing changes: nothing more is announced.
	time.Sleep(50 * time.Millisecond)
	_, _, n := rec.seqno(1)
	time.Sleep(100 * time.Millisecond)
	if _, _, again := rec.seqno(1); again != n {
		t.Fatalf("%d seqno messages at rest", again-n)
	}
	// A consumer that did not ask gets none.
	rec2 := newSeqnoRecorder()
	c2 := dial(t, srv.addr(), ConsumerConfig{Name: "node-c", Handler: rec2})
	if err := c2.Request(Request{VBucket: 0}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "copied", func() bool { return rec2.last(0) == 20 })
	time.Sleep(50 * time.Millisecond)
	if _, _, n := rec2.seqno(0); n != 0 {
		t.Fatalf("%d seqno messages to a consumer that did not ask", n)
	}
}

// TestTrackerSettles: acknowledgements settle whole batches, oldest
// first; a later stream of the same vBucket starts afresh.
func TestTrackerSettles(t *testing.T) {
	tr := newTracker()
	p := tr.begin(3, 0)
	tr.note(p, 0, 10)
	tr.note(p, 5, 30)
	tr.cut(48) // header + 40
	tr.note(p, 9, 20)
	tr.cut(28)
	tr.ack(47)
	if p.acked != 0 || p.unacked != 60 {
		t.Fatalf("before the first batch is covered: %+v", p)
	}
	tr.ack(1)
	if p.acked != 5 || p.unacked != 20 || p.sent != 9 {
		t.Fatalf("after the first batch: %+v", p)
	}
	tr.end(p)
	q := tr.begin(3, 0)
	tr.ack(28)
	if p.acked != 9 || p.unacked != 0 || q.acked != 0 || tr.streams[3] != q {
		t.Fatalf("old %+v new %+v", p, q)
	}
	tr.end(q)
	if len(tr.streams) != 0 {
		t.Fatalf("ended and settled streams kept: %v", tr.streams)
	}
}

// logLines is a slog handler that keeps the messages logged.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) handler() slog.Handler {
	return slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, string(bytes.TrimSpace(b)))
		return len(b), nil
	}), nil)
}

func (l *logLines) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestConsumerLeavesMidBackfill: when the consumer goes away while many
// streams are still copying, the producer ends all of them at once and
// says so in one line, not one warning per vBucket (seen: ~10,000 WARN
// lines after a standby left).
func TestConsumerLeavesMidBackfill(t *testing.T) {
	var logs logLines
	srv := newServer(t, ProducerConfig{Logger: slog.New(logs.handler())})
	const vbs = 300
	srv.eng.fill(vbs, 50, 1000) // 15 MB, far more than the window
	rec := newRecorder()
	c, err := Dial(t.Context(), ConsumerConfig{Name: "node-b", Addr: srv.addr(), Bucket: "kv", Handler: rec, BufferSize: 256 << 10, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for vb := range uint16(vbs) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a backfill under way", func() bool { return rec.last(0) > 0 || rec.last(1) > 0 })
	c.Close()
	c.Wait()
	start := time.Now()
	if err := srv.serveErr(); err != nil && !errors.Is(err, ErrPeerClosed) {
		t.Logf("Serve: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the producer took %v to end its streams", took)
	}
	if n := len(logs.matching("stream ended")); n != 0 {
		t.Fatalf("%d per-stream lines:\n%s", n, strings.Join(logs.matching("stream ended")[:min(n, 5)], "\n"))
	}
	lines := append(logs.matching("stream connection closed"), logs.matching("stream connection failed")...)
	if len(lines) != 1 || !strings.Contains(lines[0], "streams_ended=") {
		t.Fatalf("connection lines: %q", lines)
	}
}

// TestRefusalsSummarized: a consumer refused every vBucket hears why, and
// the producer logs the refusals in a line or two, not one per request.
func TestRefusalsSummarized(t *testing.T) {
	var logs logLines
	srv := newServer(t, ProducerConfig{Logger: slog.New(logs.handler()), Accept: func(ci ConsumerInfo, req Request) ([]FailoverEntry, error) {
		return nil, fmt.Errorf("%s is not in the chain of vbucket %d", ci.Name, req.VBucket)
	}})
	rec := newRecorder()
	c := dial(t, srv.addr(), ConsumerConfig{Handler: rec})
	for vb := range uint16(100) {
		if err := c.Request(Request{VBucket: vb}); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		if e := rec.end(t); e.Reason != ReasonRefused || !strings.Contains(e.Message, "not in the chain") {
			t.Fatalf("end %+v", e)
		}
	}
	c.Close()
	c.Wait()
	srv.serveErr()
	lines := logs.matching("stream requests refused")
	if len(lines) == 0 || len(lines) > 2 || !strings.Contains(strings.Join(lines, " "), "not in the chain") {
		t.Fatalf("refusal lines: %q", lines)
	}
}
