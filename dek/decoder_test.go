package dek_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cachecrypt/cachecrypt/kek"
)

// This file reads keyring files as FORMAT.md ("Keyring") specifies,
// independently of package dek: the tests use it to pin the committed
// vectors and to look at the nonces the package writes.

// rawEntry is one DEK entry as stored.
type rawEntry struct {
	Version uint32
	Created uint64
	Nonce   []byte // stored in v2; derived from the version in v1
	Sealed  []byte
}

// rawKeyring is a keyring file decoded without any key.
type rawKeyring struct {
	Format     uint16
	DiskID     string
	Generation uint64
	Wrapped    kek.Wrapped
	Active     uint32
	Entries    []rawEntry
	Body, MAC  []byte
}

// decodeKeyring parses versions 1 and 2 of the keyring layout.
func decodeKeyring(b []byte) (kr rawKeyring, err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("keyring ends early")
		}
	}()
	if len(b) < 32 {
		return kr, errors.New("short keyring")
	}
	kr.Body, kr.MAC = b[:len(b)-32], b[len(b)-32:]
	p := kr.Body
	take := func(n int) []byte { x := p[:n:n]; p = p[n:]; return x }
	u8 := func() int { return int(take(1)[0]) }
	u16 := func() int { return int(binary.BigEndian.Uint16(take(2))) }
	if string(take(8)) != "CCKEYRNG" {
		return kr, errors.New("bad magic")
	}
	kr.Format = uint16(u16())
	if kr.Format != 1 && kr.Format != 2 {
		return kr, fmt.Errorf("keyring format %d", kr.Format)
	}
	kr.DiskID = string(take(u8()))
	kr.Generation = binary.BigEndian.Uint64(take(8))
	kr.Wrapped.Kind = kek.Kind(take(u8()))
	kr.Wrapped.KeyID = string(take(u16()))
	kr.Wrapped.Algorithm = string(take(u8()))
	kr.Wrapped.Ciphertext = take(u16())
	kr.Active = binary.BigEndian.Uint32(take(4))
	n := u16()
	for range n {
		e := rawEntry{Version: binary.BigEndian.Uint32(take(4)), Created: binary.BigEndian.Uint64(take(8))}
		if kr.Format == 1 {
			e.Nonce = make([]byte, 12)
			binary.BigEndian.PutUint32(e.Nonce[8:], e.Version)
		} else {
			e.Nonce = take(12)
		}
		e.Sealed = take(48)
		kr.Entries = append(kr.Entries, e)
	}
	if len(p) != 0 {
		return kr, errors.New("trailing bytes")
	}
	return kr, nil
}

// sealKey derives the DEK-sealing key of kr's format from the keyring key.
func (kr rawKeyring) sealKey(krk []byte) []byte {
	k, _ := hkdf.Key(sha256.New, krk, nil, fmt.Sprintf("cachecrypt keyring seal v%d\x00%s", kr.Format, kr.DiskID), 32)
	return k
}

// open unwraps kr's keyring key with u, checks the MAC and opens every DEK.
func (kr rawKeyring) open(ctx context.Context, u kek.Unwrapper) (krk []byte, deks map[uint32][]byte, err error) {
	krk, err = u.Unwrap(ctx, kr.Wrapped)
	if err != nil {
		return nil, nil, err
	}
	macKey, _ := hkdf.Key(sha256.New, krk, nil, fmt.Sprintf("cachecrypt keyring mac v%d\x00%s", kr.Format, kr.DiskID), 32)
	m := hmac.New(sha256.New, macKey)
	m.Write(kr.Body)
	if !hmac.Equal(m.Sum(nil), kr.MAC) {
		return nil, nil, errors.New("keyring MAC mismatch")
	}
	blk, _ := aes.NewCipher(kr.sealKey(krk))
	g, _ := cipher.NewGCM(blk)
	deks = map[uint32][]byte{}
	for _, e := range kr.Entries {
		ad := binary.BigEndian.AppendUint32(fmt.Appendf(nil, "cachecrypt dek v%d\x00%s\x00", kr.Format, kr.DiskID), e.Version)
		d, err := g.Open(nil, e.Nonce, e.Sealed, ad)
		if err != nil {
			return nil, nil, fmt.Errorf("DEK version %d: %w", e.Version, err)
		}
		deks[e.Version] = d
	}
	return krk, deks, nil
}
