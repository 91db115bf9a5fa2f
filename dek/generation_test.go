package dek_test

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

// TestGenerationAndDigest: every commit raises the generation by one, and
// Digest is the SHA-256 of the file as written; Open and ReadInfo report
// the same for the file on disk, so an older copy shows a lower generation.
func TestGenerationAndDigest(t *testing.T) {
	ctx := context.Background()
	k, k2 := kektest.New("a"), kektest.New("b")
	r, path := newKeyring(t, k)
	check := func(want uint64) {
		t.Helper()
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, want, r.Generation())
		require.Equal(t, sha256.Sum256(b), r.Digest())
		in, err := dek.ReadInfo(path)
		require.NoError(t, err)
		require.Equal(t, want, in.Generation)
		require.Equal(t, r.Digest(), in.Digest)
		require.Equal(t, in.Digest, r.Info().Digest)
	}
	check(1)
	old, err := os.ReadFile(path)
	require.NoError(t, err)
	_, err = r.RotateDEK()
	require.NoError(t, err)
	check(2)
	require.NoError(t, r.Retire(1))
	check(3)
	require.NoError(t, r.Rewrap(ctx, k2))
	check(4)

	stale := filepath.Join(t.TempDir(), "keyring")
	require.NoError(t, os.WriteFile(stale, old, 0o600))
	r2, err := dek.Open(ctx, stale, k)
	require.NoError(t, err)
	defer r2.Close()
	require.Equal(t, uint64(1), r2.Generation(), "an older copy has a lower generation")
	require.Equal(t, sha256.Sum256(old), r2.Digest())
}

// TestGenerationNeverRepeats: a commit that fails after its file reached
// the disk leaves the keyring at the old generation in memory, and the
// next commit still writes a generation above the one on disk.
func TestGenerationNeverRepeats(t *testing.T) {
	k := kektest.New("a")
	counter := &atomicfile.FaultFS{Inner: atomicfile.OS}
	r, _ := setupTwoVersions(t, k, counter)
	before := counter.Steps()
	_, err := r.RotateDEK()
	require.NoError(t, err)
	steps := counter.Steps() - before
	r.Close()
	for fail := 1; fail <= steps; fail++ {
		ffs := &atomicfile.FaultFS{Inner: atomicfile.OS}
		r, path := setupTwoVersions(t, k, ffs)
		g := r.Generation()
		ffs.FailAt = ffs.Steps() + fail
		_, err := r.RotateDEK()
		require.ErrorIs(t, err, atomicfile.ErrInjected)
		require.Equal(t, g, r.Generation(), "a failed commit changes nothing in memory")
		onDisk, err := dek.ReadInfo(path)
		require.NoError(t, err)
		_, err = r.RotateDEK()
		require.NoError(t, err)
		require.Greater(t, r.Generation(), onDisk.Generation, "step %d: the generation on disk is never written again", fail)
		r.Close()
	}
}
