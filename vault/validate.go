package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Properties are the management-plane properties of a vault (or Managed
// HSM) that a customer-managed key depends on.
type Properties struct {
	SoftDelete      bool   // soft delete enabled
	PurgeProtection bool   // purge protection enabled
	Location        string // Azure region, such as "westeurope" or "West Europe"
	// FirewallEnabled is true when public network access is restricted
	// (network ACL default action Deny).
	FirewallEnabled bool
	// TrustedServicesBypass is true when trusted Azure services may bypass
	// the firewall (network ACL bypass AzureServices).
	TrustedServicesBypass bool
}

// A PropertiesSource reads the properties of the vault at vaultURL, for
// example from the Azure management plane (armkeyvault) or from the
// caller's own configuration.
type PropertiesSource interface {
	VaultProperties(ctx context.Context, vaultURL string) (Properties, error)
}

// PropertiesFunc adapts a function to a PropertiesSource.
type PropertiesFunc func(ctx context.Context, vaultURL string) (Properties, error)

// VaultProperties calls f.
func (f PropertiesFunc) VaultProperties(ctx context.Context, vaultURL string) (Properties, error) {
	return f(ctx, vaultURL)
}

// StaticProperties is a PropertiesSource that returns the same properties
// for every vault.
type StaticProperties Properties

// VaultProperties returns p.
func (p StaticProperties) VaultProperties(context.Context, string) (Properties, error) {
	return Properties(p), nil
}

// Requirements are what the cache demands of a vault before it accepts a
// key in it as its CMK.
type Requirements struct {
	Region string           // region of the cache; the vault must be in it
	Vault  PropertiesSource // where the vault's properties come from
}

// Validate runs every prerequisite check of a customer-managed key and
// returns a *kek.PrerequisiteError (matching kek.ErrPrerequisite) listing
// each failed check with its fix, or nil when all pass. The checks: key type
// RSA or RSA-HSM; key enabled, not expired and already valid (nbf); key
// operations include wrapKey and unwrapKey; vault soft delete and purge
// protection on; vault in req.Region; trusted Azure services allowed
// through the vault firewall when it is on; and the identity can get, wrap
// and unwrap, proved by a live round trip.
//
// A transient failure (vault or properties source unreachable) is returned
// as is, matching kek.ErrUnavailable, since it proves nothing about the key.
func (k *KEK) Validate(ctx context.Context, req Requirements) error {
	var failed []kek.Check
	add := func(name, problem, fix string) {
		failed = append(failed, kek.Check{Name: name, Problem: problem, Fix: fix})
	}

	keyUsable, err := k.checkKey(ctx, add)
	if err != nil {
		return err
	}
	if err := checkVault(ctx, k.id, req, add); err != nil {
		return err
	}
	if keyUsable {
		if err := k.checkRoundTrip(ctx, add); err != nil {
			return err
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &kek.PrerequisiteError{Key: k.id.String(), Failed: failed}
}

const grantFix = "grant the managed identity get, wrapKey and unwrapKey on the key (role Key Vault Crypto Service Encryption User, or an access policy with these key permissions)"

// checkKey reads the key and checks its type, state and operations. It
// reports whether a wrap round trip can be expected to work.
func (k *KEK) checkKey(ctx context.Context, add func(name, problem, fix string)) (bool, error) {
	var res azkeys.GetKeyResponse
	err := k.call(ctx, func(ctx context.Context) (err error) {
		res, err = k.client.GetKey(ctx, k.id.Name, k.id.Version, nil)
		return err
	})
	if err != nil {
		cerr := classify("Validate", k.id, err)
		var oe *opError
		errors.As(cerr, &oe)
		switch {
		case errors.Is(cerr, kek.ErrUnavailable):
			return false, cerr
		case strings.Contains(oe.detail, "does not exist"):
			add("key exists", oe.detail, "create the RSA key, or recover it from soft delete, or correct the key identifier")
			return false, nil
		default:
			add("identity can get the key", oe.detail, grantFix)
			return true, nil // the round trip may still say more about wrap and unwrap
		}
	}
	usable := true
	var kty azkeys.KeyType
	var ops []string
	if res.Key != nil {
		if res.Key.Kty != nil {
			kty = *res.Key.Kty
		}
		for _, op := range res.Key.KeyOps {
			if op != nil {
				ops = append(ops, string(*op))
			}
		}
	}
	if kty != azkeys.KeyTypeRSA && kty != azkeys.KeyTypeRSAHSM {
		add("key type", fmt.Sprintf("key type is %q", kty), "use an RSA key (type RSA or RSA-HSM) of 2048, 3072 or 4096 bits")
		usable = false
	}
	now := time.Now()
	if a := res.Attributes; a != nil {
		if a.Enabled != nil && !*a.Enabled {
			add("key enabled", "the key is disabled", "enable the key (az keyvault key set-attributes --enabled true)")
			usable = false
		}
		if a.Expires != nil && !now.Before(*a.Expires) {
			add("key not expired", fmt.Sprintf("the key expired at %s", a.Expires.UTC().Format(time.RFC3339)), "rotate to a new key version without an expiry in the past, or move the expiry date")
			usable = false
		}
		if a.NotBefore != nil && now.Before(*a.NotBefore) {
			add("key active", fmt.Sprintf("the key is not valid before %s", a.NotBefore.UTC().Format(time.RFC3339)), "wait for the activation date or move it earlier")
			usable = false
		}
	}
	for _, op := range []string{"wrapKey", "unwrapKey"} {
		if !slices.Contains(ops, op) {
			add("key operations", fmt.Sprintf("key operations %v do not include %s", ops, op), "allow the wrapKey and unwrapKey operations on the key (az keyvault key set-attributes --ops wrapKey unwrapKey ...)")
			usable = false
		}
	}
	return usable, nil
}

// checkVault checks the vault's management-plane properties.
func checkVault(ctx context.Context, id KeyID, req Requirements, add func(name, problem, fix string)) error {
	if req.Vault == nil {
		add("vault properties", "no source of vault properties was given", "pass the vault's properties (Requirements.Vault), from armkeyvault or your configuration")
		return nil
	}
	p, err := req.Vault.VaultProperties(ctx, id.Vault)
	if err != nil {
		return fmt.Errorf("vault.Validate: reading the properties of vault %s: %w: %w", id.Vault, kek.ErrUnavailable, err)
	}
	if !p.SoftDelete {
		add("soft delete", "soft delete is off on the vault", "enable soft delete on the vault (az keyvault update --enable-soft-delete true)")
	}
	if !p.PurgeProtection {
		add("purge protection", "purge protection is off on the vault", "enable purge protection on the vault (az keyvault update --enable-purge-protection true); it cannot be turned off again")
	}
	if req.Region == "" || !sameRegion(p.Location, req.Region) {
		add("vault region", fmt.Sprintf("the vault is in %q, the cache in %q", p.Location, req.Region), "use a key in a vault in the same region as the cache")
	}
	if p.FirewallEnabled && !p.TrustedServicesBypass {
		add("vault firewall", "the vault firewall is on and does not let trusted Azure services through", "allow trusted Microsoft services to bypass the firewall (az keyvault update --bypass AzureServices)")
	}
	return nil
}

// sameRegion compares region names ignoring case and spaces, so
// "West Europe" equals "westeurope".
func sameRegion(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, " ", "")) }
	return norm(a) != "" && norm(a) == norm(b)
}

// checkRoundTrip wraps and unwraps a random probe key.
func (k *KEK) checkRoundTrip(ctx context.Context, add func(name, problem, fix string)) error {
	probe := make([]byte, 32)
	rand.Read(probe)
	defer clear(probe)
	w, err := k.Wrap(ctx, probe)
	if err != nil {
		if errors.Is(err, kek.ErrUnavailable) {
			return err
		}
		add("identity can wrap", err.Error(), grantFix)
		return nil
	}
	got, err := k.Unwrap(ctx, w)
	defer clear(got)
	switch {
	case errors.Is(err, kek.ErrUnavailable):
		return err
	case err != nil:
		add("identity can unwrap", err.Error(), grantFix)
	case !bytes.Equal(got, probe):
		add("wrap round trip", "the key unwrapped by the vault differs from the key wrapped", "check that the key is an RSA key and not being rotated concurrently; contact support if it persists")
	}
	return nil
}
