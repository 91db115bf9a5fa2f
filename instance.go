package cachecrypt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/nvme"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// Disk names, also the names of their directories under the instance's.
const (
	DiskPersistence = "persistence" // RDB snapshots and AOF logs
	DiskOS          = "os"          // export staging and temporary files
	DiskNVMe        = "nvme"        // Flash tier pages (ephemeral)
)

// keyringFile is the keyring's name inside each disk directory.
const keyringFile = "keyring"

// Instance is one cache instance's encryption at rest: its disks, their
// keyrings and the KEK that wraps them.
//
// All methods are safe for concurrent use. Reads and writes of data make no
// KEK call; SetEncryption, RotateDEK and the health probe are serialized
// with each other and never block readers and writers on a KEK call.
type Instance struct {
	dir string
	cfg Config
	mmk *kek.MMK

	admin  sync.Mutex  // serializes SetEncryption, RotateDEK, RetireUnused, Probe, Close
	leases leases      // DEK versions running writers may use; see versions.go
	snapMu sync.Mutex  // held while a snapshot is committed (SaveSnapshot, Import, Reencrypt)
	lock   *os.File    // the instance lock, held until Close
	pkPath string      // where the MMK lives (file, credential or store entry)
	state  *stateStore // the rollback record, beside the platform key

	aofMu     sync.Mutex
	aof       *aof.Log // the log the open AOF holds (nil while suspended), guarded by aofMu
	aofHandle *AOF     // the open AOF, guarded by aofMu

	mu           sync.RWMutex
	kek          kek.KEK     // the KEK of the persistent disks now
	disks        []*disk     // persistence and OS disks, in that order
	flash        *nvme.Store // Flash tier only
	scratch      *osdisk.Disk
	lastCheck    time.Time
	failingSince time.Time
	failedClosed error // non-nil while the instance has failed closed
	closed       bool
	handles      map[failer]struct{} // readers handed out, failed with the instance
	aofRecovered string              // what OpenAOF cut off after a crash, for Status

	stop chan struct{}
	done sync.WaitGroup
}

type disk struct {
	name    string
	keyring *dek.Keyring
}

// Open opens (creating on first use) the instance kept in dir. It validates
// the configured KEK's prerequisites, unwraps each disk's keyring once, and
// finishes any encryption switch a crash interrupted: every disk ends under
// the configured KEK.
func Open(ctx context.Context, dir string, cfg Config) (*Instance, error) {
	cfg.setDefaults(dir)
	if cfg.Tier < MemoryOptimized || cfg.Tier > FlashOptimized {
		return nil, fmt.Errorf("cachecrypt.Open: unknown tier %d", cfg.Tier)
	}
	lock, err := lockInstance(dir)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.Open: %w", err)
	}
	i, err := openLocked(ctx, dir, cfg, lock)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("cachecrypt.Open: %w", err)
	}
	return i, nil
}

// openLocked opens the instance once its lock is held.
func openLocked(ctx context.Context, dir string, cfg Config, lock *os.File) (*Instance, error) {
	i := &Instance{dir: dir, cfg: cfg, lock: lock, stop: make(chan struct{})}
	pk, err := i.locatePlatformKey()
	if err != nil {
		return nil, err
	}
	if err := i.sweep(pk); err != nil {
		return nil, err
	}
	mmk, err := i.loadPlatformKey(pk)
	if err != nil {
		return nil, err
	}
	i.pkPath = pk.path
	if err := i.openState(ctx, pk, mmk); err != nil {
		return nil, err
	}
	i.mmk = mmk
	i.kek = i.resolve(cfg.Encryption)
	if err := validate(ctx, cfg.Encryption, i.kek); err != nil {
		return nil, err
	}
	for _, name := range []string{DiskPersistence, DiskOS} {
		d, err := i.openDisk(ctx, name)
		if err != nil {
			i.closeDisks()
			return nil, err
		}
		i.disks = append(i.disks, d)
	}
	if err := i.checkFiles(ctx); err != nil {
		i.closeDisks()
		return nil, err
	}
	if i.scratch, err = osdisk.New(i.DiskDir(DiskOS), i.disks[1].keyring); err != nil {
		i.closeDisks()
		return nil, err
	}
	if cfg.Tier == FlashOptimized {
		if i.flash, err = i.openFlash(); err != nil {
			i.closeDisks()
			return nil, err
		}
	}
	i.lastCheck = cfg.now()
	if cfg.ProbeInterval > 0 {
		i.done.Add(1)
		go i.probeLoop()
	}
	return i, nil
}

// openFlash opens the NVMe page store. Its key is drawn afresh: pages of
// an earlier process read as nvme.ErrNotWritten.
func (i *Instance) openFlash() (*nvme.Store, error) {
	dir := filepath.Join(i.dir, DiskNVMe)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	opts := i.cfg.Flash
	return nvme.Open(filepath.Join(dir, "pages"), &opts)
}

