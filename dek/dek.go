// Package dek holds a disk's data-encryption keys (DEKs): the per-disk
// keyring.
//
// A keyring holds one or more DEK versions, each a random 256-bit AES key.
// New files use the active (newest) version; older versions keep decrypting
// the files written under them until they are retired. The DEKs are sealed
// under a random keyring key, and only that keyring key is wrapped by the
// KEK, so opening a keyring makes exactly one KEK call whatever the number of
// versions, rotating a DEK makes none, and switching KEKs (Rewrap) makes one
// Wrap and touches a few hundred bytes. Rewrap always draws a fresh keyring
// key, so a copy of the old keyring opened with the old KEK never reveals a
// DEK created after the switch.
//
// Every DEK is sealed under a fresh random nonce stored beside it, never
// under a nonce computed from the keyring's content: so no (keyring key,
// nonce) pair ever seals two DEKs, even when an older keyring file is put
// back and rotated again, or a write fails after the file reached the disk.
//
// The keyring file is authenticated (HMAC-SHA256 under a key derived from the
// keyring key) and replaced atomically: a crash at any instant leaves the old
// or the new keyring, both loadable. It carries a generation, raised by every
// change; Generation and Digest identify the file last committed, so a caller
// that records them away from the disk can detect an older keyring put back.
// FORMAT.md specifies the layout (format 2; format 1 files still open and are
// rewritten in format 2 by their next change).
//
// Files never use a DEK directly: FileKey derives a per-file key with
// HKDF-SHA256 from the DEK, a random salt from the file's header, and the
// file's purpose, disk id and DEK version.
package dek

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
)

// KeySize is the size of a DEK and of every derived file key: AES-256.
const KeySize = 32

// Errors returned by this package, matched with errors.Is. Damaged keyrings
// also match integrity errors re-exported here.
var (
	// ErrExists is returned by Create when the keyring file already exists.
	ErrExists = errors.New("dek: keyring already exists")
	// ErrUnknownVersion means a file names a DEK version this keyring does
	// not hold: it was retired, or the file belongs to another keyring.
	ErrUnknownVersion = errors.New("dek: unknown DEK version")
	// ErrAuthentication: the keyring failed authentication.
	ErrAuthentication = integrity.ErrAuthentication
	// ErrTruncated: the keyring file ends early.
	ErrTruncated = integrity.ErrTruncated
	// ErrFormat: the keyring file is malformed.
	ErrFormat = integrity.ErrFormat
	// ErrVersion: the keyring file has a format version this build cannot read.
	ErrVersion = integrity.ErrVersion
	// ErrClosed: the keyring was closed.
	ErrClosed = integrity.ErrClosed
)

// Option configures Create and Open.
type Option func(*options)

type options struct {
	fs  atomicfile.FS
	now func() time.Time
}

// WithFS makes the keyring write through fsys; tests use it to inject
// failures at every step of an update.
func WithFS(fsys atomicfile.FS) Option { return func(o *options) { o.fs = fsys } }

