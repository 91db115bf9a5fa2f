// Package pkcs11 is a customer-managed key-encryption key held in an HSM: an
// RSA key pair in a PKCS#11 token, reached through
// github.com/ThalesGroup/crypto11.
//
// Wrap encrypts with the public key in software (RSA-OAEP, no label); Unwrap
// decrypts inside the token, so the private key never leaves it. Keys are
// addressed by an RFC 7512 PKCS#11 URI, for example
//
//	pkcs11:token=cache;object=disk-kek;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cachecrypt/pin
//
// The PIN comes from a file (pin-source=file:...) or an environment variable
// (pin-source=env:NAME, a cachecrypt extension), never from the URI itself,
// and never appears in an error.
//
// The OAEP hash is SHA-256 where the token supports it. SoftHSM2 2.6 accepts
// only SHA-1 with an empty label, so Open probes the token and falls back to
// SHA-1 unless WithOAEPHash fixes the choice. The hash is recorded in every
// wrapped key's Descriptor.Algorithm, and Unwrap always uses the recorded
// one.
//
// The descriptor's KeyID is the canonical URI path of the key as the token
// stores it (token label or serial, the key's CKA_LABEL and CKA_ID) plus
// ";x-spki-sha256=" and the first 16 bytes, in hex, of the SHA-256 of the
// public key's PKIX encoding: a key regenerated under the same label and id
// is another key, and Unwrap reports kek.ErrKeyMismatch for it without a
// token call. The KeyID never holds the module path or the PIN source.
//
// # Failures
//
// Open logs in exactly once. A refused PIN (ErrPINIncorrect) is never
// retried, because real HSMs lock the user after a few failures. When the
// token goes away under an open KEK (pulled out, deleted, reinitialised),
// Unwrap fails with ErrTokenRemoved, a kek.ErrUnavailable; each later Unwrap
// makes one reconnect attempt (one login, serialised between goroutines)
// until the token is back. PKCS#11 login state belongs to the process, so
// while one KEK is logged in the token would take any PIN from a second Open:
// the package keeps a keyed hash of the PIN each token was logged in with and
// refuses a different one with ErrPINIncorrect, without a login call.
// A reconnect whose login is refused latches
// ErrPINIncorrect: the KEK never logs in again and must be reopened. A
// reconnect that finds another key under the URI fails with
// kek.ErrKeyMismatch.
//
// crypto11 loads a module once per process and shares it between KEKs.
// SoftHSM2 only sees a restored token after the module is reinitialised,
// which happens once every KEK using the module has dropped its connection:
// until then, a KEK whose sibling has not yet seen the loss keeps reporting
// ErrTokenRemoved (see TestTokenRemovedTwoKEKs). Whether another module
// sees a returning token without being reinitialised depends on the module.
package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/cachecrypt/cachecrypt/kek"
	p11 "github.com/miekg/pkcs11"
)

// Wrapping algorithms recorded in Descriptor.Algorithm.
const (
	AlgorithmOAEPSHA256 = "RSA-OAEP-SHA256" // RSA-OAEP, SHA-256 and MGF1-SHA-256, empty label
	AlgorithmOAEPSHA1   = "RSA-OAEP-SHA1"   // RSA-OAEP, SHA-1 and MGF1-SHA-1, empty label
)

// hashOf returns the OAEP hash of a recorded algorithm.
func hashOf(alg string) (crypto.Hash, bool) {
	switch alg {
	case AlgorithmOAEPSHA256:
		return crypto.SHA256, true
	case AlgorithmOAEPSHA1:
		return crypto.SHA1, true
	}
	return 0, false
}

func algorithmOf(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return AlgorithmOAEPSHA1
	}
	return AlgorithmOAEPSHA256
}

// An Option configures Open and GenerateKey.
type Option func(*options) error

type options struct {
	hash        crypto.Hash // 0: probe the token
	maxSessions int
}

// WithOAEPHash fixes the OAEP hash Wrap uses (crypto.SHA256 or crypto.SHA1)
// instead of probing the token. Unwrap still uses the hash recorded in each
// wrapped key.
func WithOAEPHash(h crypto.Hash) Option {
	return func(o *options) error {
		if h != crypto.SHA256 && h != crypto.SHA1 {
			return fmt.Errorf("OAEP hash %v is not supported; use crypto.SHA256 or crypto.SHA1", h)
		}
		o.hash = h
		return nil
	}
}

// WithMaxSessions bounds the sessions the KEK opens on the token (at least
// 2; default: crypto11's default, capped by the token). Use it when other
// applications share the token.
func WithMaxSessions(n int) Option {
	return func(o *options) error {
		if n < 2 {
			return fmt.Errorf("max sessions %d must be at least 2", n)
		}
		o.maxSessions = n
		return nil
	}
}

