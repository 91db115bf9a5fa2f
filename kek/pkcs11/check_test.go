//go:build cgo

package pkcs11_test

import (
	"context"
	"crypto"
	"errors"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/stretchr/testify/require"
)

// TestKeyMayNotDecrypt: a key with CKA_DECRYPT false is reported as such
// when opening (the probe), and by Validate when the hash is configured.
func TestKeyMayNotDecrypt(t *testing.T) {
	_, priv := loadVector(t)
	h := testenv.StartSoftHSM(t, "cachecrypt-test")
	importKeyWith(t, h, "nodecrypt", []byte{7}, priv, true, false, false)
	_, err := pkcs11.Open(ctx, h.URI("nodecrypt", []byte{7}))
	require.ErrorIs(t, err, kek.ErrRevoked)
	require.ErrorContains(t, err, "CKA_DECRYPT is false")

	k, err := pkcs11.Open(ctx, h.URI("nodecrypt", []byte{7}), pkcs11.WithOAEPHash(crypto.SHA1))
	require.NoError(t, err)
	defer k.Close()
	var pe *kek.PrerequisiteError
	require.True(t, errors.As(k.Validate(ctx), &pe))
	require.Len(t, pe.Failed, 1)
	require.Equal(t, "decrypt", pe.Failed[0].Name)
	w, err := k.Wrap(ctx, make([]byte, 32))
	require.NoError(t, err)
	_, err = k.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrRevoked)
}

// TestValidate imports a weak key (extractable, not sensitive) and checks that
// Validate lists both failures, while a generated key passes.
func TestValidate(t *testing.T) {
	_, priv := loadVector(t)
	h := testenv.StartSoftHSM(t, "cachecrypt-test")
	importKeyAttrs(t, h, "weak", []byte{9}, priv, false, true)
	k, err := pkcs11.Open(ctx, h.URI("weak", []byte{9}))
	require.NoError(t, err)
	defer k.Close()
	err = k.Validate(ctx)
	require.ErrorIs(t, err, kek.ErrPrerequisite)
	var pe *kek.PrerequisiteError
	require.True(t, errors.As(err, &pe))
	var names []string
	for _, c := range pe.Failed {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{"sensitive", "extractable"}, names)
	require.Equal(t, k.Descriptor().KeyID, pe.Key)

	good := generate(t, h, "good", []byte{1}, 2048)
	require.NoError(t, good.Validate(ctx))
}

// The root package checks a CMK's prerequisites through this interface.
var _ interface {
	Validate(context.Context) error
} = (*pkcs11.KEK)(nil)
