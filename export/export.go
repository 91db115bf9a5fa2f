// Package export moves RDB snapshots into and out of a cache, staging them
// on the encrypted OS disk (package osdisk).
//
// Export reads a snapshot (typically the decrypting reader of an encrypted
// persistence RDB) and stages it as an encrypted temporary file on the OS
// disk, then streams the staged copy to a Destination as a plain RDB: the
// destination's own encryption (a storage account's, a file system's)
// governs the exported copy. Import is the reverse: a plain RDB from a
// Source (a blob, a file) is staged the same way, then streamed to its
// Destination, typically an encrypted persistence RDB. The staging file is
// removed on success, failure and cancellation alike, and no plaintext byte
// ever touches the OS disk.
//
// Checks: a source that does not start with the RDB header is refused while
// it is staged. As the staged copy streams to the destination, every
// segment is authenticated, the RDB's CRC-64 trailer is checked and its
// SHA-256 computed (and compared with the one the source announced, if
// any); the stream ends with io.EOF only if all of that passed, and a
// Destination commits only on io.EOF. Running the checks in the sending pass
// keeps them off the critical path: they overlap the upload. So a damaged
// RDB, a staging file tampered with (ErrAuthentication) or a cancellation
// never leaves a committed copy behind.
//
// Destinations and sources here are an io.Writer, a local file and any
// io.Reader; package export/blob adds Azure Blob Storage, kept apart so that
// importing this package never pulls in the Azure SDK.
package export

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/osdisk"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// Errors returned by this package, matched with errors.Is.
var (
	// ErrNotRDB: the data is not an RDB file (no "REDIS" header, or no
	// end-of-file opcode before the trailer). It is rdb.ErrNotRDB.
	ErrNotRDB = rdb.ErrNotRDB
	// ErrChecksum: the RDB's CRC-64 trailer does not match its content. It
	// is rdb.ErrChecksum.
	ErrChecksum = rdb.ErrChecksum
	// ErrDigest: the data does not match the SHA-256 or size its source
	// announced (such as a blob's sha256 metadata).
	ErrDigest = errors.New("export: SHA-256 or size mismatch with the source's metadata")
	// ErrAuthentication: the encrypted staging file failed authentication.
	ErrAuthentication = integrity.ErrAuthentication
	// ErrTruncated: the encrypted staging file ends early.
	ErrTruncated = integrity.ErrTruncated
)

// Info describes a checked plain RDB.
type Info struct {
	Size   int64
	SHA256 [32]byte
	CRC64  uint64 // the RDB's own trailer; 0 when Redis wrote it with rdbchecksum no
}

// Meta is what a Source announces about its data before it is read. The
// transfer fails with ErrDigest if the data does not match it.
type Meta struct {
	Size   int64  // -1 when unknown
	SHA256 []byte // nil when unknown
}

// A Source yields a plain RDB. Open is called once per transfer; the
// transfer closes the returned reader.
type Source interface {
	Open(ctx context.Context) (io.ReadCloser, Meta, error)
}

// A Destination receives a plain RDB. Put reads s to its end and must make
// the data visible only if s ends with io.EOF: s returns an error instead
// when the RDB fails its checks, the staging file fails authentication or
// the context is cancelled. s.Size is known before the first Read; s.Info
// (SHA-256, CRC-64) once Read returned io.EOF.
type Destination interface {
	Put(ctx context.Context, s *Stream) error
}

// Phase is the step of a transfer a Progress reports on.
type Phase uint8

// The phases of a transfer.
const (
	Staging Phase = iota + 1 // source -> encrypted staging file on the OS disk
	Sending                  // staging file -> destination
)

