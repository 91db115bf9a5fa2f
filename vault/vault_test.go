package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
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

func randomKey(t *testing.T) []byte {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

func TestWrapUnwrap(t *testing.T) {
	e := newEnv(t)
	for _, alg := range []string{"", vault.AlgorithmRSAOAEP256, vault.AlgorithmRSAOAEP} {
		t.Run("alg="+alg, func(t *testing.T) {
			k := e.kek(t, vault.Config{Algorithm: alg})
			dek := randomKey(t)
			w, err := k.Wrap(ctxT(t), dek)
			require.NoError(t, err)
			want := alg
			if want == "" {
				want = vault.AlgorithmRSAOAEP256
			}
			require.Equal(t, kek.KindKeyVault, w.Kind)
			require.Equal(t, want, w.Algorithm)
			require.NoError(t, w.Descriptor.Validate())
			id, err := vault.ParseKeyID(w.KeyID)
			require.NoError(t, err)
			require.Len(t, id.Version, 32, "the descriptor must name the exact version")
			require.Len(t, w.Ciphertext, 256, "RSA-2048 ciphertext")
			got, err := k.Unwrap(ctxT(t), w)
			require.NoError(t, err)
			require.Equal(t, dek, got)

			// A flipped ciphertext bit is refused by the vault: ErrUnwrap.
			bad := w
			bad.Ciphertext = bytes.Clone(w.Ciphertext)
			bad.Ciphertext[10] ^= 1
			_, err = k.Unwrap(ctxT(t), bad)
			require.ErrorIs(t, err, kek.ErrUnwrap)
			require.NotErrorIs(t, err, kek.ErrRevoked)
		})
	}
}

// Hosts of sovereign clouds and Managed HSM reach the emulator under their
// own names, and the SDK's challenge resource check passes for each.
func TestHosts(t *testing.T) {
	e := newEnv(t)
	for _, host := range []string{"contoso.vault.azure.cn", "contoso.vault.usgovcloudapi.net", "contoso-hsm.managedhsm.azure.net",
		"contoso.vault.sovcloud-api.fr", "contoso.vault.sovcloud-api.de", "contoso-hsm.managedhsm.sovcloud-api.de"} {
		t.Run(host, func(t *testing.T) {
			// Each host is its own vault: the key is created there.
			admin, err := azkeys.NewClient("https://"+host, e.srv.Credential(adminPrincipal), e.srv.ClientOptions())
			require.NoError(t, err)
			_, err = admin.CreateKey(ctxT(t), e.key, azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSAHSM)}, nil)
			require.NoError(t, err)
			k := e.kek(t, vault.Config{KeyID: "https://" + host + "/keys/" + e.key + "/"})
			w, err := k.Wrap(ctxT(t), randomKey(t))
			require.NoError(t, err)
			require.Contains(t, w.KeyID, "https://"+host+"/keys/cmk/")
			_, err = k.Unwrap(ctxT(t), w)
			require.NoError(t, err)
		})
	}
}

func TestNewRefuses(t *testing.T) {
	base := vault.Config{VaultURL: "https://contoso.vault.azure.net", KeyName: "cmk"}
	cases := []struct {
		name   string
		edit   func(*vault.Config)
		want   string
		target error
	}{
		{"system-assigned by default", func(c *vault.Config) {}, "system-assigned managed identity is not supported", kek.ErrUnsupported},
		{"system-assigned by name", func(c *vault.Config) { c.ManagedIdentity = "SystemAssigned" }, "system-assigned managed identity is not supported", kek.ErrUnsupported},
		{"bad identity", func(c *vault.Config) { c.ManagedIdentity = "my-identity" }, "neither a client ID (GUID) nor a user-assigned identity resource ID", nil},
		{"RSA1_5", func(c *vault.Config) {
			c.ManagedIdentity = "11111111-2222-3333-4444-555555555555"
			c.Algorithm = "RSA1_5"
		}, "RSA1_5 (PKCS#1 v1.5) is refused", kek.ErrUnsupported},
		{"unknown algorithm", func(c *vault.Config) {
			c.ManagedIdentity = "11111111-2222-3333-4444-555555555555"
			c.Algorithm = "A256KW"
		}, `algorithm "A256KW" is not supported`, kek.ErrUnsupported},
		{"both key forms", func(c *vault.Config) { c.KeyID = "https://contoso.vault.azure.net/keys/cmk" }, "either KeyID or VaultURL", nil},
		{"no key", func(c *vault.Config) { c.VaultURL, c.KeyName = "", "" }, "no key selected", nil},
		{"bad vault", func(c *vault.Config) { c.VaultURL = "https://contoso.example.com" }, "not a Key Vault or Managed HSM host", nil},
		{"credential and identity", func(c *vault.Config) {
			c.ManagedIdentity = "11111111-2222-3333-4444-555555555555"
			c.Credential = vaulttest.NewServer(t).Credential("x")
		}, "either Credential or ManagedIdentity", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			_, err := vault.New(cfg)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "vault.New: ")
			if tc.target != nil {
				require.ErrorIs(t, err, tc.target)
			}
		})
	}
}

