//go:build !unix

package cachecrypt

import (
	"os"
	"path/filepath"
)

const lockFile = "lock"

// lockInstance opens the lock file; without flock, nothing is locked.
func lockInstance(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
}
