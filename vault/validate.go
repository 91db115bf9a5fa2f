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
// through the vault firewall when it is on; the vault's network rules let
// this host in; and the identity can get, wrap and unwrap, proved by a live
// round trip. The fixes name the commands of a vault or of a Managed HSM,
// whichever holds the key.
//
// A transient failure (vault or properties source unreachable) proves
// nothing about the key: when nothing else failed it is returned as is,
// matching kek.ErrUnavailable; when checks failed too, the error lists them
// and matches both kek.ErrPrerequisite and kek.ErrUnavailable.
func (k *KEK) Validate(ctx context.Context, req Requirements) error {
	var failed []kek.Check
	add := func(name, problem, fix string) {
		failed = append(failed, kek.Check{Name: name, Problem: problem, Fix: fix})
	}

	keyUsable, err := k.checkKey(ctx, add)
	if err != nil {
		return err
	}
	propsErr := checkVault(ctx, k.id, req, add)
	if keyUsable {
		if err := k.checkRoundTrip(ctx, add); err != nil {
			return err
		}
	}
	var pe error
	if len(failed) > 0 {
		pe = &kek.PrerequisiteError{Key: k.id.String(), Failed: failed}
	}
	if propsErr != nil {
		return errors.Join(pe, propsErr)
	}
	return pe
}

// refusal turns a failed call into the check it failed, or reports that
// the failure was transient (a nil problem means: return the error).
func refusal(err error, hsm bool, op string) (name, problem, fix string, transient bool) {
	var oe *opError
	if !errors.As(err, &oe) {
		return "", "", "", true
	}
	problem = oe.text
	if problem == "" {
		problem = oe.detail
	}
	switch oe.why {
	case reasonTransient:
		return "", "", "", true
	case reasonNotFound:
		return "key exists", problem, "create the RSA key, or recover it from soft delete (" + recoverCommand(hsm) + "), or correct the key identifier", false
	case reasonDisabled:
		return "key enabled", "the key is disabled: " + problem, "enable the key (" + enableCommand(hsm) + ")", false
	case reasonDates:
		return "key dates", problem, "move the key's activation and expiry dates so that now lies between them, or rotate to a new version", false
	case reasonKeyOperation:
		return "key operations", problem, "allow the wrapKey and unwrapKey operations on the key (" + opsCommand(hsm) + ")", false
	case reasonNetwork:
		return "vault network access", problem, "let this host through the vault's network rules: add its network to the firewall, reach the vault through an approved private endpoint, or allow trusted Azure services (" + bypassCommand(hsm) + ")", false
	case reasonIdentity:
		return "managed identity", problem, "assign the user-assigned managed identity to this host and check its client ID or resource ID", false
	case reasonAccessPending:
		return "identity can " + op, problem + "; " + rbacDelayNote, grantFix(hsm) + "; if you assigned the role in the last 10 minutes, wait and validate again", false
	case reasonPermission:
		if strings.Contains(oe.text, innerAccessDenied) {
			return "identity can " + op, problem, policyFix, false
		}
		return "identity can " + op, problem, grantFix(hsm), false
	case reasonCiphertext:
		return "wrap round trip", problem, "check that the key is an RSA key and not being rotated concurrently; contact support if it persists", false
	case reasonAuth:
		return "identity can " + op, problem, "use an identity of the vault's tenant, and a vault URL of the cloud the identity signs in to", false
	}
	return "vault request", problem, "check for a proxy between this host and the vault, and update the Azure SDK", false
}

