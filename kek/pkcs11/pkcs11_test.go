//go:build cgo

package pkcs11_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

func randomDEK(t testing.TB) []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// pin returns the test token's PIN, to check it never leaks into errors.
func pin(t testing.TB, h *testenv.SoftHSM) string {
	b, err := os.ReadFile(h.PINFile)
	require.NoError(t, err)
	return string(b)
}

// requireErr checks err matches every target, starts with the function that
// failed, and does not contain the PIN.
func requireErr(t testing.TB, h *testenv.SoftHSM, err error, prefix string, targets ...error) {
	t.Helper()
	require.Error(t, err)
	for _, target := range targets {
		require.ErrorIs(t, err, target)
	}
	require.True(t, strings.HasPrefix(err.Error(), prefix), "error %q does not start with %q", err, prefix)
	require.NotContains(t, err.Error(), pin(t, h), "the PIN leaked into an error")
}

func TestRoundTrip(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "disk-kek", []byte{1, 2}, 2048)
	d := k.Descriptor()
	require.Equal(t, kek.KindPKCS11, d.Kind)
	require.NoError(t, d.Validate())
	// SoftHSM2 2.6 only decrypts RSA-OAEP with SHA-1: the probe finds that.
	require.Equal(t, pkcs11.AlgorithmOAEPSHA1, d.Algorithm)
	require.True(t, strings.HasPrefix(d.KeyID, "pkcs11:token=cachecrypt-test;object=disk-kek;id=%01%02;x-spki-sha256="), d.KeyID)
	require.NotContains(t, d.KeyID, "module-path")
	require.NotContains(t, d.KeyID, "pin")

	dek := randomDEK(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)
	require.Equal(t, d, w.Descriptor)
	require.Len(t, w.Ciphertext, 256)
	got, err := k.Unwrap(ctx, w)
	require.NoError(t, err)
	require.Equal(t, dek, got)

	// Another process's view: a fresh Open with only the URI unwraps it,
	// whether the key is named by label, by id or both.
	require.NoError(t, k.Close())
	for _, u := range []string{h.URI("disk-kek", []byte{1, 2}), h.URI("disk-kek", nil), h.URI("", []byte{1, 2})} {
		k2, err := pkcs11.Open(ctx, u)
		require.NoError(t, err, u)
		require.Equal(t, d, k2.Descriptor(), u)
		got, err := k2.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, dek, got)
		require.NoError(t, k2.Close())
		_, err = k2.Unwrap(ctx, w)
		require.ErrorIs(t, err, pkcs11.ErrClosed)
	}
}

func TestGenerateKey(t *testing.T) {
	h := newToken(t)
	sizes := []int{2048, 3072, 4096}
	for i, bits := range sizes {
		k := generate(t, h, "kek", []byte{byte(i)}, bits)
		require.Equal(t, bits, k.Public().N.BitLen())
		w, err := k.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"))
		require.NoError(t, err)
		require.Len(t, w.Ciphertext, bits/8)
		got, err := k.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, "0123456789abcdef0123456789abcdef", string(got))
	}

	// The private key is sensitive, not extractable, and may only decrypt.
	c11, err := crypto11.Configure(&crypto11.Config{Path: h.Module, TokenLabel: h.Label, Pin: pin(t, h)})
	require.NoError(t, err)
	defer c11.Close()
	priv, err := c11.FindKeyPair([]byte{0}, []byte("kek"))
	require.NoError(t, err)
	attrs, err := c11.GetAttributes(priv, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable,
		crypto11.CkaDecrypt, crypto11.CkaSign, crypto11.CkaAlwaysSensitive, crypto11.CkaNeverExtractable, crypto11.CkaPrivate})
	require.NoError(t, err)
	for a, want := range map[crypto11.AttributeType]byte{crypto11.CkaSensitive: 1, crypto11.CkaExtractable: 0,
		crypto11.CkaDecrypt: 1, crypto11.CkaSign: 0, crypto11.CkaAlwaysSensitive: 1, crypto11.CkaNeverExtractable: 1, crypto11.CkaPrivate: 1} {
		require.Equal(t, []byte{want}, attrs[a].Value, "attribute %#x", a)
	}
	_, err = c11.GetAttribute(priv, crypto11.CkaPrivateExponent)
	require.Error(t, err, "the private exponent must not be readable")

	// A second key with the same label and id is refused; other ids are fine.
	_, err = pkcs11.GenerateKey(ctx, h.URI("kek", []byte{0}), 2048)
	requireErr(t, h, err, "pkcs11.GenerateKey: ", pkcs11.ErrKeyExists)
	privs, err := c11.FindRSAPrivateKeys([]byte{0}, []byte("kek"))
	require.NoError(t, err)
	require.Len(t, privs, 1, "the refused call must not have created a key")

	for _, bad := range []int{1024, 2047, 8192, 0} {
		_, err = pkcs11.GenerateKey(ctx, h.URI("other", []byte{9}), bad)
		require.ErrorContains(t, err, "use 2048, 3072 or 4096")
	}
	_, err = pkcs11.GenerateKey(ctx, h.URI("other", nil), 2048)
	require.ErrorContains(t, err, "both object= and id=")
}

