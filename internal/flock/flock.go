// Package flock takes exclusive advisory locks on files, so that two
// holders (in one process or two) never work on the same thing: an
// instance, or an AOF directory.
package flock

import "errors"

// ErrHeld: another holder has the lock.
var ErrHeld = errors.New("flock: held by another holder")