// checkKey reads the key and checks its type, state and operations. It
// reports whether a wrap round trip can be expected to work.
func (k *KEK) checkKey(ctx context.Context, add func(name, problem, fix string)) (bool, error) {
	hsm := k.id.ManagedHSM()
	var res azkeys.GetKeyResponse
	err := k.call(ctx, func(ctx context.Context) (err error) {
		res, err = k.client.GetKey(ctx, k.id.Name, k.id.Version, nil)
		return err
	})
	if err != nil {
		cerr := k.classify("Validate", k.id, err)
		name, problem, fix, transient := refusal(cerr, hsm, "get the key")
		if transient {
			return false, cerr
		}
		add(name, problem, fix)
		// A refused permission may be the get permission alone: the round
		// trip says whether wrap and unwrap work. Any other refusal (disabled
		// key, network, identity) would refuse the round trip the same way.
		var oe *opError
		errors.As(cerr, &oe)
		return oe.why == reasonPermission || oe.why == reasonAccessPending || oe.why == reasonAuth, nil
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
			add("key enabled", "the key is disabled", "enable the key ("+enableCommand(hsm)+")")
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
			add("key operations", fmt.Sprintf("key operations %v do not include %s", ops, op), "allow the wrapKey and unwrapKey operations on the key ("+opsCommand(hsm)+")")
			usable = false
		}
	}
	return usable, nil
}

// checkVault checks the vault's management-plane properties. It returns
// an error matching kek.ErrUnavailable when they cannot be read.
func checkVault(ctx context.Context, id KeyID, req Requirements, add func(name, problem, fix string)) error {
	hsm := id.ManagedHSM()
	if req.Vault == nil {
		add("vault properties", "no source of vault properties was given", "pass the vault's properties (Requirements.Vault), from armkeyvault or your configuration")
		return nil
	}
	p, err := req.Vault.VaultProperties(ctx, id.Vault)
	if err != nil {
		return fmt.Errorf("vault.Validate: reading the properties of vault %s (soft delete, purge protection, region and firewall were not checked): %w: %w", id.Vault, kek.ErrUnavailable, err)
	}
	switch {
	case !p.SoftDelete && hsm:
		// Soft delete cannot be turned off on a Managed HSM:
		// https://learn.microsoft.com/azure/key-vault/managed-hsm/soft-delete-overview
		add("soft delete", "the properties source says soft delete is off on the Managed HSM, where it is always on", "check the properties source: it must report enableSoftDelete of the Managed HSM (az keyvault show --hsm-name HSM)")
	case !p.SoftDelete:
		add("soft delete", "soft delete is off on the vault", "enable soft delete on the vault (az keyvault update --enable-soft-delete true)")
	}
	switch {
	case !p.PurgeProtection && hsm:
		add("purge protection", "purge protection is off on the Managed HSM", "enable purge protection on the Managed HSM (az keyvault update-hsm --hsm-name HSM --enable-purge-protection true); it cannot be turned off again")
	case !p.PurgeProtection:
		add("purge protection", "purge protection is off on the vault", "enable purge protection on the vault (az keyvault update --enable-purge-protection true); it cannot be turned off again")
	}
	switch {
	case strings.TrimSpace(req.Region) == "":
		add("cache region", fmt.Sprintf("no region was given for the cache, so the vault's region (%q) could not be compared with it", p.Location), "set Requirements.Region to the cache's region")
	case !sameRegion(p.Location, req.Region):
		add("vault region", fmt.Sprintf("the vault is in %q, the cache in %q", p.Location, req.Region), "use a key in a vault in the same region as the cache")
	}
	if p.FirewallEnabled && !p.TrustedServicesBypass {
		add("vault firewall", "the vault firewall is on and does not let trusted Azure services through", "allow trusted Microsoft services to bypass the firewall ("+bypassCommand(hsm)+")")
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
	hsm := k.id.ManagedHSM()
	probe := make([]byte, 32)
	rand.Read(probe)
	defer clear(probe)
	// refused records a refusal as a failed check; a transient failure is
	// returned instead.
	refused := func(err error, op string) error {
		name, problem, fix, transient := refusal(err, hsm, op)
		if transient {
			return err
		}
		add(name, problem, fix)
		return nil
	}
	w, err := k.Wrap(ctx, probe)
	if err != nil {
		return refused(err, "wrap")
	}
	got, err := k.Unwrap(ctx, w)
	defer clear(got)
	if err != nil {
		return refused(err, "unwrap")
	}
	if !bytes.Equal(got, probe) {
		add("wrap round trip", "the key unwrapped by the vault differs from the key wrapped", "check that the key is an RSA key and not being rotated concurrently; contact support if it persists")
	}
	return nil
}
