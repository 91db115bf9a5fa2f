package vault_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// Environment of the child process of TestKeyringReopensInNewProcess.
const (
	envChild    = "CACHECRYPT_VAULT_CHILD"
	envAddr     = "CACHECRYPT_VAULT_ADDR"
	envCA       = "CACHECRYPT_VAULT_CA"
	envKeyID    = "CACHECRYPT_VAULT_KEYID"
	envClientID = "CACHECRYPT_VAULT_CLIENT_ID"
	envKeyring  = "CACHECRYPT_VAULT_KEYRING"
)

var fileSalt = []byte("0123456789abcdef0123456789abcdef")

// fileKeyDigest returns the SHA-256 of a file key, so that no key bytes
// leave the process.
func fileKeyDigest(kr *dek.Keyring) (string, error) {
	fk, err := kr.FileKey(kr.Active(), "rdb", fileSalt)
	if err != nil {
		return "", err
	}
	defer clear(fk)
	sum := sha256.Sum256(fk)
	return hex.EncodeToString(sum[:]), nil
}

// A persistence disk's keyring created under the Key Vault KEK reopens in a
// new process, which reaches the emulator of this process through its
// address and CA certificate and authenticates with azidentity's managed
// identity credential. Disabling the key makes the reopen fail as revoked;
// re-enabling it restores it.
func TestKeyringReopensInNewProcess(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, e.srv.WriteCACert(caFile))
	clientID := "7c0ffee0-1234-4abc-8def-" + randHex(t, 6)
	e.srv.AddManagedIdentity(cachePrincipal, clientID, "")
	endpoint, header := e.srv.IdentityEndpoint()

	k := e.kek(t, vault.Config{})
	path := filepath.Join(dir, "disk-1.keyring")
	kr, err := dek.Create(ctxT(t), path, "persistence-disk-1", k)
	require.NoError(t, err)
	want, err := fileKeyDigest(kr)
	require.NoError(t, err)
	require.NoError(t, kr.Close())

	child := func() (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperVaultKeyringChild$", "-test.v")
		cmd.Env = append(os.Environ(),
			envChild+"=1", envAddr+"="+e.srv.Addr(), envCA+"="+caFile,
			envKeyID+"="+e.url+"/keys/"+e.key, envClientID+"="+clientID, envKeyring+"="+path,
			"IDENTITY_ENDPOINT="+endpoint, "IDENTITY_HEADER="+header)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	e.srv.ResetCounts()
	out, err := child()
	require.NoError(t, err, out)
	require.Contains(t, out, "FILEKEY-SHA256="+want)
	require.Equal(t, 1, e.srv.Count(vaulttest.OpUnwrapKey), "the open makes exactly one KEK call")
	require.Equal(t, 1, e.srv.Count(vaulttest.CountToken), "the child got its token from the managed identity endpoint")

	e.setEnabled(t, false)
	out, err = child()
	require.NoError(t, err, out)
	require.Contains(t, out, "OPEN-ERROR=revoked")

	e.setEnabled(t, true)
	out, err = child()
	require.NoError(t, err, out)
	require.Contains(t, out, "FILEKEY-SHA256="+want)
}

// TestHelperVaultKeyringChild is the child process of
// TestKeyringReopensInNewProcess; it does nothing in a normal run.
func TestHelperVaultKeyringChild(t *testing.T) {
	if os.Getenv(envChild) != "1" {
		t.Skip("child process of TestKeyringReopensInNewProcess")
	}
	ca, err := os.ReadFile(os.Getenv(envCA))
	require.NoError(t, err)
	k, err := vault.New(vault.Config{
		KeyID:           os.Getenv(envKeyID),
		ManagedIdentity: os.Getenv(envClientID),
		ClientOptions:   vaulttest.ClientOptions(os.Getenv(envAddr), ca),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kr, err := dek.Open(ctx, os.Getenv(envKeyring), k)
	switch {
	case errors.Is(err, kek.ErrRevoked):
		fmt.Println("OPEN-ERROR=revoked")
		return
	case err != nil:
		t.Fatalf("dek.Open: %v", err)
	}
	defer kr.Close()
	d, err := fileKeyDigest(kr)
	require.NoError(t, err)
	fmt.Println("FILEKEY-SHA256=" + d)
}
