package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// demo starts a redis-server with sample data, snapshots it into an
// instance in dir (a temporary directory if empty), restores the snapshot
// into a second redis-server and compares their DEBUG DIGEST.
func demo(ctx context.Context, out io.Writer, dir string) error {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return fmt.Errorf("sidecar demo: redis-server not found; install it with: apt-get install -y redis-server redis-tools")
	}
	tmp, err := os.MkdirTemp("", "cachecrypt-sidecar-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if dir == "" {
		dir = filepath.Join(tmp, "instance")
	}
	src, err := startRedis(ctx, filepath.Join(tmp, "source"))
	if err != nil {
		return err
	}
	defer src.stop()
	if err := fill(src.client, 1000); err != nil {
		return err
	}
	want, err := src.client.do("DEBUG", "DIGEST")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "source redis-server on %s: 1000 keys of every type, DEBUG DIGEST %v\n", src.addr, want)

	s, err := Open(ctx, dir, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	pi, info, err := s.Snapshot(ctx, src.addr, PullOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "pulled a snapshot over the replication protocol: %d bytes, RDB version %d, diskless %v\n", pi.Size, info.Version, pi.Diskless)
	fmt.Fprintf(out, "encrypted at %s\n", s.Path())

	restored := filepath.Join(tmp, "restored")
	if _, err := s.Restore(restored); err != nil {
		return err
	}
	dst, err := startRedis(ctx, restored)
	if err != nil {
		return err
	}
	defer dst.stop()
	got, err := dst.client.do("DEBUG", "DIGEST")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "restored into a fresh redis-server on %s: DEBUG DIGEST %v\n", dst.addr, got)
	if got != want {
		return errors.New("sidecar demo: the restored dataset differs from the source")
	}
	fmt.Fprintln(out, "digests equal: the restored dataset is the source's")
	return nil
}

// fill writes n keys of every Redis type, some with an expiry.
func fill(c *client, n int) error {
	for i := range n {
		k := fmt.Sprintf("key:%d", i)
		var args []string
		switch i % 6 {
		case 0:
			args = []string{"SET", k, strings.Repeat("v", i%300)}
		case 1:
			args = []string{"HSET", k, "f1", strconv.Itoa(i), "f2", "x"}
		case 2:
			args = []string{"RPUSH", k, "a", "b", strconv.Itoa(i)}
		case 3:
			args = []string{"SADD", k, "a", strconv.Itoa(i)}
		case 4:
			args = []string{"ZADD", k, "1.5", "a", strconv.Itoa(i), "b"}
		case 5:
			args = []string{"SET", k, strconv.Itoa(i), "PXAT", "4102444800000"}
		}
		if _, err := c.do(args...); err != nil {
			return fmt.Errorf("%v: %w", args, err)
		}
	}
	_, err := c.do("XADD", "stream", "1-1", "field", "value")
	return err
}

// redisProc is a redis-server the demo started.
type redisProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited
	addr   string
	client *client
}

// startRedis starts redis-server in dir on a free port and waits for it.
// The port is free when chosen, but any process can take it before
// redis-server binds it: then redis-server exits, and it is started again on
// another port.
func startRedis(ctx context.Context, dir string) (*redisProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for range 5 {
		p, err := startRedisOnce(ctx, dir)
		if !errors.Is(err, errPortTaken) {
			return p, err
		}
	}
	return nil, fmt.Errorf("start redis-server: %w 5 times in a row", errPortTaken)
}

var errPortTaken = errors.New("another process took the port")

// startRedisOnce starts redis-server on a port that is free now and waits
// until that very process (INFO's process_id) answers.
func startRedisOnce(ctx context.Context, dir string) (*redisProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logPath := filepath.Join(dir, "redis.log")
	os.Remove(logPath)
	cmd := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", dir, "--save", "", "--logfile", logPath, "--enable-debug-command", "local", "--repl-diskless-sync-delay", "0")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p := &redisProc{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), exited: exited}
	pid := fmt.Sprintf("\nprocess_id:%d\r", cmd.Process.Pid)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if c, err := dial(p.addr); err == nil {
			if ours(c, pid) {
				p.client = c
				return p, nil
			}
			c.close()
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			if strings.Contains(string(log), "Address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("redis-server on port %d exited before answering; log:\n%s", port, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("redis-server on port %d did not start; log:\n%s", port, log)
		}
	}
}

// ours reports whether the server on c answers PING (it has loaded its
// data) and INFO names pid.
func ours(c *client, pid string) bool {
	if v, err := c.do("PING"); err != nil || v != "PONG" {
		return false
	}
	v, err := c.do("INFO", "server")
	return err == nil && strings.Contains(fmt.Sprint(v), pid)
}

func (p *redisProc) stop() {
	p.client.do("SHUTDOWN", "NOSAVE")
	p.client.close()
	<-p.exited
}

// client is a minimal RESP client.
type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(addr string) (*client, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	return &client{conn: c, r: bufio.NewReader(c)}, nil
}

func (c *client) close() { c.conn.Close() }

// do sends a command and returns the reply: string, int64, []any, nil, or an
// error for an error reply.
func (c *client) do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return nil, err
	}
	return readReply(c.r)
}

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		out := make([]any, max(n, 0))
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}