// KEK is a key-encryption key held in a PKCS#11 token. It is safe for
// concurrent use: Unwraps share crypto11's session pool and run in parallel
// on as many sessions as the token allows.
type KEK struct {
	uri   URI
	opts  options
	keyID string
	alg   string
	pub   *rsa.PublicKey

	mu     sync.Mutex
	conn   *conn // nil after the token went away, until a reconnect
	pinErr error // a refused login: never log in again
	closed bool
}

// conn is one logged-in crypto11 context and the private key found in it.
type conn struct {
	ctx *session
	key crypto11.SignerDecrypter
}

// Open logs in to the token named by uri (once: a refused PIN is never
// retried) and finds the one RSA key pair it names. It fails with
// ErrModuleNotFound, ErrTokenNotFound, ErrPINIncorrect, ErrKeyNotFound or
// ErrAmbiguousKey. Close the KEK to log out and release the module.
func Open(ctx context.Context, uri string, opts ...Option) (*KEK, error) {
	k, err := open(ctx, uri, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11.Open: %w", err)
	}
	return k, nil
}

func open(ctx context.Context, uri string, opts []Option) (*KEK, error) {
	u, o, err := parse(uri, opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := connect(u, o)
	if err != nil {
		return nil, err
	}
	k, err := newKEK(c, u, o)
	if err != nil {
		c.ctx.Close()
		return nil, err
	}
	return k, nil
}

func parse(uri string, opts []Option) (*URI, options, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, o, err
		}
	}
	u, err := ParseURI(uri)
	if err != nil {
		return nil, o, err
	}
	switch {
	case u.Token == "" && u.Serial == "":
		return nil, o, fmt.Errorf("%s names no token; add token=<label> or serial=<serial>", u)
	case u.Token != "" && u.Serial != "":
		return nil, o, fmt.Errorf("%s names the token by both label and serial; keep one", u)
	case u.Object == "" && len(u.ID) == 0:
		return nil, o, fmt.Errorf("%s names no key; add object=<label> and/or id=<%%-encoded id>", u)
	case u.ModulePath == "":
		return nil, o, fmt.Errorf("%s names no module; add ?module-path=/path/to/module.so", u)
	}
	return u, o, nil
}

// connect loads the module, logs in once and finds the key pair.
func connect(u *URI, o options) (*conn, error) {
	c11, err := login(u, o)
	if err != nil {
		return nil, err
	}
	key, err := findKey(c11.Context, u)
	if err != nil {
		c11.Close()
		return nil, err
	}
	return &conn{ctx: c11, key: key}, nil
}

func (u *URI) tokenName() string {
	if u.Token != "" {
		return fmt.Sprintf("%q", u.Token)
	}
	return fmt.Sprintf("with serial %q", u.Serial)
}

// findKey finds the one RSA private key matching u, with its public half.
func findKey(c11 *crypto11.Context, u *URI) (crypto11.SignerDecrypter, error) {
	privs, err := c11.FindRSAPrivateKeys(u.ID, []byte(u.Object))
	if err != nil {
		return nil, fmt.Errorf("search for %s: %w", u.path(), classify(err))
	}
	switch {
	case len(privs) == 0:
		return nil, fmt.Errorf("no RSA private key matches %s; create one with pkcs11.GenerateKey or check object= and id=: %w", u.path(), ErrKeyNotFound)
	case len(privs) > 1:
		return nil, fmt.Errorf("%d RSA private keys match %s; add id= or object= so that exactly one matches: %w", len(privs), u.path(), ErrAmbiguousKey)
	}
	pairs, err := c11.FindRSAKeyPairs(u.ID, []byte(u.Object))
	if err != nil {
		return nil, fmt.Errorf("search for %s: %w", u.path(), classify(err))
	}
	if len(pairs) != 1 {
		return nil, fmt.Errorf("the private key %s has no public key with the same CKA_ID and label: %w", u.path(), ErrKeyNotFound)
	}
	pub, ok := pairs[0].Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an RSA key pair: %w", u.path(), ErrKeyNotFound)
	}
	mod, err := c11.GetAttribute(pairs[0], crypto11.CkaModulus)
	if err != nil {
		return nil, fmt.Errorf("read modulus of %s: %w", u.path(), classify(err))
	}
	if !bytes.Equal(mod.Value, pub.N.Bytes()) {
		return nil, fmt.Errorf("the public key found for %s does not belong to its private key; give the pair distinct ids: %w", u.path(), ErrAmbiguousKey)
	}
	return pairs[0], nil
}

