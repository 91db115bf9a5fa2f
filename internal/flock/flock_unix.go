//go:build unix

package flock

import (
	"errors"
	"os"
	"syscall"
)

// Lock opens (creating) the file at path and takes an exclusive lock on it
// without waiting. It fails with ErrHeld while another open file holds it.
// Closing the returned file releases the lock.
func Lock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrHeld
		}
		return nil, err
	}
	return f, nil
}