func TestOpenErrors(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "kek", []byte{1}, 2048)
	require.NoError(t, k.Close())
	good := h.URI("kek", []byte{1})
	swap := func(old, new string) string { return strings.Replace(good, old, new, 1) }
	t.Setenv("CACHECRYPT_TEST_PIN", pin(t, h))

	// The PIN from the environment works.
	k, err := pkcs11.Open(ctx, swap("file:"+h.PINFile, "env:CACHECRYPT_TEST_PIN"))
	require.NoError(t, err)
	require.NoError(t, k.Close())

	notModule := filepath.Join(t.TempDir(), "not-a-module.so")
	require.NoError(t, os.WriteFile(notModule, []byte("ELF? no"), 0o644))
	tests := []struct {
		name    string
		uri     string
		targets []error
		msg     string
	}{
		{"module missing", swap(h.Module, "/nonexistent/libp11.so"), []error{pkcs11.ErrModuleNotFound}, "/nonexistent/libp11.so"},
		{"module not loadable", swap(h.Module, notModule), []error{pkcs11.ErrModuleNotFound}, "failed to open module"},
		{"token not found", swap("token="+h.Label, "token=elsewhere"), []error{pkcs11.ErrTokenNotFound, kek.ErrUnavailable}, `token "elsewhere"`},
		{"token serial not found", swap("token="+h.Label, "serial=42"), []error{pkcs11.ErrTokenNotFound, kek.ErrUnavailable}, `serial "42"`},
		{"key not found by label", h.URI("missing", nil), []error{pkcs11.ErrKeyNotFound, kek.ErrRevoked}, "object=missing"},
		{"key not found by id", h.URI("kek", []byte{2}), []error{pkcs11.ErrKeyNotFound}, "id=%02"},
		{"pin file missing", swap(h.PINFile, "/nonexistent/pin"), nil, "/nonexistent/pin"},
		{"pin env missing", swap("file:"+h.PINFile, "env:CACHECRYPT_NO_SUCH_PIN"), nil, "CACHECRYPT_NO_SUCH_PIN is not set"},
		{"no pin source", good[:strings.Index(good, "&pin-source")], nil, "no pin-source"},
		{"no module", good[:strings.Index(good, "?")], nil, "names no module"},
		{"no token", strings.Replace(good, "token="+h.Label+";", "", 1), nil, "names no token"},
		{"no key", "pkcs11:token=" + h.Label + good[strings.Index(good, "?"):], nil, "names no key"},
		{"label and serial", swap("token=", "serial=1;token="), nil, "both label and serial"},
		{"pin-value", good + "&pin-value=" + pin(t, h), nil, "pin-value is refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := pkcs11.Open(ctx, tt.uri)
			if err == nil {
				k.Close()
			}
			requireErr(t, h, err, "pkcs11.Open: ", tt.targets...)
			require.ErrorContains(t, err, tt.msg)
			for _, other := range []error{pkcs11.ErrModuleNotFound, pkcs11.ErrTokenNotFound, pkcs11.ErrPINIncorrect,
				pkcs11.ErrKeyNotFound, pkcs11.ErrAmbiguousKey} {
				if !contains(tt.targets, other) {
					require.NotErrorIs(t, err, other, "errors must be distinct")
				}
			}
		})
	}
}

func contains(errs []error, e error) bool {
	for _, x := range errs {
		if x == e {
			return true
		}
	}
	return false
}

