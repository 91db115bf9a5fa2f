package aof

import (
	"errors"
	"fmt"
	"os"

	"github.com/cachecrypt/cachecrypt/internal/flock"
)

// lockDir takes an exclusive advisory lock on NAME.lock in dir, so two Logs
// (in one process or two) never write the same directory.
func lockDir(path string) (*os.File, error) {
	f, err := flock.Lock(path)
	if errors.Is(err, flock.ErrHeld) {
		return nil, fmt.Errorf("%s is locked: another Log has this directory open: %w", path, ErrLocked)
	}
	return f, err
}
