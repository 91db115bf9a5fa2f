package cachecrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// Names inside the persistence disk's directory, as Redis lays them out.
const (
	SnapshotFile = "dump.rdb"      // the encrypted RDB snapshot
	AOFDir       = "appendonlydir" // the encrypted multi-part AOF
)

// AOF is the instance's append-only log on the persistence disk: an
// *aof.Log whose Append and Rewrite fail closed with the instance (when its
// KEK has been revoked past the grace period) and resume when it resumes.
type AOF struct {
	*aof.Log
	inst *Instance
	gate sync.RWMutex // Append holds it shared; Reencrypt exclusively, briefly
}

// OpenAOF opens (creating on first use) the encrypted AOF of the
// persistence disk. The caller closes it before closing the instance.
func (i *Instance) OpenAOF(opts aof.Options) (*AOF, error) {
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenAOF: %w", err)
	}
	l, err := aof.Open(i.AOFDir(), keys, opts)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenAOF: %w", err)
	}
	return &AOF{Log: l, inst: i}, nil
}

// Append appends one batch of commands, unless the instance failed closed.
func (a *AOF) Append(p []byte) error {
	if err := a.inst.usable(); err != nil {
		return fmt.Errorf("cachecrypt.AOF.Append: %w", err)
	}
	a.gate.RLock()
	defer a.gate.RUnlock()
	return a.Log.Append(p)
}

// Rewrite replaces the log's base, unless the instance failed closed.
func (a *AOF) Rewrite(f aof.BaseFormat, write func(w *aof.Rewrite) error) error {
	if err := a.inst.usable(); err != nil {
		return fmt.Errorf("cachecrypt.AOF.Rewrite: %w", err)
	}
	return a.Log.Rewrite(f, write)
}

// AOFDir returns the directory of the encrypted AOF.
func (i *Instance) AOFDir() string { return filepath.Join(i.DiskDir(DiskPersistence), AOFDir) }

// SnapshotPath returns the path of the encrypted RDB snapshot.
func (i *Instance) SnapshotPath() string {
	return filepath.Join(i.DiskDir(DiskPersistence), SnapshotFile)
}

// SaveSnapshot writes a new encrypted RDB snapshot with write and replaces
// the old one atomically (temp file, fsync, rename, fsync dir), under the
// persistence disk's active DEK. If write fails, the old snapshot stays.
func (i *Instance) SaveSnapshot(write func(w io.Writer) error) error {
	if err := i.usable(); err != nil {
		return fmt.Errorf("cachecrypt.SaveSnapshot: %w", err)
	}
	i.writers.RLock()
	defer i.writers.RUnlock()
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return fmt.Errorf("cachecrypt.SaveSnapshot: %w", err)
	}
	w, err := rdb.Create(i.SnapshotPath(), keys, rdb.Options{})
	if err != nil {
		return fmt.Errorf("cachecrypt.SaveSnapshot: %w", err)
	}
	if err := write(w); err != nil {
		w.Abort()
		return fmt.Errorf("cachecrypt.SaveSnapshot: %w", err)
	}
	if err := w.Commit(); err != nil {
		return fmt.Errorf("cachecrypt.SaveSnapshot: %w", err)
	}
	return nil
}

// OpenSnapshot opens the encrypted RDB snapshot for reading (random access;
// every segment authenticated before its bytes are returned). It fails with
// fs.ErrNotExist when no snapshot was saved yet.
func (i *Instance) OpenSnapshot() (*rdb.Reader, error) {
	if err := i.usable(); err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenSnapshot: %w", err)
	}
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenSnapshot: %w", err)
	}
	if _, err := os.Stat(i.SnapshotPath()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cachecrypt.OpenSnapshot: no snapshot saved yet: %w", err)
	}
	r, err := rdb.Open(i.SnapshotPath(), keys)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenSnapshot: %w", err)
	}
	return r, nil
}

// Export streams the encrypted snapshot to dst as a plain RDB, whose own
// encryption then governs the copy (a storage account's, say). It stages
// through the OS disk's encrypted scratch area, never in plaintext, checks
// the RDB's CRC-64, computes its SHA-256, and removes the staging on
// success, failure or cancellation.
func (i *Instance) Export(ctx context.Context, dst export.Destination, opts *export.Options) (export.Info, error) {
	if err := i.usable(); err != nil {
		return export.Info{}, fmt.Errorf("cachecrypt.Export: %w", err)
	}
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return export.Info{}, fmt.Errorf("cachecrypt.Export: %w", err)
	}
	info, err := export.Export(ctx, i.scratch, export.FromRDB(i.SnapshotPath(), keys), dst, opts)
	if err != nil {
		return info, fmt.Errorf("cachecrypt.Export: %w", err)
	}
	return info, nil
}

// Import reads a plain RDB from src, stages it encrypted on the OS disk,
// checks it is an RDB (magic, version, CRC-64), and makes it the instance's
// encrypted snapshot, replacing the old one atomically.
func (i *Instance) Import(ctx context.Context, src export.Source, opts *export.Options) (export.Info, error) {
	if err := i.usable(); err != nil {
		return export.Info{}, fmt.Errorf("cachecrypt.Import: %w", err)
	}
	i.writers.RLock()
	defer i.writers.RUnlock()
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return export.Info{}, fmt.Errorf("cachecrypt.Import: %w", err)
	}
	info, err := export.Import(ctx, i.scratch, src, export.ToRDB(i.SnapshotPath(), keys, rdb.Options{}), opts)
	if err != nil {
		return info, fmt.Errorf("cachecrypt.Import: %w", err)
	}
	return info, nil
}
