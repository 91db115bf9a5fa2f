package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrProtocol: the server's replies did not follow the replication protocol.
var ErrProtocol = errors.New("sidecar: unexpected reply in the replication handshake")

// eofMarkLen is the length of the random delimiter of a diskless transfer.
const eofMarkLen = 40

// PullOptions configure Pull.
type PullOptions struct {
	// Password for AUTH (with User, for an ACL user); empty means none. Take
	// it from a file or the environment, never from argv.
	User, Password string
	// Idle is how long the transfer may stall (the server sends a newline
	// every second while it prepares the snapshot); 0 means one minute.
	Idle time.Duration
}

// PullInfo describes a transfer.
type PullInfo struct {
	Size     int64 // RDB bytes
	Diskless bool  // the server streamed it with an EOF marker (repl-diskless-sync)
}

// Pull fetches a snapshot of the Redis server at addr over the replication
// protocol, as `redis-cli --rdb` does, and writes the RDB bytes to dst. It
// announces the EOF capability, so the server may stream a diskless snapshot
// ("$EOF:<mark>" ... mark) instead of a sized one ("$<len>"); both arrive
// at dst the same. It asks for an RDB-only transfer (Redis 7), so the server
// does not go on streaming commands, and closes the connection at the end.
func Pull(ctx context.Context, addr string, dst io.Writer, opts PullOptions) (PullInfo, error) {
	var info PullInfo
	if opts.Idle == 0 {
		opts.Idle = time.Minute
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return info, fmt.Errorf("sidecar.Pull: connect to %s: %w", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	c := &rconn{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), idle: opts.Idle}

	if opts.Password != "" {
		args := []string{"AUTH", opts.Password}
		if opts.User != "" {
			args = []string{"AUTH", opts.User, opts.Password}
		}
		if _, err := c.do(args...); err != nil {
			return info, fmt.Errorf("sidecar.Pull: AUTH: %w", err)
		}
	}
	// Older servers refuse rdb-only: they then stream commands after the
	// snapshot, which Pull never reads.
	c.do("REPLCONF", "rdb-only", "1")
	if _, err := c.do("REPLCONF", "capa", "eof"); err != nil {
		return info, fmt.Errorf("sidecar.Pull: REPLCONF capa eof: %w", err)
	}
	if err := c.send("SYNC"); err != nil {
		return info, fmt.Errorf("sidecar.Pull: SYNC: %w", err)
	}
	hdr, err := c.payloadHeader()
	if err != nil {
		return info, fmt.Errorf("sidecar.Pull: %w", err)
	}
	if mark, ok := strings.CutPrefix(hdr, "EOF:"); ok {
		if len(mark) != eofMarkLen {
			return info, fmt.Errorf("sidecar.Pull: diskless EOF mark of %d bytes, want %d: %w", len(mark), eofMarkLen, ErrProtocol)
		}
		info.Diskless = true
		info.Size, err = c.copyUntilMark(dst, []byte(mark))
	} else {
		n, perr := strconv.ParseInt(hdr, 10, 64)
		if perr != nil || n < 0 {
			return info, fmt.Errorf("sidecar.Pull: payload length %q: %w", hdr, ErrProtocol)
		}
		info.Size, err = io.Copy(dst, io.LimitReader(c, n))
		if err == nil && info.Size < n {
			err = fmt.Errorf("connection closed after %d of %d bytes: %w", info.Size, n, io.ErrUnexpectedEOF)
		}
	}
	if err != nil {
		return info, fmt.Errorf("sidecar.Pull: snapshot from %s: %w", addr, err)
	}
	return info, nil
}

// rconn is a RESP connection with an idle timeout on every read.
type rconn struct {
	conn net.Conn
	r    *bufio.Reader
	idle time.Duration
}

func (c *rconn) Read(p []byte) (int, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.r.Read(p)
}

func (c *rconn) send(args ...string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.idle))
	_, err := c.conn.Write(b.Bytes())
	return err
}

// do sends a command and reads a one-line reply (+OK, -ERR, :n).
func (c *rconn) do(args ...string) (string, error) {
	if err := c.send(args...); err != nil {
		return "", err
	}
	line, err := c.line()
	if err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "+"), strings.HasPrefix(line, ":"):
		return line[1:], nil
	}
	return "", fmt.Errorf("reply %q to %s: %w", line, args[0], ErrProtocol)
}

func (c *rconn) line() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.idle))
	s, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// payloadHeader skips the newlines the server sends while it prepares the
// snapshot (and a +FULLRESYNC line, for PSYNC) and returns what follows the
// "$" of the payload header: a length, or "EOF:<mark>".
func (c *rconn) payloadHeader() (string, error) {
	for {
		line, err := c.line()
		if err != nil {
			return "", fmt.Errorf("waiting for the snapshot: %w", err)
		}
		switch {
		case line == "":
			continue // keep-alive while the server forks and saves
		case line[0] == '$':
			return line[1:], nil
		case line[0] == '+':
			continue // +FULLRESYNC <replid> <offset>
		case line[0] == '-':
			return "", fmt.Errorf("server refused SYNC: %s", line[1:])
		}
		return "", fmt.Errorf("reply %q to SYNC: %w", line, ErrProtocol)
	}
}

// copyUntilMark copies the diskless payload to dst: everything before mark.
// The last bytes read are held back until it is clear they are not the mark.
func (c *rconn) copyUntilMark(dst io.Writer, mark []byte) (int64, error) {
	var (
		n       int64
		pending []byte // bytes not yet written, at most one read plus the mark
		buf     = make([]byte, 64<<10)
	)
	for {
		k, err := c.Read(buf)
		pending = append(pending, buf[:k]...)
		if i := bytes.Index(pending, mark); i >= 0 {
			w, werr := dst.Write(pending[:i])
			return n + int64(w), werr
		}
		if keep := len(mark) - 1; len(pending) > keep {
			out := pending[:len(pending)-keep]
			if _, werr := dst.Write(out); werr != nil {
				return n, werr
			}
			n += int64(len(out))
			pending = append(pending[:0], pending[len(pending)-keep:]...)
		}
		if err == io.EOF {
			return n, fmt.Errorf("connection closed before the end mark: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return n, err
		}
	}
}
