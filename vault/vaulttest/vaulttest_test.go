package vaulttest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// The first request of a client carries no token: the emulator answers
// with Key Vault's bearer challenge, the authorization URL ending in the
// tenant and the resource naming the vault's cloud.
func TestChallenge(t *testing.T) {
	s := vaulttest.NewServer(t)
	for host, resource := range map[string]string{
		"contoso.vault.azure.net":          "https://vault.azure.net",
		"contoso.vault.azure.cn":           "https://vault.azure.cn",
		"contoso-hsm.managedhsm.azure.net": "https://managedhsm.azure.net",
	} {
		res, err := s.Client().Post("https://"+host+"/keys/k/wrapkey?api-version=2025-07-01", "application/json", nil)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusUnauthorized, res.StatusCode)
		require.Equal(t, `Bearer authorization="https://login.microsoftonline.com/`+vaulttest.DefaultTenant+`", resource="`+resource+`"`, res.Header.Get("WWW-Authenticate"))
	}
}

// A client that reaches the emulator by address (https://127.0.0.1:PORT)
// gets a challenge for vault.azure.net, which azkeys refuses unless
// DisableChallengeResourceVerification is set.
func TestChallengeResourceVerification(t *testing.T) {
	s := vaulttest.NewServer(t)
	s.Grant("admin", vaulttest.AllPermissions...)
	ctx := context.Background()
	url := "https://" + s.Addr()

	c, err := azkeys.NewClient(url, s.Credential("admin"), s.ClientOptions())
	require.NoError(t, err)
	_, err = c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	require.ErrorContains(t, err, "doesn't match the requested domain")

	opts := s.ClientOptions()
	opts.DisableChallengeResourceVerification = true
	c, err = azkeys.NewClient(url, s.Credential("admin"), opts)
	require.NoError(t, err)
	res, err := c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(*res.Key.KID), url+"/keys/k/"), *res.Key.KID)
}

// The wire format of wrapkey and unwrapkey: JSON with unpadded base64url
// values, answers naming the exact key version, and Key Vault's error body.
func TestWrapWireFormat(t *testing.T) {
	s := vaulttest.NewServer(t)
	s.Grant("admin", vaulttest.AllPermissions...)
	ctx := context.Background()
	c, err := azkeys.NewClient(s.VaultURL("contoso"), s.Credential("admin"), s.ClientOptions())
	require.NoError(t, err)
	created, err := c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA), KeySize: to.Ptr[int32](3072)}, nil)
	require.NoError(t, err)
	require.Len(t, created.Key.N, 384)

	tok, err := s.Credential("admin").GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	require.NoError(t, err)
	post := func(path, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", s.VaultURL("contoso")+path+"?api-version=2025-07-01", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		req.Header.Set("Content-Type", "application/json")
		res, err := s.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m), string(raw))
		return res.StatusCode, m
	}
	st, m := post("/keys/k/wrapkey", `{"alg":"RSA-OAEP-256","value":"AAECAwQFBgcICQoLDA0ODw"}`)
	require.Equal(t, 200, st)
	require.Equal(t, string(*created.Key.KID), m["kid"])
	v := m["value"].(string)
	require.Len(t, v, 512, "3072-bit ciphertext, 384 bytes, unpadded base64url")
	require.False(t, strings.ContainsAny(v, "=+/"))
	st, m = post("/keys/k//unwrapkey", `{"alg":"RSA-OAEP-256","value":"`+v+`"}`)
	require.Equal(t, 200, st)
	require.Equal(t, "AAECAwQFBgcICQoLDA0ODw", m["value"])

	_, err = c.UpdateKey(ctx, "k", "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(false)}}, nil)
	require.NoError(t, err)
	st, m = post("/keys/k/unwrapkey", `{"alg":"RSA-OAEP-256","value":"`+v+`"}`)
	require.Equal(t, 403, st)
	require.Equal(t, map[string]any{"code": "Forbidden", "message": "Operation unwrapKey is not allowed on a disabled key.", "innererror": map[string]any{"code": "KeyDisabled"}}, m["error"])
}

// Injected faults and counters.
func TestFaultsAndCounts(t *testing.T) {
	s := vaulttest.NewServer(t)
	s.Grant("admin", vaulttest.AllPermissions...)
	opts := s.ClientOptions()
	opts.Retry.MaxRetries = -1 // see every answer
	c, err := azkeys.NewClient(s.VaultURL("contoso"), s.Credential("admin"), opts)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = c.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	require.NoError(t, err)

	s.Inject(vaulttest.Fault{Status: 429, RetryAfter: 1500 * time.Millisecond, Count: 1, Ops: []string{vaulttest.OpGet}})
	_, err = c.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "429")
	var re *azcore.ResponseError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "2", re.RawResponse.Header.Get("Retry-After"), "whole seconds, rounded up")
	require.Equal(t, "1500", re.RawResponse.Header.Get("retry-after-ms"))
	_, err = c.GetKey(ctx, "k", "", nil)
	require.NoError(t, err, "the fault was used up")
	require.Equal(t, 2, s.Count(vaulttest.OpGet))
	require.Equal(t, 1, s.Count(vaulttest.OpCreate))

	s.SetRateLimit(2, time.Minute, 2*time.Second)
	wrap := func() error {
		_, err := c.WrapKey(ctx, "k", "", azkeys.KeyOperationParameters{Algorithm: to.Ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: bytes.Repeat([]byte{1}, 32)}, nil)
		return err
	}
	require.NoError(t, wrap())
	require.NoError(t, wrap())
	require.ErrorContains(t, wrap(), "Throttled")
	s.ClearFaults()
	require.NoError(t, wrap())
}

// Soft delete: a deleted key is listed under deletedkeys, its name cannot be
// reused until it is recovered or purged, and a key may be called
// "deletedkeys" without confusing the routes.
func TestSoftDelete(t *testing.T) {
	s := vaulttest.NewServer(t)
	s.Grant("admin", vaulttest.AllPermissions...)
	ctx := context.Background()
	c, err := azkeys.NewClient(s.VaultURL("contoso"), s.Credential("admin"), s.ClientOptions())
	require.NoError(t, err)
	rsa := azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}
	for _, name := range []string{"k", "deletedkeys"} {
		_, err = c.CreateKey(ctx, name, rsa, nil)
		require.NoError(t, err)
	}
	_, err = c.DeleteKey(ctx, "k", nil)
	require.NoError(t, err)
	_, err = c.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "KeyNotFound")
	_, err = c.CreateKey(ctx, "k", rsa, nil)
	require.ErrorContains(t, err, "ObjectIsDeletedButRecoverable")
	_, err = c.GetKey(ctx, "deletedkeys", "", nil)
	require.NoError(t, err)
	_, err = c.RecoverDeletedKey(ctx, "k", nil)
	require.NoError(t, err)
	_, err = c.GetKey(ctx, "k", "", nil)
	require.NoError(t, err)
	_, err = c.GetDeletedKey(ctx, "k", nil)
	require.ErrorContains(t, err, "KeyNotFound")
}
