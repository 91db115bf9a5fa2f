package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/cachecrypt/cachecrypt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/cachecrypt/cachecrypt/vault"
)

// errNoKEK: the command needs a KEK and none was given or found.
var errNoKEK = errors.New("no key-encryption key given")

// Environment variables the tool reads.
const (
	// envKEK is the default of --kek.
	envKEK = "CACHECRYPT_KEK"
	// envClientID is the default of --client-id.
	envClientID = "CACHECRYPT_CLIENT_ID"
	// envVaultCA names a PEM file of extra CA certificates to trust for
	// Key Vault (a TLS-inspecting proxy, a private endpoint, tests).
	envVaultCA = "CACHECRYPT_VAULT_CA_FILE"
	// envVaultDial sends every Key Vault and managed identity connection to
	// this host:port instead of the host's address. It exists for tests
	// against the Key Vault emulator (vault/vaulttest); keep it unset.
	envVaultDial = "CACHECRYPT_VAULT_DIAL"
)

const kekHelp = `Key-encryption keys (KEKs) are given as URIs:
  mmk:PATH          the platform-managed key kept in PATH (a Tink keyset);
                    an instance's own is found in the platform key
                    store (never inside the instance directory)
  https://NAME.vault.azure.net/keys/KEY[/VERSION]
                    an RSA key in Azure Key Vault (or NAME.managedhsm.azure.net),
                    reached with the user-assigned managed identity given by
                    --client-id (or $CACHECRYPT_CLIENT_ID)
  pkcs11:token=T;object=O;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cachecrypt/pin
                    an RSA key in an HSM (RFC 7512); the PIN comes from a
                    file (pin-source=file:PATH) or a variable (pin-source=env:NAME)
Secrets (PINs, tokens) are never taken from flags.`

// kekOpener opens KEKs from URIs with the tool's global settings.
type kekOpener struct {
	clientID string
	opened   []func()
	cache    map[string]kek.KEK // by URI: one login per HSM key per run
}

// close releases every KEK opened (PKCS#11 sessions).
func (o *kekOpener) close() {
	for _, f := range o.opened {
		f()
	}
	o.opened, o.cache = nil, nil
}

// open returns the KEK named by uri. create allows an mmk: URI to name a
// key file that does not exist yet (the target of a rewrap).
func (o *kekOpener) open(ctx context.Context, uri string, create bool) (kek.KEK, error) {
	if k, ok := o.cache[uri]; ok {
		return k, nil
	}
	k, err := o.openURI(ctx, uri, create)
	if err != nil {
		return nil, err
	}
	if o.cache == nil {
		o.cache = map[string]kek.KEK{}
	}
	o.cache[uri] = k
	return k, nil
}

func (o *kekOpener) openURI(ctx context.Context, uri string, create bool) (kek.KEK, error) {
	switch {
	case strings.HasPrefix(uri, "mmk:"):
		path := strings.TrimPrefix(uri, "mmk:")
		if path == "" {
			return nil, usagef("KEK %q: mmk: needs the path of the platform key file, such as mmk:/var/lib/cachecrypt/instances/ID/mmk.key", uri)
		}
		if !create {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("platform key %s: %w (a missing key file is never created when opening: check the path)", path, err)
			}
		}
		m, err := kek.LoadMMK(path)
		if err != nil {
			return nil, fmt.Errorf("platform key %s: %w", path, err)
		}
		return m, nil
	case strings.HasPrefix(uri, "https://"):
		return o.openVault(uri)
	case strings.HasPrefix(uri, "pkcs11:"):
		k, err := pkcs11.Open(ctx, uri)
		if err != nil {
			return nil, err
		}
		o.opened = append(o.opened, func() { k.Close() })
		return k, nil
	}
	return nil, usagef("KEK %q: unknown scheme; use mmk:PATH, https://NAME.vault.azure.net/keys/KEY or pkcs11:...", uri)
}

func (o *kekOpener) openVault(uri string) (kek.KEK, error) {
	id, err := vault.ParseKeyID(uri)
	if err != nil {
		return nil, usagef("KEK %q: %v", uri, err)
	}
	clientID := o.clientID
	if clientID == "" {
		clientID = os.Getenv(envClientID)
	}
	if clientID == "" {
		return nil, usagef("Key Vault key %s needs the user-assigned managed identity that reaches it: pass --client-id (its client ID or resource ID) or set %s", id, envClientID)
	}
	opts, err := vaultClientOptions()
	if err != nil {
		return nil, err
	}
	return vault.New(vault.Config{KeyID: id.String(), ManagedIdentity: clientID, ClientOptions: opts})
}

// vaultClientOptions applies CACHECRYPT_VAULT_CA_FILE and
// CACHECRYPT_VAULT_DIAL; nil means the SDK's defaults.
func vaultClientOptions() (*azkeys.ClientOptions, error) {
	caFile, dial := os.Getenv(envVaultCA), os.Getenv(envVaultDial)
	if caFile == "" && dial == "" {
		return nil, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envVaultCA, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", envVaultCA, caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if dial != "" {
		d := &net.Dialer{Timeout: 10 * time.Second}
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, dial)
		}
	}
	opts := &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: tr},
		Retry:     policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
	}}
	return opts, nil
}

// unwrapperFor returns the KEK that opens the keyring at path: the one
// named by uri, or else one derived from the keyring's own descriptor (the
// instance's platform key for an MMK, the recorded Key Vault key for a CMK).
func (o *kekOpener) unwrapperFor(ctx context.Context, uri, keyringPath string) (kek.KEK, error) {
	if uri != "" {
		return o.open(ctx, uri, false)
	}
	info, err := dek.ReadInfo(keyringPath)
	if err != nil {
		return nil, err
	}
	switch info.KEK.Kind {
	case kek.KindMMK:
		mmk, err := cachecrypt.PlatformKeyPath(filepath.Dir(filepath.Dir(keyringPath)))
		if err != nil {
			return nil, fmt.Errorf("keyring %s is wrapped by platform key %q, and it is not in an instance whose key can be found (%v); name the key with --kek mmk:PATH: %w", keyringPath, info.KEK.KeyID, err, errNoKEK)
		}
		if _, err := os.Stat(mmk); err != nil {
			return nil, fmt.Errorf("keyring %s is wrapped by platform key %q, and %s is not there (restore the platform key store from its backup): %w", keyringPath, info.KEK.KeyID, mmk, errNoKEK)
		}
		return o.open(ctx, "mmk:"+mmk, false)
	case kek.KindKeyVault:
		id, err := vault.ParseKeyID(info.KEK.KeyID)
		if err != nil {
			return nil, err
		}
		id.Version = "" // any version of the key unwraps
		return o.open(ctx, id.String(), false)
	}
	if info.KEK.Kind == kek.KindPKCS11 {
		return nil, fmt.Errorf("keyring %s is wrapped by HSM key %q; name it with --kek and add where the module and the PIN are: --kek 'pkcs11:...?module-path=/path/to/module.so&pin-source=file:/path/to/pin': %w", keyringPath, info.KEK.KeyID, errNoKEK)
	}
	return nil, fmt.Errorf("keyring %s is wrapped by %s key %q: pass it with --kek: %w", keyringPath, info.KEK.Kind, info.KEK.KeyID, errNoKEK)
}
