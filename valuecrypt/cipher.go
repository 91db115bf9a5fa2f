package valuecrypt

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Config selects how a Cipher binds and reads values.
type Config struct {
	// Context is bound into every value next to its key name: a database
	// number, a tenant, a cache name. A value sealed under one context
	// does not open under another. Empty is a valid context.
	Context string

	// Migration makes Open accept values written before encryption was
	// enabled: a value that is not a valuecrypt ciphertext is returned as
	// read, together with an error matching ErrPlaintext that flags it.
	// Off by default, because it lets anyone who can write to the cache
	// feed the application unauthenticated values. Turn it off again once
	// Reencrypt has converted every value.
	Migration bool

	// EncryptNames makes the go-redis adapter store key names and hash
	// field names encrypted with EncryptName.
	EncryptNames bool
}

// A Cipher seals and opens the values of one context with a Keyset. It is
// safe for concurrent use and makes no KEK call.
type Cipher struct {
	ks  *Keyset
	cfg Config
	ad  []byte // adLabel || uvarint(len(context)) || context: the fixed start of every value's associated data
}

// NewCipher returns a Cipher for the keys of ks and the context of cfg.
func NewCipher(ks *Keyset, cfg Config) *Cipher {
	ad := binary.AppendUvarint(append([]byte(nil), adLabel...), uint64(len(cfg.Context)))
	return &Cipher{ks: ks, cfg: cfg, ad: append(ad, cfg.Context...)}
}

// Keyset returns the keyset of the Cipher.
func (c *Cipher) Keyset() *Keyset { return c.ks }

// Config returns the configuration of the Cipher.
func (c *Cipher) Config() Config { return c.cfg }

const (
	kindString = 's'
	kindField  = 'h'
)

// Seal encrypts the string value of key under the primary key, bound to
// key and to the context.
func (c *Cipher) Seal(key string, plaintext []byte) ([]byte, error) {
	out, err := c.seal(kindString, key, "", plaintext)
	if err != nil {
		return nil, fmt.Errorf("valuecrypt.Seal: key %q: %w", key, err)
	}
	return out, nil
}

// SealField encrypts the value of field in the hash key, bound to both and
// to the context.
func (c *Cipher) SealField(key, field string, plaintext []byte) ([]byte, error) {
	out, err := c.seal(kindField, key, field, plaintext)
	if err != nil {
		return nil, fmt.Errorf("valuecrypt.SealField: key %q field %q: %w", key, field, err)
	}
	return out, nil
}

// Open decrypts the string value of key. See OpenField for the errors.
func (c *Cipher) Open(ctx context.Context, key string, value []byte) ([]byte, error) {
	out, err := c.open(ctx, kindString, key, "", value)
	if err != nil {
		return out, fmt.Errorf("valuecrypt.Open: key %q: %w", key, err)
	}
	return out, nil
}

// OpenField decrypts the value of field in the hash key. It returns an
// error matching ErrAuthentication for a value altered, truncated or
// sealed for another key, field or context; ErrPlaintext for a value that
// was never encrypted (with Config.Migration, together with the value);
// ErrUnknownKey for a key id the keyset lacks even after one reload;
// ErrUnsupportedVersion for a newer format. It never returns a wrong
// plaintext.
func (c *Cipher) OpenField(ctx context.Context, key, field string, value []byte) ([]byte, error) {
	out, err := c.open(ctx, kindField, key, field, value)
	if err != nil {
		return out, fmt.Errorf("valuecrypt.OpenField: key %q field %q: %w", key, field, err)
	}
	return out, nil
}

func (c *Cipher) seal(kind byte, key, field string, plaintext []byte) ([]byte, error) {
	st := c.ks.state.Load()
	if st == nil {
		return nil, ErrClosed
	}
	k := st.primary
	// One allocation: the value, then the associated data in the spare
	// tail, cut off from the returned slice's capacity.
	n := Overhead + len(plaintext)
	buf := make([]byte, n+c.adSize(key, field))
	buf[0] = versionV1
	binary.BigEndian.PutUint32(buf[1:], k.id)
	rand.Read(buf[headerSize : headerSize+nonceSize])
	ad := c.appendAD(buf[n:n], buf[:headerSize], kind, key, field)
	out := k.aead.Seal(buf[:headerSize+nonceSize], buf[headerSize:headerSize+nonceSize], plaintext, ad)
	return out[:n:n], nil
}

