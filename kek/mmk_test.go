package kek_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

func TestMMKCreatedOnFirstUseWithMode0600(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	m, err := kek.LoadMMK(path)
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	secret := []byte("0123456789abcdef0123456789abcdef")
	w, err := m.Wrap(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, kek.KindMMK, w.Kind)
	require.True(t, strings.HasPrefix(w.KeyID, "mmk/platform/"))
	require.NotContains(t, string(w.Ciphertext), string(secret))

	again, err := kek.LoadMMK(path)
	require.NoError(t, err)
	got, err := again.Unwrap(ctx, w)
	require.NoError(t, err)
	require.Equal(t, secret, got)
}

func TestMMKRotationKeepsOldVersions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "platform.key")
	m, err := kek.LoadMMK(path)
	require.NoError(t, err)
	secret := make([]byte, 32)
	old, err := m.Wrap(ctx, secret)
	require.NoError(t, err)
	d, err := m.Rotate()
	require.NoError(t, err)
	require.NotEqual(t, old.KeyID, d.KeyID, "a new version has a new key id")
	fresh, err := m.Wrap(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, d, fresh.Descriptor)

	reloaded, err := kek.LoadMMK(path)
	require.NoError(t, err)
	for _, w := range []kek.Wrapped{old, fresh} {
		got, err := reloaded.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, secret, got)
	}
}

func TestMMKErrors(t *testing.T) {
	ctx := context.Background()
	m, err := kek.NewMMK("platform")
	require.NoError(t, err)
	w, err := m.Wrap(ctx, make([]byte, 32))
	require.NoError(t, err)

	other, err := kek.NewMMK("platform")
	require.NoError(t, err)
	_, err = other.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrKeyMismatch, "same name, other keyset")

	named, err := kek.NewMMK("elsewhere")
	require.NoError(t, err)
	_, err = named.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrKeyMismatch)

	_, err = m.Unwrap(ctx, kek.Wrapped{Descriptor: kektest.New("x").Descriptor(), Ciphertext: w.Ciphertext})
	require.ErrorIs(t, err, kek.ErrKeyMismatch)

	w.Ciphertext[len(w.Ciphertext)-1] ^= 1
	_, err = m.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrUnwrap)

	_, err = kek.ParseMMK("p", []byte("not a keyset"))
	require.Error(t, err)
	bad := filepath.Join(t.TempDir(), "bad.key")
	require.NoError(t, os.WriteFile(bad, []byte("junk"), 0o600))
	_, err = kek.LoadMMK(bad)
	require.ErrorContains(t, err, bad)
}

func TestMMKKeysetRoundTrip(t *testing.T) {
	m, err := kek.NewMMK("p")
	require.NoError(t, err)
	m2, err := kek.ParseMMK("p", m.Keyset())
	require.NoError(t, err)
	require.Equal(t, m.Descriptor(), m2.Descriptor())
}

func TestPrerequisiteErrorListsEveryCheck(t *testing.T) {
	err := error(&kek.PrerequisiteError{Key: "k", Failed: []kek.Check{
		{Name: "key type", Problem: "EC", Fix: "use RSA"},
		{Name: "purge protection", Problem: "off", Fix: "enable it"},
	}})
	require.ErrorIs(t, err, kek.ErrPrerequisite)
	require.Contains(t, err.Error(), "2 prerequisite check(s) failed")
	require.Contains(t, err.Error(), "use RSA")
	require.Contains(t, err.Error(), "enable it")
}

func ExampleLoadMMK() {
	dir, _ := os.MkdirTemp("", "mmk")
	defer os.RemoveAll(dir)
	m, err := kek.LoadMMK(filepath.Join(dir, "platform.key")) // created on first use
	if err != nil {
		panic(err)
	}
	w, _ := m.Wrap(context.Background(), make([]byte, 32))
	key, _ := m.Unwrap(context.Background(), w)
	fmt.Println(w.Kind, w.Algorithm, len(key))
	// Output: mmk TINK-AES256-GCM 32
}

