// Package rdb writes and reads encrypted Redis snapshots (RDB files).
//
// An encrypted snapshot is a cachecrypt stream (FORMAT.md, "Stream") with
// purpose "rdb", encrypted under a per-file key derived from the disk's
// active DEK. Create writes it atomically, the way Redis writes
// temp-PID.rdb: a temporary file beside the target, fsync, rename over the
// target, fsync of the directory; a crash at any instant leaves the old
// snapshot or the new one, never a mix. Open returns a random-access reader
// that authenticates each segment before returning any of its bytes.
//
// CheckPlain checks that a plaintext is an RDB file (magic, version and
// CRC-64 trailer) before it is imported or after it is exported.
package rdb

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/internal/stream"
)

// Purpose is the stream purpose of encrypted snapshots, bound into their
// per-file keys and headers: an encrypted AOF or export cannot be opened as
// a snapshot.
const Purpose = "rdb"

// Errors returned by this package, matched with errors.Is.
var (
	// ErrAuthentication: the snapshot failed authentication; it was tampered
	// with, belongs to another disk, or the keyring is not the one that
	// wrote it. No plaintext of a failing segment is returned.
	ErrAuthentication = integrity.ErrAuthentication
	// ErrTruncated: the snapshot ends early, such as cut at a segment
	// boundary.
	ErrTruncated = integrity.ErrTruncated
	// ErrFormat: the file is not an encrypted snapshot (not a cachecrypt
	// stream, or a stream of another purpose).
	ErrFormat = integrity.ErrFormat
	// ErrVersion: the snapshot uses a format version this build cannot read.
	ErrVersion = integrity.ErrVersion
	// ErrClosed: use of a Writer after Commit or Abort, or of a closed Reader.
	ErrClosed = integrity.ErrClosed
	// ErrUnknownVersion: the snapshot was written under a DEK version the
	// keyring no longer holds (retired).
	ErrUnknownVersion = dek.ErrUnknownVersion
	// ErrSequential: ReadAt or Seek on a compressed snapshot.
	ErrSequential = stream.ErrSequential
	// ErrNotRDB: CheckPlain found no RDB header ("REDIS" and a 4-digit
	// version) or no end-of-file marker.
	ErrNotRDB = errors.New("rdb: not a Redis RDB file")
	// ErrChecksum: CheckPlain found a CRC-64 trailer that does not match the
	// content: the plaintext RDB is damaged.
	ErrChecksum = errors.New("rdb: RDB CRC-64 checksum mismatch")
)

// Compression compresses the snapshot before encryption. A compressed
// snapshot is read sequentially only: ReadAt and Seek fail with
// ErrSequential.
type Compression = stream.Compression

// Compressions for Options.Compression.
const (
	None = stream.None
	Zstd = stream.Zstd
	S2   = stream.S2
)

// Options configure Create. The zero value is a good default.
type Options struct {
	// SegmentSize is the plaintext bytes per encrypted segment; 0 means
	// 64 KiB.
	SegmentSize int
	// Compression of the plaintext; None (the default) keeps random access.
	// Compression leaks: the size of each sealed segment follows how well
	// its plaintext compresses, so anyone who sees the file (or, over time,
	// its size) learns something about its content; an attacker who can also
	// put chosen values into the cache can test guesses at the rest (as in
	// CRIME and BREACH). Leave it off for data that mixes secrets with
	// values others control.
	Compression Compression
	// Concurrency is the number of goroutines that seal; 0 means GOMAXPROCS.
	Concurrency int
	// FS is the filesystem the snapshot is written through; nil means the
	// operating system's. Tests inject failures with it.
	FS atomicfile.FS
}

// Writer writes an encrypted snapshot. Nothing is visible at the target
// path until Commit returns nil. Close without Commit aborts, so
// `defer w.Close()` is always safe. A Writer is not safe for concurrent use.
type Writer struct {
	path    string
	pending *atomicfile.Pending
	s       *stream.Writer
	n       int64
	err     error // sticky; after it the temporary file is gone
}

// Create starts an encrypted snapshot that will replace path on Commit.
func Create(path string, keys *dek.Keyring, opts Options) (*Writer, error) {
	fsys := opts.FS
	if fsys == nil {
		fsys = atomicfile.OS
	}
	p, err := atomicfile.Create(fsys, path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rdb.Create: %w", err)
	}
	s, err := stream.NewWriter(p, keys, Purpose, stream.Options{SegmentSize: opts.SegmentSize, Compression: opts.Compression, Concurrency: opts.Concurrency})
	if err != nil {
		p.Abort()
		return nil, fmt.Errorf("rdb.Create: %s: %w", path, err)
	}
	return &Writer{path: path, pending: p, s: s}, nil
}

