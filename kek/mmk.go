package kek

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// AlgorithmMMK is the wrapping algorithm of the MMK: Tink AEAD with
// AES-256-GCM keys, ciphertexts prefixed with the Tink key id.
const AlgorithmMMK = "TINK-AES256-GCM"

// mmkAssociatedData binds MMK ciphertexts to their use.
var mmkAssociatedData = []byte("cachecrypt mmk wrap v1")

// mmkFingerprintLabel is the fixed message of a key version's fingerprint.
const mmkFingerprintLabel = "cachecrypt mmk fingerprint v1\x00"

// MMK is the platform-managed key: a Tink AES-256-GCM keyset with one primary
// key and any number of older keys, so the platform can rotate it while keys
// wrapped under older versions keep unwrapping. It needs no setup: LoadMMK
// creates the key file on first use.
//
// An MMK is known by its keyset, not by its name or file: the key id of
// its Descriptor is "mmk/NAME/fp-FINGERPRINT/KEYID", where KEYID is the Tink
// id of the primary key version (8 hex digits) and FINGERPRINT (32 hex
// digits) the first 16 bytes of HMAC-SHA256 keyed with that version's key
// material over a fixed label: it identifies the key without revealing it.
// NAME is a label for people; Unwrap ignores it. So a renamed copy of a
// keyset unwraps what the original wrapped, and another keyset answers
// ErrKeyMismatch whatever its file is called. Key ids of earlier releases,
// "mmk/NAME/KEYID", still unwrap with any keyset holding version KEYID.
//
// An MMK is safe for concurrent use.
type MMK struct {
	name string // label of the platform key, part of every key id
	path string // key file, or "" for an MMK held only in memory

	mu     sync.RWMutex
	handle *keyset.Handle
	aead   tink.AEAD
	fps    map[uint32]string // Tink key id -> fingerprint, hex
}

// NewMMK generates a new platform key held only in memory. Name identifies
// it in descriptors; use Keyset to persist it.
func NewMMK(name string) (*MMK, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("kek.NewMMK: %w", err)
	}
	return newMMK(name, "", h)
}

// ParseMMK loads a platform key from a serialized Tink keyset (binary
// protobuf, as written by Keyset).
func ParseMMK(name string, serialized []byte) (*MMK, error) {
	h, err := insecurecleartextkeyset.Read(keyset.NewBinaryReader(bytes.NewReader(serialized)))
	if err != nil {
		return nil, fmt.Errorf("kek.ParseMMK: keyset is not a valid Tink keyset: %w", err)
	}
	return newMMK(name, "", h)
}

// LoadMMK loads the platform key kept in path, creating it with mode 0600 if
// the file does not exist. The key's name is the file's base name without
// extension; it is a label only (see MMK). The file holds key material: keep
// it on the platform's protected disk and out of backups that leave it.
func LoadMMK(path string) (*MMK, error) {
	name := filepath.Base(path)
	name = name[:len(name)-len(filepath.Ext(name))]
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		m, err := NewMMK(name)
		if err != nil {
			return nil, err
		}
		m.path = path
		if err := m.save(); err != nil {
			return nil, fmt.Errorf("kek.LoadMMK: %w", err)
		}
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kek.LoadMMK: %w", err)
	}
	m, err := ParseMMK(name, data)
	if err != nil {
		return nil, fmt.Errorf("kek.LoadMMK: %s: %w", path, err)
	}
	m.path = path
	return m, nil
}

func newMMK(name, path string, h *keyset.Handle) (*MMK, error) {
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("kek: MMK keyset is not an AEAD keyset: %w", err)
	}
	return &MMK{name: name, path: path, handle: h, aead: a, fps: fingerprints(h)}, nil
}

// fingerprints returns the fingerprint of every key version in h: the first
// 16 bytes, in hex, of HMAC-SHA256 keyed with the version's serialized key
// material, over the fixed label, the key's type URL and its Tink key id.
func fingerprints(h *keyset.Handle) map[uint32]string {
	fps := map[uint32]string{}
	for _, k := range insecurecleartextkeyset.KeysetMaterial(h).GetKey() {
		mac := hmac.New(sha256.New, k.GetKeyData().GetValue())
		mac.Write([]byte(mmkFingerprintLabel + k.GetKeyData().GetTypeUrl() + "\x00"))
		mac.Write(binary.BigEndian.AppendUint32(nil, k.GetKeyId()))
		fps[k.GetKeyId()] = hex.EncodeToString(mac.Sum(nil)[:16])
	}
	return fps
}