// A versionless key follows the current version: wraps after a rotation use
// the new version, and keys wrapped under the old one still unwrap. A KEK
// pinned to a version keeps wrapping under it.
func TestRotationVersionlessKey(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	follow := e.kek(t, vault.Config{})
	v1, err := e.admin.GetKey(ctx, e.key, "", nil)
	require.NoError(t, err)
	pinned := e.kek(t, vault.Config{KeyID: string(*v1.Key.KID)})

	dek1 := randomKey(t)
	w1, err := follow.Wrap(ctx, dek1)
	require.NoError(t, err)
	require.Equal(t, string(*v1.Key.KID), w1.KeyID)

	_, err = e.admin.RotateKey(ctx, e.key, nil)
	require.NoError(t, err)
	v3 := e.create(t, e.key, azkeys.KeyTypeRSA) // a new version by re-creating, too
	require.NotEqual(t, v1.Key.KID.Version(), v3)

	dek2 := randomKey(t)
	w2, err := follow.Wrap(ctx, dek2)
	require.NoError(t, err)
	id2, err := vault.ParseKeyID(w2.KeyID)
	require.NoError(t, err)
	require.Equal(t, v3, id2.Version, "a versionless key must wrap under the newest version")

	wp, err := pinned.Wrap(ctx, dek2)
	require.NoError(t, err)
	require.Equal(t, string(*v1.Key.KID), wp.KeyID, "a pinned key must keep its version")

	for _, tc := range []struct {
		w    kek.Wrapped
		want []byte
	}{{w1, dek1}, {w2, dek2}, {wp, dek2}} {
		for _, k := range []*vault.KEK{follow, pinned} {
			got, err := k.Unwrap(ctx, tc.w)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		}
	}
}

func TestUnwrapKeyMismatch(t *testing.T) {
	e := newEnv(t)
	e.create(t, "other", azkeys.KeyTypeRSA)
	ctx := ctxT(t)
	w, err := e.kek(t, vault.Config{KeyName: "other", VaultURL: e.url}).Wrap(ctx, randomKey(t))
	require.NoError(t, err)
	k := e.kek(t, vault.Config{})
	e.srv.ResetCounts()

	cases := map[string]kek.Wrapped{
		"other key":    w,
		"other vault":  {Descriptor: kek.Descriptor{Kind: kek.KindKeyVault, KeyID: "https://fabrikam.vault.azure.net/keys/cmk/" + ver, Algorithm: vault.AlgorithmRSAOAEP256}, Ciphertext: w.Ciphertext},
		"no version":   {Descriptor: kek.Descriptor{Kind: kek.KindKeyVault, KeyID: e.url + "/keys/cmk", Algorithm: vault.AlgorithmRSAOAEP256}, Ciphertext: w.Ciphertext},
		"other kind":   {Descriptor: kek.Descriptor{Kind: kek.KindMMK, KeyID: w.KeyID, Algorithm: vault.AlgorithmRSAOAEP256}, Ciphertext: w.Ciphertext},
		"not a key id": {Descriptor: kek.Descriptor{Kind: kek.KindKeyVault, KeyID: "cmk", Algorithm: vault.AlgorithmRSAOAEP256}, Ciphertext: w.Ciphertext},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := k.Unwrap(ctx, bad)
			require.ErrorIs(t, err, kek.ErrKeyMismatch)
			require.ErrorContains(t, err, "vault.Unwrap: ")
		})
	}
	require.Zero(t, e.srv.Count(vaulttest.OpUnwrapKey), "a mismatch must not reach the vault")

	rsa15 := w
	rsa15.KeyID = e.url + "/keys/cmk/" + ver
	rsa15.Algorithm = "RSA1_5"
	_, err = k.Unwrap(ctx, rsa15)
	require.ErrorIs(t, err, kek.ErrUnsupported)
}

