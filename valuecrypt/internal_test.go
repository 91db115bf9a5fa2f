package valuecrypt

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

// TestStoredKeysetHoldsNoKey: no key of the keyset, nor the keyset key,
// appears in what the Store keeps, before or after a rotation; Close zeroes
// every one of them.
func TestStoredKeysetHoldsNoKey(t *testing.T) {
	ctx := context.Background()
	s := FileStore(filepath.Join(t.TempDir(), "keyset"))
	ks, err := Create(ctx, s, kektest.New("app"))
	require.NoError(t, err)
	_, err = ks.Rotate(ctx)
	require.NoError(t, err)
	stored, err := s.Load(ctx)
	require.NoError(t, err)
	secrets := [][]byte{ks.sk, ks.body.nameKey}
	for _, k := range ks.body.keys {
		secrets = append(secrets, k.key)
	}
	require.Len(t, secrets, 4)
	for _, sec := range secrets {
		require.Len(t, sec, map[bool]int{true: nameKeySize, false: valueKeySize}[len(sec) == nameKeySize])
		for i := 0; i+8 <= len(sec); i += 8 {
			require.False(t, bytes.Contains(stored, sec[i:i+8]), "key bytes in the stored keyset")
		}
	}
	held := [][]byte{ks.sk, ks.body.nameKey, ks.body.keys[0].key, ks.body.keys[1].key, ks.state.Load().nameKey}
	require.NoError(t, ks.Close())
	for _, h := range held {
		require.Equal(t, make([]byte, len(h)), h, "Close zeroes the keys")
	}
}

// TestSealLimit: past SealLimit values under one key in this process (here
// lowered to 5), Seal fails with ErrSealLimit and seals nothing, until a
// rotation brings a fresh primary key.
func TestSealLimit(t *testing.T) {
	ctx := context.Background()
	ks, err := Create(ctx, FileStore(filepath.Join(t.TempDir(), "keyset")), kektest.New("app"))
	require.NoError(t, err)
	defer ks.Close()
	ks.sealLimit = 5
	ks.SetRotateAfter(DefaultRotateAfter, nil) // clamped to the lowered limit
	c := NewCipher(ks, Config{})
	for i := range 5 {
		_, err := c.Seal("k", []byte{byte(i)})
		require.NoError(t, err)
	}
	require.True(t, ks.RotationDue())
	_, err = c.Seal("k", []byte("six"))
	require.ErrorIs(t, err, ErrSealLimit)
	_, err = c.AppendSealField(nil, "k", "f", []byte("six"))
	require.ErrorIs(t, err, ErrSealLimit)
	require.EqualValues(t, 5, ks.Seals(1), "refused seals are not counted")

	id, err := ks.Rotate(ctx)
	require.NoError(t, err)
	require.False(t, ks.RotationDue())
	v, err := c.Seal("k", []byte("after rotation"))
	require.NoError(t, err)
	got, ok := KeyID(v)
	require.True(t, ok)
	require.Equal(t, id, got)
	require.EqualValues(t, 1, ks.Seals(id))
}