// TestWrongPINLogsInOnce counts C_Login calls with OpenSC's pkcs11-spy in
// front of SoftHSM: one Open with a wrong PIN makes exactly one login.
func TestWrongPINLogsInOnce(t *testing.T) {
	h := newToken(t)
	generate(t, h, "kek", []byte{1}, 2048).Close()
	uri, log := h.SpyURI(t, "kek", []byte{1})
	bad := h.WritePINFile(t, "wrong.pin", "wrong-pin-0000")
	uri = strings.Replace(uri, h.PINFile, bad, 1)

	_, err := pkcs11.Open(ctx, uri)
	requireErr(t, h, err, "pkcs11.Open: ", pkcs11.ErrPINIncorrect)
	require.NotErrorIs(t, err, kek.ErrUnavailable, "a wrong PIN is not transient")
	require.NotContains(t, err.Error(), "wrong-pin-0000")
	require.Equal(t, 1, testenv.CountCalls(t, log, "C_Login"))

	// With the right PIN, one login too.
	uri = strings.Replace(uri, bad, h.PINFile, 1)
	k, err := pkcs11.Open(ctx, uri)
	require.NoError(t, err)
	require.NoError(t, k.Close())
	require.Equal(t, 2, testenv.CountCalls(t, log, "C_Login"))
}

func TestAmbiguousKey(t *testing.T) {
	h := newToken(t)
	generate(t, h, "kek", []byte{1}, 2048).Close()
	generate(t, h, "kek", []byte{2}, 2048).Close()
	_, err := pkcs11.Open(ctx, h.URI("kek", nil))
	requireErr(t, h, err, "pkcs11.Open: ", pkcs11.ErrAmbiguousKey)
	require.ErrorContains(t, err, "2 RSA private keys match")
	require.NotErrorIs(t, err, pkcs11.ErrKeyNotFound)
	// Naming the id picks exactly one.
	for _, id := range []byte{1, 2} {
		k, err := pkcs11.Open(ctx, h.URI("kek", []byte{id}))
		require.NoError(t, err)
		require.NoError(t, k.Close())
	}
}

func TestUnwrapErrors(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "kek", []byte{1}, 2048)
	other := generate(t, h, "other", []byte{2}, 2048)
	dek := randomDEK(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)

	flip := func(i int) kek.Wrapped {
		c := w
		c.Ciphertext = bytes.Clone(w.Ciphertext)
		c.Ciphertext[i] ^= 0x01
		return c
	}
	withDesc := func(f func(*kek.Descriptor)) kek.Wrapped {
		c := w
		f(&c.Descriptor)
		return c
	}
	fromOther, err := other.Wrap(ctx, dek)
	require.NoError(t, err)
	forged := fromOther
	forged.Descriptor = w.Descriptor

	tests := []struct {
		name    string
		w       kek.Wrapped
		targets []error
	}{
		{"first byte flipped", flip(0), []error{pkcs11.ErrCiphertext, kek.ErrUnwrap}},
		{"middle byte flipped", flip(128), []error{pkcs11.ErrCiphertext, kek.ErrUnwrap}},
		{"last byte flipped", flip(255), []error{pkcs11.ErrCiphertext, kek.ErrUnwrap}},
		{"truncated", kek.Wrapped{Descriptor: w.Descriptor, Ciphertext: w.Ciphertext[:255]}, []error{pkcs11.ErrCiphertext, kek.ErrUnwrap}},
		{"extended", kek.Wrapped{Descriptor: w.Descriptor, Ciphertext: append(bytes.Clone(w.Ciphertext), 0)}, []error{pkcs11.ErrCiphertext}},
		{"empty", kek.Wrapped{Descriptor: w.Descriptor}, []error{pkcs11.ErrCiphertext}},
		{"wrapped by another key, descriptor forged", forged, []error{pkcs11.ErrCiphertext, kek.ErrUnwrap}},
		// SoftHSM2 refuses SHA-256 OAEP outright; a token that supports it
		// would fail the padding check instead (ErrCiphertext).
		{"wrong hash recorded", withDesc(func(d *kek.Descriptor) { d.Algorithm = pkcs11.AlgorithmOAEPSHA256 }), []error{pkcs11.ErrMechanism}},
		{"unknown algorithm", withDesc(func(d *kek.Descriptor) { d.Algorithm = "RSA1_5" }), []error{kek.ErrUnwrap}},
		{"another key's descriptor", fromOther, []error{kek.ErrKeyMismatch}},
		{"another kind", withDesc(func(d *kek.Descriptor) { d.Kind = kek.KindMMK }), []error{kek.ErrKeyMismatch}},
		{"key id of a replaced key", withDesc(func(d *kek.Descriptor) { d.KeyID = otherLastChar(d.KeyID) }), []error{kek.ErrKeyMismatch}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.Unwrap(ctx, tt.w)
			require.Nil(t, got)
			requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", tt.targets...)
			require.NotContains(t, err.Error(), string(dek))
		})
	}
	// The KEK still works after all that.
	got, err := k.Unwrap(ctx, w)
	require.NoError(t, err)
	require.Equal(t, dek, got)
}

