// Package vault implements a customer-managed key-encryption key (CMK) backed
// by an RSA key (type RSA or RSA-HSM) in Azure Key Vault or Azure Key Vault
// Managed HSM.
//
// The KEK talks to the vault only through the official client,
// github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys, and wraps
// keys with RSA-OAEP-256 (or RSA-OAEP; RSA1_5 is refused). It reaches the
// vault with a user-assigned managed identity, or any injected
// azcore.TokenCredential. A system-assigned identity is refused, as the
// managed cache service does.
//
// A key named without a version follows the key's current version: new wraps
// use the newest version, every wrapped key records the exact version that
// sealed it, and keys sealed under older versions keep unwrapping.
//
// Errors match the sentinels of package kek: a disabled, deleted or
// inaccessible key gives kek.ErrRevoked; throttling, outages, timeouts and
// a managed identity endpoint being updated give kek.ErrUnavailable once the
// retries are spent. This package's ErrNetwork, ErrAccessPending and
// ErrRequest say more where the vault did: a firewall, a role assignment
// not yet in effect, a request the vault will never accept. Validate checks every
// prerequisite of a CMK and lists each failure, with its fix, in one
// *kek.PrerequisiteError.
//
// Package vault/vaulttest holds an in-process Key Vault emulator for tests.
package vault

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Wrapping algorithms accepted by the KEK.
const (
	AlgorithmRSAOAEP256 = "RSA-OAEP-256" // RSAES-OAEP with SHA-256 and MGF1-SHA-256 (default)
	AlgorithmRSAOAEP    = "RSA-OAEP"     // RSAES-OAEP with SHA-1 and MGF1-SHA-1
)

// Defaults applied by New.
const (
	// DefaultMaxRetryAfter is the longest Retry-After the KEK waits out itself
	// when the vault asks for more than the SDK's MaxRetryDelay.
	DefaultMaxRetryAfter = 2 * time.Minute
	// DefaultTryTimeout bounds one HTTP attempt when the caller sets none.
	DefaultTryTimeout = 30 * time.Second
	// extraAttempts bounds the retries the KEK adds beyond the SDK's own.
	extraAttempts = 2
)

// Config selects the key and the identity of a KEK. Set either KeyID, or
// VaultURL and KeyName (and optionally KeyVersion).
type Config struct {
	// KeyID is a key identifier URI, such as
	// "https://contoso.vault.azure.net/keys/cache-cmk" (follows the current
	// version) or ".../keys/cache-cmk/0123456789abcdef0123456789abcdef"
	// (pinned to one version).
	KeyID string

	// VaultURL, KeyName and KeyVersion select the key when KeyID is empty.
	VaultURL   string
	KeyName    string
	KeyVersion string

	// Algorithm is AlgorithmRSAOAEP256 (the default) or AlgorithmRSAOAEP.
	Algorithm string

	// ManagedIdentity is the client ID (a GUID) or the resource ID
	// (/subscriptions/.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)
	// of the user-assigned managed identity that reaches the vault. A
	// system-assigned identity is not supported.
	ManagedIdentity string

	// Credential, when set, is used instead of a managed identity (tests,
	// workload identity). ManagedIdentity must then be empty.
	Credential azcore.TokenCredential

	// ClientOptions configures the azkeys client: transport, retry policy
	// (its MaxRetries, RetryDelay, MaxRetryDelay bound the retries of
	// transient faults), and challenge verification. The managed identity
	// credential takes its transport, cloud, logging, telemetry and policies,
	// but not its retry policy: azidentity keeps its own, which suits the
	// token endpoint (IMDS: 6 retries, 2 s to 25 s apart, and 404 and 410
	// retried while the endpoint is being updated).
	ClientOptions *azkeys.ClientOptions

	// MaxRetryAfter is the longest Retry-After the KEK waits out itself when
	// the vault asks for longer than the retry policy's MaxRetryDelay (which
	// azcore does not retry). Zero means DefaultMaxRetryAfter; negative means
	// never. The wait is also bounded by the context's deadline.
	MaxRetryAfter time.Duration
}

// KEK is a key-encryption key held in Azure Key Vault or Managed HSM. It
// implements kek.KEK. A KEK is safe for concurrent use; it holds no key
// material.
type KEK struct {
	id            KeyID
	alg           azkeys.EncryptionAlgorithm
	client        *azkeys.Client
	maxRetryDelay time.Duration
	maxRetryAfter time.Duration

	// reached is set once a call has reached the key: after it, the vault
	// refusing the identity is a revocation, not a role assignment still
	// taking effect (see ErrAccessPending).
	reached atomic.Bool
}

