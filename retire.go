package cachecrypt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// RetireUnused removes the DEK versions that no file uses any more: on the
// persistence disk, every version but the active one, the snapshot's and
// those of the AOF's parts; on the OS disk, every old version once no
// temporary file is left. It returns the versions retired per disk. The
// retired keys are zeroed and gone from the keyring files.
func (i *Instance) RetireUnused() (map[string][]uint32, error) {
	i.admin.Lock()
	defer i.admin.Unlock()
	if err := i.usable(); err != nil {
		return nil, fmt.Errorf("cachecrypt.RetireUnused: %w", err)
	}
	i.writers.Lock() // no snapshot is being written under an old version
	defer i.writers.Unlock()
	out := map[string][]uint32{}
	pers, osd := i.disks[0].keyring, i.disks[1].keyring
	inUse, err := i.persistenceVersions(pers)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.RetireUnused: %w", err)
	}
	if err := i.retire(DiskPersistence, pers, inUse, out); err != nil {
		return out, err
	}
	if ents, err := os.ReadDir(filepath.Join(i.scratch.Dir(), osdisk.TempDir)); err == nil && len(ents) == 0 {
		if err := i.retire(DiskOS, osd, nil, out); err != nil {
			return out, err
		}
	}
	return out, nil
}

// persistenceVersions returns the DEK versions the snapshot and the AOF's
// parts are encrypted under.
func (i *Instance) persistenceVersions(keys *dek.Keyring) ([]uint32, error) {
	var vs []uint32
	snap, err := i.OpenSnapshot()
	switch {
	case err == nil:
		vs = append(vs, snap.Header().DEKVersion)
		snap.Close()
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if _, err := os.Stat(i.AOFDir()); errors.Is(err, fs.ErrNotExist) {
		return vs, nil
	}
	parts, err := aof.Parts(i.AOFDir(), keys, aof.Options{})
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		vs = append(vs, p.DEK)
	}
	return vs, nil
}

// retire retires every version of keys that is neither active nor in use.
func (i *Instance) retire(disk string, keys *dek.Keyring, inUse []uint32, out map[string][]uint32) error {
	active := keys.Active()
	var old []uint32
	for _, v := range keys.Info().Versions {
		if v != active && !slices.Contains(inUse, v) {
			old = append(old, v)
		}
	}
	if len(old) == 0 {
		return nil
	}
	if err := keys.Retire(old...); err != nil {
		return fmt.Errorf("cachecrypt.RetireUnused: disk %q: %w", disk, err)
	}
	out[disk] = old
	i.emit(Event{Kind: EventRetire, Disk: disk, KEK: keys.Descriptor(), DEKVersion: active})
	return nil
}

// rotateIfDue rotates the DEKs when Config.RotateDEKEvery has passed since
// the active version was created, then retires what no file uses.
func (i *Instance) rotateIfDue() {
	every := i.cfg.RotateDEKEvery
	if every <= 0 || i.usable() != nil {
		return
	}
	if i.cfg.now().Sub(i.disks[0].keyring.Info().ActiveCreated) < every {
		return
	}
	if err := i.RotateDEK(); err != nil {
		i.cfg.Logger.Warn("cachecrypt: scheduled DEK rotation failed", "error", err)
		return
	}
	if _, err := i.RetireUnused(); err != nil {
		i.cfg.Logger.Warn("cachecrypt: retiring unused DEK versions failed", "error", err)
	}
}
