package cachecrypt

import (
	"io"
	"sync"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// A failer is a reader the instance handed out: when the instance fails
// closed or closes, it refuses every later call with the instance's error
// and drops what holds its key.
type failer interface{ fail(err error) }

// track registers h until untrack; a handle opened after the instance
// failed is failed at once.
func (i *Instance) track(h failer) {
	i.mu.Lock()
	defer i.mu.Unlock()
	switch {
	case i.closed:
		h.fail(ErrClosed)
	case i.failedClosed != nil:
		h.fail(i.failedClosed)
	default:
		if i.handles == nil {
			i.handles = map[failer]struct{}{}
		}
		i.handles[h] = struct{}{}
	}
}

func (i *Instance) untrack(h failer) {
	i.mu.Lock()
	defer i.mu.Unlock()
	delete(i.handles, h)
}

// failHandles fails every handle out there with err; the caller holds
// i.mu.
func (i *Instance) failHandles(err error) {
	for h := range i.handles {
		h.fail(err)
	}
	clear(i.handles)
	if i.scratch != nil {
		i.scratch.Fail(err)
	}
}

// SnapshotReader reads the instance's encrypted snapshot: an *rdb.Reader
// that stops working, for good, once the instance fails closed or closes
// (reopen it after the instance resumes). Read, Seek and WriteTo share an
// offset; ReadAt is safe for concurrent use.
type SnapshotReader struct {
	inst *Instance
	mu   sync.RWMutex
	r    *rdb.Reader // nil once failed
	err  error
}

func (s *SnapshotReader) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r != nil {
		s.r.Close()
		s.r, s.err = nil, err
	}
}

// withReader runs f on the open reader, holding it open meanwhile, or
// returns why there is none.
func withReader[T any](s *SnapshotReader, f func(*rdb.Reader) (T, error)) (T, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.r == nil {
		var zero T
		return zero, s.err
	}
	return f(s.r)
}

// Read reads decrypted bytes; every segment is authenticated first.
func (s *SnapshotReader) Read(p []byte) (int, error) {
	return withReader(s, func(r *rdb.Reader) (int, error) { return r.Read(p) })
}

// ReadAt reads decrypted bytes at off.
func (s *SnapshotReader) ReadAt(p []byte, off int64) (int, error) {
	return withReader(s, func(r *rdb.Reader) (int, error) { return r.ReadAt(p, off) })
}

// Seek sets the offset of the next Read.
func (s *SnapshotReader) Seek(off int64, whence int) (int64, error) {
	return withReader(s, func(r *rdb.Reader) (int64, error) { return r.Seek(off, whence) })
}

// WriteTo writes the decrypted snapshot from the current offset to w.
func (s *SnapshotReader) WriteTo(w io.Writer) (int64, error) {
	return withReader(s, func(r *rdb.Reader) (int64, error) { return r.WriteTo(w) })
}

// Size returns the plaintext size, or -1 once the reader has failed.
func (s *SnapshotReader) Size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.r == nil {
		return -1
	}
	return s.r.Size()
}

// Header returns the snapshot's stream header (DEK version, segment size,
// compression).
func (s *SnapshotReader) Header() stream.Header {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.r == nil {
		return stream.Header{}
	}
	return s.r.Header()
}

// Close closes the reader.
func (s *SnapshotReader) Close() error {
	s.inst.untrack(s)
	s.fail(ErrClosed)
	return nil
}

// AOFReader reads the commands of an AOF (an *aof.Reader). It keeps the
// DEK versions it reads from being retired until it is closed, and stops
// working, for good, once the instance fails closed or closes.
type AOFReader struct {
	inst    *Instance
	release func()
	mu      sync.Mutex
	r       *aof.Reader // nil once failed
	err     error
}

func (r *AOFReader) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.r != nil {
		r.r.Close()
		r.r, r.err = nil, err
	}
}

// Read reads replayed commands.
func (r *AOFReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.r == nil {
		return 0, r.err
	}
	return r.r.Read(p)
}

// WriteTo writes every replayed command to w.
func (r *AOFReader) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.r == nil {
		return 0, r.err
	}
	return r.r.WriteTo(w)
}

// Truncated reports the torn tail the replay stopped at, or nil.
func (r *AOFReader) Truncated() *aof.Damage {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.r == nil {
		return nil
	}
	return r.r.Truncated()
}

// Close closes the reader.
func (r *AOFReader) Close() error {
	r.inst.untrack(r)
	r.release()
	r.fail(ErrClosed)
	return nil
}
