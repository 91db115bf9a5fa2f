package pkcs11

import (
	"errors"
	"fmt"

	"github.com/cachecrypt/cachecrypt/kek"
)

// Sentinel errors, matched with errors.Is. Where a kek sentinel fits, the
// error matches it too: ErrTokenNotFound and ErrTokenRemoved match
// kek.ErrUnavailable, ErrKeyNotFound matches kek.ErrRevoked, ErrCiphertext
// matches kek.ErrUnwrap and ErrMechanism matches kek.ErrUnsupported. No
// error ever holds the PIN.
var (
	// ErrModuleNotFound means the module-path does not name a loadable
	// PKCS#11 module.
	ErrModuleNotFound = errors.New("pkcs11: PKCS#11 module not found or not loadable")

	// ErrTokenNotFound means no token with the URI's label or serial is
	// present in any slot of the module.
	ErrTokenNotFound = fmt.Errorf("pkcs11: token not found: %w", kek.ErrUnavailable)

	// ErrPINIncorrect means the token refused the PIN (incorrect, locked or
	// expired). The login is never retried: real HSMs lock the user after a
	// few failed attempts.
	ErrPINIncorrect = errors.New("pkcs11: token refused the user PIN")

	// ErrKeyNotFound means no RSA key pair in the token matches the URI.
	ErrKeyNotFound = fmt.Errorf("pkcs11: key pair not found in the token: %w", kek.ErrRevoked)

	// ErrAmbiguousKey means more than one private key matches the URI.
	// It is refused: picking one would be a guess.
	ErrAmbiguousKey = errors.New("pkcs11: more than one private key matches the URI")

	// ErrKeyExists means GenerateKey found a key with the same label and id.
	ErrKeyExists = errors.New("pkcs11: a key with this label and id already exists in the token")

	// ErrTokenRemoved means the token went away while the KEK was open
	// (removed, reinitialised, or the session was lost). It is transient:
	// the next Unwrap reconnects once the token is back.
	ErrTokenRemoved = fmt.Errorf("pkcs11: token removed or session lost: %w", kek.ErrUnavailable)

	// ErrCiphertext means the token rejected a wrapped key: it is corrupt
	// or was wrapped by another key.
	ErrCiphertext = fmt.Errorf("pkcs11: token rejected the wrapped key: %w", kek.ErrUnwrap)

	// ErrMechanism means the token does not support RSA-OAEP with the hash
	// asked for.
	ErrMechanism = fmt.Errorf("pkcs11: token does not support the RSA-OAEP parameters: %w", kek.ErrUnsupported)

	// ErrClosed means the KEK was used after Close.
	ErrClosed = errors.New("pkcs11: KEK is closed")
)