var _ kek.KEK = (*KEK)(nil)

// New checks cfg and builds a KEK. It makes no network call: use Validate
// before accepting the key as a CMK.
func New(cfg Config) (*KEK, error) {
	id, err := cfg.keyID()
	if err != nil {
		return nil, fmt.Errorf("vault.New: %w", err)
	}
	alg, err := algorithm(cfg.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("vault.New: %w", err)
	}
	opts := azkeys.ClientOptions{}
	if cfg.ClientOptions != nil {
		opts = *cfg.ClientOptions
	}
	if opts.Retry.TryTimeout == 0 {
		opts.Retry.TryTimeout = DefaultTryTimeout
	}
	idOpts := opts.ClientOptions
	idOpts.Retry = policy.RetryOptions{} // azidentity's own defaults, not the vault client's
	cred, err := credential(cfg, idOpts)
	if err != nil {
		return nil, fmt.Errorf("vault.New: %w", err)
	}
	client, err := azkeys.NewClient(id.Vault, cred, &opts)
	if err != nil {
		return nil, fmt.Errorf("vault.New: %w", err)
	}
	k := &KEK{id: id, alg: alg, client: client, maxRetryDelay: opts.Retry.MaxRetryDelay, maxRetryAfter: cfg.MaxRetryAfter}
	switch {
	case k.maxRetryDelay == 0:
		k.maxRetryDelay = 60 * time.Second // azcore's default
	case k.maxRetryDelay < 0:
		k.maxRetryDelay = time.Duration(math.MaxInt64) // azcore: no cap
	}
	if k.maxRetryAfter == 0 {
		k.maxRetryAfter = DefaultMaxRetryAfter
	}
	return k, nil
}

func (c Config) keyID() (KeyID, error) {
	switch {
	case c.KeyID != "" && (c.VaultURL != "" || c.KeyName != "" || c.KeyVersion != ""):
		return KeyID{}, errors.New("set either KeyID or VaultURL and KeyName, not both")
	case c.KeyID != "":
		return ParseKeyID(c.KeyID)
	case c.VaultURL == "" || c.KeyName == "":
		return KeyID{}, errors.New("no key selected: set KeyID to a key identifier URI, or VaultURL and KeyName")
	}
	return NewKeyID(c.VaultURL, c.KeyName, c.KeyVersion)
}

func algorithm(a string) (azkeys.EncryptionAlgorithm, error) {
	switch a {
	case "", AlgorithmRSAOAEP256:
		return azkeys.EncryptionAlgorithmRSAOAEP256, nil
	case AlgorithmRSAOAEP:
		return azkeys.EncryptionAlgorithmRSAOAEP, nil
	case "RSA1_5":
		return "", fmt.Errorf("algorithm RSA1_5 (PKCS#1 v1.5) is refused: it is open to padding-oracle attacks; use %s: %w", AlgorithmRSAOAEP256, kek.ErrUnsupported)
	}
	return "", fmt.Errorf("algorithm %q is not supported; use %s or %s: %w", a, AlgorithmRSAOAEP256, AlgorithmRSAOAEP, kek.ErrUnsupported)
}

