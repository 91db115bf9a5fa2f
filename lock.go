package cachecrypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cachecrypt/cachecrypt/internal/flock"
)

// lockFile, in the instance's directory, is locked by the process that has
// the instance open and holds its process id.
const lockFile = "lock"

// lockInstance takes the instance's exclusive lock, so that two processes
// (or two Opens in one) never work on one instance: a second one would
// sweep the first one's temporary files and race its keyring commits.
func lockInstance(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, lockFile)
	f, err := flock.Lock(path)
	if errors.Is(err, flock.ErrHeld) {
		return nil, fmt.Errorf("instance %s is open in %s; close it there first (one process works on an instance at a time): %w",
			dir, holder(path), ErrLocked)
	}
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// holder names the process that holds the lock at path, as well as its
// file tells.
func holder(path string) string {
	b, err := os.ReadFile(path)
	pid := strings.TrimSpace(string(b))
	if err != nil || pid == "" {
		return "another process"
	}
	if pid == strconv.Itoa(os.Getpid()) {
		return "this process (an Instance not yet closed)"
	}
	return "process " + pid
}