// Disabling, deleting and removing access revoke the key: Unwrap fails with
// ErrRevoked (not ErrUnavailable). Re-enabling, recovering and granting
// again restore it with nothing lost.
func TestRevocationAndRecovery(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.kek(t, vault.Config{})
	dek := randomKey(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)

	steps := []struct {
		name            string
		revoke, restore func(t *testing.T)
		want            string
	}{
		{"disable", func(t *testing.T) { e.setEnabled(t, false) }, func(t *testing.T) { e.setEnabled(t, true) }, "KeyDisabled"},
		{"delete", func(t *testing.T) {
			_, err := e.admin.DeleteKey(ctx, e.key, nil)
			require.NoError(t, err)
		}, func(t *testing.T) {
			_, err := e.admin.RecoverDeletedKey(ctx, e.key, nil)
			require.NoError(t, err)
		}, "KeyNotFound"},
		{"remove unwrap permission", func(t *testing.T) { e.srv.Revoke(cachePrincipal, vaulttest.OpUnwrapKey) },
			func(t *testing.T) { e.srv.Grant(cachePrincipal, vaulttest.OpUnwrapKey) }, "ForbiddenByRbac"},
		{"remove all permissions", func(t *testing.T) { e.srv.Revoke(cachePrincipal) },
			func(t *testing.T) { e.srv.Grant(cachePrincipal, vaulttest.CryptoServiceEncryptionUser...) }, "ForbiddenByRbac"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.revoke(t)
			before := e.srv.Count(vaulttest.OpUnwrapKey)
			_, err := k.Unwrap(ctx, w)
			require.ErrorIs(t, err, kek.ErrRevoked)
			require.NotErrorIs(t, err, kek.ErrUnavailable)
			require.ErrorContains(t, err, st.want)
			require.ErrorContains(t, err, "vault.Unwrap: key "+w.KeyID)
			require.Equal(t, before+1, e.srv.Count(vaulttest.OpUnwrapKey), "a revoked key must not be retried")

			st.restore(t)
			got, err := k.Unwrap(ctx, w)
			require.NoError(t, err)
			require.Equal(t, dek, got)
		})
	}

	// Wrap under a disabled key is refused too.
	e.setEnabled(t, false)
	_, err = k.Wrap(ctx, dek)
	require.ErrorIs(t, err, kek.ErrRevoked)
	e.setEnabled(t, true)

	// A purged key (vault without purge protection) is gone for good.
	e.srv.SetProperties(vault.Properties{SoftDelete: true, Location: "westeurope"})
	_, err = e.admin.DeleteKey(ctx, e.key, nil)
	require.NoError(t, err)
	_, err = e.admin.PurgeDeletedKey(ctx, e.key, nil)
	require.NoError(t, err)
	_, err = e.admin.RecoverDeletedKey(ctx, e.key, nil)
	require.Error(t, err)
	_, err = k.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrRevoked)
}

func TestPurgeProtection(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	_, err := e.admin.DeleteKey(ctx, e.key, nil)
	require.NoError(t, err)
	_, err = e.admin.PurgeDeletedKey(ctx, e.key, nil)
	require.ErrorContains(t, err, "purge protection")
	d, err := e.admin.GetDeletedKey(ctx, e.key, nil)
	require.NoError(t, err)
	require.NotNil(t, d.RecoveryID)
}

