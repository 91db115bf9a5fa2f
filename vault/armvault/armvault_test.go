package armvault_test

import (
	"context"
	"errors"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/armvault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

func newSource(t *testing.T, s *vaulttest.Server) *armvault.Source {
	src, err := armvault.New("00000000-0000-0000-0000-000000000001", "rg-cache", s.Credential("reader"),
		&arm.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: s.Client()}})
	require.NoError(t, err)
	return src
}

// The properties come through the official armkeyvault client, for vaults
// and Managed HSMs.
func TestVaultProperties(t *testing.T) {
	s := vaulttest.NewServer(t)
	src := newSource(t, s)
	ctx := context.Background()
	cases := []vault.Properties{
		{SoftDelete: true, PurgeProtection: true, Location: "westeurope"},
		{SoftDelete: true, Location: "eastus", FirewallEnabled: true},
		{Location: "northeurope", FirewallEnabled: true, TrustedServicesBypass: true},
	}
	for _, want := range cases {
		s.SetProperties(want)
		for _, url := range []string{"https://contoso.vault.azure.net", "https://contoso-hsm.managedhsm.azure.net"} {
			got, err := src.VaultProperties(ctx, url)
			require.NoError(t, err)
			require.Equal(t, want, got, url)
		}
	}
	require.Equal(t, 6, s.Count(vaulttest.CountARM))

	_, err := armvault.New("", "rg", s.Credential("reader"), nil)
	require.ErrorContains(t, err, "armvault.New: subscription ID and resource group are required")
}

// Validate with the management plane as the source of vault properties.
func TestValidateWithARM(t *testing.T) {
	s := vaulttest.NewServer(t)
	s.Grant("admin", vaulttest.AllPermissions...)
	s.Grant("cache", vaulttest.CryptoServiceEncryptionUser...)
	ctx := context.Background()
	admin, err := azkeys.NewClient(s.VaultURL("contoso"), s.Credential("admin"), s.ClientOptions())
	require.NoError(t, err)
	_, err = admin.CreateKey(ctx, "cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	require.NoError(t, err)
	k, err := vault.New(vault.Config{VaultURL: s.VaultURL("contoso"), KeyName: "cmk", Credential: s.Credential("cache"), ClientOptions: s.ClientOptions()})
	require.NoError(t, err)
	src := newSource(t, s)
	require.NoError(t, k.Validate(ctx, vault.Requirements{Region: "westeurope", Vault: src}))

	s.SetProperties(vault.Properties{SoftDelete: true, Location: "westeurope"})
	err = k.Validate(ctx, vault.Requirements{Region: "westeurope", Vault: src})
	var pe *kek.PrerequisiteError
	require.True(t, errors.As(err, &pe))
	require.Len(t, pe.Failed, 1)
	require.Equal(t, "purge protection", pe.Failed[0].Name)
}
