//go:build !cgo

package pkcs11_test

import (
	"context"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/stretchr/testify/require"
)

// TestNoCgo: without cgo the package still builds, and says why it cannot
// work. Under CI the SoftHSM tests that this build leaves out are a failure.
func TestNoCgo(t *testing.T) {
	_, err := pkcs11.Open(context.Background(), "pkcs11:token=t;object=k?module-path=/m.so&pin-source=env:P")
	require.ErrorIs(t, err, kek.ErrUnsupported)
	require.ErrorContains(t, err, "CGO_ENABLED=0")
	testenv.Missing(t, "cgo (the SoftHSM tests of kek/pkcs11 need it)", "install gcc and build with CGO_ENABLED=1")
}
