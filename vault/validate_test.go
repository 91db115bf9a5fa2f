package vault_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

var goodProps = vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "westeurope"}

func TestValidatePasses(t *testing.T) {
	e := newEnv(t)
	k := e.kek(t, vault.Config{})
	e.srv.SetProperties(vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "West Europe", FirewallEnabled: true, TrustedServicesBypass: true})
	e.srv.ResetCounts()
	require.NoError(t, k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv}))
	require.Equal(t, 1, e.srv.Count(vaulttest.OpGet))
	require.Equal(t, 1, e.srv.Count(vaulttest.OpWrapKey), "a live round trip proves wrap")
	require.Equal(t, 1, e.srv.Count(vaulttest.OpUnwrapKey), "a live round trip proves unwrap")

	// RSA-HSM keys qualify too, and so do StaticProperties.
	e.create(t, "hsm", azkeys.KeyTypeRSAHSM)
	kh := e.kek(t, vault.Config{VaultURL: e.url, KeyName: "hsm"})
	require.NoError(t, kh.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: vault.StaticProperties(goodProps)}))
}

// Each failed prerequisite is reported with its name, its problem and its
// fix.
func TestValidateEachFailure(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	future := time.Now().Add(time.Hour)
	cases := []struct {
		name    string
		setup   func(t *testing.T, e *env) (keyName string)
		props   vault.Properties
		region  string
		checks  []string // names of the failed checks, in order
		problem string   // part of the first check's problem
		fix     string   // part of the first check's fix
	}{
		{"key type EC", func(t *testing.T, e *env) string { e.create(t, "ec", azkeys.KeyTypeEC); return "ec" },
			goodProps, "westeurope", []string{"key type", "key operations", "key operations"}, `key type is "EC"`, "use an RSA key"},
		{"disabled", func(t *testing.T, e *env) string { e.setEnabled(t, false); return e.key },
			goodProps, "westeurope", []string{"key enabled"}, "the key is disabled", "enable the key"},
		{"expired", func(t *testing.T, e *env) string {
			e.update(t, e.key, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Expires: &past}})
			return e.key
		}, goodProps, "westeurope", []string{"key not expired"}, "the key expired at", "rotate to a new key version"},
		{"not yet valid", func(t *testing.T, e *env) string {
			e.update(t, e.key, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{NotBefore: &future}})
			return e.key
		}, goodProps, "westeurope", []string{"key active"}, "the key is not valid before", "wait for the activation date"},
		{"no wrapKey operation", func(t *testing.T, e *env) string {
			e.update(t, e.key, azkeys.UpdateKeyParameters{KeyOps: []*azkeys.KeyOperation{to.Ptr(azkeys.KeyOperationUnwrapKey), to.Ptr(azkeys.KeyOperationEncrypt)}})
			return e.key
		}, goodProps, "westeurope", []string{"key operations"}, "do not include wrapKey", "allow the wrapKey and unwrapKey operations"},
		{"no unwrapKey operation", func(t *testing.T, e *env) string {
			e.update(t, e.key, azkeys.UpdateKeyParameters{KeyOps: []*azkeys.KeyOperation{to.Ptr(azkeys.KeyOperationWrapKey)}})
			return e.key
		}, goodProps, "westeurope", []string{"key operations"}, "do not include unwrapKey", "allow the wrapKey and unwrapKey operations"},
		{"soft delete off", nil, vault.Properties{PurgeProtection: true, Location: "westeurope"}, "westeurope",
			[]string{"soft delete"}, "soft delete is off", "az keyvault update --enable-soft-delete true"},
		{"purge protection off", nil, vault.Properties{SoftDelete: true, Location: "westeurope"}, "westeurope",
			[]string{"purge protection"}, "purge protection is off", "--enable-purge-protection true"},
		{"other region", nil, goodProps, "northeurope",
			[]string{"vault region"}, `the vault is in "westeurope", the cache in "northeurope"`, "same region as the cache"},
		{"firewall without trusted services", nil, vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "westeurope", FirewallEnabled: true}, "westeurope",
			[]string{"vault firewall"}, "does not let trusted Azure services through", "--bypass AzureServices"},
		{"identity cannot get", func(t *testing.T, e *env) string { e.srv.Revoke(cachePrincipal, vaulttest.OpGet); return e.key },
			goodProps, "westeurope", []string{"identity can get the key"}, "ForbiddenByRbac", "Key Vault Crypto Service Encryption User"},
		{"identity cannot wrap", func(t *testing.T, e *env) string { e.srv.Revoke(cachePrincipal, vaulttest.OpWrapKey); return e.key },
			goodProps, "westeurope", []string{"identity can wrap"}, "keys/wrapKey", "Key Vault Crypto Service Encryption User"},
		{"identity cannot unwrap", func(t *testing.T, e *env) string { e.srv.Revoke(cachePrincipal, vaulttest.OpUnwrapKey); return e.key },
			goodProps, "westeurope", []string{"identity can unwrap"}, "keys/unwrapKey", "Key Vault Crypto Service Encryption User"},
		{"identity has no access", func(t *testing.T, e *env) string { e.srv.Revoke(cachePrincipal); return e.key },
			goodProps, "westeurope", []string{"identity can get the key", "identity can wrap"}, "ForbiddenByRbac", "wrapKey and unwrapKey"},
		{"key missing", func(t *testing.T, e *env) string { return "absent" },
			goodProps, "westeurope", []string{"key exists"}, "KeyNotFound", "create the RSA key, or recover it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			name := e.key
			if tc.setup != nil {
				name = tc.setup(t, e)
			}
			e.srv.SetProperties(tc.props)
			k := e.kek(t, vault.Config{VaultURL: e.url, KeyName: name})
			err := k.Validate(ctxT(t), vault.Requirements{Region: tc.region, Vault: e.srv})
			require.ErrorIs(t, err, kek.ErrPrerequisite)
			var pe *kek.PrerequisiteError
			require.True(t, errors.As(err, &pe))
			var names []string
			for _, c := range pe.Failed {
				names = append(names, c.Name)
				require.NotEmpty(t, c.Problem)
				require.NotEmpty(t, c.Fix)
			}
			require.Equal(t, tc.checks, names)
			require.Contains(t, pe.Failed[0].Problem, tc.problem)
			require.Contains(t, pe.Failed[0].Fix, tc.fix)
			require.Equal(t, e.url+"/keys/"+name, pe.Key)
			require.Contains(t, err.Error(), "fix: "+pe.Failed[0].Fix)
		})
	}
}

