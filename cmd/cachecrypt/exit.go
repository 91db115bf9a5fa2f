package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
)

// Exit codes, documented in the root command's help and in README.md.
const (
	exitOK      = 0
	exitUsage   = 1 // bad flags or arguments
	exitDamaged = 2 // damaged data: authentication failed, truncated, malformed
	exitKey     = 3 // key unavailable: KEK revoked, unreachable or wrong, DEK version retired
	exitOther   = 4 // anything else: I/O, permissions, ...
)

const exitCodesHelp = `Exit codes:
  0  success
  1  usage error (bad flags or arguments)
  2  damaged data: authentication failed, truncated or malformed (the message
     names the file and the segment, frame or offset)
  3  key unavailable: the KEK is revoked, disabled, unreachable or not the one
     that wraps the keyring, or a file needs a retired DEK version
  4  any other error (I/O, permissions, ...)`

// usageError is a mistake in the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// silentError carries an exit code for a failure the command already
// reported (such as verify's damage report).
type silentError struct{ code int }

func (e *silentError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// damageErrors are the sentinels of damaged data.
var damageErrors = []error{
	cachecrypt.ErrAuthentication, cachecrypt.ErrTruncated, cachecrypt.ErrFormat,
	errNotRDB, errChecksum, errMissingPart, errRollback,
}

// keyErrors are the sentinels of a key that cannot be used.
var keyErrors = []error{
	kek.ErrUnavailable, kek.ErrRevoked, kek.ErrKeyMismatch, kek.ErrUnwrap,
	kek.ErrPrerequisite, dek.ErrUnknownVersion, pkcs11.ErrPINIncorrect,
	pkcs11.ErrModuleNotFound, errNoKEK, blob.ErrCustomerKey,
}

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var silent *silentError
	var usage *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &silent):
		return silent.code
	case errors.As(err, &usage), isCobraUsage(err):
		return exitUsage
	}
	// A key problem comes first: a keyring that does not open with the
	// given KEK is not damaged data.
	for _, s := range keyErrors {
		if errors.Is(err, s) {
			return exitKey
		}
	}
	for _, s := range damageErrors {
		if errors.Is(err, s) {
			return exitDamaged
		}
	}
	return exitOther
}

// isCobraUsage recognises the errors cobra returns for an unknown command.
func isCobraUsage(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag")
}

// hint says what to do about an error, or "".
func hint(err error) string {
	var sealed *sealedKeyError
	switch {
	case errors.As(err, &sealed):
		return "the export was sealed by another key-encryption key (named above): pass that key with --kek"
	case errors.Is(err, blob.ErrCustomerKey):
		return "give the blob's customer-provided key with --cpk-file or $" + envCPK + " (the key it was exported with)"
	case errors.Is(err, kek.ErrRevoked):
		return "the key-encryption key is disabled, deleted or no longer accessible: re-enable it or restore access (for Key Vault: the identity needs get, wrapKey and unwrapKey), then retry"
	case errors.Is(err, kek.ErrUnavailable):
		return "the key-encryption key could not be reached (network, throttling, token missing): retry later, or check connectivity to the vault or HSM"
	case errors.Is(err, kek.ErrKeyMismatch), errors.Is(err, kek.ErrUnwrap):
		return "the keyring is wrapped by another key: run 'cachecrypt inspect KEYRING' to see which, and pass that key with --kek"
	case errors.Is(err, pkcs11.ErrPINIncorrect):
		return "check the PIN file or variable named by pin-source; the PIN is never retried, to avoid locking the token"
	case errors.Is(err, kek.ErrPrerequisite):
		return "fix each failed check listed above, then retry"
	case errors.Is(err, dek.ErrUnknownVersion):
		return "the file was written under a DEK version this keyring no longer holds (retired) or belongs to another disk's keyring: pass the right one with --keyring"
	case errors.Is(err, errNoKEK):
		return "pass the key-encryption key with --kek (mmk:PATH, https://VAULT.vault.azure.net/keys/NAME with --client-id, or pkcs11:...)"
	case errors.Is(err, cachecrypt.ErrAuthentication), errors.Is(err, cachecrypt.ErrTruncated):
		return "the data is damaged or not from this disk; restore the file from a backup (for the last AOF part, 'cachecrypt aof fix' cuts a torn tail)"
	case errors.Is(err, cachecrypt.ErrVersion):
		return "the file was written by a newer cachecrypt: use a newer release of this tool"
	}
	return ""
}
