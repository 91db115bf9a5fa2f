package vaulttest_test

import (
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
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

const vaultScope = "https://vault.azure.net/.default"

// strict is an emulator with an admin client of vault contoso and one RSA
// 3072 key "k".
type strict struct {
	s     *vaulttest.Server
	c     *azkeys.Client
	token string // admin token for the vault audience
}

func newStrict(t *testing.T) *strict {
	s := vaulttest.NewServer(t)
	s.Grant("admin", vaulttest.AllPermissions...)
	c, err := azkeys.NewClient(s.VaultURL("contoso"), s.Credential("admin"), s.ClientOptions())
	require.NoError(t, err)
	_, err = c.CreateKey(context.Background(), "k", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA), KeySize: to.Ptr[int32](3072)}, nil)
	require.NoError(t, err)
	tok, err := s.Credential("admin").GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{vaultScope}})
	require.NoError(t, err)
	return &strict{s: s, c: c, token: tok.Token}
}

// do sends a raw request to vault contoso and returns the status, the
// WWW-Authenticate header and the decoded body.
func (st *strict) do(t *testing.T, method, pathQuery, token, body string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, st.s.VaultURL("contoso")+pathQuery, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := st.s.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var m map[string]any
	if len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, &m), string(raw))
	}
	return res.StatusCode, res.Header.Get("WWW-Authenticate"), m
}

func errorOf(m map[string]any) (code, inner, msg string) {
	e, _ := m["error"].(map[string]any)
	code, _ = e["code"].(string)
	msg, _ = e["message"].(string)
	if in, ok := e["innererror"].(map[string]any); ok {
		inner, _ = in["code"].(string)
	}
	return code, inner, msg
}

const api = "?api-version=2025-07-01"

// Rotation keeps the key's type, size and operations.
func TestRotationKeepsKeySize(t *testing.T) {
	st := newStrict(t)
	r, err := st.c.RotateKey(context.Background(), "k", nil)
	require.NoError(t, err)
	require.Len(t, r.Key.N, 384, "RSA 3072 stays RSA 3072")
}

// Tokens are bound to their audience and expire.
func TestTokenAudienceAndExpiry(t *testing.T) {
	st := newStrict(t)
	arm, err := st.s.Credential("admin").GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}})
	require.NoError(t, err)
	status, challenge, m := st.do(t, "GET", "/keys/k"+api, arm.Token, "")
	require.Equal(t, http.StatusUnauthorized, status, "a token for Resource Manager does not read keys")
	require.Contains(t, challenge, `resource="https://vault.azure.net"`)
	_, _, msg := errorOf(m)
	require.Contains(t, msg, "Invalid audience")

	// A vault token does not read Resource Manager either.
	req, _ := http.NewRequest("GET", "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/contoso?api-version=2023-07-01", nil)
	req.Header.Set("Authorization", "Bearer "+st.token)
	res, err := st.s.Client().Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)

	status, _, _ = st.do(t, "GET", "/keys/k"+api, st.token, "")
	require.Equal(t, http.StatusOK, status)
	st.s.ExpireTokens()
	status, challenge, _ = st.do(t, "GET", "/keys/k"+api, st.token, "")
	require.Equal(t, http.StatusUnauthorized, status, "an expired token is refused")
	require.NotEmpty(t, challenge)
	_, err = st.c.GetKey(context.Background(), "k", "", nil)
	require.NoError(t, err, "the SDK answers the challenge with a new token")
}

// A token request that names no identity gets a token only where the host
// has a system-assigned identity.
func TestNoImplicitSystemAssignedIdentity(t *testing.T) {
	s := vaulttest.NewServer(t)
	endpoint, header := s.IdentityEndpoint()
	get := func() int {
		req, _ := http.NewRequest("GET", endpoint+"?api-version=2019-08-01&resource=https://vault.azure.net", nil)
		req.Header.Set("X-IDENTITY-HEADER", header)
		res, err := s.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, http.StatusBadRequest, get())
	s.SetSystemAssignedIdentity("host")
	require.Equal(t, http.StatusOK, get())

	// IMDS, at its real address.
	req, _ := http.NewRequest("GET", "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net", nil)
	req.Header.Set("Metadata", "true")
	res, err := s.Client().Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
}

