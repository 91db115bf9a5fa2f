package valuecrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cachecrypt/cachecrypt/kek"
)

// Value format, version 1 (all integers big-endian):
//
//	offset  size  field
//	0       1     version: 0xC1 (never the first byte of UTF-8 text)
//	1       4     key id of the keyset key that sealed the value
//	5       12    random nonce
//	17      n+16  AES-256-GCM ciphertext of the n plaintext bytes, and tag
//
// The associated data is
//
//	"cachecrypt/valuecrypt/v1" 0x00 || uvarint(len(context)) || context ||
//	version || key id || kind || uvarint(len(key)) || key ||
//	uvarint(len(field)) || field
//
// where kind is 's' for a string value and 'h' for a hash field.
const (
	versionV1  = 0xC1
	headerSize = 5
	nonceSize  = 12
	tagSize    = 16

	// Overhead is the number of bytes a sealed value adds to its plaintext.
	Overhead = headerSize + nonceSize + tagSize
)

var adLabel = []byte("cachecrypt/valuecrypt/v1\x00")

// reservedVersion reports whether b is a first byte this package keeps for
// its value formats: 0xC0, 0xC1 and 0xF5 to 0xFF never begin UTF-8 text.
func reservedVersion(b byte) bool { return b == 0xC0 || b == 0xC1 || b >= 0xF5 }

// Keyset format, version 1 (all integers big-endian):
//
//	magic "CVKS", version 0x01, generation (8 bytes),
//	KEK kind, key id, algorithm (each: 2-byte length, bytes),
//	wrapped keyset key (4-byte length, bytes),
//	nonce (12 bytes), sealed body (AES-256-GCM under the keyset key; the
//	associated data is every byte before the nonce)
//
// body: primary key id (4), name key (64, AES-SIV), key count (4), then per
// key: id (4) and AES-256 key (32), in increasing id order.
const (
	keysetMagic   = "CVKS"
	keysetVersion = 1
	nameKeySize   = 64
	valueKeySize  = 32
	maxKeys       = 1 << 16
)

// keysetBody is the secret part of a keyset.
type keysetBody struct {
	primary uint32
	nameKey []byte
	keys    []rawKey // increasing id
	buf     []byte   // the decrypted body the slices above point into
}

// wipe zeroes the key bytes of a body.
func (b *keysetBody) wipe() {
	clear(b.buf)
	clear(b.nameKey)
	for _, k := range b.keys {
		clear(k.key)
	}
}

type rawKey struct {
	id  uint32
	key []byte
}

func (b *keysetBody) marshal() []byte {
	out := binary.BigEndian.AppendUint32(nil, b.primary)
	out = append(out, b.nameKey...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(b.keys)))
	for _, k := range b.keys {
		out = binary.BigEndian.AppendUint32(out, k.id)
		out = append(out, k.key...)
	}
	return out
}

func parseBody(p []byte) (*keysetBody, error) {
	if len(p) < 4+nameKeySize+4 {
		return nil, errors.New("body truncated")
	}
	b := &keysetBody{primary: binary.BigEndian.Uint32(p), nameKey: p[4 : 4+nameKeySize]}
	n := binary.BigEndian.Uint32(p[4+nameKeySize:])
	p = p[8+nameKeySize:]
	if n == 0 || n > maxKeys || uint64(len(p)) != uint64(n)*(4+valueKeySize) {
		return nil, fmt.Errorf("body holds %d bytes for %d keys", len(p), n)
	}
	found := false
	for i := range int(n) {
		k := rawKey{id: binary.BigEndian.Uint32(p), key: p[4 : 4+valueKeySize]}
		if k.id == 0 || (i > 0 && k.id <= b.keys[i-1].id) {
			return nil, fmt.Errorf("key ids not increasing at key %d", i)
		}
		found = found || k.id == b.primary
		b.keys = append(b.keys, k)
		p = p[4+valueKeySize:]
	}
	if !found {
		return nil, fmt.Errorf("primary key %d is not in the keyset", b.primary)
	}
	return b, nil
}

// envelope is the public part of a stored keyset.
type envelope struct {
	generation uint64
	wrapped    kek.Wrapped
}

// seal returns the stored form of body under the keyset key sk.
func (e *envelope) seal(sk []byte, body *keysetBody) []byte {
	out := append([]byte(keysetMagic), keysetVersion)
	out = binary.BigEndian.AppendUint64(out, e.generation)
	for _, s := range []string{string(e.wrapped.Kind), e.wrapped.KeyID, e.wrapped.Algorithm} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(s)))
		out = append(out, s...)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(e.wrapped.Ciphertext)))
	out = append(out, e.wrapped.Ciphertext...)
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	plain := body.marshal()
	defer clear(plain)
	return gcm(sk).Seal(append(out, nonce...), nonce, plain, out)
}

// parseEnvelope reads the public part of a stored keyset and returns it
// with the associated data, nonce and sealed body.
func parseEnvelope(p []byte) (e envelope, ad, nonce, sealed []byte, err error) {
	r := p
	if len(r) < 5+8 || string(r[:4]) != keysetMagic {
		return e, nil, nil, nil, errors.New("not a valuecrypt keyset (bad magic)")
	}
	if r[4] != keysetVersion {
		return e, nil, nil, nil, fmt.Errorf("keyset format version %d is not supported; upgrade valuecrypt", r[4])
	}
	e.generation = binary.BigEndian.Uint64(r[5:])
	r = r[13:]
	var fields [3]string
	for i := range fields {
		if len(r) < 2 || len(r) < 2+int(binary.BigEndian.Uint16(r)) {
			return e, nil, nil, nil, errors.New("keyset header truncated")
		}
		n := int(binary.BigEndian.Uint16(r))
		fields[i], r = string(r[2:2+n]), r[2+n:]
	}
	e.wrapped.Descriptor = kek.Descriptor{Kind: kek.Kind(fields[0]), KeyID: fields[1], Algorithm: fields[2]}
	if len(r) < 4 || uint64(len(r)) < 4+uint64(binary.BigEndian.Uint32(r)) {
		return e, nil, nil, nil, errors.New("wrapped keyset key truncated")
	}
	n := int(binary.BigEndian.Uint32(r))
	e.wrapped.Ciphertext, r = r[4:4+n], r[4+n:]
	if len(r) < nonceSize+tagSize {
		return e, nil, nil, nil, errors.New("sealed keyset body truncated")
	}
	ad = p[:len(p)-len(r)]
	return e, ad, r[:nonceSize], r[nonceSize:], nil
}

// openBody authenticates and decrypts a keyset body with the keyset key.
func openBody(sk, ad, nonce, sealed []byte) (*keysetBody, error) {
	plain, err := gcm(sk).Open(nil, nonce, sealed, ad)
	if err != nil {
		return nil, errors.New("keyset body failed to authenticate (damaged, or sealed under another keyset key)")
	}
	b, err := parseBody(plain)
	if err != nil {
		clear(plain)
		return nil, err
	}
	b.buf = plain
	return b, nil
}

func gcm(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("valuecrypt: " + err.Error())
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic("valuecrypt: " + err.Error())
	}
	return g
}
