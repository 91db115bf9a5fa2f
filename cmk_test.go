package cachecrypt

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// keyVault starts the Key Vault emulator with one RSA-HSM key and returns a
// KEK on it (versionless), the admin client, and the emulator.
func keyVault(t *testing.T) (*vault.KEK, *azkeys.Client, *vaulttest.Server) {
	t.Helper()
	ctx := context.Background()
	srv := vaulttest.NewServer(t)
	srv.Grant("admin", vaulttest.AllPermissions...)
	srv.Grant("cache", vaulttest.CryptoServiceEncryptionUser...)
	admin, err := azkeys.NewClient(srv.VaultURL("contoso"), srv.Credential("admin"), srv.ClientOptions())
	require.NoError(t, err)
	_, err = admin.CreateKey(ctx, "cache-cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSAHSM)}, nil)
	require.NoError(t, err)
	k, err := vault.New(vault.Config{KeyID: srv.VaultURL("contoso") + "/keys/cache-cmk",
		Credential: srv.Credential("cache"), ClientOptions: srv.ClientOptions()})
	require.NoError(t, err)
	return k, admin, srv
}

func vaultEncryption(k *vault.KEK, srv *vaulttest.Server) Encryption {
	return Encryption{CMK: k, Check: func(ctx context.Context) error {
		return k.Validate(ctx, vault.Requirements{Region: "westeurope", Vault: srv})
	}}
}

func hsmKEK(t *testing.T) *pkcs11.KEK {
	t.Helper()
	hsm := testenv.StartSoftHSM(t, "cache")
	k, err := pkcs11.GenerateKey(context.Background(), hsm.URI("cache-kek", []byte{1}), 2048)
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	return k
}

// TestSwitchThroughEveryKEKKind moves one instance MMK -> Key Vault CMK ->
// PKCS#11 CMK -> MMK; the data keys never change and each reopen needs only
// the KEK then configured.
func TestSwitchThroughEveryKEKKind(t *testing.T) {
	ctx := context.Background()
	vk, _, srv := keyVault(t)
	hk := hsmKEK(t)
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	before := fileKeys(t, i)

	steps := []struct {
		enc  Encryption
		kind kek.Kind
	}{
		{vaultEncryption(vk, srv), kek.KindKeyVault},
		{CustomerManaged(hk), kek.KindPKCS11},
		{MMK, kek.KindMMK},
	}
	for _, s := range steps {
		require.NoError(t, i.SetEncryption(ctx, s.enc))
		for _, r := range i.Status() {
			require.Equal(t, s.kind, r.KEK.Kind)
		}
		require.Equal(t, before, fileKeys(t, i))
		i.Close()
		i = open(t, dir, noProbe(Config{Encryption: s.enc}))
		require.Equal(t, before, fileKeys(t, i), "reopened under %s", s.kind)
	}
}

// TestKeyVaultRevocationAndRestore disables the vault key: after the grace
// period the instance fails closed with ErrRevoked; re-enabling restores it.
func TestKeyVaultRevocationAndRestore(t *testing.T) {
	ctx := context.Background()
	vk, admin, srv := keyVault(t)
	clk := &clock{now: time.Unix(1e9, 0)}
	cfg := noProbe(Config{Encryption: vaultEncryption(vk, srv), RevocationGrace: time.Minute})
	cfg.now = clk.Now
	i := open(t, t.TempDir(), cfg)
	before := fileKeys(t, i)
	require.NoError(t, i.Probe(ctx))

	_, err := admin.UpdateKey(ctx, "cache-cmk", "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(false)}}, nil)
	require.NoError(t, err)
	require.ErrorIs(t, i.Probe(ctx), ErrRevoked)
	require.Equal(t, before, fileKeys(t, i), "inside the grace period")
	clk.Add(2 * time.Minute)
	require.ErrorIs(t, i.Probe(ctx), ErrRevoked)
	r, _ := i.Keyring(DiskPersistence)
	_, err = r.FileKey(1, "rdb", salt)
	require.ErrorIs(t, err, ErrRevoked)

	_, err = admin.UpdateKey(ctx, "cache-cmk", "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(true)}}, nil)
	require.NoError(t, err)
	require.NoError(t, i.Probe(ctx))
	require.Equal(t, before, fileKeys(t, i))
}

// TestRefreshFollowsVersionlessKey rotates the vault key: RefreshKEK
// rewraps every disk under the new version, and a keyring wrapped under the
// old version still unwraps.
func TestRefreshFollowsVersionlessKey(t *testing.T) {
	ctx := context.Background()
	vk, admin, srv := keyVault(t)
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{Encryption: vaultEncryption(vk, srv)}))
	before := fileKeys(t, i)
	oldID := i.Status()[0].KEK.KeyID
	n, err := i.RefreshKEK(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing to do before a rotation")

	_, err = admin.RotateKey(ctx, "cache-cmk", nil)
	require.NoError(t, err)
	n, err = i.RefreshKEK(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	newID := i.Status()[0].KEK.KeyID
	require.NotEqual(t, oldID, newID)
	require.Equal(t, before, fileKeys(t, i))
	i.Close()
	again := open(t, dir, noProbe(Config{Encryption: vaultEncryption(vk, srv)}))
	require.Equal(t, newID, again.Status()[1].KEK.KeyID)
	require.Equal(t, before, fileKeys(t, again))
}
