package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
)

// Server is the keyspace, its journal and its snapshots.
type Server struct {
	cfg     Config
	inst    *cachecrypt.Instance
	journal *journal

	mu         sync.Mutex // guards db, dirty and the save state
	db         *db
	dirty      int64 // changes since the last successful save
	lastSave   int64 // Unix seconds of the last successful save (or of start)
	saving     bool
	rewriting  bool
	rewriteErr error
	saveErr    error
	saveStart  time.Time
	savesDone  sync.WaitGroup

	stop chan struct{}
	bg   sync.WaitGroup
}

// Open opens the cachecrypt instance in cfg.Dir, loads the encrypted
// snapshot (dump.rdb on the persistence disk) if there is one, then replays
// the AOF on top of it and opens the AOF for appending.
//
// The AOF records only absolute writes (SET with PXAT, DEL, PEXPIREAT,
// FLUSHALL), so replaying all of it over a snapshot taken at any point of
// it gives the same keyspace as replaying it over nothing.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	inst, err := cachecrypt.Open(ctx, cfg.Dir, cachecrypt.Config{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("server: open instance: %w", err)
	}
	disk := inst.DiskDir(cachecrypt.DiskPersistence)
	s := &Server{cfg: cfg, inst: inst, db: newDB(), lastSave: time.Now().Unix(), stop: make(chan struct{})}
	if err := s.loadRDB(); err != nil {
		inst.Close()
		return nil, err
	}
	sk, err := s.openAOF(disk)
	if err != nil {
		inst.Close()
		return nil, fmt.Errorf("server: load AOF: %w", err)
	}
	s.journal = newJournal(sk)
	s.bg.Add(1)
	go s.expireCycle()
	return s, nil
}

// openAOF opens the AOF and replays it into the keyspace.
func (s *Server) openAOF(disk string) (sink, error) {
	if s.cfg.PlainAOF {
		ps, r, err := openPlain(filepath.Join(disk, "plain"), s.cfg.Fsync)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		torn, err := s.replay(r)
		if err == nil && torn > 0 {
			s.cfg.Logger.Warn("AOF ends with a torn command: cut off", "bytes", torn)
			err = truncatePlain(ps, torn)
		}
		if err != nil {
			ps.Close()
			return nil, err
		}
		return ps, nil
	}
	es, r, err := openEncrypted(s.inst, s.cfg.Fsync)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if rec, ok := es.log.Recovered(); ok {
		s.cfg.Logger.Warn("AOF ends with a torn write: cut off", "part", rec.Part, "offset", rec.Offset, "bytes_cut", rec.BytesCut)
	}
	torn, err := s.replay(r)
	if err == nil && torn > 0 { // frames hold whole batches of commands
		err = fmt.Errorf("encrypted AOF ends inside a command (%d bytes)", torn)
	}
	if err != nil {
		es.Close()
		return nil, err
	}
	return es, nil
}

// Close waits for a background save, closes the AOF (writing and syncing
// what is queued) and the instance, which zeroes its keys.
func (s *Server) Close() error {
	close(s.stop)
	s.bg.Wait()
	s.savesDone.Wait()
	err := s.journal.Close()
	return errors.Join(err, s.inst.Close())
}

func (s *Server) loadRDB() error {
	r, err := s.inst.OpenSnapshot()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: open snapshot: %w", err)
	}
	defer r.Close()
	if err := readRDB(bufio.NewReaderSize(r, 64<<10), s.db, nowMs()); err != nil {
		return fmt.Errorf("server: load snapshot %s: %w", s.inst.SnapshotPath(), err)
	}
	return nil
}

// replay applies the AOF r holds and returns the length of a torn command
// at its end, which it leaves out. An AOF that starts with
// an RDB preamble (a base written by BGREWRITEAOF) replaces the keyspace
// with it first: a base is the whole state at the time of the rewrite.
func (s *Server) replay(src io.Reader) (int64, error) {
	r := bufio.NewReaderSize(src, 64<<10)
	if magic, _ := r.Peek(5); string(magic) == "REDIS" {
		s.db.flush()
		if err := readRDB(r, s.db, nowMs()); err != nil {
			return 0, fmt.Errorf("RDB preamble: %w", err)
		}
	}
	return s.replayCommands(r)
}

