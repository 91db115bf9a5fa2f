package dek

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
)

// The keyring file layout is specified in FORMAT.md ("Keyring").
const (
	magic = "CCKEYRNG"
	// formatV1 stored no nonces (nonce = the DEK version): it is still
	// read, and rewritten as formatV2 by the next change.
	formatV1 = 1
	// formatV2 stores a random nonce beside every sealed DEK. Every file
	// this build writes is formatV2.
	formatV2   = 2
	macSize    = sha256.Size
	sealedSize = KeySize + 16
	nonceSize  = 12
	// MaxVersions bounds the DEK versions one keyring holds. Retire old
	// versions once no file uses them.
	MaxVersions = 1024
)

// entry is one DEK version as stored: sealed under the keyring key.
type entry struct {
	Version uint32
	Created int64  // Unix seconds
	Nonce   []byte // random, formatV2 only; nil: not (yet) sealed in formatV2
	Sealed  []byte
}

// file is the parsed, still-encrypted content of a keyring file.
type file struct {
	Format     uint16 // formatV1 or formatV2
	DiskID     string
	Generation uint64
	Wrapped    kek.Wrapped // the keyring key, wrapped by the KEK
	Active     uint32
	Entries    []entry
	MAC        []byte
}

// body serializes everything the MAC covers.
func (f *file) body() []byte {
	b := make([]byte, 0, 128+len(f.Wrapped.KeyID)+len(f.Wrapped.Ciphertext)+len(f.Entries)*(12+nonceSize+sealedSize))
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, f.Format)
	b = append(b, byte(len(f.DiskID)))
	b = append(b, f.DiskID...)
	b = binary.BigEndian.AppendUint64(b, f.Generation)
	b = append(b, byte(len(f.Wrapped.Kind)))
	b = append(b, f.Wrapped.Kind...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Wrapped.KeyID)))
	b = append(b, f.Wrapped.KeyID...)
	b = append(b, byte(len(f.Wrapped.Algorithm)))
	b = append(b, f.Wrapped.Algorithm...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Wrapped.Ciphertext)))
	b = append(b, f.Wrapped.Ciphertext...)
	b = binary.BigEndian.AppendUint32(b, f.Active)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.Entries)))
	for _, e := range f.Entries {
		b = binary.BigEndian.AppendUint32(b, e.Version)
		b = binary.BigEndian.AppendUint64(b, uint64(e.Created))
		if f.Format == formatV2 {
			b = append(b, e.Nonce...)
		}
		b = append(b, e.Sealed...)
	}
	return b
}

// marshal returns the whole file: body then MAC.
func (f *file) marshal() []byte { return append(f.body(), f.MAC...) }

// seal computes the MAC with the keyring's MAC key.
func (f *file) seal(macKey []byte) {
	m := hmac.New(sha256.New, macKey)
	m.Write(f.body())
	f.MAC = m.Sum(nil)
}

// verify checks the MAC in constant time.
func (f *file) verify(macKey []byte) bool {
	m := hmac.New(sha256.New, macKey)
	m.Write(f.body())
	return hmac.Equal(m.Sum(nil), f.MAC)
}

// reader is a bounds-checked big-endian decoder; the first short read sets
// err and every later read returns zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = integrity.ErrTruncated
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (r *reader) u32() uint32 {
	v := r.take(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *reader) u64() uint64 {
	v := r.take(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// parse decodes a keyring file without any key. It checks structure only;
// authenticity is checked by verify once the keyring key is unwrapped.
func parse(b []byte) (*file, error) {
	r := &reader{b: b}
	if m := r.take(len(magic)); r.err == nil && string(m) != magic {
		return nil, fmt.Errorf("not a cachecrypt keyring (bad magic): %w", integrity.ErrFormat)
	}
	f := &file{Format: uint16(r.u16())}
	if r.err == nil && f.Format != formatV1 && f.Format != formatV2 {
		return nil, fmt.Errorf("keyring format version %d, this build reads %d and %d: %w", f.Format, formatV1, formatV2, integrity.ErrVersion)
	}
	f.DiskID = string(r.take(r.u8()))
	f.Generation = r.u64()
	f.Wrapped.Kind = kek.Kind(r.take(r.u8()))
	f.Wrapped.KeyID = string(r.take(r.u16()))
	f.Wrapped.Algorithm = string(r.take(r.u8()))
	f.Wrapped.Ciphertext = r.take(r.u16())
	f.Active = r.u32()
	n := r.u16()
	for i := 0; i < n && r.err == nil; i++ {
		e := entry{Version: r.u32(), Created: int64(r.u64())}
		if f.Format == formatV2 {
			e.Nonce = r.take(nonceSize)
		}
		e.Sealed = r.take(sealedSize)
		f.Entries = append(f.Entries, e)
	}
	f.MAC = r.take(macSize)
	if r.err != nil {
		return nil, fmt.Errorf("keyring ends early: %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("keyring has %d unexpected trailing bytes: %w", len(r.b), integrity.ErrFormat)
	}
	return f, f.check()
}

// check validates field ranges and the version invariants: versions
// strictly increasing, the active version present and the newest.
func (f *file) check() error {
	switch {
	case f.DiskID == "":
		return fmt.Errorf("keyring has an empty disk id: %w", integrity.ErrFormat)
	case len(f.Entries) == 0 || len(f.Entries) > MaxVersions:
		return fmt.Errorf("keyring holds %d DEK versions, want 1 to %d: %w", len(f.Entries), MaxVersions, integrity.ErrFormat)
	case f.Wrapped.Validate() != nil || len(f.Wrapped.Ciphertext) == 0:
		return fmt.Errorf("keyring has an invalid KEK descriptor: %w", integrity.ErrFormat)
	}
	for i, e := range f.Entries {
		if e.Version == 0 || (i > 0 && e.Version <= f.Entries[i-1].Version) {
			return fmt.Errorf("keyring DEK versions are not strictly increasing: %w", integrity.ErrFormat)
		}
	}
	if f.Entries[len(f.Entries)-1].Version != f.Active {
		return fmt.Errorf("keyring active DEK version %d is not its newest: %w", f.Active, integrity.ErrFormat)
	}
	return nil
}
