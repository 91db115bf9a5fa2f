package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// Sidecar keeps encrypted snapshots of a Redis server on the persistence
// disk of a cachecrypt instance (under the platform-managed key) and moves
// them to and from Blob Storage through the instance's encrypted OS disk.
// Its methods are safe for concurrent use, except Close.
type Sidecar struct {
	inst *cachecrypt.Instance
	keys *dek.Keyring // the persistence disk's, for tests
}

// Open opens (creating on first use) the instance in dir.
func Open(ctx context.Context, dir string, logger *slog.Logger) (*Sidecar, error) {
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	inst, err := cachecrypt.Open(ctx, dir, cachecrypt.Config{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("sidecar.Open: %w", err)
	}
	keys, err := inst.Keyring(cachecrypt.DiskPersistence)
	if err != nil {
		inst.Close()
		return nil, fmt.Errorf("sidecar.Open: %w", err)
	}
	return &Sidecar{inst: inst, keys: keys}, nil
}

// Close zeroes the keys.
func (s *Sidecar) Close() error { return s.inst.Close() }

// Path returns the encrypted snapshot's path.
func (s *Sidecar) Path() string { return s.inst.SnapshotPath() }

// Snapshot pulls a snapshot from the Redis server at addr and writes it
// encrypted to the persistence disk, replacing the previous one only once
// the new one is complete and is a valid RDB (CRC-64 checked on the way):
// an interrupted or damaged transfer leaves the previous snapshot.
func (s *Sidecar) Snapshot(ctx context.Context, addr string, opts PullOptions) (PullInfo, rdb.Info, error) {
	var (
		pi   PullInfo
		info rdb.Info
	)
	err := s.inst.SaveSnapshot(func(w io.Writer) error {
		pr, pw := io.Pipe()
		checked := make(chan error, 1)
		go func() {
			var err error
			info, err = rdb.CheckPlain(pr)
			pr.CloseWithError(err) // unblocks Pull if the check stops early
			checked <- err
		}()
		var err error
		pi, err = Pull(ctx, addr, io.MultiWriter(w, pw), opts)
		pw.Close()
		cerr := <-checked
		if err != nil { // when the check failed first, err wraps its error
			return err
		}
		if cerr != nil {
			return fmt.Errorf("the server sent a damaged RDB: %w", cerr)
		}
		return nil
	})
	if err != nil {
		return pi, info, fmt.Errorf("sidecar.Snapshot: %w", err)
	}
	return pi, info, nil
}

// Export sends the encrypted snapshot to dst (a blob: export/blob.To) as a
// plain RDB, staged on the encrypted OS disk and checked on the way.
func (s *Sidecar) Export(ctx context.Context, dst export.Destination) (export.Info, error) {
	info, err := s.inst.Export(ctx, dst, nil)
	if err != nil {
		return info, fmt.Errorf("sidecar.Export: %w", err)
	}
	return info, nil
}

// ExportSealed sends the snapshot to dst as a sealed export: ciphertext
// under a fresh export key wrapped by this sidecar's KEK (its platform key),
// so only a holder of that KEK can import it, whatever the destination.
func (s *Sidecar) ExportSealed(ctx context.Context, dst export.Destination) (export.Info, error) {
	info, err := s.inst.ExportSealed(ctx, dst, nil, nil)
	if err != nil {
		return info, fmt.Errorf("sidecar.ExportSealed: %w", err)
	}
	return info, nil
}

// ImportSealed replaces the snapshot with the sealed export src yields,
// unwrapped with this sidecar's KEK; another KEK's export fails with
// kek.ErrKeyMismatch or kek.ErrUnwrap and changes nothing.
func (s *Sidecar) ImportSealed(ctx context.Context, src export.Source) (export.Info, error) {
	info, err := s.inst.ImportSealed(ctx, src, nil, nil)
	if err != nil {
		return info, fmt.Errorf("sidecar.ImportSealed: %w", err)
	}
	return info, nil
}

// Import replaces the encrypted snapshot with the RDB src yields (a blob:
// export/blob.From), checked and encrypted on the way.
func (s *Sidecar) Import(ctx context.Context, src export.Source) (export.Info, error) {
	info, err := s.inst.Import(ctx, src, nil)
	if err != nil {
		return info, fmt.Errorf("sidecar.Import: %w", err)
	}
	return info, nil
}

// Restore decrypts the snapshot to dir/dump.rdb, where a redis-server started
// with --dir dir loads it. The file appears only once it is complete and
// authenticated.
func (s *Sidecar) Restore(dir string) (rdb.Info, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return rdb.Info{}, fmt.Errorf("sidecar.Restore: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "restore-*.rdb")
	if err != nil {
		return rdb.Info{}, fmt.Errorf("sidecar.Restore: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()
	info, err := s.decryptTo(tmp)
	if err != nil {
		return info, fmt.Errorf("sidecar.Restore: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "dump.rdb")); err != nil {
		return info, fmt.Errorf("sidecar.Restore: %w", err)
	}
	return info, nil
}

// decryptTo writes the plain snapshot to f, checks it and syncs f.
func (s *Sidecar) decryptTo(f *os.File) (rdb.Info, error) {
	r, err := s.inst.OpenSnapshot()
	if err != nil {
		return rdb.Info{}, err
	}
	defer r.Close()
	if _, err := r.WriteTo(f); err != nil {
		return rdb.Info{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return rdb.Info{}, err
	}
	info, err := rdb.CheckPlain(f)
	if err != nil {
		return info, err
	}
	return info, f.Sync()
}
