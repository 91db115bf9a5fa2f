package osdisk

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/dek"
)

// New returns the scratch area dir over keys, the keyring in dir that its
// owner already opened. An Instance opens every disk's keyring itself, so
// that a switch of KEK rewraps the one copy in memory, and hands it here.
// New removes the temporary files a crash left in dir. Close closes keys.
func New(dir string, keys *dek.Keyring) (*Disk, error) {
	if want := filepath.Join(dir, KeyringName); filepath.Clean(keys.Path()) != filepath.Clean(want) {
		return nil, fmt.Errorf("osdisk.New: keyring %s is not the one of scratch area %s (%s)", keys.Path(), dir, want)
	}
	if err := os.MkdirAll(filepath.Join(dir, TempDir), 0o700); err != nil {
		return nil, fmt.Errorf("osdisk.New: %w", err)
	}
	d := &Disk{dir: dir, keys: keys}
	if _, err := d.sweep(); err != nil {
		return nil, fmt.Errorf("osdisk.New: remove leftover temporary files in %s: %w", dir, err)
	}
	return d, nil
}