// otherLastChar returns id with its last character replaced by a different
// one, so the result always names another key (a fixed replacement would
// leave an id that already ends in it unchanged).
func otherLastChar(id string) string {
	last := id[len(id)-1]
	repl := byte('0')
	if last == repl {
		repl = '1'
	}
	return id[:len(id)-1] + string(repl)
}

// TestOAEPHash checks the hash comes from the descriptor: a KEK configured
// for SHA-256 still unwraps a SHA-1 wrapped key, and SoftHSM2's refusal of
// SHA-256 is reported as ErrMechanism.
func TestOAEPHash(t *testing.T) {
	h := newToken(t)
	sha1KEK := generate(t, h, "kek", []byte{1}, 2048, pkcs11.WithOAEPHash(crypto.SHA1))
	dek := randomDEK(t)
	w1, err := sha1KEK.Wrap(ctx, dek)
	require.NoError(t, err)
	require.Equal(t, pkcs11.AlgorithmOAEPSHA1, w1.Algorithm)
	// The ciphertext really is SHA-1 OAEP.
	require.NoError(t, sha1KEK.Close())

	sha256KEK, err := pkcs11.Open(ctx, h.URI("kek", []byte{1}), pkcs11.WithOAEPHash(crypto.SHA256))
	require.NoError(t, err)
	defer sha256KEK.Close()
	require.Equal(t, pkcs11.AlgorithmOAEPSHA256, sha256KEK.Descriptor().Algorithm)
	require.Equal(t, w1.KeyID, sha256KEK.Descriptor().KeyID, "the hash is not part of the key's identity")
	got, err := sha256KEK.Unwrap(ctx, w1)
	require.NoError(t, err, "Unwrap must use the hash recorded in the wrapped key")
	require.Equal(t, dek, got)

	w256, err := sha256KEK.Wrap(ctx, dek)
	require.NoError(t, err)
	require.Equal(t, pkcs11.AlgorithmOAEPSHA256, w256.Algorithm)
	_, err = sha256KEK.Unwrap(ctx, w256)
	requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", pkcs11.ErrMechanism, kek.ErrUnsupported)
	require.NotErrorIs(t, err, kek.ErrUnwrap, "a refused mechanism is not a bad ciphertext")

	_, err = pkcs11.Open(ctx, h.URI("kek", []byte{1}), pkcs11.WithOAEPHash(crypto.SHA512))
	require.ErrorContains(t, err, "use crypto.SHA256 or crypto.SHA1")
}