// Keyset returns the serialized keyset (binary protobuf). It is secret.
func (m *MMK) Keyset() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.keyset()
}

func (m *MMK) keyset() []byte {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(m.handle, keyset.NewBinaryWriter(&buf)); err != nil {
		panic("kek: serializing a valid keyset failed: " + err.Error())
	}
	return buf.Bytes()
}

// save writes the keyset to the key file; the caller holds m.mu.
func (m *MMK) save() error {
	if m.path == "" {
		return nil
	}
	if err := atomicfile.WriteFile(atomicfile.OS, m.path, m.keyset(), 0o600); err != nil {
		return fmt.Errorf("save platform key %s: %w", m.path, err)
	}
	return nil
}

// Descriptor returns the descriptor of the current primary key version.
func (m *MMK) Descriptor() Descriptor {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.descriptor()
}

func (m *MMK) descriptor() Descriptor {
	id := m.handle.KeysetInfo().GetPrimaryKeyId()
	return Descriptor{Kind: KindMMK, KeyID: fmt.Sprintf("mmk/%s/fp-%s/%08x", m.name, m.fps[id], id), Algorithm: AlgorithmMMK}
}

// parseMMKKeyID returns the Tink key id and the fingerprint a descriptor
// names ("" for a key id of an earlier release, which has none).
func parseMMKKeyID(d Descriptor) (id uint32, fp string, ok bool) {
	parts := strings.Split(d.KeyID, "/")
	if d.Kind != KindMMK || len(parts) < 3 || parts[0] != "mmk" {
		return 0, "", false
	}
	last := parts[len(parts)-1]
	n, err := strconv.ParseUint(last, 16, 32)
	if err != nil || len(last) != 8 {
		return 0, "", false
	}
	if f, found := strings.CutPrefix(parts[len(parts)-2], "fp-"); found && len(parts) >= 4 {
		fp = f
	}
	return uint32(n), fp, true
}

// holds reports whether the keyset holds the key version a descriptor
// names; the caller holds m.mu.
func (m *MMK) holds(d Descriptor) bool {
	id, fp, ok := parseMMKKeyID(d)
	if !ok {
		return false
	}
	have, found := m.fps[id]
	return found && (fp == "" || hmac.Equal([]byte(fp), []byte(have)))
}

// Rotate adds a new primary key version. Keys wrapped under older versions
// keep unwrapping. A file-backed MMK saves the new keyset atomically.
func (m *MMK) Rotate() (Descriptor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mgr := keyset.NewManagerFromHandle(m.handle)
	id, err := mgr.Add(aead.AES256GCMKeyTemplate())
	if err == nil {
		err = mgr.SetPrimary(id)
	}
	h, herr := mgr.Handle()
	if err == nil {
		err = herr
	}
	if err != nil {
		return Descriptor{}, fmt.Errorf("kek.MMK.Rotate: %w", err)
	}
	a, err := aead.New(h)
	if err != nil {
		return Descriptor{}, fmt.Errorf("kek.MMK.Rotate: %w", err)
	}
	old, oldAEAD, oldFPs := m.handle, m.aead, m.fps
	m.handle, m.aead, m.fps = h, a, fingerprints(h)
	if err := m.save(); err != nil {
		m.handle, m.aead, m.fps = old, oldAEAD, oldFPs
		return Descriptor{}, fmt.Errorf("kek.MMK.Rotate: %w", err)
	}
	return m.descriptor(), nil
}

// Wrap seals key under the primary key version.
func (m *MMK) Wrap(_ context.Context, key []byte) (Wrapped, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ct, err := m.aead.Encrypt(key, mmkAssociatedData)
	if err != nil {
		return Wrapped{}, fmt.Errorf("kek.MMK.Wrap: %w", err)
	}
	return Wrapped{Descriptor: m.descriptor(), Ciphertext: ct}, nil
}

// Unwrap opens a key wrapped by this MMK under any of its key versions. A
// descriptor naming a key version this keyset does not hold (by Tink key id
// and fingerprint; the name is ignored) fails with ErrKeyMismatch.
func (m *MMK) Unwrap(_ context.Context, w Wrapped) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.holds(w.Descriptor) {
		return nil, fmt.Errorf("kek.MMK.Unwrap: wrapped by %s, a key version platform key %q does not hold (another keyset): %w", w.Descriptor, m.name, ErrKeyMismatch)
	}
	key, err := m.aead.Decrypt(w.Ciphertext, mmkAssociatedData)
	if err != nil {
		return nil, fmt.Errorf("kek.MMK.Unwrap: %s: %w", w.Descriptor, ErrUnwrap)
	}
	return key, nil
}
