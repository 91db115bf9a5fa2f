package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
)

// sink is where the journal writes its batches: the encrypted aof.Log, or a
// plaintext file for the benchmark baseline.
type sink interface {
	// Append writes one batch of RESP commands; under Always it returns once
	// the batch is durable. It is called by one goroutine at a time.
	Append(p []byte) error
	Close() error
	Name() string
}

// journal orders the AOF records of write commands as they are applied (add
// is called under the server's keyspace lock) and writes them in batches from
// one goroutine, so the file holds them in the order they took effect. A
// client is answered once wait says its record was written (and, under
// Always, fsynced): Redis' group commit in beforeSleep, in a few lines.
type journal struct {
	sink sink
	kick chan struct{}
	done chan struct{}

	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte // records not yet handed to the sink, in apply order
	issued  uint64 // tickets handed out
	written uint64 // tickets whose records the sink has taken
	err     error  // last write error; nil when the last write succeeded
	closed  bool   // add refuses records
	stopped bool   // the writer has exited
}

func newJournal(s sink) *journal {
	j := &journal{sink: s, kick: make(chan struct{}, 1), done: make(chan struct{})}
	j.cond = sync.NewCond(&j.mu)
	go j.run()
	return j
}

// add queues a record and returns its ticket for wait.
func (j *journal) add(rec []byte) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ^uint64(0) // wait reports the shutdown
	}
	j.buf = append(j.buf, rec...)
	j.issued++
	select {
	case j.kick <- struct{}{}:
	default:
	}
	return j.issued
}

// wait blocks until the record with ticket t is written; it returns the
// write's error, if it failed.
func (j *journal) wait(t uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.written < t && !j.stopped {
		j.cond.Wait()
	}
	if j.written < t {
		return errors.New("server shutting down")
	}
	return j.err
}

// drain waits until every queued record is written.
func (j *journal) drain() error {
	j.mu.Lock()
	t := j.issued
	j.mu.Unlock()
	return j.wait(t)
}

// lastErr is the status of the last write, for INFO.
func (j *journal) lastErr() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

func (j *journal) run() {
	defer close(j.done)
	var spare []byte
	for range j.kick {
		j.mu.Lock()
		batch, upto := j.buf, j.issued
		j.buf = spare[:0]
		j.mu.Unlock()
		var err error
		if len(batch) > 0 {
			err = j.sink.Append(batch)
		}
		j.mu.Lock()
		j.written, j.err = upto, err
		j.cond.Broadcast()
		j.mu.Unlock()
		spare = batch
	}
}

// Close writes what is queued, stops the writer and closes the sink.
func (j *journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	select {
	case j.kick <- struct{}{}: // the writer drains the queue before it sees the channel closed
	default:
	}
	close(j.kick)
	j.mu.Unlock()
	<-j.done
	j.mu.Lock()
	j.stopped = true
	j.cond.Broadcast()
	j.mu.Unlock()
	return j.sink.Close()
}

// encryptedSink is the instance's encrypted multi-part AOF (package aof
// through cachecrypt.AOF, which fails closed with the instance).
type encryptedSink struct{ log *cachecrypt.AOF }

// openEncrypted opens (or creates) the instance's encrypted AOF, cutting off
// a torn final write as Redis' aof-load-truncated does, and returns it with
// a reader of everything it holds.
func openEncrypted(inst *cachecrypt.Instance, p aof.Policy) (*encryptedSink, io.ReadCloser, error) {
	l, err := inst.OpenAOF(aof.Options{Fsync: p})
	if err != nil {
		return nil, nil, err
	}
	r, err := l.Replay()
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return &encryptedSink{l}, r, nil
}

func (s *encryptedSink) Append(p []byte) error { return s.log.Append(p) }
func (s *encryptedSink) Close() error          { return s.log.Close() }
func (s *encryptedSink) Name() string          { return "encrypted " + s.log.Dir() }

// plainSink is a plaintext appendonly.aof with the same fsync policies: the
// baseline the encrypted AOF is measured against.
type plainSink struct {
	f      *os.File
	policy aof.Policy
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error // last background fsync error
}

// openPlain opens dir/appendonly.aof for appending and returns a reader of
// its current content.
func openPlain(dir string, p aof.Policy) (*plainSink, io.ReadCloser, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "appendonly.aof")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	r, err := os.Open(path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	s := &plainSink{f: f, policy: p, stop: make(chan struct{})}
	if p == aof.EverySec {
		s.wg.Add(1)
		go s.everysec()
	}
	return s, r, nil
}

func (s *plainSink) everysec() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			err := s.f.Sync()
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
		}
	}
}

func (s *plainSink) Append(p []byte) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("plain AOF: background fsync failed: %w", err)
	}
	if _, err := s.f.Write(p); err != nil {
		return err
	}
	if s.policy == aof.Always {
		return s.f.Sync()
	}
	return nil
}

func (s *plainSink) Close() error {
	close(s.stop)
	s.wg.Wait()
	err := s.f.Sync()
	return errors.Join(err, s.f.Close())
}

func (s *plainSink) Name() string { return "plaintext " + s.f.Name() }

// truncatePlain cuts a torn final command off the plaintext AOF (a crash in
// the middle of a write), as aof-load-truncated does.
func truncatePlain(s *plainSink, torn int64) error {
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	return s.f.Truncate(fi.Size() - torn)
}