func (s *Server) replayCommands(r io.Reader) (int64, error) {
	var (
		pending []byte
		valid   int64
		argbuf  [][]byte
		chunk   = make([]byte, 256<<10)
	)
	for {
		n, err := r.Read(chunk)
		pending = append(pending, chunk[:n]...)
		for len(pending) > 0 {
			complete, args, _, left, perr := redcon.ReadNextCommand(pending, argbuf[:0])
			if perr != nil {
				return 0, fmt.Errorf("bad command at byte %d: %w", valid, perr)
			}
			if !complete {
				break
			}
			valid += int64(len(pending) - len(left))
			if len(args) > 0 {
				if _, _, xerr := s.exec(args, nowMs()); xerr != nil {
					return 0, fmt.Errorf("command %q at byte %d: %w", args[0], valid, xerr)
				}
			}
			pending = left
		}
		pending = append([]byte(nil), pending...) // args alias chunk-sized buffers; keep the leftover only
		if err == io.EOF {
			return int64(len(pending)), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// expireCycle drops expired keys in the background, as Redis' active
// expiry does; the AOF need not record it (it holds absolute expiry times).
func (s *Server) expireCycle() {
	defer s.bg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for i := 0; i < 16; i++ {
				s.mu.Lock()
				again := s.db.sweep(20, nowMs())
				s.mu.Unlock()
				if !again {
					break
				}
			}
		}
	}
}

func (s *Server) serve(ln net.Listener) error {
	err := redcon.Serve(ln, s.handle, nil, nil)
	select {
	case <-s.stop:
		return nil
	default:
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// handle runs one client command. Write commands are applied and queued in
// the journal under the keyspace lock, and answered once their AOF record is
// written (and fsynced, under appendfsync always).
func (s *Server) handle(conn redcon.Conn, cmd redcon.Command) {
	name := strings.ToLower(string(cmd.Args[0]))
	switch name {
	case "ping":
		if len(cmd.Args) > 1 {
			conn.WriteBulk(cmd.Args[1])
		} else {
			conn.WriteString("PONG")
		}
		return
	case "echo":
		if len(cmd.Args) != 2 {
			conn.WriteError(errArgs(name).Error())
			return
		}
		conn.WriteBulk(cmd.Args[1])
		return
	case "quit":
		conn.WriteString("OK")
		conn.Close()
		return
	case "select":
		if len(cmd.Args) == 2 && string(cmd.Args[1]) == "0" {
			conn.WriteString("OK")
		} else {
			conn.WriteError("ERR only database 0 exists")
		}
		return
	case "info":
		conn.WriteBulkString(s.info())
		return
	case "config":
		s.config(conn, cmd.Args)
		return
	case "bgsave":
		if err := s.bgsave(); err != nil {
			conn.WriteError("ERR " + err.Error())
		} else {
			conn.WriteString("Background saving started")
		}
		return
	case "save":
		if err := s.save(); err != nil {
			conn.WriteError("ERR " + err.Error())
		} else {
			conn.WriteString("OK")
		}
		return
	case "bgrewriteaof":
		if err := s.bgrewriteaof(); err != nil {
			conn.WriteError("ERR " + err.Error())
		} else {
			conn.WriteString("Background append only file rewriting started")
		}
		return
	case "lastsave":
		s.mu.Lock()
		conn.WriteInt64(s.lastSave)
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	reply, rec, err := s.exec(cmd.Args, nowMs())
	var ticket uint64
	if err == nil && rec != nil {
		s.dirty++
		ticket = s.journal.add(rec)
	}
	s.mu.Unlock()
	if err != nil {
		conn.WriteError(err.Error())
		return
	}
	if ticket != 0 {
		if werr := s.journal.wait(ticket); werr != nil {
			conn.WriteError("ERR AOF write failed, the write is not durable: " + werr.Error())
			return
		}
	}
	conn.WriteRaw(reply)
}

func (s *Server) config(conn redcon.Conn, args [][]byte) {
	if len(args) < 3 || !strings.EqualFold(string(args[1]), "get") {
		conn.WriteError("ERR only CONFIG GET is supported")
		return
	}
	vals := map[string]string{
		"save": "", "appendonly": "yes", "appendfsync": s.cfg.Fsync.String(),
		"dir": s.inst.DiskDir(cachecrypt.DiskPersistence), "databases": "1",
	}
	var out []string
	for _, pat := range args[2:] {
		for k, v := range vals {
			if ok, _ := filepath.Match(strings.ToLower(string(pat)), k); ok {
				out = append(out, k, v)
			}
		}
	}
	conn.WriteArray(len(out))
	for _, v := range out {
		conn.WriteBulkString(v)
	}
}

func (s *Server) info() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	status := func(err error) string {
		if err != nil {
			return "err"
		}
		return "ok"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nprocess_id:%d\r\n\r\n", os.Getpid())
	fmt.Fprintf(&b, "# Persistence\r\nloading:0\r\n")
	fmt.Fprintf(&b, "rdb_changes_since_last_save:%d\r\n", s.dirty)
	fmt.Fprintf(&b, "rdb_bgsave_in_progress:%d\r\n", b2i(s.saving))
	fmt.Fprintf(&b, "rdb_last_save_time:%d\r\n", s.lastSave)
	fmt.Fprintf(&b, "rdb_last_bgsave_status:%s\r\n", status(s.saveErr))
	fmt.Fprintf(&b, "aof_enabled:1\r\n")
	fmt.Fprintf(&b, "aof_rewrite_in_progress:%d\r\n", b2i(s.rewriting))
	fmt.Fprintf(&b, "aof_last_bgrewrite_status:%s\r\n", status(s.rewriteErr))
	fmt.Fprintf(&b, "aof_last_write_status:%s\r\n", status(s.journal.lastErr()))
	fmt.Fprintf(&b, "aof_encrypted:%d\r\n", b2i(!s.cfg.PlainAOF))
	fmt.Fprintf(&b, "aof_fsync:%s\r\n\r\n", s.cfg.Fsync)
	fmt.Fprintf(&b, "# Keyspace\r\ndb0:keys=%d,expires=%d,avg_ttl=0\r\n", s.db.size(), s.db.expires())
	return b.String()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bgsave copies the keyspace under the lock (Redis forks; a copy of the map
// is this example's fork) and writes the encrypted snapshot in the
// background.
func (s *Server) bgsave() error {
	s.mu.Lock()
	if s.saving {
		s.mu.Unlock()
		return errors.New("background save already in progress")
	}
	snap, dirty := s.db.snapshot(nowMs()), s.dirty
	s.saving, s.saveStart = true, time.Now()
	s.savesDone.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.savesDone.Done()
		s.finishSave(s.writeSnapshot(snap), dirty)
	}()
	return nil
}

// save writes the snapshot in the foreground, as SAVE does.
func (s *Server) save() error {
	s.mu.Lock()
	if s.saving {
		s.mu.Unlock()
		return errors.New("background save already in progress")
	}
	snap, dirty := s.db.snapshot(nowMs()), s.dirty
	s.saving = true
	s.mu.Unlock()
	err := s.writeSnapshot(snap)
	s.finishSave(err, dirty)
	return err
}

func (s *Server) finishSave(err error, dirty int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saving, s.saveErr = false, err
	if err == nil {
		s.dirty -= dirty
		s.lastSave = time.Now().Unix()
	} else {
		s.cfg.Logger.Error("background save failed", "err", err)
	}
}

func (s *Server) writeSnapshot(snap map[string]entry) error {
	return s.inst.SaveSnapshot(func(w io.Writer) error { return writeRDB(w, snap) })
}

// bgrewriteaof replaces the encrypted AOF's parts with a base holding an
// RDB preamble of the keyspace. The keyspace is copied, and the AOF
// switched to a new incremental part, while writes are held back (the
// example's fork); the base is written in the background.
func (s *Server) bgrewriteaof() error {
	es, ok := s.journal.sink.(*encryptedSink)
	if !ok {
		return errors.New("BGREWRITEAOF is not supported with -plain-aof")
	}
	s.mu.Lock()
	if s.rewriting {
		s.mu.Unlock()
		return errors.New("background append only file rewriting already in progress")
	}
	if err := s.journal.drain(); err != nil {
		s.mu.Unlock()
		return err
	}
	// Rewrite switches the log to a new part, then calls write: the copy is
	// taken there, while this goroutine still holds s.mu for it.
	started := make(chan error, 1)
	s.savesDone.Add(1)
	go func() {
		defer s.savesDone.Done()
		called := false
		err := es.log.Rewrite(aof.BaseRDB, func(w *aof.Rewrite) error {
			called = true
			snap := s.db.snapshot(nowMs())
			s.rewriting = true
			started <- nil
			return writeRDB(w, snap)
		})
		if !called {
			started <- err
			return
		}
		if err != nil {
			s.cfg.Logger.Error("AOF rewrite failed", "err", err)
		}
		s.mu.Lock()
		s.rewriting, s.rewriteErr = false, err
		s.mu.Unlock()
	}()
	err := <-started
	s.mu.Unlock()
	return err
}

func errArgs(cmd string) error {
	return fmt.Errorf("ERR wrong number of arguments for '%s' command", cmd)
}

var (
	errSyntax  = errors.New("ERR syntax error")
	errInt     = errors.New("ERR value is not an integer or out of range")
	errExpire  = errors.New("ERR invalid expire time in 'set' command")
	errUnknown = "ERR unknown command '%s'"
)

func parseInt(b []byte) (int64, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, errInt
	}
	return n, nil
}