// newKEK builds the KEK around a first connection: the key id, and the OAEP
// hash (probed unless configured).
func newKEK(c *conn, u *URI, o options) (*KEK, error) {
	pub := c.key.Public().(*rsa.PublicKey)
	id, err := keyID(c, u, pub)
	if err != nil {
		return nil, err
	}
	k := &KEK{uri: *u, opts: o, keyID: id, pub: pub, conn: c}
	h := o.hash
	if h == 0 {
		if h, err = k.probe(c); err != nil {
			return nil, err
		}
	}
	k.alg = algorithmOf(h)
	if err := k.Descriptor().Validate(); err != nil {
		return nil, fmt.Errorf("%w; use a shorter token or key label", err)
	}
	return k, nil
}

// fingerprintSep introduces the public key fingerprint in a key id, and
// maxKeyID is the longest key id a keyring descriptor holds.
const (
	fingerprintSep = ";x-spki-sha256="
	maxKeyID       = 4096
)

// keyID is the canonical identity of the key: token, the key's own label
// and id as stored in the token, and a fingerprint of its public key, so a
// key replaced under the same label and id is a different key.
func keyID(c *conn, u *URI, pub *rsa.PublicKey) (string, error) {
	attrs, err := c.ctx.GetAttributes(c.key, []crypto11.AttributeType{crypto11.CkaLabel, crypto11.CkaId})
	if err != nil {
		return "", fmt.Errorf("read label and id of %s: %w", u.path(), classify(err))
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	canon := URI{Token: u.Token, Serial: u.Serial, Object: string(attrs[crypto11.CkaLabel].Value), ID: attrs[crypto11.CkaId].Value}
	return canon.path() + fingerprintSep + hex.EncodeToString(sum[:16]), nil
}

// probe decides the OAEP hash: SHA-256 if the token decrypts a SHA-256 OAEP
// ciphertext, else SHA-1. One or two decryptions with a random test value.
// Tokens report an unsupported hash in different ways (SoftHSM2:
// CKR_ARGUMENTS_BAD), so any failure other than a lost token moves on to
// SHA-1.
func (k *KEK) probe(c *conn) (crypto.Hash, error) {
	var firstErr error
	for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1} {
		want := make([]byte, 32)
		rand.Read(want)
		ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, k.pub, want, nil)
		if err != nil {
			return 0, err
		}
		got, err := c.key.Decrypt(nil, ct, &rsa.OAEPOptions{Hash: h})
		if err == nil && bytes.Equal(got, want) {
			return h, nil
		}
		if err == nil {
			err = errors.New("the test value decrypted to different bytes")
		}
		if rv, _ := rvOf(err); tokenGone(err) || rv == p11.CKR_KEY_FUNCTION_NOT_PERMITTED {
			return 0, fmt.Errorf("probe RSA-OAEP with %v on %s: %w", h, k.keyID, classify(err))
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return 0, fmt.Errorf("the token supports RSA-OAEP with neither SHA-256 nor SHA-1 (%v): %w", firstErr, ErrMechanism)
}

// classify maps a PKCS#11 error of a running session to our sentinels.
func classify(err error) error {
	switch {
	case tokenGone(err):
		return fmt.Errorf("%v: %w", err, ErrTokenRemoved)
	case mechanismRefused(err):
		return fmt.Errorf("%v: %w", err, ErrMechanism)
	}
	if rv, ok := rvOf(err); ok {
		switch rv {
		case p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE, p11.CKR_DATA_INVALID,
			p11.CKR_DATA_LEN_RANGE, p11.CKR_GENERAL_ERROR:
			return fmt.Errorf("%v: %w", err, ErrCiphertext)
		case p11.CKR_KEY_FUNCTION_NOT_PERMITTED, p11.CKR_KEY_TYPE_INCONSISTENT:
			return fmt.Errorf("%v: the key may not decrypt (CKA_DECRYPT is false): %w", err, kek.ErrRevoked)
		}
	}
	return err
}

// Descriptor returns the descriptor Wrap records: kind pkcs11, the canonical
// key id, and the OAEP algorithm.
func (k *KEK) Descriptor() kek.Descriptor {
	return kek.Descriptor{Kind: kek.KindPKCS11, KeyID: k.keyID, Algorithm: k.alg}
}

// Public returns the RSA public key that Wrap encrypts to.
func (k *KEK) Public() *rsa.PublicKey { return k.pub }

// Wrap encrypts key to the public key with RSA-OAEP, in software: it makes
// no token call and works while the token is away. Safe for concurrent use.
func (k *KEK) Wrap(ctx context.Context, key []byte) (kek.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kek.Wrapped{}, fmt.Errorf("pkcs11.KEK.Wrap: %w", err)
	}
	h, _ := hashOf(k.alg)
	ct, err := rsa.EncryptOAEP(h.New(), rand.Reader, k.pub, key, nil)
	if err != nil {
		return kek.Wrapped{}, fmt.Errorf("pkcs11.KEK.Wrap: %d-byte key under %s: %w", len(key), k.keyID, err)
	}
	return kek.Wrapped{Descriptor: k.Descriptor(), Ciphertext: ct}, nil
}

