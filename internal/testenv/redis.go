package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisInstall says how to install redis-server and redis-tools.
const RedisInstall = "install it with: apt-get install -y redis-server redis-tools"

// Redis is a redis-server started by a test on 127.0.0.1 in its own
// directory. It is stopped when the test ends.
type Redis struct {
	Dir    string // the server's working directory (dump.rdb, appendonlydir)
	Port   int
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited
	conn   net.Conn
	r      *bufio.Reader
}

// Addr returns host:port.
func (s *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// StartRedis starts redis-server in dir (created if needed) with extra
// configuration directives such as "appendonly yes". It waits until the
// server answers PING and loaded its data.
func StartRedis(t testing.TB, dir string, directives ...string) *Redis {
	t.Helper()
	bin := LookPath(t, "redis-server", RedisInstall)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := onFreePort(t, "StartRedis", func(port int) (*Redis, error) { return startRedis(bin, dir, port, directives) })
	t.Cleanup(s.Stop)
	return s
}

// startRedis starts redis-server on port and waits until it answers PING
// and names its own process ID: an answer from another test's server on the
// same port does not count. It returns errPortTaken when the server exited
// because it could not bind.
func startRedis(bin, dir string, port int, directives []string) (*Redis, error) {
	logPath := filepath.Join(dir, "redis.log")
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--daemonize", "no", "--logfile", logPath,
		"--enable-debug-command", "yes"}
	for _, d := range directives {
		f := strings.Fields(d)
		f[0] = "--" + f[0]
		args = append(args, f...)
	}
	logStart := fileSize(logPath) // redis-server appends to its log
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Redis{Dir: dir, Port: port, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(startTimeout) // only a guard against a hang: exits are seen at once
	for !s.answers() {
		select {
		case <-s.exited:
			log := readFrom(logPath, logStart)
			if strings.Contains(log, "Address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("redis-server on port %d exited (%v) before answering; log:\n%s", port, cmd.ProcessState, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server did not answer on port %d in %v; log:\n%s", port, startTimeout, readFrom(logPath, logStart))
		}
	}
	return s, nil
}

// answers reports whether the server on s.Port is up, done loading, and is
// the process s started.
func (s *Redis) answers() bool {
	if s.dial() != nil {
		return false
	}
	if v, err := s.Do("PING"); err != nil || v != "PONG" { // -LOADING while it loads
		return false
	}
	info, err := s.Do("INFO", "server") // INFO answers while loading
	str, ok := info.(string)
	return err == nil && ok && strings.Contains(str, fmt.Sprintf("\nprocess_id:%d\r", s.cmd.Process.Pid))
}

func (s *Redis) dial() error {
	if s.conn != nil {
		s.conn.Close()
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	s.conn, s.r = c, bufio.NewReader(c)
	return nil
}

// Stop shuts the server down without saving and waits for it to exit.
func (s *Redis) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	if s.conn != nil {
		s.Do("SHUTDOWN", "NOSAVE")
		s.conn.Close()
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// MustDo runs a command and fails the test on error.
func (s *Redis) MustDo(t testing.TB, args ...string) any {
	t.Helper()
	v, err := s.Do(args...)
	if err != nil {
		t.Fatalf("redis %v: %v", args, err)
	}
	return v
}

// Do sends one command and returns its reply: string for simple and bulk
// strings, int64 for integers, []any for arrays, nil for a null reply, and an
// error for an error reply.
func (s *Redis) Do(args ...string) (any, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	s.conn.SetDeadline(time.Now().Add(120 * time.Second))
	if _, err := io.WriteString(s.conn, b.String()); err != nil {
		return nil, err
	}
	return ReadReply(s.r)
}

// ReplyError is an error reply of the server, as opposed to a failure of
// the connection.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// ReadReply reads one RESP2 reply: string for simple and bulk strings,
// int64 for integers, []any for arrays, nil for a null reply, and a
// ReplyError for an error reply.
func ReadReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("testenv: empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, ReplyError(line[1:])
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
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = ReadReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("testenv: unexpected reply %q", line)
}

// WaitRewrite waits until no AOF rewrite is running or scheduled, as after
// BGREWRITEAOF. Its only bound is a guard against a server that never
// finishes, far beyond what a loaded machine needs.
func (s *Redis) WaitRewrite(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		info, _ := s.MustDo(t, "INFO", "persistence").(string)
		if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
			return
		}
	}
	t.Fatal("testenv: BGREWRITEAOF did not finish in 5 minutes")
}

// Digest returns DEBUG DIGEST: a hash of the whole dataset.
func (s *Redis) Digest(t testing.TB) string {
	t.Helper()
	return s.MustDo(t, "DEBUG", "DIGEST").(string)
}

// Save runs SAVE and returns the path of the RDB file it wrote.
func (s *Redis) Save(t testing.TB) string {
	t.Helper()
	s.MustDo(t, "SAVE")
	return filepath.Join(s.Dir, "dump.rdb")
}
