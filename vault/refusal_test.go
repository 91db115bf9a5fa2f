package vault_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// checkNames returns the names of the failed checks of a Validate error.
func checkNames(t *testing.T, err error) []string {
	t.Helper()
	var pe *kek.PrerequisiteError
	require.ErrorAs(t, err, &pe)
	var names []string
	for _, c := range pe.Failed {
		names = append(names, c.Name)
	}
	return names
}

// A disabled key answers GET with 403 KeyDisabled: the advice is to enable
// it, not to grant permissions, and it is given once.
func TestDisabledKeyAdvice(t *testing.T) {
	e := newEnv(t)
	e.setEnabled(t, false)
	k := e.kek(t, vault.Config{})
	_, err := e.admin.GetKey(ctxT(t), e.key, "", nil)
	require.ErrorContains(t, err, "KeyDisabled", "the emulator refuses GET of a disabled key, as the service does")

	err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
	require.Equal(t, []string{"key enabled"}, checkNames(t, err))
	require.ErrorContains(t, err, "az keyvault key set-attributes")
	require.NotContains(t, err.Error(), "grant")
}

// Firewall and private-link refusals say so, with the network fix, once;
// they match ErrNetwork and kek.ErrRevoked.
func TestNetworkRefusals(t *testing.T) {
	for _, tc := range []struct {
		rule  vaulttest.Network
		inner string
	}{{vaulttest.NetworkFirewall, "ForbiddenByFirewall"}, {vaulttest.NetworkPrivateOnly, "ForbiddenByConnection"}} {
		t.Run(tc.inner, func(t *testing.T) {
			e := newEnv(t)
			k := e.kek(t, vault.Config{})
			w, err := k.Wrap(ctxT(t), randomKey(t))
			require.NoError(t, err)
			e.srv.SetNetwork(e.url, tc.rule)

			_, err = k.Unwrap(ctxT(t), w)
			require.ErrorIs(t, err, kek.ErrRevoked)
			require.ErrorIs(t, err, vault.ErrNetwork)
			require.ErrorContains(t, err, tc.inner)
			require.NotContains(t, err.Error(), "grant")

			err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
			require.Equal(t, []string{"vault network access"}, checkNames(t, err))
			require.NotContains(t, err.Error(), "grant")

			// Trusted services through the firewall: the vault lets the
			// cache's identity in.
			e.srv.SetProperties(vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "westeurope", FirewallEnabled: true, TrustedServicesBypass: true})
			require.NoError(t, k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv}))
		})
	}
}

// miEnv points azidentity at the emulator's App Service token endpoint, or
// at none (IMDS), and returns a fresh client ID registered for the cache
// identity (MSAL caches tokens per process and client ID).
func miEnv(t *testing.T, e *env, appService bool) string {
	for _, v := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST"} {
		t.Setenv(v, "")
	}
	if appService {
		endpoint, header := e.srv.IdentityEndpoint()
		t.Setenv("IDENTITY_ENDPOINT", endpoint)
		t.Setenv("IDENTITY_HEADER", header)
	}
	id := "0d1e2f3a-4b5c-4d6e-8f70-" + randHex(t, 6)
	e.srv.AddManagedIdentity(cachePrincipal, id, "")
	return id
}

// A managed identity endpoint that answers 404 or 410 is being updated:
// the error is transient, not a revocation.
func TestIdentityEndpointUpdating(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusGone} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t)
			k := e.kek(t, vault.Config{ManagedIdentity: miEnv(t, e, true)})
			e.srv.Inject(vaulttest.Fault{Status: status, Ops: []string{vaulttest.CountToken}})
			_, err := k.Wrap(ctxT(t), randomKey(t))
			require.ErrorIs(t, err, kek.ErrUnavailable)
			require.NotErrorIs(t, err, kek.ErrRevoked)
			require.ErrorContains(t, err, "being updated")
			require.NotContains(t, err.Error(), "assign the user-assigned managed identity")
			e.srv.ClearFaults()
			_, err = k.Wrap(ctxT(t), randomKey(t))
			require.NoError(t, err)
		})
	}
}