// Throttling and 5xx are retried by the SDK's retry policy, honouring
// Retry-After; when the faults outlast the retries the error is
// ErrUnavailable, distinct from ErrRevoked.
func TestTransientFaults(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.kek(t, vault.Config{})
	dek := randomKey(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)

	t.Run("throttled twice then served", func(t *testing.T) {
		e.srv.ResetCounts()
		e.srv.Inject(vaulttest.Fault{Status: 429, RetryAfter: 30 * time.Millisecond, Count: 2})
		start := time.Now()
		got, err := k.Unwrap(ctx, w)
		require.NoError(t, err)
		require.Equal(t, dek, got)
		require.Equal(t, 3, e.srv.Count(vaulttest.OpUnwrapKey))
		require.GreaterOrEqual(t, time.Since(start), 60*time.Millisecond, "Retry-After must be honoured")
	})
	for _, status := range []int{429, 500, 503, 504} {
		t.Run("persistent "+itoa(status), func(t *testing.T) {
			e.srv.ClearFaults()
			e.srv.ResetCounts()
			e.srv.Inject(vaulttest.Fault{Status: status, RetryAfter: 10 * time.Millisecond})
			_, err := k.Unwrap(ctx, w)
			require.ErrorIs(t, err, kek.ErrUnavailable)
			require.NotErrorIs(t, err, kek.ErrRevoked)
			require.ErrorContains(t, err, "HTTP "+itoa(status))
			require.Equal(t, 4, e.srv.Count(vaulttest.OpUnwrapKey), "1 try + MaxRetries 3, then give up")
			e.srv.ClearFaults()
			_, err = k.Unwrap(ctx, w)
			require.NoError(t, err, "service restored")
		})
	}
	t.Run("dropped connections", func(t *testing.T) {
		e.srv.ClearFaults()
		e.srv.Inject(vaulttest.Fault{Drop: true})
		_, err := k.Wrap(ctx, dek)
		require.ErrorIs(t, err, kek.ErrUnavailable)
		e.srv.ClearFaults()
		e.srv.Inject(vaulttest.Fault{Drop: true, Count: 1})
		_, err = k.Unwrap(ctx, w)
		require.NoError(t, err, "one dropped connection is retried")
	})
	t.Run("timeout", func(t *testing.T) {
		e.srv.ClearFaults()
		e.srv.SetLatency(10 * time.Second)
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := k.Unwrap(short, w)
		require.ErrorIs(t, err, kek.ErrUnavailable)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 5*time.Second, "the deadline, not the vault, ends the call")
		e.srv.ClearFaults()
	})
	t.Run("per-try timeout", func(t *testing.T) {
		opts := e.srv.ClientOptions()
		opts.Retry.TryTimeout = 500 * time.Millisecond
		kt := e.kek(t, vault.Config{ClientOptions: opts})
		e.srv.ResetCounts()
		e.srv.Inject(vaulttest.Fault{Latency: 10 * time.Second, Count: 1})
		got, err := kt.Unwrap(ctx, w)
		require.NoError(t, err, "a slow first try is cut off and retried")
		require.Equal(t, dek, got)
		require.Equal(t, 2, e.srv.Count(vaulttest.OpUnwrapKey))
	})
}

// azcore does not retry a Retry-After longer than MaxRetryDelay; the KEK
// waits it out itself when the context allows, and otherwise fails fast
// with ErrUnavailable naming the delay.
func TestRetryAfterBeyondMaxRetryDelay(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.kek(t, vault.Config{}) // MaxRetryDelay 100 ms in the emulator's options
	dek := randomKey(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)

	e.srv.ResetCounts()
	e.srv.Inject(vaulttest.Fault{Status: 429, RetryAfter: 300 * time.Millisecond, Count: 1})
	start := time.Now()
	got, err := k.Unwrap(ctx, w)
	require.NoError(t, err)
	require.Equal(t, dek, got)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	require.Equal(t, 2, e.srv.Count(vaulttest.OpUnwrapKey))

	// The deadline is shorter than the wait asked for: fail at once.
	e.srv.Inject(vaulttest.Fault{Status: 429, RetryAfter: 5 * time.Second, Count: 1})
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start = time.Now()
	_, err = k.Unwrap(short, w)
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.ErrorContains(t, err, "retry after 5s")
	require.Less(t, time.Since(start), 2*time.Second, "no wait that the deadline cannot cover")

	// Bounded: a vault that keeps asking gets extra attempts, then an error.
	e.srv.ClearFaults()
	e.srv.ResetCounts()
	e.srv.Inject(vaulttest.Fault{Status: 503, RetryAfter: 150 * time.Millisecond})
	_, err = k.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.Equal(t, 3, e.srv.Count(vaulttest.OpUnwrapKey), "1 call + 2 extra waits")

	// MaxRetryAfter < 0 turns the extra waits off.
	e.srv.ResetCounts()
	kn := e.kek(t, vault.Config{MaxRetryAfter: -1})
	_, err = kn.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.Equal(t, 1, e.srv.Count(vaulttest.OpUnwrapKey))
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.kek(t, vault.Config{})
	w, err := k.Wrap(ctx, randomKey(t))
	require.NoError(t, err)
	e.srv.SetRateLimit(5, 10*time.Second, 20*time.Millisecond)
	for range 5 {
		_, err := k.Unwrap(ctx, w)
		require.NoError(t, err)
	}
	_, err = k.Unwrap(ctx, w)
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.ErrorContains(t, err, "HTTP 429 Throttled")
	e.srv.ClearFaults()
	_, err = k.Unwrap(ctx, w)
	require.NoError(t, err)
}

