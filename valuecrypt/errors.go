package valuecrypt

import "errors"

// Sentinel errors, matched with errors.Is. Every error returned by this
// package names the operation and, where it helps, the key and what to do.
var (
	// ErrAuthentication means a value failed to authenticate: it was
	// altered or truncated in the cache, or it was written under another
	// key name, hash field or context (moved with RENAME, copied with COPY,
	// or taken from another tenant or cache). No plaintext is returned.
	ErrAuthentication = errors.New("valuecrypt: value failed to authenticate (altered, truncated, or written under another key name, field or context)")

	// ErrPlaintext means a value is not a valuecrypt ciphertext: it was
	// written before encryption was enabled, or by a client that does not
	// encrypt. By default it is refused. With Config.Migration set, Open
	// returns the value as read together with an error matching
	// ErrPlaintext, so the caller can use it and write it back encrypted.
	ErrPlaintext = errors.New("valuecrypt: value is not encrypted")

	// ErrUnknownKey means a value names a key id that the keyset does not
	// hold, even after reloading it once: the value was written under a
	// newer keyset this process cannot read, under a retired key, or under
	// another application's keyset.
	ErrUnknownKey = errors.New("valuecrypt: value is sealed under a key the keyset does not hold")

	// ErrUnsupportedVersion means a value carries a format version this
	// package does not know; a newer valuecrypt wrote it.
	ErrUnsupportedVersion = errors.New("valuecrypt: unsupported value format version")

	// ErrKeysetMissing means no keyset is stored where one was expected.
	ErrKeysetMissing = errors.New("valuecrypt: keyset missing")

	// ErrKeysetCorrupt means the stored keyset is damaged, truncated, or
	// not a valuecrypt keyset.
	ErrKeysetCorrupt = errors.New("valuecrypt: keyset damaged")

	// ErrKeysetExists means Create found a keyset already stored.
	ErrKeysetExists = errors.New("valuecrypt: keyset already exists")

	// ErrConflict means the stored keyset changed between a load and a
	// save (another process rotated or created it).
	ErrConflict = errors.New("valuecrypt: stored keyset changed concurrently")

	// ErrSealLimit means the primary key has sealed SealLimit values in
	// this process, the most AES-GCM with random nonces allows under one
	// key: rotate the keyset (Keyset.Rotate) to seal again.
	ErrSealLimit = errors.New("valuecrypt: primary key reached its seal limit")

	// ErrClosed means the keyset was closed and its keys zeroed.
	ErrClosed = errors.New("valuecrypt: keyset closed")
)
