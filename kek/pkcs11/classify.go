//go:build cgo

package pkcs11

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cachecrypt/cachecrypt/kek"
	p11 "github.com/miekg/pkcs11"
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

// classify maps a PKCS#11 error of a running session to our sentinels.
func classify(err error) error {
	switch {
	case tokenGone(err):
		return fmt.Errorf("%v: %w", err, ErrTokenRemoved)
	case mechanismRefused(err):
		return fmt.Errorf("%v: %w", err, ErrMechanism)
	}
	if rv, ok := rvOf(err); ok {
		switch rv {
		case p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE, p11.CKR_DATA_INVALID,
			p11.CKR_DATA_LEN_RANGE, p11.CKR_GENERAL_ERROR:
			return fmt.Errorf("%v: %w", err, ErrCiphertext)
		case p11.CKR_KEY_FUNCTION_NOT_PERMITTED, p11.CKR_KEY_TYPE_INCONSISTENT:
			return fmt.Errorf("%v: the key may not decrypt (CKA_DECRYPT is false): %w", err, kek.ErrRevoked)
		}
	}
	return err
}
