package goredis_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Environment of the child process of the keyset tests.
const (
	envChild = "VALUECRYPT_CHILD" // the KEK kind the child opens with
	envRedis = "VALUECRYPT_REDIS"
	envKEK   = "VALUECRYPT_KEK" // MMK path, vault key id, or PKCS#11 URI
	envAddr  = "VALUECRYPT_VAULT_ADDR"
	envCA    = "VALUECRYPT_VAULT_CA"
	envMI    = "VALUECRYPT_VAULT_CLIENT_ID"
)

// childKEKs build, in the child, the Unwrapper of each KEK kind from the
// environment; kek_pkcs11_test.go adds PKCS#11 in cgo builds.
var childKEKs = map[string]func(t *testing.T) kek.Unwrapper{
	"mmk": func(t *testing.T) kek.Unwrapper {
		m, err := kek.LoadMMK(os.Getenv(envKEK))
		require.NoError(t, err)
		return m
	},
	"keyvault": func(t *testing.T) kek.Unwrapper {
		ca, err := os.ReadFile(os.Getenv(envCA))
		require.NoError(t, err)
		k, err := vault.New(vault.Config{KeyID: os.Getenv(envKEK), ManagedIdentity: os.Getenv(envMI),
			ClientOptions: vaulttest.ClientOptions(os.Getenv(envAddr), ca)})
		require.NoError(t, err)
		return k
	},
}

// countingUnwrapper counts the calls to any Unwrapper.
type countingUnwrapper struct {
	u     kek.Unwrapper
	calls atomic.Int64
}

func (c *countingUnwrapper) Unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	c.calls.Add(1)
	return c.u.Unwrap(ctx, w)
}

// shareKeyset creates a keyset in a fresh redis-server wrapped by k, seals
// a value with it, and has a second process open the keyset from the
// server with the KEK its environment names: it must read the value and
// make exactly one KEK call. It returns the child's output.
func shareKeyset(t *testing.T, kind string, k kek.KEK, env ...string) string {
	t.Helper()
	s := startRedis(t)
	ks, err := valuecrypt.Create(ctx, goredis.Store(s.rdb, ""), k)
	require.NoError(t, err)
	defer ks.Close()
	secret := make([]byte, 16)
	rand.Read(secret)
	want := hex.EncodeToString(secret)
	c := goredis.New(s.rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "app"}))
	require.NoError(t, c.Set(ctx, "greeting", []byte(want), 0))
	require.NoError(t, c.HSet(ctx, "profile", map[string][]byte{"name": []byte(want)}, 0))

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperKeysetChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, envChild+"="+kind, envRedis+"="+s.srv.Addr())...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "child:\n%s", out)
	require.Contains(t, string(out), "VALUE="+want+"\n", "child:\n%s", out)
	require.Contains(t, string(out), "FIELD="+want+"\n", "child:\n%s", out)
	require.Contains(t, string(out), "KEK-CALLS=1\n", "child:\n%s", out)
	return string(out)
}

// TestHelperKeysetChild is the child process of the keyset tests; it does
// nothing in a normal run.
func TestHelperKeysetChild(t *testing.T) {
	kind := os.Getenv(envChild)
	if kind == "" {
		t.Skip("child process of the keyset tests")
	}
	build := childKEKs[kind]
	require.NotNil(t, build, "unknown KEK kind %q", kind)
	u := &countingUnwrapper{u: build(t)}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envRedis)})
	defer rdb.Close()
	ks, err := valuecrypt.Open(ctx, goredis.Store(rdb, ""), u)
	require.NoError(t, err)
	defer ks.Close()
	c := goredis.New(rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "app"}))
	v, err := c.Get(ctx, "greeting")
	require.NoError(t, err)
	f, err := c.HGet(ctx, "profile", "name")
	require.NoError(t, err)
	fmt.Printf("VALUE=%s\nFIELD=%s\nKEK-CALLS=%d\n", v, f, u.calls.Load())
}

func TestKeysetInRedisMMK(t *testing.T) {
	path := filepath.Join(t.TempDir(), "platform.key")
	m, err := kek.LoadMMK(path)
	require.NoError(t, err)
	shareKeyset(t, "mmk", m, envKEK+"="+path)
}

// TestKeysetInRedisKeyVault wraps the keyset with an RSA-HSM key of the Key
// Vault emulator, through the official azkeys client; the child reaches the
// emulator over TLS with a managed identity.
func TestKeysetInRedisKeyVault(t *testing.T) {
	srv := vaulttest.NewServer(t)
	srv.Grant("admin", vaulttest.AllPermissions...)
	srv.Grant("cache", vaulttest.CryptoServiceEncryptionUser...)
	url := srv.VaultURL("contoso")
	admin, err := azkeys.NewClient(url, srv.Credential("admin"), srv.ClientOptions())
	require.NoError(t, err)
	_, err = admin.CreateKey(ctx, "app-kek", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSAHSM)}, nil)
	require.NoError(t, err)
	keyID := url + "/keys/app-kek"
	k, err := vault.New(vault.Config{KeyID: keyID, Credential: srv.Credential("cache"), ClientOptions: srv.ClientOptions()})
	require.NoError(t, err)

	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, srv.WriteCACert(ca))
	clientID := "7c0ffee0-1234-4abc-8def-" + strings.Repeat("a", 12)
	srv.AddManagedIdentity("cache", clientID, "")
	endpoint, header := srv.IdentityEndpoint()
	srv.ResetCounts()
	before := srv.Count(vaulttest.OpWrapKey)
	shareKeyset(t, "keyvault", k, envKEK+"="+keyID, envAddr+"="+srv.Addr(), envCA+"="+ca, envMI+"="+clientID,
		"IDENTITY_ENDPOINT="+endpoint, "IDENTITY_HEADER="+header)
	require.Equal(t, before+1, srv.Count(vaulttest.OpWrapKey), "Create wraps once")
	require.Equal(t, 1, srv.Count(vaulttest.OpUnwrapKey), "the child's open is one unwrap in the vault")
}
