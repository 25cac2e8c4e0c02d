package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"shoal/client"
)

// queueLog is the harness's queue and log workload: pushes of unique
// values (a routing key of a few, so that the pushes collide in
// vBuckets), a popper, and log appends of unique values, all at the
// run's level; at the end the queue is drained and the log read whole.
// A record popped again after a pop of it was acknowledged durable
// (majority) is a violation: a failover must not give it back. A durable
// pop whose answer is lost may have consumed a record nobody sees (at
// most once): acknowledged pushes missing at the end are a violation
// only beyond the number of such pops.
type queueLog struct {
	mu         sync.Mutex
	pushAcked  []string
	pushUnk    []string
	popped     map[string]int
	appAcked   []string
	appUnk     []string
	popsFailed int
	popErr     string          // the first pop error
	durPopped  map[string]bool // records whose durable pop was acknowledged
	repopped   []string        // records popped again after that
	popsUnk    int             // pops answered ambiguous (the value came back)
	popsGone   int             // durable pops without an answer (ambiguous, no value): each may have consumed a record
}

func newQueueLog() *queueLog {
	return &queueLog{popped: map[string]int{}, durPopped: map[string]bool{}}
}

// notePop records a pop of v (mu held); acked says it was an acknowledged
// durable pop.
func (q *queueLog) notePop(v string, acked bool) {
	q.popped[v]++
	if q.durPopped[v] {
		q.repopped = append(q.repopped, v)
	}
	if acked {
		q.durPopped[v] = true
	}
}

func (q *queueLog) pusher(ctx context.Context, id int, c *client.Client, level client.Durability) {
	for n := 0; ctx.Err() == nil; n++ {
		v := fmt.Sprintf("q%d-%d", id, n)
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := c.Push(octx, []string{"jobs"}, []byte(v), client.WithRoutingKey([]byte(fmt.Sprintf("r%d", n%3))), client.WithPushDurability(level, durTimeout))
		cancel()
		out, definite := outcome(err)
		q.mu.Lock()
		switch {
		case out == OutOK:
			q.pushAcked = append(q.pushAcked, v)
		case !definite:
			q.pushUnk = append(q.pushUnk, v)
		}
		q.mu.Unlock()
	}
}

func (q *queueLog) popper(ctx context.Context, c *client.Client, level client.Durability) {
	var opts []client.PopOption
	if level != client.None {
		opts = append(opts, client.WithPopDurability(level, durTimeout))
	}
	for ctx.Err() == nil {
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		v, err := c.Pop(octx, "jobs", opts...)
		cancel()
		q.mu.Lock()
		switch {
		case err == nil:
			q.notePop(string(v), level != client.None)
		case errors.Is(err, client.ErrAmbiguous) && v != nil:
			q.notePop(string(v), false)
			q.popsUnk++
		case errors.Is(err, client.ErrAmbiguous):
			// The answer was lost (the node died or the call timed out
			// after the pop went out): the record it may have taken is
			// gone for good if the pop reached a majority.
			q.popsGone++
		case errors.Is(err, client.ErrEmpty):
		default:
			q.popsFailed++
			if q.popErr == "" {
				q.popErr = err.Error()
			}
		}
		q.mu.Unlock()
		if err != nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func (q *queueLog) appender(ctx context.Context, id int, c *client.Client, level client.Durability) {
	for n := 0; ctx.Err() == nil; n++ {
		v := fmt.Sprintf("l%d-%d", id, n)
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := c.LogPut(octx, "events", uint64(time.Now().Unix()), []byte(v), client.RoutingKey([]byte(fmt.Sprintf("r%d", n%3))), client.LogDurability(level, durTimeout))
		cancel()
		out, definite := outcome(err)
		q.mu.Lock()
		switch {
		case out == OutOK:
			q.appAcked = append(q.appAcked, v)
		case !definite:
			q.appUnk = append(q.appUnk, v)
		}
		q.mu.Unlock()
	}
}

// finish drains the queue and reads the log; it returns the verdicts:
// pushes acknowledged and neither popped nor left, records popped more
// than once, appends acknowledged and not in the log.
func (q *queueLog) finish(t *testing.T, c *client.Client) (push, app SetResult, dup int) {
	t.Helper()
	empties := 0
	for empties < 3 {
		v, err := c.Pop(t.Context(), "jobs")
		switch {
		case err == nil:
			q.notePop(string(v), false)
			empties = 0
		case errors.Is(err, client.ErrEmpty):
			empties++ // every node answered empty; twice more to be sure
		default:
			t.Fatalf("draining the queue: %v", err)
		}
	}
	present := map[string]bool{}
	for v, n := range q.popped {
		present[v] = true
		if n > 1 {
			dup++
		}
	}
	push = CheckSet(q.pushAcked, q.pushUnk, present)
	inLog := map[string]bool{}
	for r, err := range c.LogAll(t.Context(), "events").All() {
		if err != nil {
			t.Fatalf("reading the log: %v", err)
		}
		inLog[string(r.Value)] = true
	}
	app = CheckSet(q.appAcked, q.appUnk, inLog)
	return push, app, dup
}
