//go:build unix

package flock

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLockIsExclusiveUntilClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	f, err := Lock(path)
	require.NoError(t, err)
	_, err = Lock(path)
	require.ErrorIs(t, err, ErrHeld, "a second holder in the same process is refused too")
	require.NoError(t, f.Close())
	g, err := Lock(path)
	require.NoError(t, err)
	require.NoError(t, g.Close())
}