func TestConcurrentUnwrap(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "kek", []byte{1}, 2048)
	const n = 16
	deks := make([][]byte, n)
	ws := make([]kek.Wrapped, n)
	for i := range deks {
		deks[i] = randomDEK(t)
		var err error
		ws[i], err = k.Wrap(ctx, deks[i])
		require.NoError(t, err)
	}
	rounds := 8
	if testenv.Short() {
		rounds = 2
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64*rounds)
	for g := range 64 {
		wg.Go(func() {
			for r := range rounds {
				i := (g + r) % n
				got, err := k.Unwrap(ctx, ws[i])
				if err == nil && !bytes.Equal(got, deks[i]) {
					err = errors.New("unwrapped the wrong key")
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestTokenRemoved pulls the token out from under an open KEK by deleting
// it with softhsm2-util, then puts it back by restoring a copy of its
// directory. SoftHSM reports the loss as an invalid object handle on the next
// call; the KEK reports ErrTokenRemoved and reconnects on the call after the
// token came back.
func TestTokenRemoved(t *testing.T) {
	h := newToken(t)
	uri, log := h.SpyURI(t, "kek", []byte{1})
	k, err := pkcs11.GenerateKey(ctx, uri, 2048)
	require.NoError(t, err)
	defer k.Close()
	dek := randomDEK(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)
	backup := t.TempDir()
	copyDir(t, h.TokenDir, backup)
	logins := testenv.CountCalls(t, log, "C_Login")
	require.Equal(t, 1, logins, "GenerateKey logs in once")

	h.DeleteToken(t, h.Label)
	_, err = k.Unwrap(ctx, w)
	requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", pkcs11.ErrTokenRemoved, kek.ErrUnavailable)
	_, err = k.Unwrap(ctx, w) // the reconnect finds no token
	requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", pkcs11.ErrTokenRemoved, pkcs11.ErrTokenNotFound)
	_, err = k.Wrap(ctx, dek)
	require.NoError(t, err, "Wrap needs no token")

	copyDir(t, backup, h.TokenDir)
	got, err := k.Unwrap(ctx, w)
	require.NoError(t, err, "the KEK reconnects once the token is back")
	require.Equal(t, dek, got)
	require.Equal(t, logins+1, testenv.CountCalls(t, log, "C_Login"), "one login for the reconnect")

	// Removed again, and the PIN file now holds a wrong PIN: the reconnect
	// logs in once, the token refuses, and the KEK never tries again.
	h.DeleteToken(t, h.Label)
	_, err = k.Unwrap(ctx, w)
	require.ErrorIs(t, err, pkcs11.ErrTokenRemoved)
	copyDir(t, backup, h.TokenDir)
	require.NoError(t, os.WriteFile(h.PINFile, []byte("wrong-pin-1111"), 0o600))
	for range 3 {
		_, err = k.Unwrap(ctx, w)
		requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", pkcs11.ErrPINIncorrect)
	}
	require.Equal(t, logins+2, testenv.CountCalls(t, log, "C_Login"), "a refused PIN is never retried")
}

// TestKeyReplaced reinitialises the token and generates a new key with the
// same label and id: a reconnect must not unwrap with it.
func TestKeyReplaced(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "kek", []byte{1}, 2048)
	w, err := k.Wrap(ctx, randomDEK(t))
	require.NoError(t, err)
	h.DeleteToken(t, h.Label)
	_, err = k.Unwrap(ctx, w)
	require.ErrorIs(t, err, pkcs11.ErrTokenRemoved)
	h.InitToken(t, h.Label)
	_, err = k.Unwrap(ctx, w)
	requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", pkcs11.ErrKeyNotFound, pkcs11.ErrTokenRemoved)
	generate(t, h, "kek", []byte{1}, 2048).Close()
	_, err = k.Unwrap(ctx, w)
	requireErr(t, h, err, "pkcs11.KEK.Unwrap: ", kek.ErrKeyMismatch)
	require.ErrorContains(t, err, "the key was replaced")
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	require.NoError(t, os.CopyFS(to, os.DirFS(from)))
}

// TestTokenRemovedTwoKEKs documents a limit of SoftHSM: the module is loaded
// once per process and only rescans its tokens when reinitialised, which
// happens when every KEK using it has dropped its connection. After the
// token returns, a KEK keeps failing with ErrTokenRemoved until every other
// KEK on the same module has seen the loss too; then all reconnect.
func TestTokenRemovedTwoKEKs(t *testing.T) {
	h := newToken(t)
	k1 := generate(t, h, "kek", []byte{1}, 2048)
	k2, err := pkcs11.Open(ctx, h.URI("kek", []byte{1}))
	require.NoError(t, err)
	defer k2.Close()
	dek := randomDEK(t)
	w, err := k1.Wrap(ctx, dek)
	require.NoError(t, err)
	backup := t.TempDir()
	copyDir(t, h.TokenDir, backup)

	h.DeleteToken(t, h.Label)
	_, err = k1.Unwrap(ctx, w)
	require.ErrorIs(t, err, pkcs11.ErrTokenRemoved)
	copyDir(t, backup, h.TokenDir)
	_, err = k1.Unwrap(ctx, w)
	require.ErrorIs(t, err, pkcs11.ErrTokenRemoved, "k2 still holds the module: no rescan yet")
	_, err = k2.Unwrap(ctx, w)
	require.ErrorIs(t, err, pkcs11.ErrTokenRemoved)
	for _, k := range []*pkcs11.KEK{k2, k1} {
		got, err := k.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, dek, got)
	}
}

func TestCanceledContext(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "kek", []byte{1}, 2048)
	w, err := k.Wrap(ctx, randomDEK(t))
	require.NoError(t, err)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = k.Unwrap(canceled, w)
	require.ErrorIs(t, err, context.Canceled)
	_, err = k.Wrap(canceled, randomDEK(t))
	require.ErrorIs(t, err, context.Canceled)
	_, err = pkcs11.Open(canceled, h.URI("kek", []byte{1}))
	require.ErrorIs(t, err, context.Canceled)
}

// TestCloseDuringUnwraps closes the KEK while goroutines unwrap: each call
// either succeeds or fails with ErrClosed, and Close returns.
func TestCloseDuringUnwraps(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "kek", []byte{1}, 2048)
	dek := randomDEK(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)
	var wg sync.WaitGroup
	started := make(chan struct{}, 16)
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			started <- struct{}{}
			for {
				got, err := k.Unwrap(ctx, w)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, dek) {
					errs <- errors.New("unwrapped the wrong key")
					return
				}
			}
		})
	}
	for range 16 {
		<-started
	}
	require.NoError(t, k.Close())
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, pkcs11.ErrClosed)
	}
}