// Outside its dates a key refuses wrap but still unwraps, as documented.
func TestDatesRefuseWrapNotUnwrap(t *testing.T) {
	st := newStrict(t)
	ctx := context.Background()
	params := azkeys.KeyOperationParameters{Algorithm: to.Ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: []byte("0123456789abcdef0123456789abcdef")}
	w, err := st.c.WrapKey(ctx, "k", "", params, nil)
	require.NoError(t, err)
	for _, attrs := range []azkeys.KeyAttributes{{Expires: to.Ptr(time.Now().Add(-time.Hour))}, {NotBefore: to.Ptr(time.Now().Add(time.Hour)), Expires: to.Ptr(time.Now().Add(2 * time.Hour))}} {
		_, err = st.c.UpdateKey(ctx, "k", "", azkeys.UpdateKeyParameters{KeyAttributes: &attrs}, nil)
		require.NoError(t, err)
		_, err = st.c.WrapKey(ctx, "k", "", params, nil)
		var re *azcore.ResponseError
		require.ErrorAs(t, err, &re)
		require.Equal(t, http.StatusForbidden, re.StatusCode)
		u, err := st.c.UnwrapKey(ctx, "k", w.KID.Version(), azkeys.KeyOperationParameters{Algorithm: params.Algorithm, Value: w.Result}, nil)
		require.NoError(t, err)
		require.Equal(t, params.Value, u.Result)
	}
}

// Requests the service refuses: a missing or unknown api-version, an empty
// wrap value, a disabled key read.
func TestRefusedRequests(t *testing.T) {
	st := newStrict(t)
	for _, q := range []string{"", "?api-version=1999-01-01"} {
		status, _, m := st.do(t, "GET", "/keys/k"+q, st.token, "")
		require.Equal(t, http.StatusBadRequest, status, q)
		code, _, msg := errorOf(m)
		require.Equal(t, "BadParameter", code)
		require.Contains(t, msg, "api-version")
	}
	status, _, m := st.do(t, "POST", "/keys/k/wrapkey"+api, st.token, `{"alg":"RSA-OAEP-256","value":""}`)
	require.Equal(t, http.StatusBadRequest, status)
	code, _, _ := errorOf(m)
	require.Equal(t, "BadParameter", code)

	_, err := st.c.UpdateKey(context.Background(), "k", "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(false)}}, nil)
	require.NoError(t, err)
	status, _, m = st.do(t, "GET", "/keys/k"+api, st.token, "")
	require.Equal(t, http.StatusForbidden, status)
	_, inner, msg := errorOf(m)
	require.Equal(t, "KeyDisabled", inner)
	require.Equal(t, "Operation get is not allowed on a disabled key.", msg)
}

// Lists carry attributes; deleted keys are listed; the rotation policy is
// a policy, not a key version.
func TestListsAndRotationPolicy(t *testing.T) {
	st := newStrict(t)
	ctx := context.Background()
	pager := st.c.NewListKeyPropertiesPager(nil)
	page, err := pager.NextPage(ctx)
	require.NoError(t, err)
	require.Len(t, page.Value, 1)
	require.NotNil(t, page.Value[0].Attributes)
	require.True(t, *page.Value[0].Attributes.Enabled)
	require.NotNil(t, page.Value[0].Attributes.Created)

	p, err := st.c.GetKeyRotationPolicy(ctx, "k", nil)
	require.NoError(t, err)
	require.Equal(t, st.s.VaultURL("contoso")+"/keys/k/rotationpolicy", *p.ID)
	require.Len(t, p.LifetimeActions, 1)
	require.Equal(t, azkeys.KeyRotationPolicyActionNotify, *p.LifetimeActions[0].Action.Type)
	_, err = st.c.UpdateKeyRotationPolicy(ctx, "k", azkeys.KeyRotationPolicy{
		Attributes:      &azkeys.KeyRotationPolicyAttributes{ExpiryTime: to.Ptr("P90D")},
		LifetimeActions: []*azkeys.LifetimeAction{{Action: &azkeys.LifetimeActionType{Type: to.Ptr(azkeys.KeyRotationPolicyActionRotate)}, Trigger: &azkeys.LifetimeActionTrigger{TimeAfterCreate: to.Ptr("P30D")}}},
	}, nil)
	require.NoError(t, err)
	p, err = st.c.GetKeyRotationPolicy(ctx, "k", nil)
	require.NoError(t, err)
	require.Equal(t, "P90D", *p.Attributes.ExpiryTime)
	require.Equal(t, azkeys.KeyRotationPolicyActionRotate, *p.LifetimeActions[0].Action.Type)

	_, err = st.c.DeleteKey(ctx, "k", nil)
	require.NoError(t, err)
	dp := st.c.NewListDeletedKeyPropertiesPager(nil)
	dpage, err := dp.NextPage(ctx)
	require.NoError(t, err)
	require.Len(t, dpage.Value, 1)
	require.Equal(t, st.s.VaultURL("contoso")+"/deletedkeys/k", *dpage.Value[0].RecoveryID)
}

// An injected 401 carries a challenge, as every 401 of the service does.
func TestInjected401HasChallenge(t *testing.T) {
	st := newStrict(t)
	st.s.Inject(vaulttest.Fault{Status: http.StatusUnauthorized, Count: 1})
	status, challenge, _ := st.do(t, "GET", "/keys/k"+api, st.token, "")
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, challenge, "Bearer authorization=")
}