// Write encrypts p into the snapshot. On error the snapshot is aborted.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.s.Write(p)
	w.n += int64(n)
	if err != nil {
		w.fail(fmt.Errorf("rdb.Writer.Write: %s: %w", w.path, err))
	}
	return n, w.err
}

// ReadFrom encrypts everything r yields into the snapshot. On error the
// snapshot is aborted.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.s.ReadFrom(r)
	w.n += n
	if err != nil {
		w.fail(fmt.Errorf("rdb.Writer.ReadFrom: %s: %w", w.path, err))
	}
	return n, w.err
}

// Commit seals the final segment, fsyncs the temporary file, renames it
// over the target and fsyncs the directory. After Commit returns nil the
// snapshot is durable. On error the target is left as it was (unless only
// the final directory fsync failed), and the Writer is unusable.
func (w *Writer) Commit() error {
	if w.err != nil {
		return w.err
	}
	if err := w.s.Close(); err != nil {
		w.fail(fmt.Errorf("rdb.Writer.Commit: %s: %w", w.path, err))
		return w.err
	}
	err := w.pending.Commit()
	w.err = fmt.Errorf("rdb.Writer: %s: %w", w.path, ErrClosed)
	if err != nil {
		return fmt.Errorf("rdb.Writer.Commit: %w", err)
	}
	return nil
}

// Abort removes the temporary file; the target keeps its old content.
// It is a no-op after Commit or Abort.
func (w *Writer) Abort() {
	if w.err == nil {
		w.fail(fmt.Errorf("rdb.Writer: %s: aborted: %w", w.path, ErrClosed))
	}
}

// Close aborts the snapshot unless it was committed. It returns nil.
func (w *Writer) Close() error {
	w.Abort()
	return nil
}

// Header returns the snapshot's stream header; its salt names this
// snapshot among all others.
func (w *Writer) Header() stream.Header { return w.s.Header() }

// Size returns the plaintext bytes written so far.
func (w *Writer) Size() int64 { return w.n }

func (w *Writer) fail(err error) {
	w.err = err
	w.pending.Abort()
}

// Reader reads an encrypted snapshot. It implements io.Reader, io.ReaderAt,
// io.Seeker and io.WriterTo. ReadAt is safe for concurrent use; Read, Seek
// and WriteTo share an offset.
type Reader struct {
	*stream.Reader
	f *os.File
}

// Open opens the encrypted snapshot at path. It checks the header and
// authenticates the final segment, so Size is trustworthy and a truncated
// snapshot fails here.
func Open(path string, keys *dek.Keyring) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rdb.Open: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("rdb.Open: %w", err)
	}
	s, err := stream.NewReader(f, st.Size(), keys, Purpose)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("rdb.Open: %s: %w", path, err)
	}
	return &Reader{Reader: s, f: f}, nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// Verify authenticates every segment of the encrypted snapshot at path
// without returning any plaintext.
func Verify(path string, keys *dek.Keyring) error {
	r, err := Open(path, keys)
	if err != nil {
		return fmt.Errorf("rdb.Verify: %w", err)
	}
	defer r.Close()
	if err := r.Reader.Verify(); err != nil {
		return fmt.Errorf("rdb.Verify: %s: %w", path, err)
	}
	return nil
}

// Encrypt writes src, a plaintext RDB, as an encrypted snapshot at dst,
// atomically, with default options. It returns the plaintext bytes read.
func Encrypt(dst string, src io.Reader, keys *dek.Keyring) (int64, error) {
	w, err := Create(dst, keys, Options{})
	if err != nil {
		return 0, fmt.Errorf("rdb.Encrypt: %w", err)
	}
	defer w.Close()
	n, err := w.ReadFrom(src)
	if err != nil {
		return n, fmt.Errorf("rdb.Encrypt: %w", err)
	}
	if err := w.Commit(); err != nil {
		return n, fmt.Errorf("rdb.Encrypt: %w", err)
	}
	return n, nil
}

// Decrypt writes the plaintext of the encrypted snapshot at src to dst. On
// an authentication failure dst has received only the plaintext of the
// segments before the damaged one: when dst is a file, remove it.
func Decrypt(dst io.Writer, src string, keys *dek.Keyring) (int64, error) {
	r, err := Open(src, keys)
	if err != nil {
		return 0, fmt.Errorf("rdb.Decrypt: %w", err)
	}
	defer r.Close()
	n, err := r.WriteTo(dst)
	if err != nil {
		return n, fmt.Errorf("rdb.Decrypt: %s: %w", src, err)
	}
	return n, nil
}