func (p Phase) String() string {
	switch p {
	case Staging:
		return "staging"
	case Sending:
		return "sending"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// Progress reports how far a phase has come.
type Progress struct {
	Phase Phase
	Done  int64 // bytes of plain RDB done in this phase
	Total int64 // the size of the RDB; -1 while unknown
}

// Options configure a transfer. The zero value is valid.
type Options struct {
	// Progress, if set, is called from the transferring goroutine at the
	// start and end of each phase and about every ProgressEvery bytes.
	Progress func(Progress)
	// ProgressEvery is the reporting interval in bytes; 0 means 4 MiB.
	ProgressEvery int64
}

// Export stages the plain RDB src yields on the encrypted scratch disk,
// checks it, and sends it to dst. It returns the RDB's size, SHA-256 and
// CRC-64. The staging file is removed before Export returns.
func Export(ctx context.Context, scratch *osdisk.Disk, src Source, dst Destination, opts *Options) (Info, error) {
	in, err := transfer(ctx, "export", scratch, src, dst, opts)
	if err != nil {
		return in, fmt.Errorf("export.Export: %w", err)
	}
	return in, nil
}

// Import stages the plain RDB src yields (a blob, a file) on the encrypted
// scratch disk, refuses it unless it is an RDB with a valid CRC-64 (and
// matches the size and SHA-256 the source announces), then sends it to dst,
// typically an encrypted persistence RDB (ToRDB). The staging file is
// removed before Import returns.
func Import(ctx context.Context, scratch *osdisk.Disk, src Source, dst Destination, opts *Options) (Info, error) {
	in, err := transfer(ctx, "import", scratch, src, dst, opts)
	if err != nil {
		return in, fmt.Errorf("export.Import: %w", err)
	}
	return in, nil
}

func transfer(ctx context.Context, op string, scratch *osdisk.Disk, src Source, dst Destination, opts *Options) (Info, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	rc, meta, err := src.Open(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("open source: %w", err)
	}
	defer rc.Close()
	stage, err := scratch.CreateTemp(op)
	if err != nil {
		return Info{}, fmt.Errorf("create staging file: %w", err)
	}
	defer stage.Close() // removes it, whatever happens

	size, err := stageCopy(ctx, stage, rc, meta, o)
	if err != nil {
		return Info{}, err
	}
	if _, err := stage.Seek(0, io.SeekStart); err != nil {
		return Info{}, fmt.Errorf("staging file: %w", err)
	}
	s := &Stream{pr: newProgressReader(ctx, stage, Sending, size, o), chk: newChecker(), size: size, meta: meta, name: stage.Name()}
	defer s.close()
	if err := dst.Put(ctx, s); err != nil {
		if s.err != nil {
			// The stream stopped the destination: its error says why.
			return s.info, s.err
		}
		return s.info, fmt.Errorf("send: %w", err)
	}
	if !s.ok {
		return s.info, fmt.Errorf("destination returned after reading %d of %d bytes; nothing was checked", s.pr.done, size)
	}
	return s.info, nil
}

// stageCopy copies the source into the staging file, refusing it early if
// it does not start like an RDB, and seals the staging file.
func stageCopy(ctx context.Context, stage *osdisk.File, src io.Reader, meta Meta, o Options) (int64, error) {
	var head headCheck
	pr := newProgressReader(ctx, io.TeeReader(src, &head), Staging, meta.Size, o)
	n, err := stage.ReadFrom(pr)
	switch {
	case head.err != nil:
		return n, fmt.Errorf("source is not a valid RDB: %w", head.err)
	case pr.err != nil:
		return n, fmt.Errorf("read source: %w", pr.err)
	case err != nil:
		return n, fmt.Errorf("write staging file: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return n, err
	}
	if err := checkMagic(head.b); err != nil {
		return n, fmt.Errorf("source is not a valid RDB: %w", err)
	}
	if meta.Size >= 0 && meta.Size != n {
		return n, fmt.Errorf("source announced %d bytes but yielded %d: %w", meta.Size, n, ErrDigest)
	}
	if err := stage.Seal(); err != nil {
		return n, fmt.Errorf("seal staging file: %w", err)
	}
	return n, nil
}

// headCheck refuses a source as soon as its first bytes show it is not an
// RDB.
type headCheck struct {
	b   []byte
	err error
}

func (h *headCheck) Write(p []byte) (int, error) {
	if len(h.b) < 9 {
		h.b = append(h.b, p[:min(len(p), 9-len(h.b))]...)
		if len(h.b) == 9 {
			h.err = checkMagic(h.b)
		}
	}
	if h.err != nil {
		return 0, h.err
	}
	return len(p), nil
}

// Stream is the plain RDB a Destination reads, decrypted from the staging
// file. As it is read it checks the RDB's CRC-64 and computes its SHA-256;
// it returns io.EOF only if every check passed, and otherwise an error
// matching ErrChecksum, ErrDigest, ErrAuthentication or the context's error.
// Errors are sticky. A Stream is not safe for concurrent use.
type Stream struct {
	pr       *progressReader
	chk      *checker
	size     int64
	meta     Meta
	name     string // of the staging file
	info     Info
	ok       bool  // reached io.EOF with every check passed
	finished bool  // the checker returned its result
	err      error // sticky error
}

// Size returns the size of the RDB in bytes.
func (s *Stream) Size() int64 { return s.size }

// Info returns the RDB's size, SHA-256 and CRC-64. It is valid once Read
// returned io.EOF.
func (s *Stream) Info() Info { return s.info }

// Read reads decrypted RDB bytes.
func (s *Stream) Read(p []byte) (int, error) {
	switch {
	case s.err != nil:
		return 0, s.err
	case s.ok:
		return 0, io.EOF
	}
	n, err := s.pr.Read(p)
	s.chk.Write(p[:n])
	switch {
	case err == io.EOF:
		if err := s.finish(); err != nil {
			s.err = err
			return n, err
		}
		s.ok = true
	case err != nil && s.pr.ctx.Err() != nil:
		s.err = err
	case err != nil:
		s.err = fmt.Errorf("read staging file %s: %w", s.name, err)
		return n, s.err
	}
	return n, err
}

// close stops the checker if the destination returned before the end.
func (s *Stream) close() {
	if !s.ok && !s.finished {
		s.chk.abort()
	}
}

func (s *Stream) finish() error {
	s.finished = true
	in, err := s.chk.result()
	s.info = in
	if err != nil {
		return fmt.Errorf("source is not a valid RDB: %w", err)
	}
	if in.Size != s.size {
		return fmt.Errorf("staging file yielded %d bytes, %d were staged: %w", in.Size, s.size, ErrTruncated)
	}
	if s.meta.SHA256 != nil && subtle.ConstantTimeCompare(s.meta.SHA256, in.SHA256[:]) != 1 {
		return fmt.Errorf("source announced SHA-256 %x but the data hashes to %x: %w", s.meta.SHA256, in.SHA256, ErrDigest)
	}
	return nil
}

// progressReader counts bytes, reports progress, stops on cancellation and
// remembers the first error of its underlying reader.
type progressReader struct {
	ctx   context.Context
	r     io.Reader
	p     Progress
	fn    func(Progress)
	every int64
	next  int64
	done  int64
	ended bool
	err   error // first error other than io.EOF
}

func newProgressReader(ctx context.Context, r io.Reader, phase Phase, total int64, o Options) *progressReader {
	every := o.ProgressEvery
	if every <= 0 {
		every = 4 << 20
	}
	pr := &progressReader{ctx: ctx, r: r, fn: o.Progress, every: every, next: every}
	pr.p = Progress{Phase: phase, Total: total}
	pr.report()
	return pr
}

func (pr *progressReader) report() {
	if pr.fn != nil {
		pr.p.Done = pr.done
		pr.fn(pr.p)
	}
}

func (pr *progressReader) Read(p []byte) (int, error) {
	if pr.err != nil {
		return 0, pr.err
	}
	if err := pr.ctx.Err(); err != nil {
		pr.err = err
		return 0, err
	}
	n, err := pr.r.Read(p)
	pr.done += int64(n)
	if pr.done >= pr.next {
		pr.next = pr.done + pr.every
		pr.report()
	}
	switch {
	case err == io.EOF && !pr.ended:
		pr.ended = true
		pr.p.Total = pr.done
		pr.report()
	case err != nil:
		pr.err = err
	}
	return n, err
}
