package cachecrypt

import (
	"errors"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Errors every cachecrypt package returns, matched with errors.Is. They are
// the same values as those re-exported by the packages below.
var (
	// ErrAuthentication: stored bytes failed authentication (tampered, copied
	// from another file or disk, or the wrong key). No plaintext of the
	// failing unit is returned.
	ErrAuthentication = integrity.ErrAuthentication
	// ErrTruncated: data ends before its format says it should.
	ErrTruncated = integrity.ErrTruncated
	// ErrFormat: bytes that are not a cachecrypt file of the expected kind.
	ErrFormat = integrity.ErrFormat
	// ErrVersion: a format version this build cannot read.
	ErrVersion = integrity.ErrVersion
	// ErrClosed: use after Close.
	ErrClosed = integrity.ErrClosed

	// ErrKEKUnavailable: the KEK could not be reached (transient).
	ErrKEKUnavailable = kek.ErrUnavailable
	// ErrRevoked: the KEK is disabled, deleted or its access was removed.
	ErrRevoked = kek.ErrRevoked
	// ErrPrerequisite: a customer-managed key failed prerequisite checks;
	// the error lists each one with its fix.
	ErrPrerequisite = kek.ErrPrerequisite
	// ErrUnsupported: a key setup that is not allowed, such as a CMK on the
	// ephemeral NVMe flash disk.
	ErrUnsupported = kek.ErrUnsupported

	// ErrLocked: another Instance (in this process or another) has the
	// instance open. Close it, or ask it to act on your behalf.
	ErrLocked = errors.New("cachecrypt: instance in use")
)