// Scratch returns the encrypted scratch area of the OS disk: export
// staging and temporary files (osdisk.Disk.CreateTemp). The instance owns
// it: do not Close it.
func (i *Instance) Scratch() *osdisk.Disk { return i.scratch }

// Flash returns the NVMe page store of a Flash Optimized instance, or nil
// on other tiers. Wrap it in nvme.NewSpill to keep cold values there.
//
// When the instance fails closed, the store is closed (its key zeroed; its
// pages were ephemeral) and every call on it fails with nvme.ErrClosed;
// once the instance resumes, Flash returns a fresh, empty store.
func (i *Instance) Flash() *nvme.Store {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.flash
}

// resolve returns the KEK of an encryption setting.
func (i *Instance) resolve(e Encryption) kek.KEK {
	if e.CMK != nil {
		return e.CMK
	}
	return i.mmk
}

func validate(ctx context.Context, e Encryption, k kek.KEK) error {
	if e.Check != nil {
		if err := e.Check(ctx); err != nil {
			return err
		}
	}
	if v, ok := k.(Validator); ok {
		return v.Validate(ctx)
	}
	return nil
}

// openDisk opens or creates one disk's keyring under the instance's KEK. A
// keyring still under another KEK (a switch interrupted by a crash) is
// opened with the MMK or a Previous KEK and rewrapped.
func (i *Instance) openDisk(ctx context.Context, name string) (*disk, error) {
	dir := filepath.Join(i.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, keyringFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := i.state.checkMissing(name, path); err != nil {
			return nil, err
		}
		r, err := dek.Create(ctx, path, newDiskID(name), i.kek, i.keyringOpts()...)
		if err != nil {
			return nil, err
		}
		i.emit(Event{Kind: EventWrap, Disk: name, KEK: r.Descriptor(), DEKVersion: r.Active()})
		return &disk{name: name, keyring: r}, nil
	}
	if info, err := dek.ReadInfo(path); err == nil {
		if err := i.state.checkKeyring(name, path, mark(info.Generation, info.Digest)); err != nil {
			return nil, err
		}
	}
	r, err := dek.Open(ctx, path, i.kek, i.keyringOpts()...)
	if err == nil {
		if err := i.state.checkKeyring(name, path, markOf(r)); err != nil {
			r.Close()
			return nil, err
		}
		i.emit(Event{Kind: EventUnwrap, Disk: name, KEK: r.Descriptor(), DEKVersion: r.Active()})
		return &disk{name: name, keyring: r}, nil
	}
	if !errors.Is(err, kek.ErrKeyMismatch) {
		return nil, err
	}
	others := append([]kek.Unwrapper{i.mmk}, i.cfg.Previous...)
	r, err = dek.Open(ctx, path, kek.First(others...), i.keyringOpts()...)
	if err != nil {
		return nil, err
	}
	if err := i.state.checkKeyring(name, path, markOf(r)); err != nil {
		r.Close()
		return nil, err
	}
	from := r.Descriptor()
	if err := r.Rewrap(ctx, i.kek); err != nil {
		r.Close()
		return nil, err
	}
	i.emit(Event{Kind: EventRecover, Disk: name, KEK: r.Descriptor(), DEKVersion: r.Active(),
		Err: fmt.Errorf("disk was still under %s after an interrupted switch; rewrapped", from)})
	return &disk{name: name, keyring: r}, nil
}

func newDiskID(name string) string {
	var b [8]byte
	rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

// Dir returns the instance's directory.
func (i *Instance) Dir() string { return i.dir }

// Tier returns the instance's tier.
func (i *Instance) Tier() Tier { return i.cfg.Tier }

// Keyring returns the keyring of a disk (DiskPersistence or DiskOS), for
// the data packages: rdb, aof and osdisk take it.
func (i *Instance) Keyring(name string) (*dek.Keyring, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if i.closed {
		return nil, fmt.Errorf("cachecrypt.Keyring: %w", ErrClosed)
	}
	for _, d := range i.disks {
		if d.name == name {
			return d.keyring, nil
		}
	}
	return nil, fmt.Errorf("cachecrypt.Keyring: no disk %q; disks with keyrings are %q and %q", name, DiskPersistence, DiskOS)
}

// DiskDir returns the directory of a disk.
func (i *Instance) DiskDir(name string) string { return filepath.Join(i.dir, name) }

// Close stops the health probe and zeroes every key. It is idempotent.
func (i *Instance) Close() error {
	i.admin.Lock()
	defer i.admin.Unlock()
	var settled error
	if i.usable() == nil {
		settled = i.settleSnapshot()
	}
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	i.failHandles(ErrClosed)
	i.mu.Unlock()
	close(i.stop)
	i.done.Wait()
	i.closeDisks()
	return errors.Join(settled, i.lock.Close()) // releases the instance lock
}

func (i *Instance) closeDisks() {
	for _, d := range i.disks {
		d.keyring.Close()
	}
	if i.flash != nil {
		i.flash.Close()
	}
}
