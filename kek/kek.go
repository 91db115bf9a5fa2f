// Package kek defines the key-encryption key (KEK) model of cachecrypt and
// its default implementation, the platform-managed key (MMK).
//
// A KEK never encrypts data. It wraps and unwraps the small keys that do
// (the per-disk keyring keys of package dek). Two one-method interfaces carry
// the whole model: a Wrapper seals a key, an Unwrapper opens one. Every
// wrapped key carries a Descriptor naming the exact key, including its
// version, that wrapped it, so a key wrapped before a KEK rotation still
// unwraps after it.
//
// Implementations: the MMK in this package (a Tink AES-256-GCM keyset kept in
// a local file), package vault (an RSA key in Azure Key Vault), package
// kek/pkcs11 (an RSA key in an HSM), and kek/kektest (an in-memory KEK that
// counts calls, for tests).
package kek

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Kind names a family of KEK implementations.
type Kind string

// The kinds of KEK cachecrypt knows.
const (
	KindMMK      Kind = "mmk"             // platform-managed key (default)
	KindKeyVault Kind = "azure-key-vault" // customer-managed RSA key in Azure Key Vault or Managed HSM
	KindPKCS11   Kind = "pkcs11"          // customer-managed RSA key in a local HSM
	KindTest     Kind = "test"            // in-memory test KEK (kek/kektest)
)

// CustomerManaged reports whether keys of this kind are customer-managed
// (CMK) rather than platform-managed.
func (k Kind) CustomerManaged() bool { return k == KindKeyVault || k == KindPKCS11 }

// Descriptor identifies the exact key that wrapped a key. It is stored beside
// every wrapped key and never holds secret material.
type Descriptor struct {
	Kind      Kind   // family of the KEK
	KeyID     string // exact key identifier, including its version
	Algorithm string // wrapping algorithm, such as "RSA-OAEP-256"
}

// String returns a short human-readable form, for logs and errors.
func (d Descriptor) String() string {
	return fmt.Sprintf("%s key %q (%s)", d.Kind, d.KeyID, d.Algorithm)
}

// Validate checks that the descriptor fits the limits of the keyring format.
func (d Descriptor) Validate() error {
	switch {
	case d.Kind == "" || len(d.Kind) > 255:
		return fmt.Errorf("kek: descriptor kind %q must be 1 to 255 bytes", d.Kind)
	case d.KeyID == "" || len(d.KeyID) > 4096:
		return fmt.Errorf("kek: descriptor key id must be 1 to 4096 bytes, got %d", len(d.KeyID))
	case len(d.Algorithm) > 255:
		return fmt.Errorf("kek: descriptor algorithm must be at most 255 bytes, got %d", len(d.Algorithm))
	}
	return nil
}

// Wrapped is a key sealed by a KEK, together with the descriptor of the
// exact KEK version that sealed it.
type Wrapped struct {
	Descriptor
	Ciphertext []byte
}

// A Wrapper seals a key under a KEK. Implementations must be safe for
// concurrent use. The returned descriptor names the exact key version used.
type Wrapper interface {
	Wrap(ctx context.Context, key []byte) (Wrapped, error)
}

// An Unwrapper opens a key sealed by Wrap. Implementations must be safe for
// concurrent use. An Unwrapper that does not hold the key named by the
// descriptor returns an error matching ErrKeyMismatch without any remote
// call; a ciphertext that fails to open returns an error matching
// ErrUnwrap.
type Unwrapper interface {
	Unwrap(ctx context.Context, w Wrapped) ([]byte, error)
}

// A KEK both wraps and unwraps keys.
type KEK interface {
	Wrapper
	Unwrapper
}

// Sentinel errors returned by KEK implementations, matched with errors.Is.
var (
	// ErrUnavailable is transient: the KEK could not be reached (network,
	// throttling, timeout). Retrying later may succeed.
	ErrUnavailable = errors.New("kek: key-encryption key unavailable")

	// ErrRevoked means the key is disabled, deleted, expired or access to
	// it was removed. Data under it stays unreadable until access returns.
	ErrRevoked = errors.New("kek: key-encryption key revoked or disabled")

	// ErrKeyMismatch means a wrapped key names a KEK that this Unwrapper
	// does not hold: the wrong KEK was supplied.
	ErrKeyMismatch = errors.New("kek: wrapped key belongs to another key-encryption key")

	// ErrUnwrap means the KEK rejected the wrapped ciphertext: it is
	// corrupt, or was not produced by this key.
	ErrUnwrap = errors.New("kek: wrapped key failed to unwrap")

	// ErrPrerequisite means a customer-managed key failed one or more
	// prerequisite checks. The error is a *PrerequisiteError listing them.
	ErrPrerequisite = errors.New("kek: prerequisites for the customer-managed key failed")

	// ErrUnsupported means the requested key setup is not allowed, such as
	// a customer-managed key on the ephemeral NVMe flash disk.
	ErrUnsupported = errors.New("kek: unsupported key configuration")
)

// Check is one failed prerequisite check and how to fix it.
type Check struct {
	Name    string // short name, such as "key type"
	Problem string // what is wrong
	Fix     string // what the operator should do
}

// PrerequisiteError lists every failed prerequisite check. It matches
// ErrPrerequisite with errors.Is.
type PrerequisiteError struct {
	Key    string  // the key the checks were run against
	Failed []Check // every failed check, in the order run
}

// Error lists each failed check with its fix.
func (e *PrerequisiteError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kek: %d prerequisite check(s) failed for %s:", len(e.Failed), e.Key)
	for _, c := range e.Failed {
		fmt.Fprintf(&b, "\n  - %s: %s; fix: %s", c.Name, c.Problem, c.Fix)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrPrerequisite) true.
func (e *PrerequisiteError) Is(target error) bool { return target == ErrPrerequisite }