// The vault client's fast retry policy (the emulator's: 3 retries 10 ms
// apart) is not handed to the managed identity credential, which keeps
// azidentity's IMDS policy (first retry after about 2 s): within a 1 s
// deadline IMDS is asked once, not four times in a row.
func TestIdentityKeepsItsRetryPolicy(t *testing.T) {
	e := newEnv(t)
	k := e.kek(t, vault.Config{ManagedIdentity: miEnv(t, e, false)})
	e.srv.Inject(vaulttest.Fault{Status: http.StatusNotFound, Ops: []string{vaulttest.CountToken}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := k.Wrap(ctx, randomKey(t))
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.NotErrorIs(t, err, kek.ErrRevoked)
	n := e.srv.Count(vaulttest.CountToken)
	require.Positive(t, n, "IMDS was asked")
	require.Less(t, n, 4, "the token request was retried with the vault client's fast policy")

	// IMDS serves again: the same KEK gets its token.
	e.srv.ClearFaults()
	_, err = k.Wrap(ctxT(t), randomKey(t))
	require.NoError(t, err)
}

// Validate keeps the key's failures when the properties source fails, and
// still says the source failed.
func TestValidatePropertiesSourceFails(t *testing.T) {
	e := newEnv(t)
	e.setEnabled(t, false)
	k := e.kek(t, vault.Config{})
	broken := vault.PropertiesFunc(func(context.Context, string) (vault.Properties, error) {
		return vault.Properties{}, errors.New("management plane timeout")
	})
	err := k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: broken})
	require.ErrorIs(t, err, kek.ErrPrerequisite)
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.Equal(t, []string{"key enabled"}, checkNames(t, err))
	require.ErrorContains(t, err, "management plane timeout")
}

// An empty configured region is the cache's configuration, not the vault's
// fault.
func TestValidateEmptyRegion(t *testing.T) {
	e := newEnv(t)
	k := e.kek(t, vault.Config{})
	err := k.Validate(ctxT(t), vault.Requirements{Vault: e.srv})
	require.Equal(t, []string{"cache region"}, checkNames(t, err))
	require.ErrorContains(t, err, "Requirements.Region")
	require.NotContains(t, err.Error(), "use a key in a vault in the same region")
}