// Unwrap decrypts a wrapped key inside the token with the OAEP hash recorded
// in w.Algorithm. A key wrapped by another KEK fails with kek.ErrKeyMismatch
// without a token call; a ciphertext the token rejects fails with
// ErrCiphertext; a token that went away fails with ErrTokenRemoved, and the
// next call reconnects (one login; a refused PIN is never retried). Safe for
// concurrent use.
func (k *KEK) Unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	key, err := k.unwrap(ctx, w)
	if err != nil {
		return nil, fmt.Errorf("pkcs11.KEK.Unwrap: %w", err)
	}
	return key, nil
}

func (k *KEK) unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	if w.Kind != kek.KindPKCS11 || w.KeyID != k.keyID {
		return nil, fmt.Errorf("wrapped by %s, not by %s: %w", w.Descriptor, k.keyID, kek.ErrKeyMismatch)
	}
	h, ok := hashOf(w.Algorithm)
	if !ok {
		return nil, fmt.Errorf("algorithm %q is not %s or %s: %w", w.Algorithm, AlgorithmOAEPSHA256, AlgorithmOAEPSHA1, ErrCiphertext)
	}
	if len(w.Ciphertext) != k.pub.Size() {
		return nil, fmt.Errorf("wrapped key is %d bytes, an RSA-%d ciphertext is %d: %w",
			len(w.Ciphertext), k.pub.N.BitLen(), k.pub.Size(), ErrCiphertext)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := k.connection()
	if err != nil {
		return nil, err
	}
	key, err := c.key.Decrypt(nil, w.Ciphertext, &rsa.OAEPOptions{Hash: h})
	if err != nil {
		if k.isClosed() {
			return nil, ErrClosed // Close won the race with this call
		}
		err = classify(err)
		if errors.Is(err, ErrTokenRemoved) {
			k.drop(c)
		}
		return nil, fmt.Errorf("%s with %s: %w", w.Algorithm, k.keyID, err)
	}
	return key, nil
}

// connection returns the live connection, reconnecting if the token went
// away. Reconnects are serialised: concurrent callers wait for one attempt,
// and after a refused PIN no further login is tried.
func (k *KEK) connection() (*conn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.closed:
		return nil, ErrClosed
	case k.conn != nil:
		return k.conn, nil
	case k.pinErr != nil:
		return nil, k.pinErr
	}
	c, err := connect(&k.uri, k.opts)
	if errors.Is(err, ErrPINIncorrect) {
		k.pinErr = fmt.Errorf("reconnect: %w (no further login is tried; fix the PIN and reopen the KEK)", err)
		return nil, k.pinErr
	}
	if err != nil {
		if !errors.Is(err, ErrTokenRemoved) {
			err = fmt.Errorf("%w: %w", err, ErrTokenRemoved)
		}
		return nil, fmt.Errorf("reconnect after the token went away: %w", err)
	}
	id, err := keyID(c, &k.uri, c.key.Public().(*rsa.PublicKey))
	if err != nil || id != k.keyID {
		c.ctx.Close()
		if err == nil {
			err = fmt.Errorf("the token now holds %s instead of %s: the key was replaced: %w", id, k.keyID, kek.ErrKeyMismatch)
		}
		return nil, fmt.Errorf("reconnect: %w", err)
	}
	k.conn = c
	return c, nil
}

// drop forgets a connection whose token went away, so the next call
// reconnects. Only the first caller to see c fail closes it. Closing under
// the lock is safe, since calls holding a session of c never take the lock,
// and it makes a reconnect wait until the module was released (and so
// reinitialised, which makes SoftHSM rescan its tokens).
func (k *KEK) drop(c *conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == c {
		k.conn = nil
		c.ctx.Close() // waits for in-flight calls to return their sessions
	}
}

func (k *KEK) isClosed() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.closed
}

// Close logs out and releases the module. Unwraps in flight finish first;
// later calls fail with ErrClosed.
func (k *KEK) Close() error {
	k.mu.Lock()
	c := k.conn
	k.conn, k.closed = nil, true
	k.mu.Unlock()
	if c != nil {
		return c.ctx.Close()
	}
	return nil
}
