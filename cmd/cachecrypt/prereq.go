package main

import (
	"context"
	"fmt"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/armvault"
	"github.com/spf13/cobra"
)

// prereqFlags select the prerequisite checks of a Key Vault CMK: the
// cache's region, and where the vault's properties are read (Azure
// Resource Manager, with the same managed identity).
type prereqFlags struct {
	region, subscription, resourceGroup string
}

func (p *prereqFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&p.region, "region", "", "Key Vault CMK: check every prerequisite for a cache in this Azure region (needs --vault-subscription and --vault-resource-group)")
	c.Flags().StringVar(&p.subscription, "vault-subscription", "", "subscription ID of the vault, to read its properties from Azure Resource Manager")
	c.Flags().StringVar(&p.resourceGroup, "vault-resource-group", "", "resource group of the vault")
}

// check returns the prerequisite check of the CMK k: for a Key Vault key
// with --region, vault.KEK.Validate against the vault's properties from
// Azure Resource Manager; else a wrap and unwrap round trip (a PKCS#11 key
// also runs its own Validate in cachecrypt.Open and SetEncryption).
func (a *app) prereqCheck(p prereqFlags, k kek.KEK) (func(context.Context) error, error) {
	rt := func(ctx context.Context) error { return roundTrip(ctx, k) }
	vk, ok := k.(*vault.KEK)
	if !ok {
		return rt, nil
	}
	if p.region == "" {
		fmt.Fprintln(a.stderr, "cachecrypt: note: Key Vault prerequisites (key type, soft delete, purge protection, region, firewall) not checked: pass --region, --vault-subscription and --vault-resource-group to check them")
		return rt, nil
	}
	if p.subscription == "" || p.resourceGroup == "" {
		return nil, usagef("--region needs --vault-subscription and --vault-resource-group, to read the vault's properties from Azure Resource Manager")
	}
	clientID := a.clientID
	if clientID == "" {
		clientID = os.Getenv(envClientID)
	}
	opts, err := vaultClientOptions()
	if err != nil {
		return nil, err
	}
	miOpts := &azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(clientID)}
	var armOpts *arm.ClientOptions
	if opts != nil {
		miOpts.ClientOptions = opts.ClientOptions
		armOpts = &arm.ClientOptions{ClientOptions: opts.ClientOptions}
	}
	cred, err := azidentity.NewManagedIdentityCredential(miOpts)
	if err != nil {
		return nil, err
	}
	src, err := armvault.New(p.subscription, p.resourceGroup, cred, armOpts)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		return vk.Validate(ctx, vault.Requirements{Region: p.region, Vault: src})
	}, nil
}