// Every failed check is listed in one error, not just the first.
func TestValidateListsEveryFailure(t *testing.T) {
	e := newEnv(t)
	e.setEnabled(t, false)
	e.update(t, e.key, azkeys.UpdateKeyParameters{KeyOps: []*azkeys.KeyOperation{to.Ptr(azkeys.KeyOperationSign)}})
	e.srv.SetProperties(vault.Properties{Location: "eastus", FirewallEnabled: true})
	k := e.kek(t, vault.Config{})
	e.srv.ResetCounts()
	err := k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
	var pe *kek.PrerequisiteError
	require.ErrorAs(t, err, &pe)
	var names []string
	for _, c := range pe.Failed {
		names = append(names, c.Name)
	}
	// A disabled key cannot be read (403 KeyDisabled), so its operations
	// are not known: "key enabled" stands for both.
	require.Equal(t, []string{"key enabled", "soft delete", "purge protection", "vault region", "vault firewall"}, names)
	require.Contains(t, err.Error(), "5 prerequisite check(s) failed")
	require.Zero(t, e.srv.Count(vaulttest.OpWrapKey), "no round trip on a key known to be unusable")
}

// A vault that cannot be reached says nothing about the prerequisites: the
// error is ErrUnavailable, not a failed check.
func TestValidateUnavailable(t *testing.T) {
	e := newEnv(t)
	k := e.kek(t, vault.Config{})
	e.srv.Inject(vaulttest.Fault{Status: 503})
	err := k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.NotErrorIs(t, err, kek.ErrPrerequisite)
	e.srv.ClearFaults()

	broken := vault.PropertiesFunc(func(context.Context, string) (vault.Properties, error) {
		return vault.Properties{}, errors.New("management plane timeout")
	})
	err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: broken})
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.ErrorContains(t, err, "management plane timeout")

	err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope"})
	var pe *kek.PrerequisiteError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, "vault properties", pe.Failed[0].Name)
}