// A key in a Managed HSM gets the Managed HSM's role and commands.
func TestValidateManagedHSMAdvice(t *testing.T) {
	e := newEnv(t)
	hsm := "https://contoso-hsm.managedhsm.azure.net"
	admin, err := azkeys.NewClient(hsm, e.srv.Credential(adminPrincipal), e.srv.ClientOptions())
	require.NoError(t, err)
	_, err = admin.CreateKey(ctxT(t), "cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSAHSM)}, nil)
	require.NoError(t, err)
	e.srv.SetProperties(vault.Properties{SoftDelete: true, Location: "westeurope", FirewallEnabled: true})
	e.srv.Revoke(cachePrincipal)
	k := e.kek(t, vault.Config{KeyID: hsm + "/keys/cmk"})

	err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
	require.Equal(t, []string{"identity can get the key", "purge protection", "vault firewall", "identity can wrap"}, checkNames(t, err))
	msg := err.Error()
	require.Contains(t, msg, `"Managed HSM Crypto Service Encryption User"`)
	require.Contains(t, msg, "az keyvault role assignment create --hsm-name")
	require.Contains(t, msg, "az keyvault update-hsm --hsm-name HSM --enable-purge-protection true")
	require.Contains(t, msg, "az keyvault update-hsm --hsm-name HSM --bypass AzureServices")
	require.NotContains(t, msg, "Key Vault Crypto Service Encryption User")
	require.NotContains(t, msg, "az keyvault update --")
}

// A wrapped key that records no algorithm is refused, not unwrapped under
// a guessed one, and the vault is not called.
func TestUnwrapEmptyAlgorithm(t *testing.T) {
	e := newEnv(t)
	k := e.kek(t, vault.Config{})
	w, err := k.Wrap(ctxT(t), randomKey(t))
	require.NoError(t, err)
	w.Algorithm = ""
	e.srv.ResetCounts()
	_, err = k.Unwrap(ctxT(t), w)
	require.ErrorIs(t, err, kek.ErrUnwrap)
	require.ErrorContains(t, err, "records no wrapping algorithm")
	require.Zero(t, e.srv.Count(vaulttest.OpUnwrapKey))
}

// ForbiddenByRbac before the KEK ever reached the key is a role assignment
// still taking effect (transient); after it, a revocation.
func TestRBACNotYetInEffect(t *testing.T) {
	e := newEnv(t)
	e.srv.Revoke(cachePrincipal)
	k := e.kek(t, vault.Config{})
	_, err := k.Wrap(ctxT(t), randomKey(t))
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.ErrorIs(t, err, vault.ErrAccessPending)
	require.NotErrorIs(t, err, kek.ErrRevoked)
	require.ErrorContains(t, err, "10 minutes")

	err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
	require.Equal(t, []string{"identity can get the key", "identity can wrap"}, checkNames(t, err), "a failed check, not an outage")
	require.ErrorContains(t, err, "wait and validate again")

	e.srv.Grant(cachePrincipal, vaulttest.CryptoServiceEncryptionUser...) // the assignment takes effect
	w, err := k.Wrap(ctxT(t), randomKey(t))
	require.NoError(t, err)
	e.srv.Revoke(cachePrincipal)
	_, err = k.Unwrap(ctxT(t), w)
	require.ErrorIs(t, err, kek.ErrRevoked)
	require.NotErrorIs(t, err, vault.ErrAccessPending)
}

// An access-policy vault refuses with AccessDenied; the advice is an access
// policy, not a role.
func TestAccessPolicyVault(t *testing.T) {
	e := newEnv(t)
	e.srv.UseAccessPolicies(e.url, true)
	e.srv.Revoke(cachePrincipal, vaulttest.OpUnwrapKey)
	k := e.kek(t, vault.Config{})
	w, err := k.Wrap(ctxT(t), randomKey(t))
	require.NoError(t, err)
	_, err = k.Unwrap(ctxT(t), w)
	require.ErrorIs(t, err, kek.ErrRevoked)
	require.ErrorContains(t, err, "AccessDenied")
	require.ErrorContains(t, err, "az keyvault set-policy")

	err = k.Validate(ctxT(t), vault.Requirements{Region: "westeurope", Vault: e.srv})
	require.Equal(t, []string{"identity can unwrap"}, checkNames(t, err))
	require.ErrorContains(t, err, "fix: add an access policy")
}

// Every status the vault can answer with is classified: each error matches
// exactly one of kek.ErrRevoked, kek.ErrUnavailable, kek.ErrUnwrap and
// vault.ErrRequest, and names the operation and the answer.
func TestClassifyEveryStatus(t *testing.T) {
	statuses := []int{300, 302, 400, 401, 403, 404, 405, 408, 409, 410, 411, 412, 413, 414, 415, 422, 429, 431, 500, 501, 502, 503, 504}
	inners := []string{"", "KeyDisabled", "KeyExpired", "KeyNotYetValid", "KeyOperationForbidden", "ForbiddenByFirewall",
		"ForbiddenByConnection", "ForbiddenByRbac", "AccessDenied", "ObjectIsDeletedButRecoverable", "SomethingNew"}
	kinds := []error{kek.ErrRevoked, kek.ErrUnavailable, kek.ErrUnwrap, vault.ErrRequest}
	for _, op := range []string{"Wrap", "Unwrap", "Validate"} {
		for _, st := range statuses {
			for _, inner := range inners {
				for _, reached := range []bool{false, true} {
					body := fmt.Sprintf(`{"error":{"code":"Code%d","message":"m","innererror":{"code":%q}}}`, st, inner)
					err := vault.ClassifyAnswer(op, st, body, reached)
					var n int
					for _, k := range kinds {
						if errors.Is(err, k) {
							n++
						}
					}
					require.Equal(t, 1, n, "%s %d %s reached=%v: %v", op, st, inner, reached, err)
					require.True(t, strings.HasPrefix(err.Error(), "vault."+op+": key "), err.Error())
					require.Contains(t, err.Error(), fmt.Sprintf("HTTP %d", st))
				}
			}
		}
	}

	const (
		cipher = `{"error":{"code":"BadParameter","message":"Operation unwrapKey failed: the value could not be processed with this key."}}`
		apiVer = `{"error":{"code":"BadParameter","message":"The specified api-version (2099-01-01) is not recognized."}}`
	)
	rows := []struct {
		name    string
		op      string
		status  int
		body    string
		reached bool
		is      []error
		not     []error
		says    string
	}{
		{"disabled", "Unwrap", 403, inner("KeyDisabled"), true, []error{kek.ErrRevoked}, []error{vault.ErrNetwork}, "re-enable it"},
		{"firewall", "Unwrap", 403, inner("ForbiddenByFirewall"), true, []error{kek.ErrRevoked, vault.ErrNetwork}, nil, "firewall"},
		{"private link", "Wrap", 403, inner("ForbiddenByConnection"), true, []error{kek.ErrRevoked, vault.ErrNetwork}, nil, "private endpoint"},
		{"rbac after access", "Unwrap", 403, inner("ForbiddenByRbac"), true, []error{kek.ErrRevoked}, []error{vault.ErrAccessPending}, "role on the key was removed"},
		{"rbac before access", "Unwrap", 403, inner("ForbiddenByRbac"), false, []error{kek.ErrUnavailable, vault.ErrAccessPending}, []error{kek.ErrRevoked}, "10 minutes"},
		{"access policy", "Wrap", 403, inner("AccessDenied"), false, []error{kek.ErrRevoked}, nil, "az keyvault set-policy"},
		{"conflict", "Wrap", 409, inner(""), true, []error{kek.ErrUnavailable}, nil, "in progress"},
		{"conflict deleted", "Unwrap", 409, inner("ObjectIsDeletedButRecoverable"), true, []error{kek.ErrRevoked}, nil, "recover"},
		{"gone", "Unwrap", 410, inner(""), true, []error{kek.ErrRevoked}, nil, "gone"},
		{"bad ciphertext", "Unwrap", 400, cipher, true, []error{kek.ErrUnwrap}, []error{vault.ErrRequest}, "corrupt"},
		{"api-version on unwrap", "Unwrap", 400, apiVer, true, []error{vault.ErrRequest}, []error{kek.ErrUnwrap}, "API version"},
		{"api-version on wrap", "Wrap", 400, apiVer, true, []error{vault.ErrRequest}, nil, "API version"},
		{"method not allowed", "Wrap", 405, inner(""), true, []error{vault.ErrRequest}, []error{kek.ErrRevoked, kek.ErrUnavailable}, "proxy"},
		{"unprocessable", "Unwrap", 422, inner(""), true, []error{vault.ErrRequest}, []error{kek.ErrUnwrap}, "proxy"},
		{"throttled", "Unwrap", 429, inner(""), true, []error{kek.ErrUnavailable}, nil, "retry later"},
		{"no token", "Unwrap", 401, inner(""), true, []error{kek.ErrRevoked}, nil, "tenant"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			err := vault.ClassifyAnswer(r.op, r.status, r.body, r.reached)
			for _, s := range r.is {
				require.ErrorIs(t, err, s)
			}
			for _, s := range r.not {
				require.NotErrorIs(t, err, s)
			}
			require.ErrorContains(t, err, r.says)
		})
	}
}

func inner(code string) string {
	return fmt.Sprintf(`{"error":{"code":"Forbidden","message":"m","innererror":{"code":%q}}}`, code)
}
