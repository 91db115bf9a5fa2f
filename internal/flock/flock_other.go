//go:build !unix

package flock

import "os"

// Lock opens (creating) the file at path. Without flock nothing is locked:
// one holder at a time is then the caller's duty.
func Lock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
