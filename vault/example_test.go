package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
)

// A CMK in Key Vault: build the KEK, validate its prerequisites, then wrap
// and unwrap a data key. The emulator stands in for the vault here; in
// production set ManagedIdentity to the client ID of the cache's
// user-assigned identity instead of Credential and ClientOptions.
func Example() {
	srv, err := vaulttest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	srv.Grant("admin", vaulttest.AllPermissions...)
	srv.Grant("cache", vaulttest.CryptoServiceEncryptionUser...)
	ctx := context.Background()
	admin, _ := azkeys.NewClient(srv.VaultURL("contoso"), srv.Credential("admin"), srv.ClientOptions())
	if _, err := admin.CreateKey(ctx, "cache-cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSAHSM)}, nil); err != nil {
		log.Fatal(err)
	}

	k, err := vault.New(vault.Config{
		KeyID:         "https://contoso.vault.azure.net/keys/cache-cmk", // follows the current version
		Credential:    srv.Credential("cache"),
		ClientOptions: srv.ClientOptions(),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := k.Validate(ctx, vault.Requirements{Region: "westeurope", Vault: srv}); err != nil {
		log.Fatal(err)
	}

	dek := bytes.Repeat([]byte{7}, 32)
	w, err := k.Wrap(ctx, dek)
	if err != nil {
		log.Fatal(err)
	}
	got, err := k.Unwrap(ctx, w)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.Kind, w.Algorithm, bytes.Equal(got, dek))

	// Disabling the key revokes access.
	_, _ = admin.UpdateKey(ctx, "cache-cmk", "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(false)}}, nil)
	_, err = k.Unwrap(ctx, w)
	fmt.Println(errors.Is(err, kek.ErrRevoked))
	// Output:
	// azure-key-vault RSA-OAEP-256 true
	// true
}

// Validate lists every failed prerequisite with its fix.
func ExampleKEK_Validate() {
	srv, err := vaulttest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	srv.Grant("admin", vaulttest.AllPermissions...)
	srv.Grant("cache", vaulttest.CryptoServiceEncryptionUser...)
	ctx := context.Background()
	admin, _ := azkeys.NewClient(srv.VaultURL("contoso"), srv.Credential("admin"), srv.ClientOptions())
	if _, err := admin.CreateKey(ctx, "cache-cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		log.Fatal(err)
	}
	k, err := vault.New(vault.Config{KeyID: "https://contoso.vault.azure.net/keys/cache-cmk", Credential: srv.Credential("cache"), ClientOptions: srv.ClientOptions()})
	if err != nil {
		log.Fatal(err)
	}
	props := vault.StaticProperties{SoftDelete: true, Location: "eastus"}
	fmt.Println(k.Validate(ctx, vault.Requirements{Region: "westeurope", Vault: props}))
	// Output:
	// kek: 2 prerequisite check(s) failed for https://contoso.vault.azure.net/keys/cache-cmk:
	//   - purge protection: purge protection is off on the vault; fix: enable purge protection on the vault (az keyvault update --enable-purge-protection true); it cannot be turned off again
	//   - vault region: the vault is in "eastus", the cache in "westeurope"; fix: use a key in a vault in the same region as the cache
}