// The managed identity credential of azidentity itself, through the
// emulator's App Service style token endpoint.
func TestUserAssignedManagedIdentity(t *testing.T) {
	e := newEnv(t)
	endpoint, header := e.srv.IdentityEndpoint()
	t.Setenv("IDENTITY_ENDPOINT", endpoint)
	t.Setenv("IDENTITY_HEADER", header)
	// MSAL caches tokens per process and client ID: IDs unique to this test.
	clientID := "5d7a3c1e-0b1f-4c55-9a8e-" + randHex(t, 6)
	resourceID := "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cache-" + randHex(t, 4)
	e.srv.AddManagedIdentity(cachePrincipal, clientID, resourceID)

	for _, id := range []string{clientID, resourceID} {
		t.Run(id, func(t *testing.T) {
			k := e.kek(t, vault.Config{ManagedIdentity: id})
			dek := randomKey(t)
			w, err := k.Wrap(ctxT(t), dek)
			require.NoError(t, err)
			got, err := k.Unwrap(ctxT(t), w)
			require.NoError(t, err)
			require.Equal(t, dek, got)
		})
	}
	require.GreaterOrEqual(t, e.srv.Count(vaulttest.CountToken), 2)

	// An identity unknown to the token endpoint cannot reach the vault.
	k := e.kek(t, vault.Config{ManagedIdentity: "5d7a3c1e-0b1f-4c55-9a8e-" + randHex(t, 6)})
	_, err := k.Wrap(ctxT(t), randomKey(t))
	require.ErrorIs(t, err, kek.ErrRevoked, "an identity not assigned to the host has no access")
	require.ErrorContains(t, err, "vault.Wrap: ")
	require.ErrorContains(t, err, "assign the user-assigned managed identity")

	// A token endpoint (and vault) that cannot be reached is transient.
	gone := vaulttest.NewServer(t)
	opts := gone.ClientOptions()
	gone.Close()
	k = e.kek(t, vault.Config{ManagedIdentity: "5d7a3c1e-0b1f-4c55-9a8e-" + randHex(t, 6), ClientOptions: opts})
	_, err = k.Wrap(ctxT(t), randomKey(t))
	require.ErrorIs(t, err, kek.ErrUnavailable)
}

// The KEK is safe for concurrent use; each call is one vault operation.
func TestConcurrentUnwrap(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.kek(t, vault.Config{})
	dek := randomKey(t)
	w, err := k.Wrap(ctx, dek)
	require.NoError(t, err)
	e.srv.ResetCounts()
	const n = 32
	errs := make(chan error, n)
	for range n {
		go func() {
			got, err := k.Unwrap(ctx, w)
			if err == nil && !bytes.Equal(got, dek) {
				err = errors.New("wrong key")
			}
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	require.Equal(t, n, e.srv.Count(vaulttest.OpUnwrapKey))
}

func itoa(n int) string {
	return string(rune('0'+n/100)) + string(rune('0'+n/10%10)) + string(rune('0'+n%10))
}

func randHex(t *testing.T, n int) string {
	const digits = "0123456789abcdef"
	b := randomKey(t)[:n]
	out := make([]byte, 2*n)
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}
