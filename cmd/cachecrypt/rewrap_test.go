package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// An instance directory moves MMK -> Key Vault CMK -> PKCS#11 CMK -> MMK
// from the command line; status follows each step without any KEK, and a
// disabled Key Vault key makes the open fail with exit code 3.
func TestRewrapMMKVaultSoftHSM(t *testing.T) {
	v := newVaultEnv(t)
	hsm := testenv.StartSoftHSM(t, "cache")
	uri := hsm.URI("cli-kek", []byte{1})
	k, err := pkcs11.GenerateKey(context.Background(), uri, 2048)
	require.NoError(t, err)
	require.NoError(t, k.Close())

	dir := newInstance(t)
	plain, _ := redisRDB(t)
	want, err := os.ReadFile(plain)
	require.NoError(t, err)
	snap := filepath.Join(dir, "persistence", "dump.rdb")
	ok(t, nil, "encrypt", plain, "-o", snap)
	// roundTrip checks that the snapshot written before every switch still
	// verifies and decrypts byte for byte under the KEK of the moment.
	roundTrip := func(env []string, extra ...string) {
		t.Helper()
		ok(t, env, append(extra, "verify", dir)...)
		dec := filepath.Join(t.TempDir(), "dump.rdb")
		ok(t, env, append(extra, "decrypt", snap, "-o", dec)...)
		got, err := os.ReadFile(dec)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got), "snapshot differs after a switch")
	}
	var st statusJSONOut
	keyOf := func() (string, string) {
		jsonOut(t, nil, &st, "status", dir)
		require.Len(t, st.Rows, 3)
		for _, r := range st.Rows[1:] {
			require.Equal(t, st.Rows[0].KeyID, r.KeyID, "every disk under the same KEK")
		}
		return st.Rows[0].Key, st.Rows[0].KeyID
	}

	// MMK -> Key Vault.
	out := ok(t, v.env, "keyring", "rewrap", "--to", v.keyURL, dir)
	require.Contains(t, out, "to:")
	key, id := keyOf()
	require.Equal(t, "CMK", key)
	require.True(t, strings.HasPrefix(id, v.keyURL+"/"), id)
	require.Equal(t, "azure-key-vault", st.Rows[0].KEKKind)
	require.Len(t, st.Rows[0].KeyVersion, 32)
	roundTrip(v.env)

	// The keyring records its Key Vault key: opening needs only the identity.
	ok(t, v.env, "keyring", "show", "--open", dir)
	v.srv.ResetCounts()
	ok(t, v.env, "keyring", "rotate", dir)
	require.Equal(t, 2, v.srv.Count(vaulttest.OpUnwrapKey), "one unwrap per disk")

	// A disabled key: exit 3, and status still works without the key.
	v.setEnabled(t, false)
	r := fails(t, exitKey, v.env, "keyring", "show", "--open", dir)
	require.Contains(t, r.stdout, "revoked")
	r = fails(t, exitKey, v.env, "decrypt", snap, "-o", filepath.Join(t.TempDir(), "x"))
	require.Contains(t, r.stderr, "what to do:")
	r = fails(t, exitKey, v.env, "keyring", "rewrap", "--to", "mmk", dir)
	require.Contains(t, r.stderr, "what to do:")
	ok(t, nil, "status", dir)
	v.setEnabled(t, true)

	// No identity: a clear usage error.
	r = fails(t, exitUsage, v.env[:4], "keyring", "show", "--open", dir)
	require.Contains(t, r.stdout, "--client-id")

	// Key Vault -> PKCS#11 (SoftHSM); the current key is found from the keyring.
	ok(t, v.env, "keyring", "rewrap", "--to", uri, dir)
	key, id = keyOf()
	require.Equal(t, "CMK", key)
	require.Equal(t, "pkcs11", st.Rows[0].KEKKind)
	require.Contains(t, id, "object=cli-kek")
	require.NotContains(t, id, "pin", "the key id holds no PIN source")
	roundTrip(nil, "--kek", uri)

	// A PKCS#11 keyring needs --kek: exit 3 with the fix.
	r = fails(t, exitKey, nil, "keyring", "show", "--open", dir)
	require.Contains(t, r.stdout, "--kek")
	r = fails(t, exitKey, nil, "verify", dir)
	require.Contains(t, r.stdout, "see the first failure", "one full report per keyring")
	require.Equal(t, 1, strings.Count(r.stdout, "what to do:"))
	ok(t, nil, "keyring", "show", "--open", "--kek", uri, dir)
	ok(t, []string{envKEK + "=" + uri}, "keyring", "show", "--open", dir)

	// PKCS#11 -> MMK.
	ok(t, nil, "keyring", "rewrap", "--kek", uri, "--to", "mmk", dir)
	key, id = keyOf()
	require.Equal(t, "MMK", key)
	require.True(t, strings.HasPrefix(id, "mmk/mmk/"), id)
	out = ok(t, nil, "keyring", "show", "--open", dir)
	require.NotContains(t, out, "FAILED")
	roundTrip(nil)

	// A lone keyring file (a backup copy) moves too.
	kr := filepath.Join(dir, "os", "keyring")
	ok(t, v.env, "keyring", "rewrap", "--to", v.keyURL, kr)
	var insp map[string]any
	jsonOut(t, nil, &insp, "inspect", kr)
	require.Equal(t, "azure-key-vault", insp["kek_kind"])
	require.Equal(t, "CMK", insp["key"])
	ok(t, v.env, "keyring", "show", "--open", kr)
}
