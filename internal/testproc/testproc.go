// Package testproc runs the real shoald and shoal binaries for end-to-end
// tests: it builds them once per test process, starts nodes on 127.0.0.1
// with ephemeral ports and a temporary data directory, stops them with a
// signal (or kill -9, or SIGSTOP), and runs CLI commands.
package testproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// moduleRoot finds the directory of go.mod above this source file.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Build compiles shoald and shoal (with -race when the tests run with it)
// into a temporary directory once, and returns the directory.
func Build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "shoal-bin-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/shoald", "./cmd/shoal")
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Cleanup removes the binaries; call it from TestMain after m.Run.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Node is a running shoald process.
type Node struct {
	t       testing.TB
	Dir     string // data directory
	Addr    string // data port
	HTTP    string // HTTP port
	Args    []string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	exited  chan struct{}
	exitErr error
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var startedRE = regexp.MustCompile(`msg="shoald started".* listen=(\S+) http=(\S+)`)

// Start runs shoald with a fresh data directory (unless args give --data)
// and ephemeral ports, and waits until it serves. The node is killed at
// the end of the test if still running.
func Start(t testing.TB, args ...string) *Node {
	t.Helper()
	dir := t.TempDir()
	return StartIn(t, dir, args...)
}

// StartIn is Start with the data directory dir (to restart a node on the
// data of a previous one).
func StartIn(t testing.TB, dir string, args ...string) *Node {
	t.Helper()
	bin := Build(t)
	full := append([]string{"--data", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--console=false"}, args...)
	n := &Node{t: t, Dir: dir, Args: full, stderr: &syncBuffer{}, exited: make(chan struct{})}
	n.cmd = exec.Command(filepath.Join(bin, "shoald"), full...)
	pr, pw := io.Pipe()
	n.cmd.Stderr = io.MultiWriter(n.stderr, pw)
	n.cmd.Stdout = n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.exitErr = n.cmd.Wait()
		pw.Close()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGCONT)
		n.cmd.Process.Kill()
		<-n.exited
		if t.Failed() {
			t.Logf("shoald %v output:\n%s", n.Args, n.stderr.String())
		}
	})
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := startedRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- [2]string{m[1], m[2]}
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case a := <-found:
		n.Addr, n.HTTP = a[0], a[1]
	case <-n.exited:
		t.Fatalf("shoald exited at start: %v\n%s", n.exitErr, n.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("shoald did not start within 60s\n%s", n.stderr.String())
	}
	return n
}

// Output returns what the node printed so far.
func (n *Node) Output() string { return n.stderr.String() }

// Signal sends sig to the node. For SIGSTOP it returns once the process
// is stopped: the kernel stops a process only when one of its threads
// takes the signal, and on a loaded machine that thread may wait for a
// CPU while another one goes on serving (TestAutoFailoverSIGSTOP saw a
// write answered 0.7 ms after kill returned).
func (n *Node) Signal(sig syscall.Signal) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("signal %v: %v", sig, err)
	}
	if sig != syscall.SIGSTOP {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.stopped() {
		if time.Now().After(deadline) {
			n.t.Fatalf("pid %d not stopped 10 s after SIGSTOP", n.Pid())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// stopped reports whether every thread of the node's process is in the
// stopped state (the state field of /proc/PID/task/TID/stat is T).
func (n *Node) stopped() bool {
	dir := fmt.Sprintf("/proc/%d/task", n.Pid())
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(b, ')') // the command name may hold anything
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Pid is the node's process id.
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// Wait waits for the node to exit and returns its exit code.
func (n *Node) Wait(timeout time.Duration) int {
	n.t.Helper()
	select {
	case <-n.exited:
	case <-time.After(timeout):
		n.t.Fatalf("shoald did not exit within %v\n%s", timeout, n.stderr.String())
	}
	if ee, ok := n.exitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if n.exitErr != nil {
		n.t.Fatalf("wait: %v", n.exitErr)
	}
	return 0
}

// Stop sends SIGTERM and waits for a clean exit.
func (n *Node) Stop() {
	n.t.Helper()
	n.Signal(syscall.SIGTERM)
	if code := n.Wait(60 * time.Second); code != 0 {
		n.t.Fatalf("shoald exited with %d after SIGTERM\n%s", code, n.stderr.String())
	}
}

// Kill kills the node with SIGKILL and waits for it.
func (n *Node) Kill() {
	n.t.Helper()
	n.Signal(syscall.SIGKILL)
	n.Wait(10 * time.Second)
}

// Result is the outcome of a CLI command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// CLI runs `shoal --addr ADDR args...` with stdin and returns its output.
func CLI(t testing.TB, addr, stdin string, args ...string) Result {
	t.Helper()
	bin := Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "shoal"), append([]string{"--addr", addr}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("shoal %v: %v", args, err)
	}
	return r
}

// Command returns an unstarted `shoal --addr ADDR args...` for commands
// that run until stopped (mirror, consume).
func Command(t testing.TB, addr string, args ...string) *exec.Cmd {
	t.Helper()
	return exec.Command(filepath.Join(Build(t), "shoal"), append([]string{"--addr", addr}, args...)...)
}
