//go:build cgo

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
