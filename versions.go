package cachecrypt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// leases are the DEK versions that writers still running may use. A writer
// takes a lease before it reads the active version and drops it once its
// file is committed or abandoned; the lease keeps its floor and every
// later version. Retirement holds mu from the moment it computes what is
// in use until the keyring is rewritten, so no writer starts or finishes
// in between.
type leases struct {
	mu     sync.Mutex
	cond   sync.Cond           // broadcast when a lease ends
	floors map[string][]uint32 // per disk, one entry per running writer
}

// lease records that a writer on disk may use floor and every later
// version (floor 0 means the active one) until release is called.
func (i *Instance) lease(disk string, floor uint32) (release func()) {
	keys := i.diskKeys(disk)
	l := &i.leases
	l.mu.Lock()
	if floor == 0 || floor > keys.Active() {
		floor = keys.Active()
	}
	if l.floors == nil {
		l.floors = map[string][]uint32{}
		l.cond.L = &l.mu
	}
	l.floors[disk] = append(l.floors[disk], floor)
	l.mu.Unlock()
	return sync.OnceFunc(func() {
		l.mu.Lock()
		fs := l.floors[disk]
		n := slices.Index(fs, floor)
		l.floors[disk] = slices.Delete(fs, n, n+1)
		l.cond.Broadcast()
		l.mu.Unlock()
	})
}

// leaseFloor returns the lowest version leased on disk, or 0 if none; the
// caller holds leases.mu.
func (i *Instance) leaseFloor(disk string) uint32 {
	fs := i.leases.floors[disk]
	if len(fs) == 0 {
		return 0
	}
	return slices.Min(fs)
}

// awaitLeasesFrom waits until no writer on disk holds a lease below v.
func (i *Instance) awaitLeasesFrom(disk string, v uint32) {
	l := &i.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	for f := i.leaseFloor(disk); f != 0 && f < v; f = i.leaseFloor(disk) {
		l.cond.Wait()
	}
}

// diskKeys returns the keyring of a persistent disk.
func (i *Instance) diskKeys(name string) *dek.Keyring {
	for _, d := range i.disks {
		if d.name == name {
			return d.keyring
		}
	}
	panic("cachecrypt: no disk " + name)
}

// inUse is the one place that decides which DEK versions of a disk must
// stay: the active one, every version from the lowest lease on, and on the
// persistence disk the snapshot's and the AOF's (parts and manifest); on
// the OS disk, every version while a temporary file exists. The caller
// holds leases.mu.
func (i *Instance) inUse(disk string) ([]uint32, error) {
	keys := i.diskKeys(disk)
	keep := []uint32{keys.Active()}
	if f := i.leaseFloor(disk); f != 0 {
		for _, v := range keys.Info().Versions {
			if v >= f {
				keep = append(keep, v)
			}
		}
	}
	var files []uint32
	var err error
	switch disk {
	case DiskPersistence:
		files, err = i.persistenceFiles(keys)
	case DiskOS:
		files, err = i.scratchFiles(keys)
	}
	return append(keep, files...), err
}

// persistenceFiles returns the DEK versions the snapshot and the AOF use.
func (i *Instance) persistenceFiles(keys *dek.Keyring) ([]uint32, error) {
	var vs []uint32
	snap, err := i.openSnapshot()
	switch {
	case err == nil:
		vs = append(vs, snap.Header().DEKVersion)
		snap.Close()
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if log := i.openLog(); log != nil {
		return append(vs, log.Versions()...), nil
	}
	if _, err := os.Stat(i.AOFDir()); errors.Is(err, fs.ErrNotExist) {
		return vs, nil
	}
	parts, err := aof.Versions(i.AOFDir(), keys, aof.Options{})
	return append(vs, parts...), err
}

// scratchFiles returns every version of the OS disk while a temporary
// file exists (export staging, osdisk.Disk.CreateTemp), none otherwise.
func (i *Instance) scratchFiles(keys *dek.Keyring) ([]uint32, error) {
	ents, err := os.ReadDir(filepath.Join(i.scratch.Dir(), osdisk.TempDir))
	if err != nil || len(ents) > 0 {
		return keys.Info().Versions, err
	}
	return nil, nil
}

// retireUnused retires every version of disk that inUse does not keep and
// returns them. Every retirement goes through it.
func (i *Instance) retireUnused(disk string) ([]uint32, error) {
	i.leases.mu.Lock()
	defer i.leases.mu.Unlock()
	keep, err := i.inUse(disk)
	if err != nil {
		return nil, fmt.Errorf("disk %q: finding the DEK versions in use: %w", disk, err)
	}
	keys := i.diskKeys(disk)
	var old []uint32
	for _, v := range keys.Info().Versions {
		if !slices.Contains(keep, v) {
			old = append(old, v)
		}
	}
	if len(old) == 0 {
		return nil, nil
	}
	if err := keys.Retire(old...); err != nil {
		return nil, fmt.Errorf("disk %q: %w", disk, err)
	}
	if err := i.recordKeyrings(); err != nil {
		return nil, err
	}
	i.emit(Event{Kind: EventRetire, Disk: disk, KEK: keys.Descriptor(), DEKVersion: keys.Active(),
		Detail: fmt.Sprintf("retired DEK versions %v", old)})
	return old, nil
}
