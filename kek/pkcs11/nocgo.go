//go:build !cgo

package pkcs11

import (
	"context"
	"crypto/rsa"
	"fmt"

	"github.com/cachecrypt/cachecrypt/kek"
)

// errNoCgo is what every entry point returns in a build without cgo: the
// PKCS#11 module is a C library that only cgo can load.
var errNoCgo = fmt.Errorf("pkcs11: this binary was built with CGO_ENABLED=0; PKCS#11 modules need cgo: %w", kek.ErrUnsupported)

// KEK is a key-encryption key held in a PKCS#11 token. This build has no
// cgo, so no KEK can be opened.
type KEK struct{}

// Open fails: this build has no cgo.
func Open(ctx context.Context, uri string, opts ...Option) (*KEK, error) {
	if _, _, err := parse(uri, opts); err != nil {
		return nil, fmt.Errorf("pkcs11.Open: %w", err)
	}
	return nil, fmt.Errorf("pkcs11.Open: %w", errNoCgo)
}

// GenerateKey fails: this build has no cgo.
func GenerateKey(ctx context.Context, uri string, bits int, opts ...Option) (*KEK, error) {
	return nil, fmt.Errorf("pkcs11.GenerateKey: %w", errNoCgo)
}

// Descriptor returns the zero descriptor.
func (k *KEK) Descriptor() kek.Descriptor { return kek.Descriptor{} }

// Public returns nil.
func (k *KEK) Public() *rsa.PublicKey { return nil }

// Wrap fails: this build has no cgo.
func (k *KEK) Wrap(context.Context, []byte) (kek.Wrapped, error) {
	return kek.Wrapped{}, fmt.Errorf("pkcs11.KEK.Wrap: %w", errNoCgo)
}

// Unwrap fails: this build has no cgo.
func (k *KEK) Unwrap(context.Context, kek.Wrapped) ([]byte, error) {
	return nil, fmt.Errorf("pkcs11.KEK.Unwrap: %w", errNoCgo)
}

// Validate fails: this build has no cgo.
func (k *KEK) Validate(context.Context) error { return fmt.Errorf("pkcs11.KEK.Validate: %w", errNoCgo) }

// Close does nothing.
func (k *KEK) Close() error { return nil }
