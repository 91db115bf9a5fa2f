// Package armvault reads the management-plane properties of a Key Vault or
// Managed HSM from Azure Resource Manager with the official armkeyvault
// client, for vault.Requirements. It lives apart from package vault so that
// programs that supply vault properties themselves do not link the
// management-plane client.
package armvault

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/keyvault/armkeyvault"
	"github.com/cachecrypt/cachecrypt/vault"
)

// Source is a vault.PropertiesSource backed by Azure Resource Manager. The
// identity needs read access (Reader role) on the vault resource. A Source
// is safe for concurrent use.
type Source struct {
	resourceGroup string
	vaults        *armkeyvault.VaultsClient
	hsms          *armkeyvault.ManagedHsmsClient
}

var _ vault.PropertiesSource = (*Source)(nil)

// New returns a Source for vaults in resourceGroup of subscriptionID.
func New(subscriptionID, resourceGroup string, cred azcore.TokenCredential, opts *arm.ClientOptions) (*Source, error) {
	if subscriptionID == "" || resourceGroup == "" {
		return nil, errors.New("armvault.New: subscription ID and resource group are required")
	}
	v, err := armkeyvault.NewVaultsClient(subscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("armvault.New: %w", err)
	}
	h, err := armkeyvault.NewManagedHsmsClient(subscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("armvault.New: %w", err)
	}
	return &Source{resourceGroup: resourceGroup, vaults: v, hsms: h}, nil
}

// VaultProperties reads the properties of the vault or Managed HSM whose
// data-plane URL is vaultURL.
func (s *Source) VaultProperties(ctx context.Context, vaultURL string) (vault.Properties, error) {
	u, err := url.Parse(vaultURL)
	if err != nil {
		return vault.Properties{}, fmt.Errorf("armvault: vault URL %q: %w", vaultURL, err)
	}
	host := strings.ToLower(u.Hostname())
	name, _, _ := strings.Cut(host, ".")
	if strings.Contains(host, ".managedhsm.") {
		res, err := s.hsms.Get(ctx, s.resourceGroup, name, nil)
		if err != nil {
			return vault.Properties{}, fmt.Errorf("armvault: reading Managed HSM %q in resource group %q: %w", name, s.resourceGroup, err)
		}
		return hsmProperties(res.ManagedHsm), nil
	}
	res, err := s.vaults.Get(ctx, s.resourceGroup, name, nil)
	if err != nil {
		return vault.Properties{}, fmt.Errorf("armvault: reading vault %q in resource group %q: %w", name, s.resourceGroup, err)
	}
	return vaultProperties(res.Vault), nil
}

func vaultProperties(v armkeyvault.Vault) vault.Properties {
	var p vault.Properties
	if v.Location != nil {
		p.Location = *v.Location
	}
	if v.Properties == nil {
		return p
	}
	vp := v.Properties
	// Soft delete is on unless explicitly off (it cannot be turned off on
	// new vaults); purge protection is off unless explicitly on.
	p.SoftDelete = vp.EnableSoftDelete == nil || *vp.EnableSoftDelete
	p.PurgeProtection = vp.EnablePurgeProtection != nil && *vp.EnablePurgeProtection
	public := vp.PublicNetworkAccess == nil || !strings.EqualFold(*vp.PublicNetworkAccess, "Disabled")
	if acl := vp.NetworkACLs; acl != nil {
		p.FirewallEnabled = acl.DefaultAction != nil && *acl.DefaultAction == armkeyvault.NetworkRuleActionDeny
		p.TrustedServicesBypass = acl.Bypass != nil && *acl.Bypass == armkeyvault.NetworkRuleBypassOptionsAzureServices
	}
	p.FirewallEnabled = p.FirewallEnabled || !public
	return p
}

func hsmProperties(h armkeyvault.ManagedHsm) vault.Properties {
	var p vault.Properties
	if h.Location != nil {
		p.Location = *h.Location
	}
	if h.Properties == nil {
		return p
	}
	hp := h.Properties
	p.SoftDelete = hp.EnableSoftDelete == nil || *hp.EnableSoftDelete
	p.PurgeProtection = hp.EnablePurgeProtection != nil && *hp.EnablePurgeProtection
	public := hp.PublicNetworkAccess == nil || *hp.PublicNetworkAccess != armkeyvault.PublicNetworkAccessDisabled
	if acl := hp.NetworkACLs; acl != nil {
		p.FirewallEnabled = acl.DefaultAction != nil && *acl.DefaultAction == armkeyvault.NetworkRuleActionDeny
		p.TrustedServicesBypass = acl.Bypass != nil && *acl.Bypass == armkeyvault.NetworkRuleBypassOptionsAzureServices
	}
	p.FirewallEnabled = p.FirewallEnabled || !public
	return p
}
