package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"shoal/internal/config"
)

// TestQueueSubscribers: a subscriber left by consume --subscriber blocks
// pop, is listed by queue subscribers (and, idle, in the status
// document), and queue unsubscribe removes it, after which pop serves the
// records again.
func TestQueueSubscribers(t *testing.T) {
	addr := startNodeWith(t, func(c *config.Config) { c.QueueSubscriberIdle = config.Duration(50 * time.Millisecond) })
	mustRun(t, addr, "push", "jobs", "one")
	// A consumer that takes one record and leaves: its subscription stays.
	if out := mustRun(t, addr, "consume", "jobs", "--subscriber", "workers", "--count", "1", "--json"); out != `{"value":"one"}`+"\n" {
		t.Fatalf("consume --json: %q", out)
	}
	mustRun(t, addr, "push", "jobs", "two")
	mustRun(t, addr, "push", "jobs", "three")
	if _, _, err := runAll(t, addr, "pop", "jobs"); exitCode(err) != exitOther || !strings.Contains(err.Error(), "shoal queue unsubscribe jobs NAME") {
		t.Fatalf("pop of a subscribed channel: %v", err)
	}
	time.Sleep(60 * time.Millisecond)
	out := mustRun(t, addr, "queue", "subscribers", "jobs")
	if !regexp.MustCompile(`^SUBSCRIBER\s+RECORDS\s+BYTES\s+CONSUMERS\s+IDLE\n"workers"\s+2\s+8\s+0\s+\S+s\n$`).MatchString(out) {
		t.Fatalf("queue subscribers:\n%s", out)
	}
	var subs []subscriberDoc
	if err := json.Unmarshal([]byte(mustRun(t, addr, "queue", "subscribers", "--json", "jobs")), &subs); err != nil || len(subs) != 1 || subs[0].Name != "workers" || subs[0].Records != 2 {
		t.Fatalf("queue subscribers --json: %+v %v", subs, err)
	}
	var st struct {
		Queue struct {
			IdleSubscribers []struct {
				Channel     string `json:"channel"`
				Subscriber  string `json:"subscriber"`
				IdleSeconds int64  `json:"idle_seconds"`
				Records     int64  `json:"records"`
			} `json:"idle_subscribers"`
		} `json:"queue"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, addr, "--no-route", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if is := st.Queue.IdleSubscribers; len(is) != 1 || is[0].Channel != "jobs" || is[0].Subscriber != "workers" || is[0].Records != 2 {
		t.Fatalf("idle subscribers in the status: %+v", is)
	}

	// Another consumer of the subscriber takes the records waiting.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan string, 1)
	go func() {
		root := rootCommand(&globals{})
		var b strings.Builder
		root.SetOut(&b)
		root.SetArgs([]string{"--addr", addr, "consume", "jobs", "--subscriber", "workers", "--count", "2"})
		root.ExecuteContext(ctx)
		done <- b.String()
	}()
	if got := <-done; got != "two\nthree\n" {
		t.Fatalf("a second consumer of the subscriber: %q", got)
	}
	cancel()

	if _, _, err := runAll(t, addr, "queue", "unsubscribe", "jobs", "nobody"); exitCode(err) != exitNegative || !strings.Contains(err.Error(), `queue "jobs" has no subscriber "nobody"`) {
		t.Fatalf("unsubscribe of a stranger: %v", err)
	}
	mustRun(t, addr, "queue", "unsubscribe", "jobs", "workers")
	if out := mustRun(t, addr, "queue", "subscribers", "jobs"); out != "queue \"jobs\" has no subscribers\n" {
		t.Fatalf("after unsubscribe: %q", out)
	}
	mustRun(t, addr, "push", "jobs", "four")
	if out := mustRun(t, addr, "pop", "--json", "jobs"); out != `{"value":"four"}`+"\n" {
		t.Fatalf("pop --json after unsubscribe: %q", out)
	}
	if _, _, err := runAll(t, addr, "pop", "jobs"); exitCode(err) != exitNegative {
		t.Fatalf("pop of the empty queue: %v", err)
	}
	var qs []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, addr, "queues", "--json")), &qs); err != nil || len(qs) != 1 || qs[0]["channel"] != "jobs" || qs[0]["subscriber"] != nil {
		t.Fatalf("queues --json: %v %v", qs, err)
	}
}
