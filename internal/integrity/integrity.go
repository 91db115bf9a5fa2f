// Package integrity defines the errors that every cachecrypt data format
// returns when stored bytes fail to authenticate or end too early. The public
// packages (rdb, aof, osdisk, nvme and the root package) re-export them, so a
// caller matches them with errors.Is whichever package it imported.
package integrity

import "errors"

var (
	// ErrAuthentication reports bytes that failed AES-GCM or HMAC
	// authentication: tampered data, data copied from another file or disk,
	// or the wrong key. No plaintext of the failing unit is ever returned.
	ErrAuthentication = errors.New("cachecrypt: authentication failed (data tampered with, or wrong key)")

	// ErrTruncated reports data that ends before its format says it should:
	// a file cut at or between segment boundaries, or a torn final frame.
	ErrTruncated = errors.New("cachecrypt: data truncated")

	// ErrFormat reports bytes that are not a cachecrypt file of the expected
	// kind, or whose header fields are out of range.
	ErrFormat = errors.New("cachecrypt: malformed data")

	// ErrVersion reports a format version this build cannot read.
	ErrVersion = errors.New("cachecrypt: unsupported format version")

	// ErrClosed reports use of a keyring, file or store after Close.
	ErrClosed = errors.New("cachecrypt: use after close")
)