// TestMMKIdentityIsTheKeyset: an MMK is known by its keyset, not by the
// name of the file that holds it. A renamed copy of the same keyset
// unwraps; another keyset in a file of the same name is another key
// (ErrKeyMismatch, so kek.First can go on to the next candidate).
func TestMMKIdentityIsTheKeyset(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m, err := kek.LoadMMK(filepath.Join(dir, "mmk.key"))
	require.NoError(t, err)
	secret := []byte("0123456789abcdef0123456789abcdef")
	w, err := m.Wrap(ctx, secret)
	require.NoError(t, err)
	require.NotContains(t, w.KeyID, fmt.Sprintf("%x", m.Keyset()), "the key id holds no key material")

	t.Run("renamed copy of the same keyset", func(t *testing.T) {
		renamed := filepath.Join(t.TempDir(), "platform-backup.keyset")
		require.NoError(t, os.WriteFile(renamed, m.Keyset(), 0o600))
		c, err := kek.LoadMMK(renamed)
		require.NoError(t, err)
		got, err := c.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, secret, got)
		got, err = kek.First(c).Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, secret, got)
	})
	t.Run("another keyset under the same file name", func(t *testing.T) {
		other, err := kek.LoadMMK(filepath.Join(t.TempDir(), "mmk.key"))
		require.NoError(t, err)
		_, err = other.Unwrap(ctx, w)
		require.ErrorIs(t, err, kek.ErrKeyMismatch)
		got, err := kek.First(other, m).Unwrap(ctx, w)
		require.NoError(t, err, "First goes on to the MMK that holds the key")
		require.Equal(t, secret, got)
	})
	t.Run("rotated keyset still unwraps older versions", func(t *testing.T) {
		c, err := kek.ParseMMK("renamed", m.Keyset())
		require.NoError(t, err)
		_, err = c.Rotate()
		require.NoError(t, err)
		got, err := c.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, secret, got)
	})
}

// TestMMKOldDescriptors: a key wrapped under the file-name-based descriptor
// of earlier releases ("mmk/<name>/<key id>") still unwraps with the same
// keyset under any name, and another keyset answers ErrKeyMismatch.
func TestMMKOldDescriptors(t *testing.T) {
	ctx := context.Background()
	m, err := kek.NewMMK("mmk")
	require.NoError(t, err)
	secret := make([]byte, 32)
	w, err := m.Wrap(ctx, secret)
	require.NoError(t, err)
	i := strings.LastIndexByte(w.KeyID, '/')
	id := w.KeyID[i+1:]
	require.Len(t, id, 8, "the last element is the Tink key id")
	old := w
	old.KeyID = "mmk/mmk/" + id // as written before keysets had fingerprints

	renamed, err := kek.ParseMMK("elsewhere", m.Keyset())
	require.NoError(t, err)
	got, err := renamed.Unwrap(ctx, old)
	require.NoError(t, err)
	require.Equal(t, secret, got)

	other, err := kek.NewMMK("mmk")
	require.NoError(t, err)
	_, err = other.Unwrap(ctx, old)
	require.ErrorIs(t, err, kek.ErrKeyMismatch)
}

// TestMMKFingerprintIsChecked: a descriptor naming the right Tink key id
// with another fingerprint is another key.
func TestMMKFingerprintIsChecked(t *testing.T) {
	ctx := context.Background()
	m, err := kek.NewMMK("p")
	require.NoError(t, err)
	w, err := m.Wrap(ctx, make([]byte, 32))
	require.NoError(t, err)
	parts := strings.Split(w.KeyID, "/")
	require.Len(t, parts, 4, "mmk/<name>/<fingerprint>/<key id>: %s", w.KeyID)
	fp := []byte(parts[2])
	fp[len(fp)-1] ^= 1
	parts[2] = string(fp)
	bad := w
	bad.KeyID = strings.Join(parts, "/")
	_, err = m.Unwrap(ctx, bad)
	require.ErrorIs(t, err, kek.ErrKeyMismatch)
}
