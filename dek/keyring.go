package dek

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
)

// DiskID returns the disk this keyring belongs to.
func (k *Keyring) DiskID() string { return k.diskID }

// Path returns the keyring's file.
func (k *Keyring) Path() string { return k.path }

// Info describes the keyring as it is now.
func (k *Keyring) Info() Info {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.file.info(k.path, k.digest)
}

// Generation returns the generation of the keyring file as last committed:
// Create writes 1 and every RotateDEK, Retire and Rewrap writes a higher
// one (never the same number twice, even after a failed write). It is
// authenticated by the keyring's MAC, so a caller that records it outside
// the disk can tell an older keyring put back (a lower generation) from the
// current one.
func (k *Keyring) Generation() uint64 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.file.Generation
}

// Digest returns the SHA-256 of the keyring file's bytes as last committed
// (as read by Open, or as written by Create, RotateDEK, Retire or Rewrap).
// With Generation it identifies one exact keyring file.
func (k *Keyring) Digest() [32]byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.digest
}

// Active returns the DEK version new files must use.
func (k *Keyring) Active() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.file.Active
}

// FileKey derives the AES-256 key of one file: HKDF-SHA256 with the DEK of
// version as secret, salt (random, from the file's header, at least 16
// bytes) and info binding purpose, disk id and version. The caller should
// clear the result once it has built its cipher. FileKey makes no KEK call.
func (k *Keyring) FileKey(version uint32, purpose string, salt []byte) ([]byte, error) {
	if len(salt) < 16 {
		return nil, fmt.Errorf("dek.FileKey: salt of %d bytes, want at least 16", len(salt))
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if err := k.usable(); err != nil {
		return nil, fmt.Errorf("dek.FileKey: keyring %s: %w", k.path, err)
	}
	d, ok := k.deks[version]
	if !ok {
		return nil, fmt.Errorf("dek.FileKey: disk %q holds DEK versions %v, not %d: %w", k.file.DiskID, k.versions(), version, ErrUnknownVersion)
	}
	return DeriveFileKey(d, k.file.DiskID, version, purpose, salt)
}

// DeriveFileKey is the file-key derivation of FORMAT.md, exposed for test
// vectors and tools that hold a raw DEK: HKDF-SHA256 with secret dek, the
// given salt, and info "cachecrypt file key v1" 0x00 purpose 0x00 diskID 0x00
// followed by the version as 4 big-endian bytes.
func DeriveFileKey(dek []byte, diskID string, version uint32, purpose string, salt []byte) ([]byte, error) {
	info := fmt.Appendf(nil, "cachecrypt file key v1\x00%s\x00%s\x00", purpose, diskID)
	info = binary.BigEndian.AppendUint32(info, version)
	return hkdf.Key(sha256.New, dek, salt, string(info), KeySize)
}

func (k *Keyring) versions() []uint32 {
	vs := make([]uint32, 0, len(k.file.Entries))
	for _, e := range k.file.Entries {
		vs = append(vs, e.Version)
	}
	return vs
}

// RotateDEK adds a fresh DEK version and makes it active. Files written
// before keep decrypting with their version. It makes no KEK call: the new
// DEK is sealed under the keyring key already unwrapped.
func (k *Keyring) RotateDEK() (uint32, error) {
	k.update.Lock()
	defer k.update.Unlock()
	cur, err := k.current()
	if err != nil {
		return 0, fmt.Errorf("dek.RotateDEK: %w", err)
	}
	if len(cur.Entries) >= MaxVersions {
		return 0, fmt.Errorf("dek.RotateDEK: disk %q holds %d DEK versions, the maximum; retire unused versions first", cur.DiskID, len(cur.Entries))
	}
	v := cur.Active + 1
	d := randomKey()
	es := append(slices.Clip(cur.Entries), entry{Version: v, Created: k.opts.now().Unix()})
	nf := k.successor(cur, k.krk, cur.Wrapped, v, es, func(u uint32) []byte {
		if u == v {
			return d
		}
		return k.deks[u]
	})
	if err := k.commit(nf, nil, func() { k.deks[v] = d }); err != nil {
		clear(d)
		return 0, fmt.Errorf("dek.RotateDEK: %w", err)
	}
	return v, nil
}

// Rewrap seals the same DEKs under a fresh keyring key wrapped by w: the
// switch from one KEK to another (MMK to CMK, CMK to MMK, or a new KEK
// version). It makes exactly one Wrap call and rewrites only the keyring
// file. Files are untouched and keep decrypting.
func (k *Keyring) Rewrap(ctx context.Context, w kek.Wrapper) error {
	k.update.Lock()
	defer k.update.Unlock()
	cur, err := k.current()
	if err != nil {
		return fmt.Errorf("dek.Rewrap: %w", err)
	}
	nf, krk, err := k.reseal(ctx, cur, w)
	if err != nil {
		return fmt.Errorf("dek.Rewrap: disk %q: %w", cur.DiskID, err)
	}
	if err := k.commit(nf, krk, nil); err != nil {
		clear(krk)
		return fmt.Errorf("dek.Rewrap: disk %q: %w", cur.DiskID, err)
	}
	return nil
}

// Retire removes DEK versions that no file uses any more; their keys are
// zeroed. The active version cannot be retired.
func (k *Keyring) Retire(versions ...uint32) error {
	k.update.Lock()
	defer k.update.Unlock()
	cur, err := k.current()
	if err != nil {
		return fmt.Errorf("dek.Retire: %w", err)
	}
	if slices.Contains(versions, cur.Active) {
		return fmt.Errorf("dek.Retire: version %d is active; rotate first", cur.Active)
	}
	var es []entry
	for _, e := range cur.Entries {
		if !slices.Contains(versions, e.Version) {
			es = append(es, e)
		}
	}
	nf := k.successor(cur, k.krk, cur.Wrapped, cur.Active, es, k.dek)
	return k.commit(nf, nil, func() {
		for _, v := range versions {
			clear(k.deks[v])
			delete(k.deks, v)
		}
	})
}

// current returns the file state, or why the keyring cannot be used.
func (k *Keyring) current() (*file, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.file, k.usable()
}

// usable reports why keys cannot be handed out; the caller holds k.mu.
func (k *Keyring) usable() error {
	switch {
	case k.closed:
		return ErrClosed
	case k.locked != nil:
		return k.locked
	}
	return nil
}

// Lock zeroes every key held in memory and makes later calls fail with an
// error wrapping reason (for instance kek.ErrRevoked) until Unlock. The
// keyring file is untouched. It is how a disk fails closed when its KEK is
// revoked.
func (k *Keyring) Lock(reason error) {
	k.update.Lock()
	defer k.update.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	for v, d := range k.deks {
		clear(d)
		delete(k.deks, v)
	}
	clear(k.krk)
	k.krk = nil
	k.locked = fmt.Errorf("keyring of disk %q is locked: %w", k.file.DiskID, reason)
}

// Unlock unwraps the keyring again with u (one KEK call) after Lock. It is
// a no-op on a keyring that is not locked.
func (k *Keyring) Unlock(ctx context.Context, u kek.Unwrapper) error {
	k.update.Lock()
	defer k.update.Unlock()
	k.mu.RLock()
	f, locked, closed := k.file, k.locked != nil, k.closed
	k.mu.RUnlock()
	if closed {
		return fmt.Errorf("dek.Unlock: %w", ErrClosed)
	}
	if !locked {
		return nil
	}
	krk, err := u.Unwrap(ctx, f.Wrapped)
	if err != nil {
		return fmt.Errorf("dek.Unlock: disk %q under %s: %w", f.DiskID, f.Wrapped.Descriptor, err)
	}
	deks, err := unseal(f, krk)
	if err != nil {
		clear(krk)
		return fmt.Errorf("dek.Unlock: disk %q: %w", f.DiskID, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.krk, k.deks, k.locked = krk, deks, nil
	return nil
}

// Probe checks that u can still unwrap this keyring (one KEK call) and
// discards the result. It is the KEK health check: it fails with the KEK's
// error (kek.ErrRevoked, kek.ErrUnavailable, ...) when access is gone.
func (k *Keyring) Probe(ctx context.Context, u kek.Unwrapper) error {
	k.mu.RLock()
	w := k.file.Wrapped
	k.mu.RUnlock()
	key, err := u.Unwrap(ctx, w)
	clear(key)
	if err != nil {
		return fmt.Errorf("dek.Probe: disk %q under %s: %w", k.diskID, w.Descriptor, err)
	}
	return nil
}

// Locked reports whether the keyring is locked by Lock.
func (k *Keyring) Locked() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.locked != nil
}

// commit writes nf durably, then swaps it in; krk, if not nil, replaces the
// keyring key; apply runs under the write lock after the swap.
func (k *Keyring) commit(nf *file, krk []byte, apply func()) error {
	b := nf.marshal()
	if err := atomicfile.WriteFile(k.opts.fs, k.path, b, 0o600); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.file, k.digest = nf, sha256.Sum256(b)
	if krk != nil {
		clear(k.krk)
		k.krk = krk
	}
	if apply != nil {
		apply()
	}
	return nil
}

// Close zeroes every key held in memory. Later calls fail with ErrClosed.
// Close is idempotent.
func (k *Keyring) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.zeroLocked()
	return nil
}

func (k *Keyring) zero() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.zeroLocked()
}

func (k *Keyring) zeroLocked() {
	for v, d := range k.deks {
		clear(d)
		delete(k.deks, v)
	}
	clear(k.krk)
	k.closed = true
}

// Descriptor returns the exact KEK version that wraps the keyring now.
func (k *Keyring) Descriptor() kek.Descriptor {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.file.Wrapped.Descriptor
}