func buildOptions(opts []Option) options {
	o := options{fs: atomicfile.OS, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Keyring is a disk's set of DEK versions, unwrapped in memory.
//
// All methods are safe for concurrent use. FileKey never blocks on a KEK call
// or on file I/O; RotateDEK, Rewrap and Retire are serialized with each other
// and swap the in-memory state only after the new file is durable.
type Keyring struct {
	path   string
	diskID string // never changes: read without the lock
	opts   options

	update sync.Mutex // serializes RotateDEK, Rewrap, Retire

	lastGen uint64 // highest generation written or tried; guarded by update

	mu     sync.RWMutex
	file   *file
	digest [32]byte          // SHA-256 of file as written
	krk    []byte            // keyring key
	deks   map[uint32][]byte // version -> DEK
	closed bool
	locked error // set by Lock: why keys are withheld
}

// Info describes a keyring without any secret.
type Info struct {
	Path       string
	DiskID     string
	KEK        kek.Descriptor // the exact KEK version that wraps the keyring
	Active     uint32         // DEK version new files use
	Versions   []uint32       // every DEK version held, oldest first
	Generation uint64         // incremented by every update of the file
	Digest     [32]byte       // SHA-256 of the keyring file's bytes
	// ActiveCreated is when the active DEK version was created.
	ActiveCreated time.Time
}

// ReadInfo parses a keyring file without unwrapping it, to learn which KEK
// it needs. Its content is not authenticated until Open.
func ReadInfo(path string) (Info, error) {
	f, digest, err := readFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("dek.ReadInfo: %w", err)
	}
	return f.info(path, digest), nil
}

func (f *file) info(path string, digest [32]byte) Info {
	in := Info{Path: path, DiskID: f.DiskID, KEK: f.Wrapped.Descriptor, Active: f.Active, Generation: f.Generation, Digest: digest}
	for _, e := range f.Entries {
		in.Versions = append(in.Versions, e.Version)
		if e.Version == f.Active {
			in.ActiveCreated = time.Unix(e.Created, 0)
		}
	}
	return in
}

// readFile parses the keyring at path and returns the SHA-256 of its bytes.
func readFile(path string) (*file, [32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, [32]byte{}, err
	}
	f, err := parse(b)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("keyring %s: %w; restore it from backup: without it the disk's data cannot be decrypted", path, err)
	}
	return f, sha256.Sum256(b), nil
}

// Create makes a new keyring for diskID at path with one fresh DEK, wrapped
// by w. It fails with ErrExists if path exists.
func Create(ctx context.Context, path, diskID string, w kek.Wrapper, opts ...Option) (*Keyring, error) {
	if diskID == "" || len(diskID) > 255 {
		return nil, fmt.Errorf("dek.Create: disk id must be 1 to 255 bytes, got %d", len(diskID))
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("dek.Create: %s: %w", path, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dek.Create: %w", err)
	}
	o := buildOptions(opts)
	k := &Keyring{path: path, diskID: diskID, opts: o, deks: map[uint32][]byte{1: randomKey()}}
	f := &file{Format: formatV2, DiskID: diskID, Active: 1}
	f.Entries = []entry{{Version: 1, Created: o.now().Unix()}}
	nf, krk, err := k.reseal(ctx, f, w)
	if err != nil {
		k.zero()
		return nil, fmt.Errorf("dek.Create: %w", err)
	}
	b := nf.marshal()
	if err := atomicfile.WriteFile(o.fs, path, b, 0o600); err != nil {
		k.zero()
		clear(krk)
		return nil, fmt.Errorf("dek.Create: %w", err)
	}
	k.file, k.krk, k.digest = nf, krk, sha256.Sum256(b)
	return k, nil
}

// Open reads the keyring at path and unwraps it with exactly one call to u.
func Open(ctx context.Context, path string, u kek.Unwrapper, opts ...Option) (*Keyring, error) {
	f, digest, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("dek.Open: %w", err)
	}
	krk, err := u.Unwrap(ctx, f.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("dek.Open: keyring %s (disk %q) under %s: %w", path, f.DiskID, f.Wrapped.Descriptor, err)
	}
	deks, err := unseal(f, krk)
	if err != nil {
		clear(krk)
		return nil, fmt.Errorf("dek.Open: keyring %s (disk %q): %w; restore it from backup", path, f.DiskID, err)
	}
	return &Keyring{path: path, diskID: f.DiskID, opts: buildOptions(opts), file: f, digest: digest, krk: krk, deks: deks}, nil
}

// unseal authenticates f under krk and opens every DEK.
func unseal(f *file, krk []byte) (map[uint32][]byte, error) {
	if len(krk) != KeySize {
		return nil, fmt.Errorf("unwrapped keyring key has %d bytes, want %d: %w", len(krk), KeySize, integrity.ErrAuthentication)
	}
	sealKey, macKey := subkeys(krk, f.Format, f.DiskID)
	defer clear(sealKey)
	defer clear(macKey)
	if !f.verify(macKey) {
		return nil, fmt.Errorf("keyring MAC mismatch: %w", integrity.ErrAuthentication)
	}
	g := newGCM(sealKey)
	deks := make(map[uint32][]byte, len(f.Entries))
	for _, e := range f.Entries {
		d, err := g.Open(nil, f.nonce(e), e.Sealed, entryAD(f.Format, f.DiskID, e.Version))
		if err != nil {
			for _, d := range deks {
				clear(d)
			}
			return nil, fmt.Errorf("DEK version %d: %w", e.Version, integrity.ErrAuthentication)
		}
		deks[e.Version] = d
	}
	return deks, nil
}

