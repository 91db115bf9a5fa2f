package osdisk

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/stream"
)

// File is an encrypted temporary file. It has two phases: it is first
// written sequentially (Write, ReadFrom), then, from the first call to Seal,
// Read, ReadAt, Seek, WriteTo or Size on, read back with random access.
// Writing after that fails. Close removes the file.
//
// A File is not safe for concurrent use, except that ReadAt may be called
// concurrently once Seal has returned.
type File struct {
	name string
	f    *os.File
	keys stream.Keys

	mu     sync.Mutex
	w      *stream.Writer // write phase
	r      *stream.Reader // read phase
	err    error          // sticky error of the write phase or of Seal
	closed bool
	disk   *Disk // tracks it until Close, for Disk.Fail
}

// setErr records the sticky error of the write phase and returns it.
func (t *File) setErr(err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
	}
	return t.err
}

// fail makes every later call fail with err and drops the stream (and its
// key); the file stays on disk until Close.
func (t *File) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.err = fmt.Errorf("osdisk.File: %s: %w", t.name, err)
	t.w, t.r = nil, nil
}

// CreateTemp creates an encrypted temporary file in the disk. prefix (no
// path separators) starts its name, to tell files apart when debugging.
func (d *Disk) CreateTemp(prefix string) (*File, error) {
	if strings.ContainsAny(prefix, `/\`) {
		return nil, fmt.Errorf("osdisk.CreateTemp: prefix %q contains a path separator", prefix)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	name := filepath.Join(d.dir, TempDir, fmt.Sprintf("%s%s%d-%s", prefix, atomicfile.TempMarker, os.Getpid(), hex.EncodeToString(rnd[:])))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("osdisk.CreateTemp: %w", err)
	}
	w, err := stream.NewWriter(f, d.keys, Purpose, stream.Options{})
	if err != nil {
		f.Close()
		os.Remove(name)
		return nil, fmt.Errorf("osdisk.CreateTemp: disk %q: %w", d.keys.DiskID(), err)
	}
	t := &File{name: name, f: f, keys: d.keys, w: w, disk: d}
	d.track(t)
	return t, nil
}

// Name returns the path of the encrypted file on disk.
func (t *File) Name() string { return t.name }

var errSealed = errors.New("file is sealed for reading; write all data before the first read")

// Write appends p to the file. It fails once the file is sealed.
func (t *File) Write(p []byte) (int, error) {
	w, err := t.writable("Write")
	if err != nil {
		return 0, err
	}
	n, err := w.Write(p)
	if err != nil {
		return n, t.setErr(fmt.Errorf("osdisk.File.Write: %s: %w", t.name, err))
	}
	return n, nil
}

// ReadFrom appends everything r yields to the file, sealing segments on
// all cores. It fails once the file is sealed.
func (t *File) ReadFrom(r io.Reader) (int64, error) {
	w, err := t.writable("ReadFrom")
	if err != nil {
		return 0, err
	}
	n, err := w.ReadFrom(r)
	if err != nil {
		return n, t.setErr(fmt.Errorf("osdisk.File.ReadFrom: %s: %w", t.name, err))
	}
	return n, nil
}

// writable returns the writer of the write phase; a failed file (Disk.Fail)
// drops it, so the caller uses the one returned.
func (t *File) writable(op string) (*stream.Writer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return nil, fmt.Errorf("osdisk.File.%s: %s: %w", op, t.name, ErrClosed)
	case t.err != nil:
		return nil, t.err
	case t.w == nil:
		return nil, fmt.Errorf("osdisk.File.%s: %s: %w", op, t.name, errSealed)
	}
	return t.w, nil
}

// Seal ends the write phase: it seals the final segment and opens the file
// for reading. Calling it again is a no-op. The read methods call it.
func (t *File) Seal() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("osdisk.File.Seal: %s: %w", t.name, ErrClosed)
	}
	if t.err != nil || t.r != nil {
		return t.err
	}
	t.err = t.seal()
	return t.err
}

func (t *File) seal() error {
	err := t.w.Close()
	t.w = nil
	if err != nil {
		return fmt.Errorf("osdisk.File.Seal: %s: %w", t.name, err)
	}
	st, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("osdisk.File.Seal: %w", err)
	}
	r, err := stream.NewReader(t.f, st.Size(), t.keys, Purpose)
	if err != nil {
		return fmt.Errorf("osdisk.File.Seal: %s: %w", t.name, err)
	}
	t.r = r
	return nil
}

// reader seals the file if needed and returns its reader.
func (t *File) reader() (*stream.Reader, error) {
	if err := t.Seal(); err != nil {
		return nil, err
	}
	return t.r, nil
}

// Read reads decrypted bytes from the current offset.
func (t *File) Read(p []byte) (int, error) {
	r, err := t.reader()
	if err != nil {
		return 0, err
	}
	return r.Read(p)
}

// ReadAt reads decrypted bytes at off. Every segment it touches is
// authenticated first: a tampered file returns an error matching
// ErrAuthentication and none of that segment's bytes.
func (t *File) ReadAt(p []byte, off int64) (int, error) {
	r, err := t.reader()
	if err != nil {
		return 0, err
	}
	return r.ReadAt(p, off)
}

// Seek sets the offset of the next Read, in plaintext bytes.
func (t *File) Seek(off int64, whence int) (int64, error) {
	r, err := t.reader()
	if err != nil {
		return 0, err
	}
	return r.Seek(off, whence)
}

// WriteTo writes the decrypted bytes from the current offset to w.
func (t *File) WriteTo(w io.Writer) (int64, error) {
	r, err := t.reader()
	if err != nil {
		return 0, err
	}
	return r.WriteTo(w)
}

// Size returns the plaintext size, sealing the file first. It returns -1 if
// sealing failed (the error is returned by the next Read).
func (t *File) Size() int64 {
	r, err := t.reader()
	if err != nil {
		return -1
	}
	return r.Size()
}

// Close closes and removes the file. It is safe to call more than once.
func (t *File) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.w, t.r = nil, nil
	if t.disk != nil {
		t.disk.untrack(t)
	}
	cerr := t.f.Close()
	rerr := os.Remove(t.name)
	if err := errors.Join(cerr, rerr); err != nil {
		return fmt.Errorf("osdisk.File.Close: %w", err)
	}
	return nil
}