func (c *Cipher) open(ctx context.Context, kind byte, key, field string, value []byte) ([]byte, error) {
	if len(value) == 0 || !reservedVersion(value[0]) {
		return c.plaintext(value)
	}
	if value[0] != versionV1 {
		return nil, fmt.Errorf("%w: 0x%02x; upgrade valuecrypt in this application to read it", ErrUnsupportedVersion, value[0])
	}
	if len(value) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte minimum (truncated)", ErrAuthentication, len(value), Overhead)
	}
	k, err := c.ks.lookup(ctx, binary.BigEndian.Uint32(value[1:]))
	if err != nil {
		return nil, err
	}
	n := len(value) - Overhead
	buf := make([]byte, n+c.adSize(key, field))
	ad := c.appendAD(buf[n:n], value[:headerSize], kind, key, field)
	out, err := k.aead.Open(buf[:0], value[headerSize:headerSize+nonceSize], value[headerSize+nonceSize:], ad)
	if err != nil {
		clear(buf)
		return nil, fmt.Errorf("%w; if it was moved with RENAME or COPY or comes from another context, write it again under its own name", ErrAuthentication)
	}
	return out[:n:n], nil
}

func (c *Cipher) plaintext(value []byte) ([]byte, error) {
	if !c.cfg.Migration {
		return nil, fmt.Errorf("%w: it has no valuecrypt header (written before encryption was enabled?); to read such values while migrating, set Config.Migration and run Reencrypt", ErrPlaintext)
	}
	return value, fmt.Errorf("%w: read in migration mode; write it again, or run Reencrypt, to encrypt it", ErrPlaintext)
}

// adSize bounds the size of the associated data of a value.
func (c *Cipher) adSize(key, field string) int {
	return len(c.ad) + headerSize + 1 + 2*binary.MaxVarintLen64 + len(key) + len(field)
}

// appendAD appends the associated data of a value to dst.
func (c *Cipher) appendAD(dst, header []byte, kind byte, key, field string) []byte {
	ad := append(dst, c.ad...)
	ad = append(ad, header...)
	ad = append(ad, kind)
	ad = binary.AppendUvarint(ad, uint64(len(key)))
	ad = append(ad, key...)
	ad = binary.AppendUvarint(ad, uint64(len(field)))
	return append(ad, field...)
}

// KeyID returns the id of the key that sealed value, and false when value
// is not a version-1 valuecrypt ciphertext.
func KeyID(value []byte) (uint32, bool) {
	if len(value) < Overhead || value[0] != versionV1 {
		return 0, false
	}
	return binary.BigEndian.Uint32(value[1:]), true
}

// Stale reports whether value should be sealed again: it is sealed under a
// key older than the current primary, or (with Config.Migration) it is a
// plaintext from before encryption. A value under a newer key than this
// process knows is not stale: sealing it again here would move it back to
// an older key. Stale does not authenticate value.
func (c *Cipher) Stale(value []byte) bool {
	st := c.ks.state.Load()
	if st == nil {
		return false
	}
	if len(value) == 0 || !reservedVersion(value[0]) {
		return c.cfg.Migration
	}
	id, ok := KeyID(value)
	return ok && id < st.primary.id
}

// EncryptName encrypts a key or field name deterministically with AES-SIV
// (Tink's deterministic AEAD), bound to the context, and encodes it in
// unpadded URL-safe base64, so the same name always maps to the same
// stored name and can still be looked up.
//
// It hides the name but leaks equality (two equal names give equal
// results, within one context), the length of the name to the byte, and
// anything the access pattern of the name reveals. Cluster hash tags
// ({...}) do not survive encryption. The name key is fixed for the life of
// the keyset: Rotate does not change it.
func (c *Cipher) EncryptName(name string) (string, error) {
	st := c.ks.state.Load()
	if st == nil {
		return "", fmt.Errorf("valuecrypt.EncryptName: %w", ErrClosed)
	}
	ct, err := st.names.EncryptDeterministically([]byte(name), c.nameAD())
	if err != nil {
		return "", fmt.Errorf("valuecrypt.EncryptName: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(ct), nil
}

// DecryptName reverses EncryptName. It fails with an error matching
// ErrAuthentication for a name not produced by EncryptName under this
// keyset and context.
func (c *Cipher) DecryptName(stored string) (string, error) {
	st := c.ks.state.Load()
	if st == nil {
		return "", fmt.Errorf("valuecrypt.DecryptName: %w", ErrClosed)
	}
	ct, err := base64.RawURLEncoding.DecodeString(stored)
	if err != nil {
		return "", fmt.Errorf("valuecrypt.DecryptName: %q is not an encrypted name: %w", stored, errors.Join(ErrAuthentication, err))
	}
	pt, err := st.names.DecryptDeterministically(ct, c.nameAD())
	if err != nil {
		return "", fmt.Errorf("valuecrypt.DecryptName: %q: %w", stored, ErrAuthentication)
	}
	return string(pt), nil
}

func (c *Cipher) nameAD() []byte {
	ad := append([]byte("cachecrypt/valuecrypt/name/v1\x00"), c.cfg.Context...)
	return ad
}
