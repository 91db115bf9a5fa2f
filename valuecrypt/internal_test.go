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
