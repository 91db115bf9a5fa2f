// Package export moves RDB snapshots into and out of a cache, staging them
// on the encrypted OS disk (package osdisk).
//
// Export reads a snapshot (typically the decrypting reader of an encrypted
// persistence RDB), stages it as an encrypted temporary file on the OS disk
// while checking its "REDIS" header and CRC-64 trailer and computing its
// SHA-256, then streams it to a Destination as a plain RDB: the destination's
// own encryption (a storage account's, a file system's) governs the exported
// copy. Import is the reverse: a plain RDB from a Source is staged and
// checked the same way before it reaches its Destination, typically an
// encrypted persistence RDB. The staging file is removed on success, failure
// and cancellation alike, and no plaintext byte ever touches the OS disk.
//
// A destination sees the data only after the whole snapshot was staged and
// checked, and the sending pass authenticates every staged segment again: a
// staging file tampered with in between makes the transfer fail with
// ErrAuthentication before the destination commits anything.
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
)

// Errors returned by this package, matched with errors.Is.
var (
	// ErrNotRDB: the data is not an RDB file (no "REDIS" header, or too
	// short to hold one and its trailer).
	ErrNotRDB = errors.New("export: not an RDB file")
	// ErrChecksum: the RDB's CRC-64 trailer does not match its content.
	ErrChecksum = errors.New("export: RDB checksum mismatch")
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

// A Destination receives a checked plain RDB. Put reads r to its end and
// must make the data visible only if r ends with io.EOF: r returns an
// error instead when the staging file fails authentication or ctx is
// cancelled. info is known before the first byte is read.
type Destination interface {
	Put(ctx context.Context, r io.Reader, info Info) error
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

	in, err := stageAndCheck(ctx, stage, rc, meta, o)
	if err != nil {
		return in, err
	}
	if _, err := stage.Seek(0, io.SeekStart); err != nil {
		return in, fmt.Errorf("staging file: %w", err)
	}
	pr := newProgressReader(ctx, stage, Sending, in.Size, o)
	if err := dst.Put(ctx, pr, in); err != nil {
		if pr.err != nil && !errors.Is(err, pr.err) {
			// The destination may wrap or replace the reader's error.
			return in, fmt.Errorf("send from staging file %s: %w (destination: %v)", stage.Name(), pr.err, err)
		}
		return in, fmt.Errorf("send: %w", err)
	}
	if pr.done != in.Size {
		return in, fmt.Errorf("destination read %d of %d bytes and did not report an error", pr.done, in.Size)
	}
	return in, nil
}

func stageAndCheck(ctx context.Context, stage *osdisk.File, src io.Reader, meta Meta, o Options) (Info, error) {
	chk := newChecker()
	pr := newProgressReader(ctx, io.TeeReader(src, chk), Staging, meta.Size, o)
	if _, err := stage.ReadFrom(pr); err != nil {
		if pr.err != nil {
			return Info{}, fmt.Errorf("read source: %w", pr.err)
		}
		return Info{}, fmt.Errorf("write staging file: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	in, err := chk.result()
	if err != nil {
		return in, fmt.Errorf("source is not a valid RDB: %w", err)
	}
	if meta.Size >= 0 && meta.Size != in.Size {
		return in, fmt.Errorf("source announced %d bytes but yielded %d: %w", meta.Size, in.Size, ErrDigest)
	}
	if meta.SHA256 != nil && subtle.ConstantTimeCompare(meta.SHA256, in.SHA256[:]) != 1 {
		return in, fmt.Errorf("source announced SHA-256 %x but the data hashes to %x: %w", meta.SHA256, in.SHA256, ErrDigest)
	}
	if err := stage.Seal(); err != nil {
		return in, fmt.Errorf("seal staging file: %w", err)
	}
	return in, nil
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
