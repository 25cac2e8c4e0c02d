package faultnet

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes lines until the client closes.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := r.ReadString('\n')
	return err
}

func TestFreezeThawCut(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(t, c, r, time.Second); err != nil {
		t.Fatal(err)
	}
	p.Freeze()
	if err := roundTrip(t, c, r, 200*time.Millisecond); err == nil {
		t.Fatal("data flowed through a frozen proxy")
	}
	p.Thaw()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("after thaw: %v", err)
	}
	p.Cut()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection survived Cut")
	}
}

func TestCutAfterAndLatency(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.CutAfter(7)
	p.SetLatency(20 * time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("0123456789"))
	c.SetDeadline(time.Now().Add(2 * time.Second))
	got, _ := io.ReadAll(c)
	if string(got) != "0123456" {
		t.Fatalf("got %q, want the first 7 bytes", got)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("no latency")
	}
}

// TestFreezeToTarget: a one-way partition. What the client sends is held;
// what the target sends still reaches the client; Thaw delivers the rest.
func TestFreezeToTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	push := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go func() {
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				got <- line
			}
		}()
		<-push
		c.Write([]byte("from the target\n"))
		time.Sleep(500 * time.Millisecond)
	}()
	p, err := New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.FreezeToTarget()
	c.Write([]byte("to the target\n"))
	close(push)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "from the target\n" {
		t.Fatalf("the target's data did not come through: %q %v", line, err)
	}
	select {
	case line := <-got:
		t.Fatalf("the client's data reached the target: %q", line)
	case <-time.After(200 * time.Millisecond):
	}
	p.Thaw()
	select {
	case line := <-got:
		if line != "to the target\n" {
			t.Fatalf("after Thaw: %q", line)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("nothing reached the target after Thaw")
	}
}
