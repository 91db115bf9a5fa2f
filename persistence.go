package cachecrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// Names inside the persistence disk's directory, as Redis lays them out.
const (
	SnapshotFile = "dump.rdb"      // the encrypted RDB snapshot
	AOFDir       = "appendonlydir" // the encrypted multi-part AOF
)

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
	if err := i.saveSnapshot(write, nil); err != nil {
		return fmt.Errorf("cachecrypt.SaveSnapshot: %w", err)
	}
	return nil
}

// errSnapshotChanged: the snapshot was replaced while a conditional save
// ran.
var errSnapshotChanged = errors.New("the snapshot was replaced meanwhile")

// saveSnapshot writes a new snapshot with write. If replaces is not nil,
// the commit happens only if the snapshot on disk still has that header,
// else it fails with errSnapshotChanged and the newer snapshot stays.
func (i *Instance) saveSnapshot(write func(w io.Writer) error, replaces *stream.Header) error {
	if err := i.usable(); err != nil {
		return err
	}
	release := i.lease(DiskPersistence, 0)
	defer release()
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return err
	}
	w, err := rdb.Create(i.SnapshotPath(), keys, rdb.Options{FS: i.cfg.fs})
	if err != nil {
		return err
	}
	defer w.Abort()
	if err := write(w); err != nil {
		return err
	}
	i.snapMu.Lock()
	defer i.snapMu.Unlock()
	if replaces != nil && !i.snapshotIs(*replaces) {
		return errSnapshotChanged
	}
	if err := i.recordSnapshot(saltOf(w.Header())); err != nil {
		return err
	}
	return w.Commit()
}

// snapshotIs reports whether the snapshot on disk has header h (its salt
// makes it unique); the caller holds snapMu.
func (i *Instance) snapshotIs(h stream.Header) bool {
	r, err := i.openSnapshot()
	if err != nil {
		return false
	}
	defer r.Close()
	return r.Header() == h
}

// OpenSnapshot opens the encrypted RDB snapshot for reading (random access;
// every segment authenticated before its bytes are returned). It fails with
// fs.ErrNotExist when no snapshot was saved yet. The reader fails for good
// when the instance fails closed or closes.
func (i *Instance) OpenSnapshot() (*SnapshotReader, error) {
	r, err := i.openSnapshot()
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenSnapshot: %w", err)
	}
	s := &SnapshotReader{inst: i, r: r}
	i.track(s)
	return s, nil
}

// openSnapshot opens the snapshot for the instance's own use.
func (i *Instance) openSnapshot() (*rdb.Reader, error) {
	if err := i.usable(); err != nil {
		return nil, err
	}
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(i.SnapshotPath()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no snapshot saved yet: %w", err)
	}
	return rdb.Open(i.SnapshotPath(), keys)
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
	floor := keys.Active()
	if snap, err := i.openSnapshot(); err == nil {
		floor = snap.Header().DEKVersion // a newer snapshot has a version at least as high
		snap.Close()
	}
	defer i.lease(DiskPersistence, floor)()
	defer i.lease(DiskOS, 0)() // the staging file
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
	defer i.lease(DiskOS, 0)() // the staging file
	info, err := export.Import(ctx, i.scratch, src, snapshotDest{i}, opts)
	if err != nil {
		return info, fmt.Errorf("cachecrypt.Import: %w", err)
	}
	return info, nil
}

// snapshotDest makes an import's stream the instance's snapshot, as
// SaveSnapshot does: leased, serialized and recorded.
type snapshotDest struct{ i *Instance }

func (d snapshotDest) Put(_ context.Context, s *export.Stream) error {
	return d.i.saveSnapshot(func(w io.Writer) error { _, err := io.Copy(w, s); return err }, nil)
}

// noteRecovery reports a torn AOF tail cut off on open, as Redis logs one
// under aof-load-truncated: an event now, and in Status until Close.
func (i *Instance) noteRecovery(rec aof.Recovery) {
	detail := fmt.Sprintf("the AOF's last write was torn by a crash: cut %d bytes at offset %d of %s (only writes never acknowledged under fsync always)",
		rec.BytesCut, rec.Offset, rec.Part)
	i.mu.Lock()
	i.aofRecovered = detail
	i.mu.Unlock()
	i.emit(Event{Kind: EventRecover, Disk: DiskPersistence, Detail: detail})
}
