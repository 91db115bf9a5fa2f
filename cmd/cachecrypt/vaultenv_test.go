package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// vaultEnv is a Key Vault emulator with one RSA key, and the environment
// under which the binary reaches it through a user-assigned managed
// identity (the emulator's token endpoint) and the emulator's CA.
type vaultEnv struct {
	srv      *vaulttest.Server
	admin    *azkeys.Client
	keyURL   string // https://contoso.vault.azure.net/keys/cmk
	clientID string
	env      []string
}

func newVaultEnv(t *testing.T) *vaultEnv {
	t.Helper()
	srv := vaulttest.NewServer(t)
	srv.Grant("admin", vaulttest.AllPermissions...)
	srv.Grant("cache-identity", vaulttest.CryptoServiceEncryptionUser...)
	var b [6]byte
	rand.Read(b[:])
	v := &vaultEnv{srv: srv, clientID: "7c0ffee0-1234-4abc-8def-" + hex.EncodeToString(b[:])}
	srv.AddManagedIdentity("cache-identity", v.clientID, "")
	var err error
	v.admin, err = azkeys.NewClient(srv.VaultURL("contoso"), srv.Credential("admin"), srv.ClientOptions())
	require.NoError(t, err)
	_, err = v.admin.CreateKey(context.Background(), "cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	require.NoError(t, err)
	v.keyURL = srv.VaultURL("contoso") + "/keys/cmk"
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, srv.WriteCACert(ca))
	endpoint, header := srv.IdentityEndpoint()
	v.env = []string{envVaultCA + "=" + ca, envVaultDial + "=" + srv.Addr(),
		"IDENTITY_ENDPOINT=" + endpoint, "IDENTITY_HEADER=" + header, envClientID + "=" + v.clientID}
	return v
}

func (v *vaultEnv) setEnabled(t *testing.T, enabled bool) {
	t.Helper()
	_, err := v.admin.UpdateKey(context.Background(), "cmk", "", azkeys.UpdateKeyParameters{
		KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(enabled)}}, nil)
	require.NoError(t, err)
}

// With --region, a Key Vault CMK must pass every prerequisite before any
// keyring moves to it: failures are listed with their fixes, exit code 3,
// and the instance stays on its key.
func TestRewrapVaultPrerequisites(t *testing.T) {
	v := newVaultEnv(t)
	dir := newInstance(t)
	arm := []string{"--vault-subscription", "00000000-0000-0000-0000-000000000001", "--vault-resource-group", "rg-cache"}

	r := fails(t, exitUsage, v.env, "keyring", "rewrap", "--to", v.keyURL, "--region", "westeurope", dir)
	require.Contains(t, r.stderr, "--vault-subscription")

	v.srv.SetProperties(vault.Properties{SoftDelete: true, Location: "eastus"})
	r = fails(t, exitKey, v.env, append([]string{"keyring", "rewrap", "--to", v.keyURL, "--region", "westeurope"}, append(arm, dir)...)...)
	require.Contains(t, r.stderr, "purge protection")
	require.Contains(t, r.stderr, "region")
	var st statusJSONOut
	jsonOut(t, nil, &st, "status", dir)
	require.Equal(t, "MMK", st.Rows[0].Key, "a failed check moves nothing")

	v.srv.SetProperties(vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "westeurope"})
	v.srv.ResetCounts()
	ok(t, v.env, append([]string{"keyring", "rewrap", "--to", v.keyURL, "--region", "westeurope"}, append(arm, dir)...)...)
	require.Positive(t, v.srv.Count(vaulttest.CountARM), "vault properties read from Azure Resource Manager")
	jsonOut(t, nil, &st, "status", dir)
	require.Equal(t, "CMK", st.Rows[0].Key)
	require.True(t, strings.HasPrefix(st.Rows[0].KeyID, v.keyURL+"/"))

	// Without --region the tool says what it did not check.
	r = cli(t, v.env, "keyring", "rewrap", "--to", v.keyURL, dir)
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stderr, "not checked")
}