// Each vault host has its own keys; a vault can use access policies, sit
// behind a firewall or take private-link traffic only.
func TestVaultsAndAccessRules(t *testing.T) {
	st := newStrict(t)
	ctx := context.Background()
	other, err := azkeys.NewClient(st.s.VaultURL("fabrikam"), st.s.Credential("admin"), st.s.ClientOptions())
	require.NoError(t, err)
	_, err = other.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "KeyNotFound", "keys live in the vault that created them")

	reader, err := azkeys.NewClient(st.s.VaultURL("contoso"), st.s.Credential("nobody"), st.s.ClientOptions())
	require.NoError(t, err)
	_, err = reader.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "ForbiddenByRbac")
	st.s.UseAccessPolicies(st.s.VaultURL("contoso"), true)
	_, err = reader.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "AccessDenied")
	require.ErrorContains(t, err, "does not have keys get permission")

	st.s.SetNetwork(st.s.VaultURL("contoso"), vaulttest.NetworkFirewall)
	_, err = st.c.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "ForbiddenByFirewall")
	st.s.SetNetwork(st.s.VaultURL("contoso"), vaulttest.NetworkPrivateOnly)
	_, err = st.c.GetKey(ctx, "k", "", nil)
	require.ErrorContains(t, err, "ForbiddenByConnection")
	_, err = other.CreateKey(ctx, "k2", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
	require.NoError(t, err, "another vault keeps its own rules")
	st.s.SetProperties(vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "westeurope", FirewallEnabled: true, TrustedServicesBypass: true})
	_, err = st.c.GetKey(ctx, "k", "", nil)
	require.NoError(t, err, "trusted services pass")
}

// The certificate lives for years, not a day.
func TestCertificateLifetime(t *testing.T) {
	s := vaulttest.NewServer(t)
	res, err := s.Client().Get("https://contoso.vault.azure.net/keys?api-version=2025-07-01")
	require.NoError(t, err)
	res.Body.Close()
	cert := res.TLS.PeerCertificates[0]
	require.Greater(t, time.Until(cert.NotAfter), 5*365*24*time.Hour)
	require.NoError(t, cert.VerifyHostname("contoso.vault.sovcloud-api.fr"))
}