var (
	guidRE       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	identityIDRE = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.managedidentity/userassignedidentities/[^/]+$`)
)

// credential returns the injected credential or a user-assigned managed
// identity credential.
func credential(cfg Config, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	mi := strings.TrimSpace(cfg.ManagedIdentity)
	if cfg.Credential != nil {
		if mi != "" {
			return nil, errors.New("set either Credential or ManagedIdentity, not both")
		}
		return cfg.Credential, nil
	}
	var id azidentity.ManagedIDKind
	switch {
	case mi == "" || strings.EqualFold(mi, "system") || strings.EqualFold(mi, "systemassigned") || strings.EqualFold(mi, "system-assigned"):
		return nil, fmt.Errorf("a system-assigned managed identity is not supported for customer-managed keys: "+
			"create a user-assigned managed identity, grant it get, wrapKey and unwrapKey on the key "+
			"(role Key Vault Crypto Service Encryption User), and set ManagedIdentity to its client ID or resource ID: %w", kek.ErrUnsupported)
	case guidRE.MatchString(mi):
		id = azidentity.ClientID(mi)
	case identityIDRE.MatchString(mi):
		id = azidentity.ResourceID(mi)
	default:
		return nil, fmt.Errorf("managed identity %q is neither a client ID (GUID) nor a user-assigned identity resource ID "+
			"(/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)", mi)
	}
	return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts, ID: id})
}

// KeyID returns the key the KEK was configured with (without a version when
// it follows the current version).
func (k *KEK) KeyID() KeyID { return k.id }

// Wrap seals key under the configured key version, or under the current
// version when none was configured. The descriptor names the exact version
// used.
func (k *KEK) Wrap(ctx context.Context, key []byte) (kek.Wrapped, error) {
	if len(key) == 0 {
		return kek.Wrapped{}, errors.New("vault.Wrap: empty key")
	}
	params := azkeys.KeyOperationParameters{Algorithm: to.Ptr(k.alg), Value: key}
	var res azkeys.WrapKeyResponse
	err := k.call(ctx, func(ctx context.Context) (err error) {
		res, err = k.client.WrapKey(ctx, k.id.Name, k.id.Version, params, nil)
		return err
	})
	if err != nil {
		return kek.Wrapped{}, k.classify("Wrap", k.id, err)
	}
	if res.KID == nil || len(res.Result) == 0 {
		return kek.Wrapped{}, fmt.Errorf("vault.Wrap: key %s: the vault returned no key id or no ciphertext", k.id)
	}
	used, err := ParseKeyID(string(*res.KID))
	if err != nil || !used.sameKey(k.id) || used.Version == "" {
		return kek.Wrapped{}, fmt.Errorf("vault.Wrap: key %s: the vault answered with key id %q, not a version of this key", k.id, *res.KID)
	}
	return kek.Wrapped{
		Descriptor: kek.Descriptor{Kind: kek.KindKeyVault, KeyID: used.String(), Algorithm: string(k.alg)},
		Ciphertext: res.Result,
	}, nil
}

// Unwrap opens a key sealed by Wrap under any version of the configured key.
// A wrapped key of another key or vault fails with kek.ErrKeyMismatch
// without a remote call.
func (k *KEK) Unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	if w.Kind != kek.KindKeyVault {
		return nil, fmt.Errorf("vault.Unwrap: wrapped key is of kind %q, not %q: %w", w.Kind, kek.KindKeyVault, kek.ErrKeyMismatch)
	}
	id, err := ParseKeyID(w.KeyID)
	if err != nil || id.Version == "" || !id.sameKey(k.id) {
		return nil, fmt.Errorf("vault.Unwrap: wrapped key names %q, not a version of %s: %w", w.KeyID, k.id, kek.ErrKeyMismatch)
	}
	if w.Algorithm == "" {
		// Wrap always records the algorithm; guessing one would hide a
		// descriptor that was altered or written by something else.
		return nil, fmt.Errorf("vault.Unwrap: wrapped key %s records no wrapping algorithm (Wrap always records %s or %s); restore the keyring entry from a backup: %w",
			w.KeyID, AlgorithmRSAOAEP256, AlgorithmRSAOAEP, kek.ErrUnwrap)
	}
	alg, err := algorithm(w.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("vault.Unwrap: %w", err)
	}
	params := azkeys.KeyOperationParameters{Algorithm: to.Ptr(alg), Value: w.Ciphertext}
	var res azkeys.UnwrapKeyResponse
	err = k.call(ctx, func(ctx context.Context) (err error) {
		res, err = k.client.UnwrapKey(ctx, id.Name, id.Version, params, nil)
		return err
	})
	if err != nil {
		return nil, k.classify("Unwrap", id, err)
	}
	return res.Result, nil
}

// classify maps a failed call to its sentinels (see the package errors),
// knowing whether the KEK has reached the key before.
func (k *KEK) classify(op string, id KeyID, err error) error {
	return classify(op, id, err, k.reached.Load())
}

// call runs op, then waits out a Retry-After that the SDK's retry policy
// refused because it exceeds MaxRetryDelay, at most extraAttempts times,
// within MaxRetryAfter and the context's deadline.
func (k *KEK) call(ctx context.Context, op func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := op(ctx)
		if err == nil {
			k.reached.Store(true)
		}
		wait := retryAfter(err)
		if wait <= k.maxRetryDelay || attempt == extraAttempts || k.maxRetryAfter < 0 || wait > k.maxRetryAfter {
			return err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
