package cachecrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

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

// AOF is the instance's append-only log on the persistence disk. Its
// methods are those of an *aof.Log, and fail closed with the instance
// (when its KEK has been revoked past the grace period) and resume when it
// resumes. It registers the DEK versions its rewrites use, so retirement
// never removes a key the log still needs.
type AOF struct {
	log  *aof.Log
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
	release := i.lease(DiskPersistence, 0) // a new part is sealed under the active version
	defer release()
	l, err := aof.Open(i.AOFDir(), keys, opts)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenAOF: %w", err)
	}
	if err := i.recordAOF(l.Generation()); err != nil {
		l.Close()
		return nil, fmt.Errorf("cachecrypt.OpenAOF: %w", err)
	}
	if rec, ok := l.Recovered(); ok {
		i.noteRecovery(rec)
	}
	a := &AOF{log: l, inst: i}
	i.aofMu.Lock()
	i.aof = l
	i.aofMu.Unlock()
	return a, nil
}

// openLog returns the log an open AOF holds, or nil.
func (i *Instance) openLog() *aof.Log {
	i.aofMu.Lock()
	defer i.aofMu.Unlock()
	return i.aof
}

// Append appends one batch of commands, unless the instance failed closed.
// See aof.Log.Append.
func (a *AOF) Append(p []byte) error {
	if err := a.inst.usable(); err != nil {
		return fmt.Errorf("cachecrypt.AOF.Append: %w", err)
	}
	a.gate.RLock()
	defer a.gate.RUnlock()
	return a.log.Append(p)
}

// Rewrite replaces the log's base, unless the instance failed closed. See
// aof.Log.Rewrite.
func (a *AOF) Rewrite(f aof.BaseFormat, write func(w *aof.Rewrite) error) error {
	if err := a.inst.usable(); err != nil {
		return fmt.Errorf("cachecrypt.AOF.Rewrite: %w", err)
	}
	release := a.inst.lease(DiskPersistence, 0)
	defer release()
	if err := a.log.Rewrite(f, write); err != nil {
		return err
	}
	return a.inst.recordAOF(a.log.Generation())
}

// Replay returns a reader of every command the log holds. See
// aof.Log.Replay. The DEK versions it reads stay until it is closed.
func (a *AOF) Replay() (*AOFReader, error) {
	if err := a.inst.usable(); err != nil {
		return nil, fmt.Errorf("cachecrypt.AOF.Replay: %w", err)
	}
	release := a.inst.lease(DiskPersistence, slices.Min(a.log.Versions()))
	r, err := a.log.Replay()
	if err != nil {
		release()
		return nil, err
	}
	ar := &AOFReader{inst: a.inst, r: r, release: release}
	a.inst.track(ar)
	return ar, nil
}

// Sync makes every append durable now. See aof.Log.Sync.
func (a *AOF) Sync() error {
	if err := a.inst.usable(); err != nil {
		return fmt.Errorf("cachecrypt.AOF.Sync: %w", err)
	}
	return a.log.Sync()
}

// Dir returns the log's directory.
func (a *AOF) Dir() string { return a.log.Dir() }

// Generation returns the manifest's generation. See aof.Log.Generation.
func (a *AOF) Generation() uint64 { return a.log.Generation() }

// Recovered reports the torn tail OpenAOF cut off after a crash, if any.
// See aof.Log.Recovered.
func (a *AOF) Recovered() (aof.Recovery, bool) { return a.log.Recovered() }

// Close closes the log. See aof.Log.Close.
func (a *AOF) Close() error {
	i := a.inst
	i.aofMu.Lock()
	if i.aof == a.log {
		i.aof = nil
	}
	i.aofMu.Unlock()
	return a.log.Close()
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
