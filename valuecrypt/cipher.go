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
// key and to the context. It counts the seal against the primary key (see
// Keyset.Seals) and fails with an error matching ErrSealLimit once this
// process has sealed SealLimit values under it, or ErrClosed after the
// keyset's Close.
func (c *Cipher) Seal(key string, plaintext []byte) ([]byte, error) {
	out, err := c.seal(nil, kindString, key, "", plaintext)
	if err != nil {
		return nil, fmt.Errorf("valuecrypt.Seal: key %q: %w", key, err)
	}
	return out[:len(out):len(out)], nil
}

// AppendSeal is Seal appending the sealed value to dst: with enough spare
// capacity in dst it allocates nothing, so a caller can reuse one buffer
// for many values. It may write scratch bytes (the associated data) into
// the capacity past the returned slice's length. plaintext must not
// overlap dst's capacity.
func (c *Cipher) AppendSeal(dst []byte, key string, plaintext []byte) ([]byte, error) {
	out, err := c.seal(dst, kindString, key, "", plaintext)
	if err != nil {
		return dst, fmt.Errorf("valuecrypt.AppendSeal: key %q: %w", key, err)
	}
	return out, nil
}

// SealField encrypts the value of field in the hash key, bound to both and
// to the context.
func (c *Cipher) SealField(key, field string, plaintext []byte) ([]byte, error) {
	out, err := c.seal(nil, kindField, key, field, plaintext)
	if err != nil {
		return nil, fmt.Errorf("valuecrypt.SealField: key %q field %q: %w", key, field, err)
	}
	return out[:len(out):len(out)], nil
}

// AppendSealField is SealField appending to dst, as AppendSeal.
func (c *Cipher) AppendSealField(dst []byte, key, field string, plaintext []byte) ([]byte, error) {
	out, err := c.seal(dst, kindField, key, field, plaintext)
	if err != nil {
		return dst, fmt.Errorf("valuecrypt.AppendSealField: key %q field %q: %w", key, field, err)
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

// seal appends the sealed value to dst, with its associated data in the
// capacity past it.
func (c *Cipher) seal(dst []byte, kind byte, key, field string, plaintext []byte) ([]byte, error) {
	st := c.ks.state.Load()
	if st == nil {
		return nil, ErrClosed
	}
	k := st.primary
	if err := c.ks.count(k); err != nil {
		return nil, err
	}
	// One allocation at most: the value, then the associated data in the
	// spare tail.
	n := Overhead + len(plaintext)
	need := n + c.adSize(key, field)
	if cap(dst)-len(dst) < need {
		grown := make([]byte, len(dst), len(dst)+need)
		copy(grown, dst)
		dst = grown
	}
	buf := dst[len(dst) : len(dst)+need]
	buf[0] = versionV1
	binary.BigEndian.PutUint32(buf[1:], k.id)
	nonce := buf[headerSize : headerSize+nonceSize]
	rand.Read(nonce)
	ad := c.putAD(buf[n:], buf[:headerSize], kind, key, field)
	k.aead.Seal(buf[:headerSize+nonceSize], nonce, plaintext, ad)
	return dst[:len(dst)+n], nil
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
	// One allocation, as in seal: the plaintext, then the associated data.
	n := len(value) - Overhead
	buf := make([]byte, n+c.adSize(key, field))
	ad := c.putAD(buf[n:], value[:headerSize], kind, key, field)
	if _, err := k.aead.Open(buf[:0], value[headerSize:headerSize+nonceSize], value[headerSize+nonceSize:], ad); err != nil {
		clear(buf)
		return nil, fmt.Errorf("%w; if it was moved with RENAME or COPY or comes from another context, write it again under its own name", ErrAuthentication)
	}
	return buf[:n:n], nil
}

func (c *Cipher) plaintext(value []byte) ([]byte, error) {
	if !c.cfg.Migration {
		return nil, fmt.Errorf("%w: it has no valuecrypt header (written before encryption was enabled?); to read such values while migrating, set Config.Migration and run Reencrypt", ErrPlaintext)
	}
	return value, fmt.Errorf("%w: read in migration mode; write it again, or run Reencrypt, to encrypt it", ErrPlaintext)
}

// adSize returns the size of the associated data of a value.
func (c *Cipher) adSize(key, field string) int {
	return len(c.ad) + headerSize + 1 + uvarintLen(len(key)) + len(key) + uvarintLen(len(field)) + len(field)
}

// putAD writes the associated data of a value at the start of dst, which
// holds at least adSize bytes, and returns it.
func (c *Cipher) putAD(dst, header []byte, kind byte, key, field string) []byte {
	i := copy(dst, c.ad)
	h := dst[i : i+headerSize+1]
	h[0], h[1], h[2], h[3], h[4], h[5] = header[0], header[1], header[2], header[3], header[4], kind
	i += headerSize + 1
	i = putString(dst, i, key)
	return dst[:putString(dst, i, field)]
}

// putString writes uvarint(len(s)) || s at dst[i:] and returns the index
// after it.
func putString(dst []byte, i int, s string) int {
	if len(s) < 0x80 {
		dst[i] = byte(len(s))
		i++
	} else {
		i += binary.PutUvarint(dst[i:], uint64(len(s)))
	}
	return i + copy(dst[i:], s)
}

// uvarintLen returns the size of the uvarint encoding of n.
func uvarintLen(n int) int {
	size := 1
	for ; n >= 0x80; n >>= 7 {
		size++
	}
	return size
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
