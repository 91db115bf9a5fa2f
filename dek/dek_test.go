package dek_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

var salt = bytes.Repeat([]byte{7}, 32)

func newKeyring(t *testing.T, k kek.KEK) (*dek.Keyring, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring")
	r, err := dek.Create(context.Background(), path, "disk-1", k)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r, path
}

func fileKey(t *testing.T, r *dek.Keyring, v uint32) []byte {
	t.Helper()
	fk, err := r.FileKey(v, "rdb", salt)
	require.NoError(t, err)
	return fk
}

func TestCreateOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	r, path := newKeyring(t, k)
	want := fileKey(t, r, 1)
	require.Equal(t, int64(1), k.Wraps())

	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	r2, err := dek.Open(ctx, path, k)
	require.NoError(t, err)
	defer r2.Close()
	require.Equal(t, int64(1), k.Unwraps(), "Open makes exactly one KEK call")
	require.Equal(t, want, fileKey(t, r2, 1))
	require.Equal(t, "disk-1", r2.DiskID())

	_, err = dek.Create(ctx, path, "disk-1", k)
	require.ErrorIs(t, err, dek.ErrExists)
}

func TestFileKeysDiffer(t *testing.T) {
	r, _ := newKeyring(t, kektest.New("a"))
	a := fileKey(t, r, 1)
	b, err := r.FileKey(1, "aof", salt)
	require.NoError(t, err)
	c, err := r.FileKey(1, "rdb", bytes.Repeat([]byte{8}, 32))
	require.NoError(t, err)
	require.NotEqual(t, a, b, "purpose is bound")
	require.NotEqual(t, a, c, "salt is bound")
	_, err = r.FileKey(1, "rdb", salt[:8])
	require.Error(t, err, "short salt refused")
}

func TestRotateRetire(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	r, path := newKeyring(t, k)
	v1 := fileKey(t, r, 1)
	calls := k.Calls()
	v, err := r.RotateDEK()
	require.NoError(t, err)
	require.Equal(t, uint32(2), v)
	require.Equal(t, uint32(2), r.Active())
	require.Equal(t, calls, k.Calls(), "RotateDEK makes no KEK call")
	v2 := fileKey(t, r, 2)
	require.NotEqual(t, v1, v2)

	r2, err := dek.Open(ctx, path, k)
	require.NoError(t, err)
	require.Equal(t, v1, fileKey(t, r2, 1), "old version still decrypts")
	require.Equal(t, v2, fileKey(t, r2, 2))
	r2.Close()

	require.Error(t, r.Retire(2), "active version cannot be retired")
	require.NoError(t, r.Retire(1))
	_, err = r.FileKey(1, "rdb", salt)
	require.ErrorIs(t, err, dek.ErrUnknownVersion)
	r3, err := dek.Open(ctx, path, k)
	require.NoError(t, err)
	defer r3.Close()
	_, err = r3.FileKey(1, "rdb", salt)
	require.ErrorIs(t, err, dek.ErrUnknownVersion)
	require.Equal(t, []uint32{2}, r3.Info().Versions)
}

func TestRewrapSwitchesKEK(t *testing.T) {
	ctx := context.Background()
	oldK, newK := kektest.New("old"), kektest.New("new")
	r, path := newKeyring(t, oldK)
	r.RotateDEK()
	want1, want2 := fileKey(t, r, 1), fileKey(t, r, 2)
	oldCopy, err := os.ReadFile(path)
	require.NoError(t, err)

	require.NoError(t, r.Rewrap(ctx, newK))
	require.Equal(t, int64(1), newK.Wraps(), "Rewrap makes exactly one Wrap")
	require.Equal(t, kek.KindTest, r.Descriptor().Kind)
	require.Equal(t, newK.Descriptor(), r.Descriptor())

	_, err = dek.Open(ctx, path, oldK)
	require.ErrorIs(t, err, kek.ErrKeyMismatch, "old KEK no longer opens it")
	r2, err := dek.Open(ctx, path, newK)
	require.NoError(t, err)
	defer r2.Close()
	require.Equal(t, want1, fileKey(t, r2, 1))
	require.Equal(t, want2, fileKey(t, r2, 2))

	// A DEK created after the switch is not in the old keyring copy: the old
	// KEK plus the old file reveal nothing about it.
	v3, err := r2.RotateDEK()
	require.NoError(t, err)
	stale := filepath.Join(t.TempDir(), "stale")
	require.NoError(t, os.WriteFile(stale, oldCopy, 0o600))
	r3, err := dek.Open(ctx, stale, oldK)
	require.NoError(t, err)
	defer r3.Close()
	_, err = r3.FileKey(v3, "rdb", salt)
	require.ErrorIs(t, err, dek.ErrUnknownVersion)
}

func TestKEKVersionRotationKeepsUnwrapping(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	r, path := newKeyring(t, k)
	want := fileKey(t, r, 1)
	k.Rotate() // the KEK moves to version 2; the keyring names version 1
	r2, err := dek.Open(ctx, path, k)
	require.NoError(t, err)
	require.Equal(t, want, fileKey(t, r2, 1))
	require.NoError(t, r2.Rewrap(ctx, k))
	require.Contains(t, r2.Descriptor().KeyID, "/v2")
	r2.Close()
}