// TestMaxSessions bounds the session pool: 16 goroutines share one
// operation session (crypto11 keeps one more for the login) and all succeed.
func TestMaxSessions(t *testing.T) {
	h := newToken(t)
	generate(t, h, "kek", []byte{1}, 2048).Close()
	_, err := pkcs11.Open(ctx, h.URI("kek", []byte{1}), pkcs11.WithMaxSessions(1))
	require.ErrorContains(t, err, "at least 2")
	k, err := pkcs11.Open(ctx, h.URI("kek", []byte{1}), pkcs11.WithMaxSessions(2))
	require.NoError(t, err)
	defer k.Close()
	dek := randomDEK(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			got, err := k.Unwrap(ctx, w)
			if err == nil && !bytes.Equal(got, dek) {
				err = errors.New("unwrapped the wrong key")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// TestWrongPINWhileLoggedIn: PKCS#11 login state is per process, so while
// one KEK is logged in the token would accept any PIN. A second Open with a
// different PIN must still fail, without a login call; the right PIN works,
// and once every KEK closed, the wrong PIN goes to the token again.
func TestWrongPINWhileLoggedIn(t *testing.T) {
	h := newToken(t)
	uri, log := h.SpyURI(t, "kek", []byte{1})
	k, err := pkcs11.GenerateKey(ctx, uri, 2048)
	require.NoError(t, err)
	bad := strings.Replace(uri, h.PINFile, h.WritePINFile(t, "wrong.pin", "wrong-pin-2222"), 1)

	_, err = pkcs11.Open(ctx, bad)
	requireErr(t, h, err, "pkcs11.Open: ", pkcs11.ErrPINIncorrect)
	require.ErrorContains(t, err, "already logged in with another PIN")
	require.Equal(t, 1, testenv.CountCalls(t, log, "C_Login"), "refused without asking the token")

	k2, err := pkcs11.Open(ctx, uri)
	require.NoError(t, err)
	require.NoError(t, k2.Close())
	require.NoError(t, k.Close())

	_, err = pkcs11.Open(ctx, bad)
	requireErr(t, h, err, "pkcs11.Open: ", pkcs11.ErrPINIncorrect)
	require.ErrorContains(t, err, "CKR_PIN_INCORRECT")
	require.Equal(t, 3, testenv.CountCalls(t, log, "C_Login"))
}

// TestLongLabel: a key id that would not fit a keyring descriptor is
// refused when the KEK opens, not when the keyring is written.
func TestLongLabel(t *testing.T) {
	h := newToken(t)
	long := strings.Repeat("é", 700) // 1400 bytes, 4200 once percent-encoded
	_, err := pkcs11.GenerateKey(ctx, h.URI(long, []byte{1}), 2048)
	require.ErrorContains(t, err, "use a shorter token or key label")
	require.True(t, strings.HasPrefix(err.Error(), "pkcs11.GenerateKey: "), err.Error())
	_, err = pkcs11.Open(ctx, h.URI(long, []byte{1}))
	require.ErrorIs(t, err, pkcs11.ErrKeyNotFound, "no key was left behind")
}
