// Package pkcs11 is a customer-managed key-encryption key held in an HSM: an
// RSA key pair in a PKCS#11 token, reached through
// github.com/ThalesGroup/crypto11.
//
// Wrap encrypts with the public key in software (RSA-OAEP, no label); Unwrap
// decrypts inside the token, so the private key never leaves it. Keys are
// addressed by an RFC 7512 PKCS#11 URI, for example
//
//	pkcs11:token=cache;object=disk-kek;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cachecrypt/pin
//
// The PIN comes from a file (pin-source=file:...) or an environment variable
// (pin-source=env:NAME, a cachecrypt extension), never from the URI itself,
// and never appears in an error.
//
// The OAEP hash is SHA-256 where the token supports it. SoftHSM2 2.6 accepts
// only SHA-1 with an empty label, so Open probes the token and falls back to
// SHA-1 unless WithOAEPHash fixes the choice. The hash is recorded in every
// wrapped key's Descriptor.Algorithm, and Unwrap always uses the recorded
// one.
//
// The descriptor's KeyID is the canonical URI path of the key as the token
// stores it (token label or serial, the key's CKA_LABEL and CKA_ID) plus
// ";x-spki-sha256=" and the first 16 bytes, in hex, of the SHA-256 of the
// public key's PKIX encoding: a key regenerated under the same label and id
// is another key, and Unwrap reports kek.ErrKeyMismatch for it without a
// token call. The KeyID never holds the module path or the PIN source.
//
// # Failures
//
// Open logs in exactly once. A refused PIN (ErrPINIncorrect) is never
// retried, because real HSMs lock the user after a few failures. When the
// token goes away under an open KEK (pulled out, deleted, reinitialised),
// Unwrap fails with ErrTokenRemoved, a kek.ErrUnavailable; each later Unwrap
// makes one reconnect attempt (one login, serialised between goroutines)
// until the token is back. PKCS#11 login state belongs to the process, so
// while one KEK is logged in the token would take any PIN from a second Open:
// the package keeps a keyed hash of the PIN each token was logged in with and
// refuses a different one with ErrPINIncorrect, without a login call.
// A reconnect whose login is refused latches
// ErrPINIncorrect: the KEK never logs in again and must be reopened. A
// reconnect that finds another key under the URI fails with
// kek.ErrKeyMismatch.
//
// crypto11 loads a module once per process and shares it between KEKs.
// SoftHSM2 only sees a restored token after the module is reinitialised,
// which happens once every KEK using the module has dropped its connection:
// until then, a KEK whose sibling has not yet seen the loss keeps reporting
// ErrTokenRemoved (see TestTokenRemovedTwoKEKs). Whether another module
// sees a returning token without being reinitialised depends on the module.
package pkcs11