func TestCloseZeroes(t *testing.T) {
	r, _ := newKeyring(t, kektest.New("a"))
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close is idempotent")
	_, err := r.FileKey(1, "rdb", salt)
	require.ErrorIs(t, err, dek.ErrClosed)
	_, err = r.RotateDEK()
	require.ErrorIs(t, err, dek.ErrClosed)
}

func TestKEKErrorsPropagate(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	_, path := newKeyring(t, k)
	k.FailWith(kek.ErrRevoked)
	_, err := dek.Open(ctx, path, k)
	require.ErrorIs(t, err, kek.ErrRevoked)
	require.Contains(t, err.Error(), path)
	k.FailWith(kek.ErrUnavailable)
	_, err = dek.Open(ctx, path, k)
	require.ErrorIs(t, err, kek.ErrUnavailable)
}

func TestConcurrentFileKeyDuringUpdates(t *testing.T) {
	ctx := context.Background()
	r, _ := newKeyring(t, kektest.New("a"))
	other := kektest.New("b")
	want := fileKey(t, r, 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				got, err := r.FileKey(1, "rdb", salt)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("FileKey during update: %v", err)
					return
				}
			}
		})
	}
	for range 5 {
		_, err := r.RotateDEK()
		require.NoError(t, err)
		require.NoError(t, r.Rewrap(ctx, other))
	}
	wg.Wait()
}

// TestCrashAtEveryStep fails each filesystem step of every kind of update in
// turn and checks the keyring on disk still opens, holding either the state
// before the update or the state after it.
func TestCrashAtEveryStep(t *testing.T) {
	ctx := context.Background()
	k, k2 := kektest.New("a"), kektest.New("b")
	updates := map[string]func(*dek.Keyring) error{
		"rotate":  func(r *dek.Keyring) error { _, err := r.RotateDEK(); return err },
		"rewrap":  func(r *dek.Keyring) error { return r.Rewrap(ctx, k2) },
		"retire1": func(r *dek.Keyring) error { return r.Retire(1) },
	}
	for name, update := range updates {
		t.Run(name, func(t *testing.T) {
			counter := &atomicfile.FaultFS{Inner: atomicfile.OS}
			r, _ := setupTwoVersions(t, k, counter)
			before := counter.Steps()
			require.NoError(t, update(r))
			steps := counter.Steps() - before
			require.Greater(t, steps, 3)
			for fail := 1; fail <= steps; fail++ {
				ffs := &atomicfile.FaultFS{Inner: atomicfile.OS}
				r, path := setupTwoVersions(t, k, ffs)
				ffs.FailAt = ffs.Steps() + fail
				beforeInfo := r.Info()
				err := update(r)
				require.ErrorIs(t, err, atomicfile.ErrInjected, "step %d", fail)
				inMem := r.Info()
				require.Contains(t, []uint64{beforeInfo.Generation, beforeInfo.Generation + 1}, inMem.Generation)
				r.Close()
				r2, err := openAny(ctx, path, k, k2)
				require.NoError(t, err, "keyring must stay loadable after failure at step %d", fail)
				got := r2.Info().Generation
				require.Contains(t, []uint64{beforeInfo.Generation, beforeInfo.Generation + 1}, got)
				r2.Close()
				left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*"+atomicfile.TempMarker+"*"))
				require.Empty(t, left, "temporary files are cleaned up after step %d fails", fail)
			}
		})
	}
}

func setupTwoVersions(t *testing.T, k kek.KEK, fsys atomicfile.FS) (*dek.Keyring, string) {
	path := filepath.Join(t.TempDir(), "keyring")
	r, err := dek.Create(context.Background(), path, "disk-1", k, dek.WithFS(fsys))
	require.NoError(t, err)
	_, err = r.RotateDEK()
	require.NoError(t, err)
	return r, path
}

func openAny(ctx context.Context, path string, ks ...kek.KEK) (*dek.Keyring, error) {
	var errs []error
	for _, k := range ks {
		r, err := dek.Open(ctx, path, k)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func TestLockUnlock(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	r, _ := newKeyring(t, k)
	want := fileKey(t, r, 1)
	r.Lock(kek.ErrRevoked)
	require.True(t, r.Locked())
	_, err := r.FileKey(1, "rdb", salt)
	require.ErrorIs(t, err, kek.ErrRevoked)
	_, err = r.RotateDEK()
	require.ErrorIs(t, err, kek.ErrRevoked)

	k.FailWith(kek.ErrRevoked)
	require.ErrorIs(t, r.Unlock(ctx, k), kek.ErrRevoked)
	require.True(t, r.Locked())
	k.FailWith(nil)
	require.NoError(t, r.Unlock(ctx, k))
	require.False(t, r.Locked())
	require.Equal(t, want, fileKey(t, r, 1))
}
