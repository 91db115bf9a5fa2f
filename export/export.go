// Package export moves RDB snapshots into and out of a cache, staging them
// on the encrypted OS disk (package osdisk).
//
// Export reads a snapshot (typically the encrypted persistence RDB,
// FromRDB) and stages it as encrypted temporary files on the OS disk, then
// streams the staged copy to a Destination as a plain RDB (the default: the
// destination's own encryption, a storage account's or a file system's,
// governs the exported copy) or as a sealed export (Options.Seal). Import is the reverse: a plain RDB from a
// Source (a blob, a file) is staged the same way, then streamed to its
// Destination, typically the encrypted persistence RDB (ToRDB). The staging
// files are removed on success, failure and cancellation alike, and no
// plaintext byte ever touches the OS disk.
//
// Staging is cut into files of ChunkSize bytes (32 MiB by default), each an
// osdisk temporary file sealed on its own. Sending starts as soon as the
// first one is sealed and follows staging, which runs ahead at disk speed:
// the two overlap, so an export to a slow destination costs little more
// than the upload. Every staging file is read back through the descriptor
// that wrote it, with the key derived from the header it was sealed with,
// so swapping staging files on disk fails authentication like any other
// tampering.
//
// Checks: a source that does not start with the RDB header is refused while
// it is staged, before anything is sent. As the staged copy streams to the
// destination, every segment is authenticated, the RDB's CRC-64 trailer is
// checked (rdb.CheckPlain) and its SHA-256 computed and compared with the
// one the source announced, if any; the stream ends with io.EOF only if all
// of that passed and the whole source was staged, and a Destination commits
// only on io.EOF. So a damaged RDB, a staging file tampered with
// (ErrAuthentication) or a cancellation never leaves a committed copy
// behind.
//
// Sealed exports: with Options.Seal, Export sends the RDB encrypted under a
// fresh export DEK that a KEK wraps (the instance's, or a backup key), in
// one self-describing object (FORMAT.md, "Sealed export"); Unseal reads one
// back with that KEK and nothing else. The plain export stays the default.
//
// Destinations and sources here are an io.Writer, a local file and any
// io.Reader; package export/blob adds Azure Blob Storage, kept apart so that
// importing this package never pulls in the Azure SDK.
package export

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
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
	// ErrTruncated: the encrypted staging file or a sealed export ends
	// early.
	ErrTruncated = integrity.ErrTruncated
	// ErrFormat: a sealed export is malformed, or the data given to Unseal
	// is not a sealed export.
	ErrFormat = integrity.ErrFormat
	// ErrVersion: a sealed export of a format version this build cannot
	// read.
	ErrVersion = integrity.ErrVersion
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

// Options configure a transfer. The zero value is valid. Progress
// callbacks come from the staging and the sending goroutines, one at a
// time.
type Options struct {
	// Progress, if set, is called at the start and end of each phase and
	// about every ProgressEvery bytes. The phases overlap.
	Progress func(Progress)
	// ProgressEvery is the reporting interval in bytes; 0 means 4 MiB.
	ProgressEvery int64
	// ChunkSize is the plaintext size of one staging file; 0 means
	// DefaultChunkSize.
	ChunkSize int64
	// Seal, if set, makes Export send a sealed export instead of a plain
	// RDB: the RDB encrypted under a fresh export DEK, with that DEK
	// wrapped by Seal (one Wrap call, before anything is staged), in one
	// object (FORMAT.md, "Sealed export"). Only a holder of that KEK can
	// read it, through Unseal; the destination and whoever can read it
	// learn nothing but its size. Import refuses Seal: use Unseal on its
	// source.
	Seal kek.Wrapper
}

// Export stages the plain RDB src yields (usually FromRDB, the encrypted
// persistence snapshot) on the encrypted scratch disk, then sends the staged
// copy to dst, checking it on the way: dst commits only if it is an RDB with
// a valid CRC-64. It returns the RDB's size, SHA-256 and CRC-64. The staging
// file is removed before Export returns, whatever happened. Progress
// callbacks run on the calling goroutine.
func Export(ctx context.Context, scratch *osdisk.Disk, src Source, dst Destination, opts *Options) (Info, error) {
	in, err := transfer(ctx, "export", scratch, src, dst, opts)
	if err != nil {
		return in, fmt.Errorf("export.Export: %w", err)
	}
	return in, nil
}

// Import stages the plain RDB src yields (a blob, a file) on the encrypted
// scratch disk, refusing at once a source that does not start like an RDB,
// then sends the staged copy to dst, typically the encrypted persistence
// snapshot (ToRDB). dst commits only if the data is an RDB with a valid
// CRC-64 that matches the size and SHA-256 the source announced. The
// staging files are removed before Import returns, whatever happened.
func Import(ctx context.Context, scratch *osdisk.Disk, src Source, dst Destination, opts *Options) (Info, error) {
	if opts != nil && opts.Seal != nil {
		return Info{}, errors.New("export.Import: Options.Seal applies to Export only; to import a sealed export, pass its source through Unseal")
	}
	in, err := transfer(ctx, "import", scratch, src, dst, opts)
	if err != nil {
		return in, fmt.Errorf("export.Import: %w", err)
	}
	return in, nil
}
