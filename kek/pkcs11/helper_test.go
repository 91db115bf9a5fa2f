//go:build cgo

package pkcs11_test

import (
	"context"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
)

// newToken starts a private SoftHSM token for the test.
func newToken(t testing.TB) *testenv.SoftHSM {
	t.Helper()
	return testenv.StartSoftHSM(t, "cachecrypt-test")
}

// generate creates a key pair and returns its KEK, closed when the test ends.
func generate(t testing.TB, h *testenv.SoftHSM, object string, id []byte, bits int, opts ...pkcs11.Option) *pkcs11.KEK {
	t.Helper()
	k, err := pkcs11.GenerateKey(context.Background(), h.URI(object, id), bits, opts...)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}
