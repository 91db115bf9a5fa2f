//go:build cgo

package pkcs11_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/stretchr/testify/require"
)

// Environment of the child process of TestKeyringReopensInNewProcess.
const (
	envHelper  = "CACHECRYPT_PKCS11_HELPER"
	envKeyring = "CACHECRYPT_PKCS11_KEYRING"
	envURI     = "CACHECRYPT_PKCS11_URI"
)

var reopenSalt = bytes.Repeat([]byte{0x5a}, 32)

// TestKeyringReopensInNewProcess creates a persistence disk's keyring
// wrapped by the HSM KEK, then re-executes the test binary: the child opens
// the keyring knowing only the PKCS#11 URI (token, key, module, PIN file)
// and the keyring path, with an environment stripped of everything else, and
// must derive the same file key as the parent.
func TestKeyringReopensInNewProcess(t *testing.T) {
	h := newToken(t)
	k := generate(t, h, "persistence-kek", []byte{0x0d, 0x15, 0x4b}, 2048)
	path := filepath.Join(t.TempDir(), "persistence.keyring")
	kr, err := dek.Create(ctx, path, "persistence-disk-0", k)
	require.NoError(t, err)
	fk, err := kr.FileKey(kr.Active(), "rdb", reopenSalt)
	require.NoError(t, err)
	require.NoError(t, kr.Close())
	require.NoError(t, k.Close())
	info, err := dek.ReadInfo(path)
	require.NoError(t, err)
	require.Equal(t, k.Descriptor(), info.KEK)

	uri := h.URI("persistence-kek", []byte{0x0d, 0x15, 0x4b})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperReopenKeyring$", "-test.v", "-test.count=1")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"SOFTHSM2_CONF=" + h.Conf, // where SoftHSM keeps this test's token
		envHelper + "=1",
		envKeyring + "=" + path,
		envURI + "=" + uri,
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "child failed:\n%s", out)
	sum := sha256.Sum256(fk)
	want := "file-key-sha256=" + hex.EncodeToString(sum[:])
	require.Contains(t, string(out), want, "child output:\n%s", out)
	require.NotContains(t, string(out), pin(t, h))
}

// TestHelperReopenKeyring is the child of TestKeyringReopensInNewProcess.
func TestHelperReopenKeyring(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("helper process of TestKeyringReopensInNewProcess")
	}
	k, err := pkcs11.Open(ctx, os.Getenv(envURI))
	require.NoError(t, err)
	defer k.Close()
	kr, err := dek.Open(ctx, os.Getenv(envKeyring), k)
	require.NoError(t, err)
	defer kr.Close()
	fk, err := kr.FileKey(kr.Active(), "rdb", reopenSalt)
	require.NoError(t, err)
	sum := sha256.Sum256(fk)
	// Print a hash of the throwaway file key, never the key itself.
	fmt.Printf("file-key-sha256=%s\n", hex.EncodeToString(sum[:]))
	require.False(t, strings.Contains(os.Getenv(envURI), "pin-value"))
}
