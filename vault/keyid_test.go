package vault_test

import (
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/stretchr/testify/require"
)

const ver = "0123456789abcdef0123456789abcdef"

func TestParseKeyID(t *testing.T) {
	good := []struct {
		uri                  string
		vault, name, version string
		hsm                  bool
	}{
		{"https://contoso.vault.azure.net/keys/cmk", "https://contoso.vault.azure.net", "cmk", "", false},
		{"https://contoso.vault.azure.net/keys/cmk/" + ver, "https://contoso.vault.azure.net", "cmk", ver, false},
		{"https://CONTOSO.Vault.Azure.Net/keys/Cache-CMK-1/" + strings.ToUpper(ver), "https://contoso.vault.azure.net", "Cache-CMK-1", strings.ToUpper(ver), false},
		{"https://contoso.vault.azure.cn/keys/cmk", "https://contoso.vault.azure.cn", "cmk", "", false},
		{"https://contoso.vault.usgovcloudapi.net/keys/cmk/" + ver, "https://contoso.vault.usgovcloudapi.net", "cmk", ver, false},
		{"https://contoso.vault.sovcloud-api.fr/keys/cmk", "https://contoso.vault.sovcloud-api.fr", "cmk", "", false},
		{"https://contoso.vault.sovcloud-api.de/keys/cmk/" + ver, "https://contoso.vault.sovcloud-api.de", "cmk", ver, false},
		{"https://contoso-hsm.managedhsm.sovcloud-api.fr/keys/cmk", "https://contoso-hsm.managedhsm.sovcloud-api.fr", "cmk", "", true},
		{"https://contoso-hsm.managedhsm.sovcloud-api.de/keys/cmk", "https://contoso-hsm.managedhsm.sovcloud-api.de", "cmk", "", true},
		{"https://contoso-hsm.managedhsm.azure.cn/keys/cmk", "https://contoso-hsm.managedhsm.azure.cn", "cmk", "", true},
		{"https://contoso-hsm.managedhsm.azure.net/keys/cmk/" + ver, "https://contoso-hsm.managedhsm.azure.net", "cmk", ver, true},
		{"https://abc.vault.azure.net/keys/" + strings.Repeat("k", 127), "https://abc.vault.azure.net", strings.Repeat("k", 127), "", false},
		{"https://a23456789012345678901234.vault.azure.net/keys/k", "https://a23456789012345678901234.vault.azure.net", "k", "", false},
	}
	for _, tc := range good {
		t.Run("good "+tc.uri, func(t *testing.T) {
			id, err := vault.ParseKeyID(tc.uri)
			require.NoError(t, err)
			require.Equal(t, vault.KeyID{Vault: tc.vault, Name: tc.name, Version: tc.version}, id)
			require.Equal(t, tc.hsm, id.ManagedHSM())
			again, err := vault.ParseKeyID(id.String())
			require.NoError(t, err)
			require.Equal(t, id, again, "String must parse back to the same KeyID")
		})
	}
	bad := []struct{ uri, want string }{
		{"", "scheme must be https"},
		{"http://contoso.vault.azure.net/keys/cmk", "scheme must be https"},
		{"contoso.vault.azure.net/keys/cmk", "scheme must be https"},
		{"https://contoso.vault.azure.net:8443/keys/cmk", "no port"},
		{"https://user@contoso.vault.azure.net/keys/cmk", "no user info"},
		{"https://contoso.vault.azure.net/keys/cmk?api-version=7.4", "no user info, query"},
		{"https://contoso.vault.azure.net/keys/cmk#frag", "no user info, query"},
		{"https://contoso.example.com/keys/cmk", "not a Key Vault or Managed HSM host"},
		{"https://vault.azure.net/keys/cmk", "not a Key Vault or Managed HSM host"},
		{"https://a.b.vault.azure.net/keys/cmk", "not a Key Vault or Managed HSM host"},
		{"https://127.0.0.1/keys/cmk", "not a Key Vault or Managed HSM host"},
		{"https://contoso.blob.core.windows.net/keys/cmk", "not a Key Vault or Managed HSM host"},
		{"https://ab.vault.azure.net/keys/cmk", "vault name"},
		{"https://1contoso.vault.azure.net/keys/cmk", "vault name"},
		{"https://contoso-.vault.azure.net/keys/cmk", "vault name"},
		{"https://con--toso.vault.azure.net/keys/cmk", "vault name"},
		{"https://a234567890123456789012345.vault.azure.net/keys/k", "vault name"},
		{"https://contoso.vault.azure.net", "path must be"},
		{"https://contoso.vault.azure.net/keys", "path must be"},
		{"https://contoso.vault.azure.net/keys/", "key name"},
		{"https://contoso.vault.azure.net/secrets/cmk", "path must be"},
		{"https://contoso.vault.azure.net/deletedkeys/cmk", "path must be"},
		{"https://contoso.vault.azure.net/keys/cmk/" + ver + "/wrapkey", "path must be"},
		{"https://contoso.vault.azure.net/keys/cmk_1", "key name"},
		{"https://contoso.vault.azure.net/keys/" + strings.Repeat("k", 128), "key name"},
		{"https://contoso.vault.azure.net/keys/cmk/123", "key version"},
		{"https://contoso.vault.azure.net/keys/cmk/" + ver + "0", "key version"},
		{"https://contoso.vault.azure.net/keys/cmk/" + strings.Repeat("g", 32), "key version"},
		{"https://contoso.vault.azure.net/keys/cmk//", "path must be"},
		{"https://contoso.vault.microsoftazure.de/keys/cmk", "Microsoft Cloud Germany, which closed on 2021-10-29"},
		{"https://contoso-hsm.managedhsm.microsoftazure.de/keys/cmk", "Microsoft Cloud Germany, which closed on 2021-10-29"},
		{"https://contoso.vault.sovcloud-api.sg/keys/cmk", "not a Key Vault or Managed HSM host"},
	}
	for _, tc := range bad {
		t.Run("bad "+tc.uri, func(t *testing.T) {
			_, err := vault.ParseKeyID(tc.uri)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.True(t, strings.HasPrefix(err.Error(), "vault.ParseKeyID: "), err.Error())
		})
	}
}

