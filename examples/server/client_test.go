package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
)

// client is a minimal RESP client for the tests.
type client struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
}

// do sends one command and returns its reply: string (simple or bulk),
// int64, []any, nil, or an error for an error reply.
func (c *client) do(args ...string) (any, error) {
	c.c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	return testenv.ReadReply(c.r)
}

func (c *client) must(t testing.TB, args ...string) any {
	t.Helper()
	v, err := c.do(args...)
	require.NoError(t, err, "%v", args)
	return v
}

// startInProcess serves cfg on a free port in this process until the test
// ends or the returned stop is called.
func startInProcess(t testing.TB, cfg Config) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, cfg) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done)
	}
	t.Cleanup(stop)
	waitPing(t, ln.Addr().String(), done)
	return ln.Addr().String(), stop
}

// waitPing waits until the server at addr answers PING.
func waitPing(t testing.TB, addr string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			cl := &client{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
			v, err := cl.do("PING")
			c.Close()
			if err == nil && v == "PONG" {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server exited before answering PING: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server at %s did not answer PING", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildServer compiles this command once per test binary.
func buildServer(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "server")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// proc is the server binary running in a child process.
type proc struct {
	cmd  *exec.Cmd
	addr string
	log  string
	done chan error
}

func startProc(t testing.TB, bin, dir string, args ...string) *proc {
	t.Helper()
	p := &proc{log: filepath.Join(t.TempDir(), "server.log"), done: make(chan error, 1)}
	logf, err := os.Create(p.log)
	require.NoError(t, err)
	// Port 0: the server binds a port of the kernel's choosing and logs it,
	// so no other process can take it between a choice and the bind.
	p.cmd = exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-dir", dir}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	p.addr = waitReady(t, p)
	waitPing(t, p.addr, p.done)
	return p
}

// waitReady waits for the server's "ready" log line and returns the
// address it names.
func waitReady(t testing.TB, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // only a guard against a hang: an exit is seen at once
	for {
		b, _ := os.ReadFile(p.log)
		if _, rest, ok := strings.Cut(string(b), " msg=ready addr="); ok {
			if addr, _, ok := strings.Cut(rest, " "); ok {
				return addr
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("server exited before it was ready: %v; log:\n%s", err, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server was not ready in 60 s; log:\n%s", b)
		}
	}
}

// stop ends the server with SIGTERM (a clean shutdown) and waits.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		if err != nil {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("server exited with %v; log:\n%s", err, b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop on SIGINT")
	}
}

// infoField returns one field of INFO.
func infoField(t testing.TB, c *client, name string) string {
	t.Helper()
	info := c.must(t, "INFO").(string)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return v
		}
	}
	t.Fatalf("INFO has no %s:\n%s", name, info)
	return ""
}

func dialNoT(addr string) (*client, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &client{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}, nil
}
