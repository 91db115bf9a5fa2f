package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// env is an emulator with an administrator client and one RSA key.
type env struct {
	srv   *vaulttest.Server
	admin *azkeys.Client
	url   string // vault URL
	key   string // key name
}

const (
	adminPrincipal = "admin"
	cachePrincipal = "cache-identity"
)

// newEnv starts an emulator with vault "contoso", creates RSA key "cmk" and
// grants the cache identity the crypto service encryption user role.
func newEnv(t testing.TB) *env {
	t.Helper()
	srv := vaulttest.NewServer(t)
	srv.Grant(adminPrincipal, vaulttest.AllPermissions...)
	srv.Grant(cachePrincipal, vaulttest.CryptoServiceEncryptionUser...)
	e := &env{srv: srv, url: srv.VaultURL("contoso"), key: "cmk"}
	var err error
	e.admin, err = azkeys.NewClient(e.url, srv.Credential(adminPrincipal), srv.ClientOptions())
	require.NoError(t, err)
	e.create(t, e.key, azkeys.KeyTypeRSA)
	return e
}

// create makes a new key, or a new version of an existing one, and returns
// its version.
func (e *env) create(t testing.TB, name string, kty azkeys.KeyType) string {
	t.Helper()
	res, err := e.admin.CreateKey(context.Background(), name, azkeys.CreateKeyParameters{Kty: to.Ptr(kty)}, nil)
	require.NoError(t, err)
	return res.Key.KID.Version()
}

// update changes the attributes of the current version of key name.
func (e *env) update(t testing.TB, name string, p azkeys.UpdateKeyParameters) {
	t.Helper()
	_, err := e.admin.UpdateKey(context.Background(), name, "", p, nil)
	require.NoError(t, err)
}

func (e *env) setEnabled(t testing.TB, enabled bool) {
	e.update(t, e.key, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to.Ptr(enabled)}})
}

// kek builds a KEK for the cache identity; cfg fields left empty get the
// env's key, credential and client options.
func (e *env) kek(t testing.TB, cfg vault.Config) *vault.KEK {
	t.Helper()
	if cfg.KeyID == "" && cfg.VaultURL == "" {
		cfg.VaultURL, cfg.KeyName = e.url, e.key
	}
	if cfg.Credential == nil && cfg.ManagedIdentity == "" {
		cfg.Credential = e.srv.Credential(cachePrincipal)
	}
	if cfg.ClientOptions == nil {
		cfg.ClientOptions = e.srv.ClientOptions()
	}
	k, err := vault.New(cfg)
	require.NoError(t, err)
	return k
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
