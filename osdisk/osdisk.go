// Package osdisk is the encrypted scratch area of the OS disk: the place an
// export stages a snapshot and where any temporary file of the cache goes.
//
// A Disk is a directory with its own keyring (package dek) wrapped by the
// instance's KEK, MMK or CMK. Every temporary file is a stream
// (internal/stream) sealed with AES-256-GCM under a per-file key derived from
// the disk's active DEK, so no plaintext byte ever reaches the OS disk.
//
// A temporary file is written sequentially, then read back with random
// access (io.ReaderAt, io.Seeker). It is removed on Close. Files a crash
// left behind are removed the next time the disk is opened.
//
// Layout of a disk directory:
//
//	dir/keyring             the disk's keyring (dek format)
//	dir/tmp/NAME.cctmp-...  temporary files (stream format, purpose "osdisk/temp")
package osdisk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Errors returned by this package, matched with errors.Is. They are the
// integrity errors every cachecrypt package shares.
var (
	// ErrAuthentication: a temporary file failed authentication (tampered
	// with, or not written by this disk).
	ErrAuthentication = integrity.ErrAuthentication
	// ErrTruncated: a temporary file ends early.
	ErrTruncated = integrity.ErrTruncated
	// ErrFormat: a temporary file is not a stream of this disk.
	ErrFormat = integrity.ErrFormat
	// ErrClosed: the disk or the file was closed.
	ErrClosed = integrity.ErrClosed
)

const (
	// KeyringName is the file name of the disk's keyring inside its directory.
	KeyringName = "keyring"
	// TempDir is the subdirectory holding temporary files.
	TempDir = "tmp"
	// Purpose binds the key of every temporary file to its use.
	Purpose = "osdisk/temp"
)

// Disk is an open encrypted scratch area. Its methods are safe for
// concurrent use; Close must not race with CreateTemp.
//
// A disk directory belongs to one process at a time: Open removes every
// temporary file it finds.
type Disk struct {
	dir   string
	keys  *dek.Keyring
	owned bool // Close closes keys

	mu   sync.Mutex
	open map[*File]struct{} // files not yet closed, for Fail
}

// Create makes the scratch area dir (created if needed, mode 0700) with a new
// keyring for diskID wrapped by w. It fails with dek.ErrExists if dir
// already holds a keyring.
func Create(ctx context.Context, dir, diskID string, w kek.Wrapper) (*Disk, error) {
	if err := os.MkdirAll(filepath.Join(dir, TempDir), 0o700); err != nil {
		return nil, fmt.Errorf("osdisk.Create: %w", err)
	}
	keys, err := dek.Create(ctx, filepath.Join(dir, KeyringName), diskID, w)
	if err != nil {
		return nil, fmt.Errorf("osdisk.Create: %w", err)
	}
	return &Disk{dir: dir, keys: keys, owned: true}, nil
}

// New makes the scratch area dir use keys, a keyring the caller opened and
// keeps owning (such as an Instance's OS-disk keyring: its rotations and
// rewraps apply at once). It creates dir/tmp if needed and removes the
// temporary files a crash left there. Close does not close keys.
func New(dir string, keys *dek.Keyring) (*Disk, error) {
	d := &Disk{dir: dir, keys: keys}
	if _, err := d.sweepTemp(); err != nil {
		return nil, fmt.Errorf("osdisk.New: remove leftover temporary files in %s: %w", dir, err)
	}
	return d, nil
}

// Open opens the scratch area dir with one call to u, and removes the
// temporary files a crash left in it.
func Open(ctx context.Context, dir string, u kek.Unwrapper) (*Disk, error) {
	keys, err := dek.Open(ctx, filepath.Join(dir, KeyringName), u)
	if err != nil {
		return nil, fmt.Errorf("osdisk.Open: %w", err)
	}
	d := &Disk{dir: dir, keys: keys, owned: true}
	if _, err := d.sweep(); err != nil {
		keys.Close()
		return nil, fmt.Errorf("osdisk.Open: remove leftover temporary files in %s: %w", dir, err)
	}
	return d, nil
}

// OpenOrCreate opens dir if it holds a keyring and creates it otherwise;
// kek is used as Unwrapper or Wrapper accordingly.
func OpenOrCreate(ctx context.Context, dir, diskID string, k kek.KEK) (*Disk, error) {
	if _, err := os.Stat(filepath.Join(dir, KeyringName)); errors.Is(err, fs.ErrNotExist) {
		return Create(ctx, dir, diskID, k)
	}
	return Open(ctx, dir, k)
}

// sweep removes leftover temporary files (of temp files and of keyring
// updates) and returns how many it removed.
func (d *Disk) sweep() (int, error) {
	n, err := d.sweepTemp()
	if err != nil {
		return n, err
	}
	m, err := atomicfile.RemoveTemps(d.dir)
	return n + m, err
}

// sweepTemp removes leftover temporary files of CreateTemp.
func (d *Disk) sweepTemp() (int, error) {
	tmp := filepath.Join(d.dir, TempDir)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return 0, err
	}
	return atomicfile.RemoveTemps(tmp)
}

// Dir returns the disk's directory.
func (d *Disk) Dir() string { return d.dir }

// Keyring returns the disk's keyring, to rotate its DEK or rewrap it under
// another KEK (MMK <-> CMK). Do not Close it: Close does, for a disk made by
// Create or Open.
func (d *Disk) Keyring() *dek.Keyring { return d.keys }

// Fail makes every temporary file still open fail with err from now on
// (reads and writes alike) and drops its stream, and with it the file's
// key: what an instance does when its KEK is revoked. The files stay
// failed; new ones can be created once the keyring is usable again.
func (d *Disk) Fail(err error) {
	d.mu.Lock()
	files := make([]*File, 0, len(d.open))
	for f := range d.open {
		files = append(files, f)
	}
	d.mu.Unlock()
	for _, f := range files {
		f.fail(err)
	}
}

func (d *Disk) track(f *File) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.open == nil {
		d.open = map[*File]struct{}{}
	}
	d.open[f] = struct{}{}
}

func (d *Disk) untrack(f *File) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.open, f)
}

// Close zeroes the disk's keys if it owns them (Create, Open; not New).
// Close the disk's temporary files first.
func (d *Disk) Close() error {
	if !d.owned {
		return nil
	}
	return d.keys.Close()
}
