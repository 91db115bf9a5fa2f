//go:build !unix

package aof

import "os"

// lockDir is a no-op where flock is unavailable: one Log per directory is
// then the caller's duty.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
