//go:build cgo

package goredis_test

import (
	"os"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/stretchr/testify/require"
)

func init() {
	childKEKs["pkcs11"] = func(t *testing.T) kek.Unwrapper {
		k, err := pkcs11.Open(ctx, os.Getenv(envKEK))
		require.NoError(t, err)
		t.Cleanup(func() { k.Close() })
		return k
	}
}

// TestKeysetInRedisSoftHSM wraps the keyset with an RSA key in a SoftHSM2
// token; the child opens the token by its PKCS#11 URI (PIN from a file).
func TestKeysetInRedisSoftHSM(t *testing.T) {
	hsm := testenv.StartSoftHSM(t, "valuecrypt")
	uri := hsm.URI("app-kek", []byte{0x0a, 0x0b})
	k, err := pkcs11.GenerateKey(ctx, uri, 2048)
	require.NoError(t, err)
	defer k.Close()
	shareKeyset(t, "pkcs11", k, envKEK+"="+uri, "SOFTHSM2_CONF="+hsm.Conf)
}
