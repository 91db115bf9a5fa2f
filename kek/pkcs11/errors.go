package pkcs11

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cachecrypt/cachecrypt/kek"
	p11 "github.com/miekg/pkcs11"
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

// rvOf returns the PKCS#11 return value inside err, if any.
func rvOf(err error) (p11.Error, bool) {
	var e p11.Error
	ok := errors.As(err, &e)
	return e, ok
}

// loginFailed reports whether err is the token refusing the PIN.
func loginFailed(err error) bool {
	rv, ok := rvOf(err)
	return ok && (rv == p11.CKR_PIN_INCORRECT || rv == p11.CKR_PIN_LOCKED ||
		rv == p11.CKR_PIN_EXPIRED || rv == p11.CKR_PIN_INVALID || rv == p11.CKR_PIN_LEN_RANGE)
}

// tokenGone reports whether err means the token or our session vanished.
func tokenGone(err error) bool {
	rv, ok := rvOf(err)
	if !ok {
		return false
	}
	switch rv {
	case p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_TOKEN_NOT_RECOGNIZED,
		p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_ERROR,
		p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_SLOT_ID_INVALID, p11.CKR_DEVICE_MEMORY:
		return true
	}
	return false
}

// mechanismRefused reports whether err is the token refusing the OAEP
// parameters rather than the ciphertext.
func mechanismRefused(err error) bool {
	rv, ok := rvOf(err)
	return ok && (rv == p11.CKR_MECHANISM_INVALID || rv == p11.CKR_MECHANISM_PARAM_INVALID ||
		rv == p11.CKR_ARGUMENTS_BAD || rv == p11.CKR_FUNCTION_NOT_SUPPORTED)
}

// configureError classifies an error of crypto11.Configure. crypto11 returns
// plain errors for a module that does not load and a token that is absent,
// so those two are recognised by their (pinned) text.
func configureError(err error) error {
	msg := err.Error()
	switch {
	case loginFailed(err):
		rv, _ := rvOf(err)
		return fmt.Errorf("login refused (%s); check the PIN in the pin-source; "+
			"the login is not retried, to keep the token from locking the user: %w", rv, ErrPINIncorrect)
	case strings.Contains(msg, "failed to create module context"):
		return fmt.Errorf("%v: %w", err, ErrModuleNotFound)
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return ErrTokenNotFound
	case tokenGone(err):
		return fmt.Errorf("%v: %w", err, ErrTokenRemoved)
	}
	return err
}