// A versionless identifier with a trailing slash, the form azkeys and the
// JavaScript and Python clients write, follows the current version.
func TestParseKeyIDTrailingSlash(t *testing.T) {
	for _, uri := range []string{"https://contoso.vault.azure.net/keys/cmk/", "https://contoso-hsm.managedhsm.azure.net/keys/cmk/"} {
		id, err := vault.ParseKeyID(uri)
		require.NoError(t, err, uri)
		require.Empty(t, id.Version)
		require.Equal(t, strings.TrimSuffix(uri, "/"), id.String())
		k, err := vault.New(vault.Config{KeyID: uri, ManagedIdentity: "11111111-2222-3333-4444-555555555555"})
		require.NoError(t, err)
		require.Equal(t, id, k.KeyID())
	}
}

func TestNewKeyID(t *testing.T) {
	id, err := vault.NewKeyID("https://contoso.vault.azure.net/", "cmk", ver)
	require.NoError(t, err)
	require.Equal(t, "https://contoso.vault.azure.net/keys/cmk/"+ver, id.String())

	_, err = vault.NewKeyID("https://contoso.vault.azure.net/keys/cmk", "cmk", "")
	require.ErrorContains(t, err, "must have no path")
	_, err = vault.NewKeyID("https://contoso.vault.azure.net", "", "")
	require.ErrorContains(t, err, "key name")
	_, err = vault.NewKeyID("https://contoso.vault.azure.net", "cmk", "v1")
	require.ErrorContains(t, err, "key version")
}

func FuzzParseKeyID(f *testing.F) {
	f.Add("https://contoso.vault.azure.net/keys/cmk/" + ver)
	f.Add("https://contoso-hsm.managedhsm.azure.net/keys/cmk")
	f.Add("https://x/keys//")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := vault.ParseKeyID(s)
		if err != nil {
			return
		}
		again, err := vault.ParseKeyID(id.String())
		if err != nil || again != id {
			t.Fatalf("ParseKeyID(%q) = %+v, but its String %q parses to %+v, %v", s, id, id.String(), again, err)
		}
	})
}