// successor builds the formatV2 file that follows cur: entries es, the
// active version active, the keyring key krk (wrapped as wrapped), and a
// generation above every one this Keyring has written or tried to write.
// An entry that holds a nonce was sealed under krk in formatV2 by an earlier
// commit and keeps its bytes; every other entry is sealed from dek(version)
// under a fresh random nonce. Nothing is ever sealed under a computed nonce,
// so no (keyring key, nonce) pair seals two values, whatever file was put
// back and whatever write failed. The caller holds k.update (or owns k).
func (k *Keyring) successor(cur *file, krk []byte, wrapped kek.Wrapped, active uint32, es []entry, dek func(uint32) []byte) *file {
	k.lastGen = max(k.lastGen, cur.Generation) + 1
	nf := &file{Format: formatV2, DiskID: cur.DiskID, Generation: k.lastGen, Wrapped: wrapped, Active: active}
	sealKey, macKey := subkeys(krk, formatV2, cur.DiskID)
	defer clear(sealKey)
	defer clear(macKey)
	g := newGCM(sealKey)
	nf.Entries = make([]entry, 0, len(es))
	for _, e := range es {
		if e.Nonce == nil {
			e.Nonce = make([]byte, nonceSize)
			rand.Read(e.Nonce)
			e.Sealed = g.Seal(nil, e.Nonce, dek(e.Version), entryAD(formatV2, cur.DiskID, e.Version))
		}
		nf.Entries = append(nf.Entries, e)
	}
	nf.seal(macKey)
	return nf
}

// reseal returns the successor of f with every DEK in k.deks sealed under a
// fresh keyring key wrapped by w, and that key.
func (k *Keyring) reseal(ctx context.Context, f *file, w kek.Wrapper) (*file, []byte, error) {
	krk := randomKey()
	wrapped, err := w.Wrap(ctx, krk)
	if err == nil {
		err = wrapped.Validate()
	}
	if err != nil {
		clear(krk)
		return nil, nil, fmt.Errorf("wrap keyring key: %w", err)
	}
	es := make([]entry, len(f.Entries))
	for i, e := range f.Entries {
		es[i] = entry{Version: e.Version, Created: e.Created} // sealed again under krk
	}
	return k.successor(f, krk, wrapped, f.Active, es, k.dek), krk, nil
}

// dek returns the DEK of version v; the caller holds k.update or k.mu.
func (k *Keyring) dek(v uint32) []byte { return k.deks[v] }

// subkeys derives the DEK-sealing key and the MAC key of a keyring format
// from the keyring key.
func subkeys(krk []byte, format uint16, diskID string) (sealKey, macKey []byte) {
	sealKey, _ = hkdf.Key(sha256.New, krk, nil, fmt.Sprintf("cachecrypt keyring seal v%d\x00%s", format, diskID), KeySize)
	macKey, _ = hkdf.Key(sha256.New, krk, nil, fmt.Sprintf("cachecrypt keyring mac v%d\x00%s", format, diskID), KeySize)
	return sealKey, macKey
}

// nonce returns the nonce e was sealed under: stored beside it in formatV2;
// in formatV1, eight zero bytes and the DEK version (read only: this build
// never seals under such a nonce).
func (f *file) nonce(e entry) []byte {
	if f.Format == formatV2 {
		return e.Nonce
	}
	n := make([]byte, nonceSize)
	binary.BigEndian.PutUint32(n[8:], e.Version)
	return n
}

func entryAD(format uint16, diskID string, v uint32) []byte {
	return binary.BigEndian.AppendUint32(fmt.Appendf(nil, "cachecrypt dek v%d\x00%s\x00", format, diskID), v)
}

func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

func randomKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}
