package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"shoal/client"
)

// A node started with `go run ./cmd/shoald` listens on 127.0.0.1:7400.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Put(ctx, "users", []byte("alice"), []byte(`{"age":31}`)); err != nil {
		log.Fatal(err)
	}
	v, err := c.Get(ctx, "users", []byte("alice"))
	switch {
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("no alice")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("alice: %s\n", v)
	}
}

// Update is a compare-and-swap: it writes only if nobody changed the record
// since it was read.
func ExampleClient_Update() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for {
		v, cas, err := c.Gets(ctx, "counters", []byte("visits"))
		if errors.Is(err, client.ErrNotFound) {
			v, cas = []byte("0"), 0
			if _, err := c.Put(ctx, "counters", []byte("visits"), v); err != nil {
				log.Fatal(err)
			}
			continue
		} else if err != nil {
			log.Fatal(err)
		}
		var n int
		fmt.Sscan(string(v), &n)
		_, err = c.Update(ctx, "counters", []byte("visits"), fmt.Append(nil, n+1), cas)
		if errors.Is(err, client.ErrExists) {
			continue // somebody else won the race: read again
		}
		if err != nil {
			log.Fatal(err)
		}
		break
	}
}

// GetAll streams a whole channel; the loop may stop early, and the stream
// can be suspended, resumed or stopped from another goroutine.
func ExampleClient_GetAll() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for rec, err := range c.GetAll(ctx, "users", client.ValueFilter([]byte(`"age":31`))).All() {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s\t%s\n", rec.Key, rec.Value)
	}
}

// Mirror follows a channel's changes as they happen.
func ExampleClient_Mirror() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, "127.0.0.1:7400", client.WithTimeout(0))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for ev, err := range c.Mirror(ctx, "users", client.InitialRefresh()).All() {
		if err != nil {
			log.Println("mirror ended:", err)
			return
		}
		fmt.Println(ev.Type, string(ev.Key))
	}
}

// Authentication and TLS are options of Dial.
func ExampleWithAuth() {
	secret := []byte("0123456789abcdef") // the hex secret of "app" in the node's credentials file, decoded
	c, err := client.Dial(context.Background(), "127.0.0.1:7400", client.WithAuth("app", secret), client.WithTimeout(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// Queues: in a cluster, Push spreads the records over every vBucket (each
// to its active node), Pop tries every node, Consume reads from all of
// them. The addresses are seeds: any members will do.
func ExampleClient_Push() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7400,127.0.0.1:7401")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Push(ctx, []string{"jobs", "audit"}, []byte("resize image 42")); err != nil {
		log.Fatal(err)
	}
	v, err := c.Pop(ctx, "jobs")
	switch {
	case errors.Is(err, client.ErrEmpty):
		fmt.Println("nothing to do")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("job: %s\n", v)
	}
}

// Consume subscribes to a channel: workers sharing a subscriber name split
// its records.
func ExampleClient_Consume() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for v, err := range c.Consume(ctx, "audit", "archiver").All() {
		if err != nil {
			log.Println("consume ended:", err)
			return
		}
		fmt.Printf("%s\n", v)
	}
}

// In a cluster the addresses given to Dial are seeds: the client fetches
// the vBucket map from one, then sends each key to its vBucket's active
// node, and follows the map when it changes. After a failover a call
// retries within its context, then fails with ErrNotMyVBucket or
// ErrUnavailable, an *Error naming the node and the vBucket.
func ExampleDial_seeds() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "10.0.0.1:7400,10.0.0.2:7400,10.0.0.3:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Put(ctx, "users", []byte("alice"), []byte(`{"age":31}`))
	var ce *client.Error
	if errors.As(err, &ce) && (errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrNotMyVBucket)) {
		log.Fatalf("vbucket %d has no reachable active (last tried %s): %v", ce.VBucket, ce.Node, err)
	}
	// A replica's copy, which may be stale:
	rv, err := c.GetReplica(ctx, "users", []byte("alice"))
	if err == nil && rv.Replica {
		fmt.Printf("alice on a replica (%s): %s\n", rv.Node, rv.Value)
	}
}
