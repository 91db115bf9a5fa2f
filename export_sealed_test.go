package cachecrypt_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// A sealed export of one instance imports into a second instance that
// holds the same CMK, and into no instance that does not.
func TestExportSealedBetweenInstances(t *testing.T) {
	ctx := context.Background()
	plain, err := os.ReadFile("export/testdata/small.rdb")
	require.NoError(t, err)
	cmk := kektest.New("shared-cmk")
	open := func(e cachecrypt.Encryption) *cachecrypt.Instance {
		inst, err := cachecrypt.Open(ctx, t.TempDir(), cachecrypt.Config{Encryption: e})
		require.NoError(t, err)
		t.Cleanup(func() { inst.Close() })
		return inst
	}
	src, dst, stranger := open(cachecrypt.CustomerManaged(cmk)), open(cachecrypt.CustomerManaged(cmk)), open(cachecrypt.Encryption{})
	require.NoError(t, src.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(plain); return err }))

	file := filepath.Join(t.TempDir(), "dump.ccsealed")
	_, err = src.ExportSealed(ctx, export.ToFile(file), nil, nil)
	require.NoError(t, err)
	sealed, err := os.ReadFile(file)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(sealed, []byte(export.SealedMagic)))

	_, err = stranger.ImportSealed(ctx, export.FromFile(file), nil, nil)
	require.ErrorIs(t, err, kek.ErrKeyMismatch)
	_, err = stranger.OpenSnapshot()
	require.ErrorIs(t, err, os.ErrNotExist, "a refused import left a snapshot")

	_, err = dst.ImportSealed(ctx, export.FromFile(file), nil, nil)
	require.NoError(t, err)
	r, err := dst.OpenSnapshot()
	require.NoError(t, err)
	defer r.Close()
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, plain, got)
}
