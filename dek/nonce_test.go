package dek_test

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

// sealings collects every (sealing key, nonce) -> sealed DEK seen in the
// keyring files a test writes, and fails on a nonce used twice under one key
// for two different sealed values: a GCM nonce reuse.
type sealings struct {
	t    *testing.T
	u    kek.Unwrapper
	seen map[string]string
}

func newSealings(t *testing.T, u kek.Unwrapper) *sealings {
	return &sealings{t: t, u: u, seen: map[string]string{}}
}

// add decodes the keyring at path and records its entries.
func (s *sealings) add(path string) {
	s.t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(s.t, err)
	kr, err := decodeKeyring(b)
	require.NoError(s.t, err)
	krk, _, err := kr.open(context.Background(), s.u)
	require.NoError(s.t, err)
	key := hex.EncodeToString(kr.sealKey(krk))
	for _, e := range kr.Entries {
		at := key + "/" + hex.EncodeToString(e.Nonce)
		sealed := hex.EncodeToString(e.Sealed)
		if prev, ok := s.seen[at]; ok && prev != sealed {
			s.t.Fatalf("nonce %x sealed two different DEK entries (version %d) under one keyring key: the XOR of the entries is the XOR of the DEKs", e.Nonce, e.Version)
		}
		s.seen[at] = sealed
	}
}

// TestOldKeyringPutBackNeverReusesANonce plays the attack of issue 14
// (item 2) through the public API: copy the keyring, rotate, put the copy
// back, open it and rotate again. The second rotation must not seal its new
// DEK under the (keyring key, nonce) the first one used.
func TestOldKeyringPutBackNeverReusesANonce(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	dir := t.TempDir()
	path := filepath.Join(dir, "keyring")
	s := newSealings(t, k)

	r, err := dek.Create(ctx, path, "disk-1", k)
	require.NoError(t, err)
	s.add(path)
	old, err := os.ReadFile(path)
	require.NoError(t, err)
	_, err = r.RotateDEK()
	require.NoError(t, err)
	s.add(path)
	require.NoError(t, r.Close())

	for range 3 { // the attacker may put the copy back again and again
		require.NoError(t, os.WriteFile(path, old, 0o600))
		r, err = dek.Open(ctx, path, k)
		require.NoError(t, err)
		v, err := r.RotateDEK()
		require.NoError(t, err)
		require.Equal(t, uint32(2), v)
		s.add(path)
		require.NoError(t, r.Retire(1))
		s.add(path)
		require.NoError(t, r.Close())
	}
}

// TestFailedCommitNeverReusesANonce fails each step of a RotateDEK in turn
// (the new file may or may not have reached the disk) and rotates again:
// whatever reached the disk, no nonce repeats under the keyring key.
func TestFailedCommitNeverReusesANonce(t *testing.T) {
	k := kektest.New("a")
	counter := &atomicfile.FaultFS{Inner: atomicfile.OS}
	r, _ := setupTwoVersions(t, k, counter)
	before := counter.Steps()
	_, err := r.RotateDEK()
	require.NoError(t, err)
	steps := counter.Steps() - before
	r.Close()
	for fail := 1; fail <= steps; fail++ {
		s := newSealings(t, k)
		ffs := &atomicfile.FaultFS{Inner: atomicfile.OS}
		r, path := setupTwoVersions(t, k, ffs)
		s.add(path)
		ffs.FailAt = ffs.Steps() + fail
		_, err := r.RotateDEK()
		require.ErrorIs(t, err, atomicfile.ErrInjected, "step %d", fail)
		s.add(path)
		_, err = r.RotateDEK()
		require.NoError(t, err, "step %d", fail)
		s.add(path)
		r.Close()
	}
}
